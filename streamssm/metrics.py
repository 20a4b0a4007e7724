"""Video quality and temporal-consistency metrics (numpy + OpenCV, CPU).

Frames are ``(h, w, 3)`` RGB, uint8 (scaled to [0, 1]) or float already in [0, 1]; a video is a list of
frames or a ``(t, h, w, 3)`` array.

Warping error (Lai et al., "Learning Blind Video Temporal Consistency", ECCV 2018, Sec. 5.1)::

    E_pair(V_t, V_{t+1}) = sum_x M_t(x) ||V_t(x) - V^_{t+1}(x)||_2^2 / sum_x M_t(x)
    E_warp(V)            = 1 / (T - 1) * sum_{t=1}^{T-1} E_pair(V_t, V_{t+1})

with ``V^_{t+1}(x) = V_{t+1}(x + F_{t->t+1}(x))`` (frame t+1 warped back to t, bilinear), the flow
``F`` computed on the *original* (input) video, ``||.||_2^2`` summed over the three RGB channels (as
in the paper and its evaluation code, so it is 3x a per-channel mean), and ``M_t`` the non-occlusion
mask of Ruder et al. (GCPR 2016) forward-backward check used by the paper::

    |F_fw + F~_bw|^2 < 0.01 (|F_fw|^2 + |F~_bw|^2) + 0.5,   F~_bw(x) = F_bw(x + F_fw(x))

Deliberate differences from the paper: the flow is DIS (``flow="dis"``, OpenCV's
``DISOpticalFlow``, MEDIUM preset) or Farneback (``flow="farneback"``) instead of FlowNet2; DeepFlow
(``flow="deepflow"``, Weinzaepfel et al. 2013) and TV-L1 (``flow="tvl1"``) need opencv-contrib's
``cv2.optflow`` (``pip install opencv-contrib-python-headless`` in place of opencv-python-headless; the two
packages share the ``cv2`` module) and are slow (DeepFlow ~0.3 s a 640 x 360 flow on one core, TV-L1
slower). Ruder's motion-boundary term is not used (the paper's text gives only the
consistency check), and pixels whose flow leaves the image are masked out too. A pair whose mask is
empty is skipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np

__all__ = [
    "Flows",
    "compute_flow",
    "compute_flows",
    "consistency_mask",
    "inside_mask",
    "warp",
    "warp_errors",
    "warp_error",
    "psnr",
    "ssim",
    "mean_luminance",
]

FLOW_METHODS = ("dis", "farneback", "deepflow", "tvl1")
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601


def _to_float(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype == np.uint8:
        return frame.astype(np.float32) * (1.0 / 255.0)
    return frame.astype(np.float32, copy=False)


def _to_gray_u8(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def _flow_fn(method: str):
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return lambda a, b: dis.calc(a, b, None)
    if method == "farneback":
        return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 5, 15, 3, 5, 1.2, 0)
    if method in ("deepflow", "tvl1"):
        if not hasattr(cv2, "optflow"):
            raise ValueError(f"flow method {method!r} needs opencv-contrib (cv2.optflow), which this OpenCV "
                             f"{cv2.__version__} lacks: pip install opencv-contrib-python-headless in place of "
                             "opencv-python-headless, or use 'dis' or 'farneback'")
        calc = (cv2.optflow.createOptFlow_DeepFlow() if method == "deepflow"
                else cv2.optflow.DualTVL1OpticalFlow_create())
        return lambda a, b: calc.calc(a, b, None)
    raise ValueError(f"unknown flow method {method!r}; choose from {FLOW_METHODS}")


def compute_flow(a: np.ndarray, b: np.ndarray, method: str = "dis") -> np.ndarray:
    """Flow ``F`` from frame ``a`` to frame ``b``: ``a(x) ~ b(x + F(x))``; ``(h, w, 2)`` float32 (dx, dy)."""
    return _flow_fn(method)(_to_gray_u8(a), _to_gray_u8(b))


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> np.ndarray:
    """Pixel coordinates ``(h, w, 2)`` float32 (x, y); cached, read-only."""
    g = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), -1)
    g.flags.writeable = False
    return g


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp: ``out(x) = image(x + flow(x))``, bilinear, zero outside the image."""
    h, w = flow.shape[:2]
    return cv2.remap(image, _grid(h, w) + flow, None, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def consistency_mask(fw: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """Non-occluded pixels of the *source* frame of ``fw``: forward-backward check (Ruder et al. 2016,
    as used by Lai et al. 2018) and ``x + fw(x)`` inside the image. ``(h, w)`` bool."""
    h, w = fw.shape[:2]
    target = _grid(h, w) + fw
    bw_w = cv2.remap(bw, target, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    sq = lambda f: cv2.magnitude(f[..., 0], f[..., 1]) ** 2  # noqa: E731
    lhs = sq(fw + bw_w)
    rhs = 0.01 * (sq(fw) + sq(bw_w)) + 0.5
    return (lhs < rhs) & _inside(target)


def inside_mask(flow: np.ndarray) -> np.ndarray:
    """Pixels ``x`` whose ``x + flow(x)`` lies inside the frame, ``(h, w)`` bool."""
    return _inside(_grid(*flow.shape[:2]) + flow)


def _inside(target: np.ndarray) -> np.ndarray:
    h, w = target.shape[:2]
    tx, ty = target[..., 0], target[..., 1]
    return (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)


@dataclass
class Flows:
    """Flows between consecutive original frames, reusable across outputs of the same video.

    ``forward[t]`` (h, w, 2): ``I_t(x) ~ I_{t+1}(x + forward[t](x))``; ``valid[t]`` (h, w) bool: the
    non-occlusion mask ``M_t``. Both have ``t - 1`` entries for a ``t``-frame video.
    """

    forward: np.ndarray  # (t-1, h, w, 2) float32
    valid: np.ndarray  # (t-1, h, w) bool
    method: str


def compute_flows(originals: Sequence[np.ndarray], method: str = "dis") -> Flows:
    """Forward flows and occlusion masks between consecutive frames of ``originals``."""
    calc = _flow_fn(method)
    gray = [_to_gray_u8(f) for f in originals]
    if len(gray) < 2:
        raise ValueError("need at least two frames")
    h, w = gray[0].shape
    fwd = np.empty((len(gray) - 1, h, w, 2), np.float32)
    valid = np.empty((len(gray) - 1, h, w), bool)
    for t in range(len(gray) - 1):
        fwd[t] = calc(gray[t], gray[t + 1])
        valid[t] = consistency_mask(fwd[t], calc(gray[t + 1], gray[t]))
    return Flows(fwd, valid, method)


def warp_errors(frames: Sequence[np.ndarray], flows: Flows) -> np.ndarray:
    """Per-pair ``E_pair`` (t-1,), NaN where the mask is empty. See the module docstring."""
    if len(frames) != flows.forward.shape[0] + 1:
        raise ValueError(f"{len(frames)} frames but {flows.forward.shape[0]} flows")
    out = np.full(len(frames) - 1, np.nan)
    for t in range(len(frames) - 1):
        m = flows.valid[t]
        n = m.sum()
        if n == 0:
            continue
        a = _to_float(frames[t])
        b = warp(_to_float(frames[t + 1]), flows.forward[t])
        out[t] = float(((a - b) ** 2).sum(-1)[m].sum() / n)
    return out


def warp_error(frames: Sequence[np.ndarray], originals: Sequence[np.ndarray] | None = None,
               flow: str = "dis", flows: Flows | None = None) -> float:
    """Warping error ``E_warp`` of ``frames`` (Lai et al. 2018), flow from ``originals``.

    Pass ``flows=compute_flows(originals, method)`` to score several outputs of one video with the
    same flows; otherwise they are computed with ``flow`` from ``originals`` (from ``frames`` when
    ``originals`` is None, e.g. to score the input itself).

    >>> import numpy as np
    >>> v = [np.full((32, 32, 3), 128, np.uint8)] * 3
    >>> warp_error(v)
    0.0
    """
    if flows is None:
        flows = compute_flows(frames if originals is None else originals, flow)
    e = warp_errors(frames, flows)
    return float(np.nanmean(e)) if np.isfinite(e).any() else float("nan")


def _is_video(x) -> bool:
    return isinstance(x, (list, tuple)) or np.asarray(x).ndim == 4


def psnr(a, b, data_range: float = 1.0) -> float:
    """PSNR in dB on [0, 1] values (uint8 is scaled by 1/255); ``inf`` when identical.

    For videos (lists or ``(t, h, w, 3)``) the MSE is pooled over all frames first, so a frame that
    is identical (e.g. the first output of a causal filter) does not make the result infinite.
    """
    if _is_video(a):
        mse = float(np.mean([_mse(x, y) for x, y in zip(a, b, strict=True)]))
    else:
        mse = _mse(a, b)
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))


def _mse(a, b) -> float:
    return float(np.mean((_to_float(a).astype(np.float64) - _to_float(b)) ** 2))


def ssim(a, b) -> float:
    """SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, on [0, 1].

    Computed per RGB channel and averaged over channels (like ``skimage.metrics.structural_similarity``
    with ``gaussian_weights=True, use_sample_covariance=False, channel_axis=-1``), excluding a 5-pixel
    border. For videos, the mean over frames.
    """
    if _is_video(a):
        return float(np.mean([ssim(x, y) for x, y in zip(a, b, strict=True)]))
    x, y = _to_float(a).astype(np.float64), _to_float(b).astype(np.float64)
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    c1, c2 = 0.01**2, 0.03**2
    blur = lambda z: cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)  # noqa: E731
    vals = []
    for c in range(x.shape[-1]):
        xc, yc = np.ascontiguousarray(x[..., c]), np.ascontiguousarray(y[..., c])
        mx, my = blur(xc), blur(yc)
        sxx, syy, sxy = blur(xc * xc) - mx * mx, blur(yc * yc) - my * my, blur(xc * yc) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        vals.append(s[5:-5, 5:-5].mean())
    return float(np.mean(vals))


