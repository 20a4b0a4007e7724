"""HDR video frames (PQ or HLG transfer, BT.2020 primaries) to SDR BT.709 8-bit RGB, so that an HDR clip (a
phone's default recording is HLG) is filtered and written with its colours, not washed out.

The conversion is display-referred, as in ITU-R BT.2408 and FFmpeg's ``zscale``/``tonemap`` chain:

1. the transfer's EOTF to light on a display: SMPTE ST 2084 (PQ, absolute cd/m2), or ARIB STD-B67 (HLG)'s
   inverse OETF followed by BT.2100's OOTF for a 1000 cd/m2 display (system gamma 1.2);
2. BT.2020 to BT.709 primaries (the linear matrix of ITU-R BT.2087, from the primaries); out-of-gamut negatives
   are clipped;
3. light is taken relative to the HDR reference white (203 cd/m2, BT.2408; HLG's 75% signal), with a soft
   knee: up to 0.6 of it is kept as it is, brighter light rolls off towards SDR white (a Reinhard curve,
   continuous in value and slope: reference white lands at 80% light, code 232 of 255, and 1000 cd/m2 at
   97%), on the largest of R, G, B so that hues are kept;
4. BT.1886's inverse (gamma 2.4) to 8-bit code values.

It differs from a colour-managed tone mapper by having no gamut mapping beyond clipping and no dynamic
metadata (HDR10+, Dolby Vision): static, per pixel, the same for every frame, so it adds no flicker.
"""
from __future__ import annotations

import numpy as np

PQ, HLG = 16, 18  # AVCOL_TRC_SMPTE2084, AVCOL_TRC_ARIB_STD_B67
TRANSFERS = {PQ: "PQ (SMPTE 2084)", HLG: "HLG (ARIB STD-B67)"}

REFERENCE_WHITE = 203.0  # cd/m2, BT.2408's HDR reference white (and HLG's 75% signal on a 1000 cd/m2 display)
HLG_PEAK = 1000.0  # cd/m2, the nominal display of BT.2100's HLG OOTF
KNEE = 0.6  # of reference white: below it light is kept, above it rolls off to SDR white



def _primaries_to_xyz(primaries, white=(0.3127, 0.3290)) -> np.ndarray:
    """Linear RGB -> CIE XYZ for (x, y) chromaticities of R, G, B and the white point (SMPTE RP 177)."""
    m = np.array([[x / y, 1.0, (1.0 - x - y) / y] for x, y in primaries]).T  # columns: R, G, B at Y = 1
    w = np.array([white[0] / white[1], 1.0, (1.0 - white[0] - white[1]) / white[1]])
    return m * np.linalg.solve(m, w)  # each primary scaled so that R = G = B = 1 is the white


BT709_PRIMARIES = [(0.64, 0.33), (0.30, 0.60), (0.15, 0.06)]
BT2020_PRIMARIES = [(0.708, 0.292), (0.170, 0.797), (0.131, 0.046)]
# BT.2020 -> BT.709 linear RGB, exact (ITU-R BT.2087's Table 2 is this rounded to 4 decimals, which leaves
# a few 1e-4 of light in a pure colour's other channels: visible codes after gamma 1/2.4)
_BT2020_TO_BT709 = np.linalg.solve(_primaries_to_xyz(BT709_PRIMARIES),
                                   _primaries_to_xyz(BT2020_PRIMARIES)).astype(np.float32)
_BT2020_LUMA = np.array([0.2627, 0.6780, 0.0593], np.float32)


def pq_eotf(e: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084: non-linear signal in [0, 1] -> display light in cd/m2 (0 .. 10000)."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    p = np.power(np.clip(e, 0.0, 1.0), 1.0 / m2)
    return 10000.0 * np.power(np.maximum(p - c1, 0.0) / (c2 - c3 * p), 1.0 / m1)


def hlg_inverse_oetf(e: np.ndarray) -> np.ndarray:
    """ARIB STD-B67 / BT.2100: non-linear signal in [0, 1] -> scene light in [0, 1]."""
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    e = np.clip(e, 0.0, 1.0)
    return np.where(e <= 0.5, e * e / 3.0, (np.exp((e - c) / a) + b) / 12.0)


def soft_knee(x: np.ndarray, knee: float = KNEE) -> np.ndarray:
    """Light relative to reference white -> SDR light in [0, 1): ``x`` up to ``knee``, then a Reinhard curve
    ``knee + r y / (1 + y)``, ``y = (x - knee) / r``, ``r = 1 - knee`` (value and slope continuous at the knee)."""
    r = 1.0 - knee
    y = np.maximum(x - knee, 0.0) / r
    return np.minimum(x, knee) + r * y / (1.0 + y)


class HDRToSDR:
    """One transfer's conversion, from 16-bit RGB code values (``frame.to_ndarray(format="rgb48le")``, which
    applies the frame's BT.2020 matrix and range) to 8-bit SDR BT.709 RGB, with look-up tables for the
    transfers. ``bt2020``: the primaries are BT.2020 (False: already BT.709, no gamut conversion). About 60 ms a
    1080p frame on one CPU core.

    >>> import numpy as np
    >>> conv = HDRToSDR(PQ)
    >>> black = np.zeros((2, 2, 3), np.uint16)
    >>> conv(black)[0, 0].tolist()
    [0, 0, 0]
    """

    def __init__(self, trc: int, bt2020: bool = True):
        if trc not in TRANSFERS:
            raise ValueError(f"HDRToSDR: transfer {trc} is not PQ ({PQ}) or HLG ({HLG})")
        self.trc = trc
        # bt2020=False: the stream's primaries are already BT.709 (some screen recordings and transcodes tag PQ/HLG
        # on BT.709 primaries); the matrix would oversaturate them
        self._matrix = _BT2020_TO_BT709 if bt2020 else np.eye(3, dtype=np.float32)
        code = np.arange(65536, dtype=np.float64) / 65535.0
        # code value -> linear light: PQ relative to reference white; HLG scene light (the OOTF needs luminance)
        lin = pq_eotf(code) / REFERENCE_WHITE if trc == PQ else hlg_inverse_oetf(code)
        self._to_linear = lin.astype(np.float32)
        # BT.1886 inverse on sqrt(light): the square root spreads the table's steps where gamma 2.4 is steep
        s = np.arange(65536, dtype=np.float64) / 65535.0
        self._encode = np.round(255.0 * np.power(s * s, 1.0 / 2.4)).astype(np.uint8)

    def __call__(self, rgb48: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint16 BT.2020 code values -> (H, W, 3) uint8 BT.709 SDR."""
        lin = self._to_linear[rgb48]
        if self.trc == HLG:  # BT.2100 OOTF: Fd = Lw * Ys^(gamma - 1) * E, gamma 1.2 at Lw = 1000 cd/m2
            ys = np.maximum(lin @ _BT2020_LUMA, 0.0)
            lin *= ((HLG_PEAK / REFERENCE_WHITE) * np.power(ys, 0.2))[..., None]
        lin = np.maximum(lin @ self._matrix.T, 0.0)
        m = np.maximum(np.maximum(lin[..., 0], lin[..., 1]), lin[..., 2])  # (ndarray.max(-1) is 8x slower)
        gain = soft_knee(m) / np.maximum(m, 1e-6)
        lin *= gain[..., None]
        idx = np.sqrt(np.minimum(lin, 1.0))
        idx *= 65535.0
        idx += 0.5
        return self._encode[idx.astype(np.int32)]