def mean_luminance(frames) -> np.ndarray:
    """Per-frame mean BT.601 luma in [0, 1], shape ``(t,)``."""
    return np.array([float((_to_float(f) @ _LUMA).mean()) for f in frames])


def luminance_flicker(frames, target, processed) -> float:
    """Residual global flicker: how much of the processed clip's frame-to-frame mean-luminance flicker (its
    departure from a temporally consistent ``target``'s) is left in ``frames``.

    ``mean_t |d(L(O) - L(T))| / mean_t |d(L(P) - L(T))|`` with L the per-frame :func:`mean_luminance` and d the
    difference between consecutive frames: 0 when the output's brightness moves exactly as the target's, 1 when
    it flickers as much as the processed clip. The warping error is dominated by fine texture; this is the
    brightness pumping a viewer notices first. Needs a target (same length as the clips)."""
    if not (len(frames) == len(target) == len(processed)) or len(frames) < 2:
        raise ValueError(f"luminance_flicker needs three clips of the same length >= 2, got {len(frames)}, "
                         f"{len(target)}, {len(processed)}")
    lt = mean_luminance(target)
    den = np.abs(np.diff(mean_luminance(processed) - lt)).mean()
    return float(np.abs(np.diff(mean_luminance(frames) - lt)).mean() / max(den, 1e-12))
