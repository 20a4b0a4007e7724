"""VideoSSM: a causal selective-SSM deflicker that works in *operator space* on a coarse grid.

Why this design (and where it departs from Lai et al. 2018, who run a ConvLSTM on full frames):

* **Flicker lives in the operator, not in the pixels.** A per-frame operator maps the original frame
  I_t to the processed P_t; flicker is that mapping changing from frame to frame. Over a coarse grid
  (``grid`` cells along the short side) we fit, per cell, the local affine colour model
  ``P ~ A_t I + b_t`` in closed form (ridge least squares from box-filtered moments, as in He & Sun's
  fast guided filter and bilateral-grid networks, Gharbi et al. 2017). The SSM runs over time on those
  parameters, one stream per cell, and outputs a correction ``(dA, db)``; the frame is corrected at full
  resolution by ``O = P + upsample(dA) I + upsample(db)``. P's own detail is kept untouched, so the
  output stays close to P, and the heavy lifting happens on ~1000 cells instead of 2 M pixels.
* **Difference form.** The SSM sees frame-to-frame *changes* of the parameters and statistics (plus the
  statistics themselves), so a linear SSM can represent "parameters minus their exponential average"
  -- the correction that removes the jitter -- and its input-dependent step size decides per cell how
  long to integrate: long where the scene is stable, short where content changes (motion, occlusion).
* **Processed-only mode.** Without I_t the guide is P_t itself (A is then ~identity and b ~0): the
  SSM reads the flicker from the cells' colour statistics and corrects with a per-cell colour gain/
  offset ``O = P + dA P + db``. The blend's flow then runs on P's luminance, the previous frame's matched
  to the current one's mean and spread first (:func:`match_brightness`), so a global brightness flicker is
  not taken for motion. The shipped weights switch that correction off (``config.processed_correction``) and
  widen this mode's blend gate (``streamssm.train.video.finish_processed_only``): on real footage the learned
  correction cost PSNR to P for little less flicker, and the narrow gate refused the blend where P flickers.
* **Brightness of the original.** Guided, the warped previous output is scaled by the original's local
  brightness change along the flow (:func:`guide_gain`), raised to how much the processed frame's brightness
  follows the original's (:func:`guide_elasticity`: under a gamma of 0.5, half as much), so a fade, a camera's
  auto-exposure or a light switched on comes through as the operator passes it on, instead of being held back like
  flicker. Processed-only one frame does not tell the two apart;
  two mostly do: where the output's lag behind P keeps its sign over two frames (a fade, not flicker) the warped
  previous output is brightened (or darkened) to make most of it up (:func:`fade_gain`), per cell. "A frame ago"
  is the last frame that differed from this one (:func:`fade_reference`): a repeated frame is no second look.
  A picture held for several frames is compared with its copy again.
* **Exposure lock** (``config.exposure_lock``, off in the shipped weights): the blend leaves a global brightness
  flicker wherever the content moves, since it blends little there; the lock scales each whole frame towards a running
  average of its brightness (guided: of its brightness over the original's, so that the original's own changes come
  through) before the blend (:func:`exposure_gain`).
* **Scene cuts** are detected from the guide's coarse thumbnail (correlation between consecutive
  frames) and reset the stream's state exactly, in the step and in the parallel scan alike.
* **Motion.** The state is per cell and holds operator parameters, which are spatially smooth, so
  modest motion (a few pixels per frame against cells of ~30 px) costs little; cells whose content
  changes are forgotten through the selective step size. There is no explicit state warping yet.

State (explicit, a flat tuple, first dim = stream b): ``prev_feat (b, 12+6, gh, gw)`` (last parameters
and cell means), ``prev_thumb (b, 3, gh, gw)``, ``has_prev (b,)`` (0: no previous frame; 1: it was processed-only;
2: it was guided, so ``prev_luma`` is the original's), ``prev_out (b, 3, H, W)``, ``prev_luma (b, 1, hf, wf)``
(the flow's luminance of the previous guide), ``prev_ref (b, 3, gh, gw)`` and ``prev_repeats (b, 1, gh, gw)`` (the
processed cell means the fade gain compares with and how many times in a row the picture was repeated,
:func:`fade_reference`), ``prev_levels (b, 3)`` (the exposure lock's average, :func:`exposure_gain`, then the running
sums of :func:`guide_elasticity`), then one SSM state
``(b, gh*gw, h, p, n)`` per layer. It depends on the grid size, so a
resolution change starts over.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from streamssm.ssm import RMSNorm, SSMBlock
from streamssm.stream import state_by_keyword

N_PARAMS = 12  # 3x3 A (minus identity) and b
N_OUT = N_PARAMS + 1  # ... and the logit of the temporal blend weight
N_FEATURES = 2 * N_PARAMS + 12 + 3


@dataclass
class VideoSSMConfig:
    d_model: int = 32
    n_layers: int = 2
    expand: int = 2
    d_state: int = 16
    headdim: int = 16
    cell_px: int = 32  # grid cell size in full-resolution pixels (the same statistics at any resolution)
    pre: int = 4  # moments are computed on a ``pre`` x downsampled frame
    flow_levels: int = 5  # pyramid levels of the flow (the coarsest at 1/16 of the flow resolution)
    flow_window: int = 7  # Lucas-Kanade window of the flow, in flow-resolution pixels (flow runs at 1/2 resolution)
    flow_smooth: int = 9  # window of the flow's confidence-weighted smoothing, likewise
    blend_init: float = 1.5  # initial logit of the temporal blend weight (sigmoid -> 0.82)
    guided_correction: bool = True  # apply the per-cell colour correction (dA, db) in guided mode too
    processed_correction: bool = True  # ... and processed-only (off: that mode is the temporal blend alone)
    blend_gain: float = 1.0  # scale of the temporal blend weight where the content moves (set by calibrate_blend)
    still_px: float = 0.0  # flow (full-res px) under which the guide counts as still: gain -> 1 there; 0: off
    ghost_res: float = 0.0  # flow residual at which a ghost guard cuts the blend to 1/e (blend_confidence); 0: off
    fade_follow: float = 1.0  # processed-only: share of a lasting brightness lag made up a frame (fade_gain); 0: off
    fade_shrink: float = 0.15  # ... a lag (log brightness) well under this is taken for flicker and mostly left
    exposure_lock: float = 0.0  # weight of the current frame in the exposure lock's average (exposure_gain); 0: off
    eps: float = 1e-3  # ridge of the local affine fit (variance units, [0, 1] colour)
    cut_corr: float = 0.3  # consecutive-thumbnail correlation under which a frame is a scene cut
    backend: str = "auto"

    # The range of each number a weights file may set, both ends included (:meth:`check`): where the model runs and
    # gives finite frames, not where it is useful. The SSM's sizes are checked for every model by the loader.
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "cell_px": (2, 8192),  # the grid's cells are 2 x 2 pixels at least: a 1-pixel frame holds none
        "pre": (1, 8192),
        "flow_levels": (1, 8192),  # and few enough for the smallest frame: check
        "flow_window": (1, 8192),  # odd: check
        "flow_smooth": (1, 8192),
        "blend_gain": (0.0, 100.0),  # 0.6 shipped; the blend weight it scales is clamped to 1
        "fade_follow": (0.0, 1.0),  # a share of the lag
        "fade_shrink": (0.0, 10.0),  # log brightness; cell lags are within about 4
        "exposure_lock": (0.0, 1.0),  # as the filter's argument
        "eps": (1e-6, 1.0),  # a ridge: 0 leaves a flat cell's fit singular; colour variances are at most 0.25
        "cut_corr": (-1.0, 1.0),  # a correlation: -1 never cuts, 1 always
    }

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self) -> None:
        """ValueError naming the first field outside :attr:`LIMITS` or the rules below, and the values it may take.
        What a weights file may hold: the loader checks it (:func:`streamssm.weights.build_config`, which puts the
        file's name first); headdim=0, a flow window of 0 and an exposure lock of 5 failed at the first steps instead,
        as a ZeroDivisionError, an OpenCV assertion and an error naming neither the file nor the field."""
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"config field {name!r} is {getattr(self, name)!r}, expected {expected}")

        for name, (lo, hi) in self.LIMITS.items():
            if not lo <= getattr(self, name) <= hi:
                raise bad(name, f"a value in [{lo}, {hi}]")
        for name in ("still_px", "ghost_res"):  # a positive one divides: near 0 that is inf, and NaN where 0 / 0
            if getattr(self, name) != 0 and not 1e-3 <= getattr(self, name) <= 1e3:
                raise bad(name, "0 (off) or a value in [0.001, 1000]")
        for name in ("flow_window", "flow_smooth"):  # a box of even width has no centre pixel: its output is one larger
            if getattr(self, name) % 2 == 0:
                raise bad(name, "an odd window width")
        # the pyramid halves the flow's luminance per level: the smallest frame taken (cell_px a side) must keep a
        # pixel at the coarsest, at the flow's resolution (half the frame's from 64 px up)
        least = min(flow_shape(s, s, self)[1] for s in (self.cell_px, max(self.cell_px, 64)))
        if least >> (self.flow_levels - 1) < 1:
            raise bad("flow_levels", f"at most {least.bit_length()}: the smallest frame the filter takes (cell_px="
                      f"{self.cell_px} a side) is {least} px at the flow's resolution, and each level halves it")


def grid_shape(h: int, w: int, cfg: VideoSSMConfig) -> tuple[int, int, int, int]:
    """(pre, cell, gh, gw): downsampling factor, cell size in downsampled pixels, grid size.

    Cells have a fixed size in pixels (``cell_px``), so their statistics do not depend on the
    resolution: a 1080p frame has a 33 x 60 grid, a 256 px training crop an 8 x 8 one."""
    pre = max(1, min(cfg.pre, min(h, w) // 16))
    cell = max(2, cfg.cell_px // pre)
    return pre, cell, max(1, (h // pre) // cell), max(1, (w // pre) // cell)


def check_frame_size(h: int, w: int, cfg: VideoSSMConfig) -> None:
    """ValueError unless an h x w frame holds at least one statistics cell (``cfg.cell_px`` pixels a side)."""
    if h < cfg.cell_px or w < cfg.cell_px:
        raise ValueError(f"frame is {w}x{h} pixels; the video filter needs at least {cfg.cell_px}x{cfg.cell_px} "
                         f"(one {cfg.cell_px}-pixel statistics cell)")


def check_step_frames(P: Any, I: Any = None) -> None:
    """TypeError/ValueError naming the argument unless ``P`` (and ``I``, when given) are (B, 3, H, W) floating-point
    tensors of one shape, what :meth:`VideoSSM.step` takes (a numpy image, one frame without its B axis or a uint8
    tensor failed deep inside it, or as a complaint about a (B, T, 3, H, W) layout step does not take). Python checks
    of type, shape and dtype: no value is read (no device sync), and a traced or exported graph gets no op from them."""
    for name, x in (("P (processed frames)", P), ("I (original frames)", I)):
        if x is None and name[0] == "I":
            continue
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch tensor (B, 3, H, W) float in [0, 1], got {type(x).__name__} "
                            "(an H x W x 3 uint8 image a: torch.from_numpy(a).permute(2, 0, 1)[None] / 255)")
        if x.dim() != 4 or x.shape[1] != 3:
            hint = f": one frame is {name[0]}[None]" if x.dim() == 3 and x.shape[0] == 3 else ""
            raise ValueError(f"{name} must be (B, 3, H, W), got {tuple(x.shape)}{hint}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point in [0, 1], got {x.dtype} (uint8: divide by 255)")
    if I is not None and I.shape != P.shape:
        raise ValueError(f"original frames {tuple(I.shape)} must match processed frames {tuple(P.shape)}")


HALF_FLOW_SIDE = 64  # the short side from which the flow runs at half resolution (and one export graph serves all)


def flow_shape(h: int, w: int, cfg: VideoSSMConfig) -> tuple[int, int, int]:
    """(div, hf, wf): the flow runs on a ``div`` x downsampled luminance (half resolution for frames of
    :data:`HALF_FLOW_SIDE` px and more); its pyramid (``flow_levels``) starts from there."""
    div = 2 if min(h, w) >= HALF_FLOW_SIDE else 1
    return div, h // div, w // div


def _box(x: Tensor, k: int) -> Tensor:
    return F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)


def _grad(x: Tensor) -> tuple[Tensor, Tensor]:
    """Central differences (replicate border) of (n, 1, h, w)."""
    px = F.pad(x, (1, 1, 0, 0), mode="replicate")
    py = F.pad(x, (0, 0, 1, 1), mode="replicate")
    return 0.5 * (px[..., 2:] - px[..., :-2]), 0.5 * (py[..., 2:, :] - py[..., :-2, :])


def lk_solve(sxx: Tensor, sxy: Tensor, syy: Tensor, sxe: Tensor, sye: Tensor, lam: float = 1e-4) -> tuple[Tensor, Tensor]:
    """The Lucas-Kanade 2x2 normal equations per pixel, ridge ``lam``: window moments of the gradients
    (xx, xy, yy) and of gradient x residual (xe, ye) -> the flow update (du, dv)."""
    a, b, d = sxx + lam, sxy, syy + lam
    det = a * d - b * b
    return (d * sxe - b * sye) / det, (a * sye - b * sxe) / det


FLOW_SHARP = 0.02  # residual scale of the flow smoothing's weights (luminance in [0, 1])


def smooth_flow(flow: Tensor, cur: Tensor, prev: Tensor, size: int, sharp: float = FLOW_SHARP) -> Tensor:
    """Confidence-weighted box average of ``flow`` over ``size`` x ``size`` windows: each pixel weighs
    ``exp(-r / sharp)``, r its 3 x 3 mean photometric residual ``|cur - warp(prev, flow)|``. Fills flat and
    occluded regions from well-matched neighbours (the densification step of DIS, Kroeger et al. 2016)."""
    wgt = torch.exp(-_box((cur - warp_backward(prev, flow)).abs(), 3) / sharp)
    return _box(flow * wgt, size) / (_box(wgt, size) + 1e-6)


def estimate_flow(cur: Tensor, prev: Tensor, levels: int = 5, iters: int = 1, window: int = 7, smooth: int = 9
                  ) -> tuple[Tensor, Tensor]:
    """Backward flow (t -> t-1) between luminance images (n, 1, h, w), in pixels of that resolution.

    Coarse to fine over a pyramid of ``levels`` 2x steps, starting from zero at the coarsest level (1/16 with
    5 levels: a 320 x 180 image is 20 x 11 there, and the 32 px the filter needs at least, 2 px). The count does
    not depend on the frame size, so one exported graph serves every resolution. At each level the flow from
    the level above is doubled and upsampled, refined by ``iters`` Lucas-Kanade steps
    (windowed least squares on the linearised brightness constancy, ``window`` x ``window``; Lucas & Kanade
    1981) and smoothed by :func:`smooth_flow`. Plain pools, pads and ``grid_sample``: it exports to
    ONNX/TensorRT. Returns the flow (n, 2, h, w) and the remaining 3 x 3 mean residual (n, 1, h, w).
    """
    pyr = [(cur, prev)]
    for _ in range(levels - 1):
        pyr.append((F.avg_pool2d(pyr[-1][0], 2), F.avg_pool2d(pyr[-1][1], 2)))
    flow = None
    for c, p in reversed(pyr):
        if flow is None:
            flow = torch.zeros(c.shape[0], 2, *c.shape[-2:], device=c.device, dtype=c.dtype)
        else:
            flow = F.interpolate(flow * 2.0, size=c.shape[-2:], mode="bilinear", align_corners=False)
        for _ in range(iters):
            wp = warp_backward(p, flow)
            gx, gy = _grad(wp)
            e = c - wp
            sxx, sxy, syy = _box(gx * gx, window), _box(gx * gy, window), _box(gy * gy, window)
            sxe, sye = _box(gx * e, window), _box(gy * e, window)
            flow = flow + torch.cat(lk_solve(sxx, sxy, syy, sxe, sye), 1).clamp(-2.0, 2.0)
        flow = smooth_flow(flow, c, p, smooth)
    res = _box((cur - warp_backward(prev, flow)).abs(), 3)
    return flow, res


def match_brightness(prev: Tensor, cur: Tensor) -> Tensor:
    """``prev`` luminance (n, 1, h, w) with its mean and standard deviation over the frame set to ``cur``'s. The
    processed-only flow guide: there the flow runs on the processed frames themselves, and their global
    exposure/contrast flicker would read as motion and as a flow residual (a low blend confidence exactly where
    the flicker is). Guided, the original does not flicker and is used as it is."""
    dims = (-2, -1)
    mc, mp = cur.mean(dims, keepdim=True), prev.mean(dims, keepdim=True)
    sc = (cur - mc).square().mean(dims, keepdim=True).sqrt()
    sp = (prev - mp).square().mean(dims, keepdim=True).sqrt()
    return (prev - mp) * (sc / (sp + 1e-4)) + mc


def blend_confidence(res: Tensor, flow: Tensor, log_conf: Tensor, cfg: VideoSSMConfig) -> Tensor:
    """The temporal blend's confidence at flow resolution, (n, 1, hf, wf): ``exp(-res / exp(log_conf))`` (how well
    the flow explains the guide; ``res`` the flow's residual) times ``cfg.blend_gain`` where the content moves.
    Where the guide holds still (flow well under ``cfg.still_px`` full-resolution pixels; ``flow`` (n, 2, hf, wf)
    in those pixels) the gain fades to 1: there any change of the processed frame is the operator's flicker, and
    the warp is the identity, so a long memory blurs nothing. The one definition for every step path.

    ``cfg.ghost_res`` > 0 adds a ghost guard: a factor ``exp(-(r / ghost_res)^2)``, ``r`` the residual's 3 x 3
    maximum. The learned confidence falls slowly with the residual (1/e at ``exp(log_conf)``, about 0.57 for the
    shipped weights), so where the flow misses a thin or fast object (a lamp post from a moving car), the old
    output is still blended in at a third to a half and leaves a trail of copies behind it. The guard cuts the
    blend there; where the flow holds (r well under ``ghost_res``) it changes nearly nothing
    (``benchmarks/video_ghosting.py``)."""
    conf = torch.exp(-res / torch.exp(log_conf.float()))
    if cfg.ghost_res > 0:
        conf = conf * torch.exp(-(F.max_pool2d(res, 3, 1, 1) / cfg.ghost_res).square())
    gain = cfg.blend_gain
    if gain == 1.0:
        return conf
    if cfg.still_px <= 0:
        return conf * gain
    still = torch.exp(-flow.square().sum(1, keepdim=True) / cfg.still_px**2)
    return conf * (gain + (1.0 - gain) * still)


GAIN_BOX = 15  # window (flow-resolution pixels: ~30 full-resolution ones at 64 px and up) of the guide's brightness ratio
GAIN_EPS = 0.02  # added to both box means of the ratio (dark regions change in absolute, not relative, steps)
GAIN_RANGE = (0.5, 2.0)


def guide_gain(cur: Tensor, prev: Tensor, flow: Tensor, prev_guided: Tensor | None = None, box=None, warp=None
               ) -> Tensor:
    """Guided: the local brightness change of the guide along the flow, ``box(cur) / box(warp(prev, flow))`` over
    ``GAIN_BOX`` windows (``GAIN_EPS`` added to both, clamped to ``GAIN_RANGE``), (n, 1, hf, wf). ``cur``, ``prev``:
    the guide's flow luminance (n, 1, hf, wf); ``flow``: the backward flow in those pixels.

    The blend multiplies the warped previous output by it (and clamps to [0, 1]), so the output follows what the
    original does -- a fade, a camera's auto-exposure, a light switched on over part of the scene -- instead of
    holding the old brightness where the scene is still (where the still-guide rule keeps the blend's full
    weight). The original does not flicker, so this carries none of the operator's flicker; processed-only there
    is no such guide (:func:`fade_gain` does what P alone allows). Local, not one ratio for the frame: a global
    ratio brightens the unlit part of a scene along with a lit part (measured: +21% on the unlit half of a still
    shot, against +1.6% with this window; ``benchmarks/video_fade.py``). ``prev_guided`` (n,) bool: False where
    ``prev`` is not the original's luminance (:func:`prev_was_guided`): the gain is 1 there; None: all are.
    ``box``/``warp``: the implementations of :func:`_box` and :func:`warp_backward` to use (the CPU step passes its
    own)."""
    box = _box if box is None else box
    warp = warp_backward if warp is None else warp
    num = box(cur, GAIN_BOX).clamp_min(0.0) + GAIN_EPS  # clamp_min: no 0/0 from out-of-range (negative) input
    gain = (num / (box(warp(prev, flow), GAIN_BOX).clamp_min(0.0) + GAIN_EPS)).clamp(*GAIN_RANGE)
    if prev_guided is not None:
        gain = torch.where(prev_guided[:, None, None, None], gain, torch.ones_like(gain))
    return gain


def _log_luma(m: Tensor) -> Tensor:
    """log(luminance + ``GAIN_EPS``) of cell means (n, 3, gh, gw) -> (n, 1, gh, gw): the brightness scale of
    :func:`fade_gain` and :func:`fade_reference` (out-of-range negative input clamped to 0 first)."""
    return torch.log(_luma(m).clamp_min(0.0) + GAIN_EPS)


def minmod(a: Tensor, b: Tensor) -> Tensor:
    """The smaller in magnitude of ``a`` and ``b`` where they agree in sign, else 0 (elementwise)."""
    return torch.where(a * b > 0, torch.sign(a) * torch.minimum(a.abs(), b.abs()), torch.zeros_like(a))


def fade_gain(mp: Tensor, mp_prev: Tensor, mo_prev: Tensor, follow: float, shrink: float) -> Tensor:
    """Processed-only: the per-cell brightness gain (n, 1, gh, gw) on the warped previous output, from the cell
    means (n, 3, gh, gw) of the processed frame ``mp``, of the previous processed frame ``mp_prev`` (in practice
    :func:`fade_reference`'s: the last one that differed from ``mp``) and of the previous output ``mo_prev``.

    Without the original, one frame does not tell a fade from the operator's brightness flicker; two do, mostly:
    the output's lag behind the processed frame, ``b = log P_{t-1} - log O_{t-1}`` a frame ago and
    ``a = log P_t - log O_{t-1}`` now, keeps its sign through a fade (and after it, until the output has caught up)
    but flips at random through flicker around a steady level. The gain makes up ``follow`` of the smaller of the
    two lags where they agree (:func:`minmod`; nothing where they do not), shrunk by ``|m| / (|m| + shrink)`` so that
    a lag of the flicker's size (a few % of log brightness) is mostly left to the blend: ``exp(follow m |m| /
    (|m| + shrink))``, clamped to ``GAIN_RANGE``. Cell means of luminance, ``GAIN_EPS`` added (as
    :func:`guide_gain`). Measured on fades and on exposure jitter: ``benchmarks/video_fade.py``."""
    lo = _log_luma(mo_prev)
    m = minmod(_log_luma(mp) - lo, _log_luma(mp_prev) - lo)
    if shrink > 0:
        m = m * m.abs() / (m.abs() + shrink)
    return torch.exp(follow * m).clamp(*GAIN_RANGE)


REPEAT_TOL = 1e-3  # log cell luminance: a cell of P this close to the previous frame's shows that frame again
HOLD_REPEATS = 4  # ... and one shown again this many times in a row is a held picture, not a repeated frame


def fade_reference(mp: Tensor, mp_prev: Tensor, ref_prev: Tensor, repeats_prev: Tensor, fresh: Tensor
                   ) -> tuple[Tensor, Tensor]:
    """The processed cell means (n, 3, gh, gw) :func:`fade_gain` takes the lag "a frame ago" from, and the count of
    repeats (n, 1, gh, gw; it stops at ``HOLD_REPEATS``, so the state stays bounded), both kept in the state for the
    next frame. The reference is the previous frame's means ``mp_prev``, except in cells where the frame ``mp``
    repeats it (log luminance within ``REPEAT_TOL``), which keep the reference they had, ``ref_prev`` -- until the
    picture has been repeated ``HOLD_REPEATS`` times in a row (``repeats_prev`` counts them): a picture held that
    long is compared with its own copy again. ``fresh`` (n,) bool (a stream's first frame, a cut): ``mp`` itself, no
    repeats (so a copy of the frame right after a cut is still compared with it: there is no earlier frame to
    take).

    A repeated frame (a frame-rate conversion by repetition, animation on twos, a camera repeating a frame) is no
    second look at the lag: compared with its own copy, any flicker level reads as a lag that kept its sign (with
    every frame shown twice under an 8% exposure jitter a still shot kept 0.320 of the flicker that way, against
    0.119 on distinct frames and 0.154 with this reference; ``benchmarks/video_fade.py``, session 13). A fade that
    ends on a still, noiseless picture is followed again once the picture is held. Computed in every mode, so a
    stream that turns processed-only has it ready."""
    repeat = (_log_luma(mp) - _log_luma(mp_prev)).abs() < REPEAT_TOL
    repeats = torch.where(repeat, (repeats_prev + 1.0).clamp(max=float(HOLD_REPEATS)), torch.zeros_like(repeats_prev))
    ref = torch.where(repeat & (repeats < HOLD_REPEATS), ref_prev, mp_prev)
    f = fresh[:, None, None, None]
    return torch.where(f, mp, ref), torch.where(f, torch.zeros_like(repeats), repeats)


def prev_was_guided(state) -> Tensor:
    """(b,) bool: whether each stream's previous frame was guided, i.e. its flow luminance in the state is the
    original's, which :func:`guide_gain` compares the current original with. After a processed-only frame it is
    the processed frame's, whose brightness is the operator's: then there is no gain for the next frame."""
    return state[2] > 1.5


EXPOSURE_FADE = 0.02  # log brightness a frame: guided, an original changing faster than this releases the lock
EXPOSURE_JUMP = 0.3  # log brightness: a frame this far from the average starts it over (a light, no flicker)


def _frame_log_luma(m: Tensor) -> Tensor:
    """Cell means (..., 3, gh, gw) -> (...): each frame's log mean brightness (``GAIN_EPS`` added, as
    :func:`_log_luma`), what :func:`exposure_gain` and :func:`guide_elasticity` follow."""
    flat = m.reshape(-1, *m.shape[-3:])
    return _log_luma(flat.mean((-2, -1), keepdim=True))[:, 0, 0, 0].reshape(m.shape[:-3])


def _restarts(fresh: Tensor, guided: bool, mode_prev: Tensor) -> Tensor:
    """(b, t) bool: the frames where a stream's running brightness records (:func:`exposure_gain`,
    :func:`guide_elasticity`) start over: ``fresh`` ones (a stream's first, a cut), and the clip's first where the
    frame before it was in the other mode (``mode_prev`` (b,): the state's ``has_prev``, 2 guided, 1
    processed-only), whose levels measure something else."""
    changed = (mode_prev <= 1.5) if guided else (mode_prev > 1.5)
    return torch.cat([fresh[:, :1] | changed[:, None], fresh[:, 1:]], 1)


def exposure_gain(g: Tensor, p: Tensor, g_prev: Tensor | None, level_prev: Tensor, first: Tensor, guided: bool,
                  alpha: float) -> tuple[Tensor, Tensor]:
    """The exposure lock: a gain for each whole frame that takes out the fast part of a global brightness flicker,
    which the per-pixel blend leaves wherever the content moves (it blends little there).

    A frame's level is its log mean brightness (``p`` (b, t), :func:`brightness_records`'), guided minus the
    original's (``g``), so that the level is the operator's gain; processed-only P's own, so a lasting change of
    brightness is followed only as fast as the average moves. The average runs from ``level_prev`` (b,) (the
    state's) as ``level <- level + a (r - level)`` with ``a = alpha``, except guided while the original's own
    brightness moves by ``d = g - g_prev`` (``g_prev``: each frame's predecessor's; None processed-only): there
    ``a = 1 - (1 - alpha) exp(-|d| / EXPOSURE_FADE)``, near 1 in a fade, so that an operator whose gain depends on
    the brightness (a gamma, a tone curve) is followed through the original's fades and exposure changes instead of
    being held to its old gain. The ``first`` (b, t) frames (:func:`_restarts`) start the average
    at their own level, and so does a frame more than ``EXPOSURE_JUMP`` from it (a light switched off, an exposure
    step: not flicker, which would otherwise be brightened back ~2.7x and clipped). ``alpha`` in [0, 1]: 0 off,
    smaller steadier, 1 follows every frame (as off). Returns the gains (b, t) = exp(average - level of the frame)
    (1 when off) and the last average (b,). ValueError for an ``alpha`` outside [0, 1] (a config set by hand)."""
    if not 0.0 <= alpha <= 1.0:  # also NaN
        raise ValueError(f"exposure_lock must be 0 (off) or a weight up to 1 such as 0.3, got {alpha}")
    on = alpha > 0
    r = p - g if guided else p
    a = torch.full_like(r, alpha if on else 1.0)
    if guided and on:
        a = 1.0 - (1.0 - alpha) * torch.exp(-(g - g_prev).abs() / EXPOSURE_FADE)
    level, gains = level_prev, []
    for i in range(r.shape[1]):  # off: the average is the level itself, ready for a lock switched on mid-stream
        jump = (r[:, i] - level).abs() > EXPOSURE_JUMP if on else first[:, i]
        level = torch.where(first[:, i] | jump, r[:, i], level + a[:, i] * (r[:, i] - level))
        gains.append(torch.exp(level - r[:, i]) if on else torch.ones_like(level))
    return torch.stack(gains, 1), level


ELASTIC_KEEP = 0.7  # weight of the past in guide_elasticity's running sums (a memory of about three frames)
ELASTIC_PRIOR = 0.01  # (log brightness)^2 added to both sums: the exponent stays near 1 until the original moves
ELASTIC_RANGE = (0.0, 1.5)
ELASTIC_SNAP = 0.02  # an exponent this close to 1 is 1: the gain raised to 0.98 moves a 10% brightness step by 0.2%


def guide_elasticity(g: Tensor, p: Tensor, g_prev: Tensor, p_prev: Tensor, sums_prev: Tensor, first: Tensor
                     ) -> tuple[Tensor, Tensor]:
    """Guided: the exponent ``e`` (b, t) the blend raises :func:`guide_gain` to -- how the processed frame's
    brightness follows the original's.

    The gain is the original's brightness change along the flow, and P changes by as much only under an operator
    that scales with its input. Under a gamma (P = I^0.5) P changes by its square root, under a histogram
    equalisation hardly at all: there the gain ran ahead of P through the original's fades (7% too bright under the
    gamma, 14% under the equalisation on a moving shot), and on a still shot, whose blend has a long memory, stayed
    ahead for seconds (still 3.4% after 36 frames). ``e`` is fitted from the clip itself: per frame the changes of log
    mean brightness of the original, ``d_i = g - g_prev``, and of P, ``d_p = p - p_prev`` (all (b, t), each frame's
    and its predecessor's, :func:`brightness_records`'), accumulated as
    ``s_ip <- keep s_ip + d_i d_p`` and ``s_ii <- keep s_ii + d_i^2`` (``ELASTIC_KEEP``; from ``sums_prev`` (b, 2),
    the state's), and ``e = (s_ip + prior) / (s_ii + prior)`` clamped to ``ELASTIC_RANGE``. The operator's flicker
    in ``d_p`` does not follow ``d_i``, so it averages out; the prior (``ELASTIC_PRIOR``) keeps ``e`` near 1 until the
    original has moved by about a fade's step (0.1 in log), which is also when ``e`` matters: with the original
    still, the gain is 1 whatever ``e`` is. An ``e`` within ``ELASTIC_SNAP`` of 1 is 1 (so the CPU step skips the
    full-resolution power on the frames of a clip without fades: 2 ms of a 720p frame). One number per frame: a local
    operator's response is taken as its frame average. ``first`` (b, t) (:func:`_restarts`) start the sums over
    (e = 1). Returns ``e`` and the last sums (b, 2). Measured: ``benchmarks/video_fade.py``."""
    di, dp = g - g_prev, p - p_prev
    sums, es = sums_prev, []
    for i in range(di.shape[1]):
        new = ELASTIC_KEEP * sums + torch.stack([di[:, i] * dp[:, i], di[:, i] * di[:, i]], 1)
        sums = torch.where(first[:, i, None], torch.zeros_like(new), new)
        e = ((sums[:, 0] + ELASTIC_PRIOR) / (sums[:, 1] + ELASTIC_PRIOR)).clamp(*ELASTIC_RANGE)
        es.append(torch.where((e - 1.0).abs() < ELASTIC_SNAP, torch.ones_like(e), e))
    return torch.stack(es, 1), sums


def brightness_records(means: Tensor, state, fresh: Tensor, guided: bool, alpha: float
                       ) -> tuple[Tensor, Tensor | None, Tensor]:
    """A clip's whole-frame brightness records, from the state's (``state[7]``: the exposure lock's average and the
    guide elasticity's sums), its cell means (``state[0]``) and mode (``state[2]``): the exposure lock's gains (b, t)
    (:func:`exposure_gain`), guided the exponents on the guide's gain (b, t) (:func:`guide_elasticity`; None
    processed-only, where the sums rest at 0) and the new ``state[7]`` (b, 3). ``means`` (b, t, 6, gh, gw) float32,
    ``fresh`` (b, t). The one place both steps read and write ``state[7]``, and where the frames' log mean brightness
    (guide's and P's, and guided their predecessors') is taken, once for both records."""
    first = _restarts(fresh, guided, state[2])
    g, p = _frame_log_luma(means[:, :, :3]), _frame_log_luma(means[:, :, 3:6])
    g_prev = p_prev = None
    if guided:  # each frame's predecessor: the clip's first from the state's cell means (guide's, then P's)
        g_prev, p_prev = (torch.cat([_frame_log_luma(state[0][:, N_PARAMS + k : N_PARAMS + k + 3])[:, None],
                                     x[:, :-1]], 1) for k, x in ((0, g), (3, p)))
    egain, level = exposure_gain(g, p, g_prev, state[7][:, 0], first, guided, alpha)
    elast, sums = None, torch.zeros_like(state[7][:, 1:])
    if guided:
        elast, sums = guide_elasticity(g, p, g_prev, p_prev, state[7][:, 1:], first)
    return egain, elast, torch.cat([level[:, None], sums], 1)


def _luma(x: Tensor) -> Tensor:
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def warp_backward(x: Tensor, flow: Tensor) -> Tensor:
    """Sample ``x`` (n, c, h, w) at p + flow(p) (bilinear, border clamp); flow (n, 2, h, w) pixels."""
    n, _, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=x.dtype)
    xs = torch.arange(w, device=x.device, dtype=x.dtype)
    gx = (xs[None, None, :] + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys[None, :, None] + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    return F.grid_sample(x, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="border", align_corners=True)


def _inv3_sym(s: Tensor) -> Tensor:
    """Inverse of symmetric 3x3 matrices given as (..., 6) = (xx, xy, xz, yy, yz, zz) -> (..., 3, 3).

    Explicit adjugate / determinant: exports to ONNX/TensorRT as plain arithmetic."""
    a, b, c, d, e, f = s.unbind(-1)
    A = d * f - e * e
    B = -(b * f - c * e)
    C = b * e - c * d
    D = a * f - c * c
    E = -(a * e - b * c)
    Fm = a * d - b * b
    det = a * A + b * B + c * C
    inv = torch.stack([A, B, C, B, D, E, C, E, Fm], -1) / det[..., None]
    return inv.reshape(*s.shape[:-1], 3, 3)


def _pair_product(x: Tensor) -> Tensor:
    """(n, 3, ...) -> (n, 6, ...): the channel products x_i x_j for (i, j) = 00, 01, 02, 11, 12, 22.

    Built from slices, not ``x[:, [0, 0, 0, 1, 1, 2]]``: list indexing copies an index tensor from the
    host, which is illegal inside CUDA-graph capture."""
    left = torch.cat([x[:, 0:1], x[:, 0:1], x[:, 0:1], x[:, 1:2], x[:, 1:2], x[:, 2:3]], 1)
    right = torch.cat([x[:, 0:3], x[:, 1:3], x[:, 2:3]], 1)
    return left * right


class VideoSSM(nn.Module):
    """The video filter network; see the module docstring for the design.

    ``forward(P (B,T,3,H,W), I (B,T,3,H,W) | None, state | None, reset (B,T) | None, strength=1.)
    -> (O (B,T,3,H,W), state)``; ``step(P (B,3,H,W), I | None, state, strength)``. Frames are float
    in [0, 1]; the output is clamped to [0, 1].

    >>> import torch
    >>> m = VideoSSM(VideoSSMConfig(d_model=16, n_layers=1, backend="torch"))
    >>> P = torch.rand(1, 4, 3, 72, 96)
    >>> O, st = m(P)
    >>> O.shape
    torch.Size([1, 4, 3, 72, 96])
    """

    def __init__(self, config: VideoSSMConfig | None = None):
        super().__init__()
        self.config = cfg = config or VideoSSMConfig()
        d = cfg.d_model
        self.embed = nn.Linear(N_FEATURES, d)
        self.blocks = nn.ModuleList(
            SSMBlock(d, expand=cfg.expand, d_state=cfg.d_state, headdim=cfg.headdim, backend=cfg.backend, validate=False)
            for _ in range(cfg.n_layers)
        )
        # spatial context between the temporal blocks: a 3x3 conv over the grid, starting at zero
        self.mixers = nn.ModuleList(nn.Conv2d(d, d, 3, padding=1) for _ in range(cfg.n_layers))
        for m in self.mixers:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        self.norm = RMSNorm(d)
        self.head = nn.Linear(d, N_OUT)
        nn.init.zeros_(self.head.weight)  # start with no colour correction ...
        with torch.no_grad():
            self.head.bias.zero_()
            self.head.bias[N_PARAMS] = cfg.blend_init  # ... and MC-EMA-like temporal blending
        # Width of the per-pixel gate that refuses to blend where the warped previous output disagrees
        # with the colour-corrected frame. Guided, the flow's residual (computed on the
        # flicker-free original) already flags occlusions, so the gate starts wide (exp(0) = 1);
        # processed-only it is the main occlusion test and starts narrow (exp(-2) ~ 0.14).
        self.log_gate = nn.Parameter(torch.tensor([0.0, -2.0]))  # [guided, processed-only]
        # scale of the flow residual (luminance) above which a pixel counts as occluded / mismatched
        self.log_conf = nn.Parameter(torch.tensor(-2.3))  # exp(-2.3) ~ 0.1

    # ----------------------------------------------------------------------------------- state
    N_FIXED = 8

    def init_state(self, batch: int, h: int, w: int, device=None) -> tuple[Tensor, ...]:
        """A fresh state for ``batch`` streams of h x w frames (all zeros, float32)."""
        _, _, gh, gw = grid_shape(h, w, self.config)
        _, hf, wf = flow_shape(h, w, self.config)
        z = lambda *s: torch.zeros(*s, device=device, dtype=torch.float32)  # noqa: E731
        fixed = (z(batch, N_PARAMS + 6, gh, gw), z(batch, 3, gh, gw), z(batch), z(batch, 3, h, w), z(batch, 1, hf, wf),
                 z(batch, 3, gh, gw), z(batch, 1, gh, gw), z(batch, 3))
        return fixed + tuple(z(batch, gh * gw, blk.ssm.nheads, blk.ssm.headdim, blk.ssm.d_state) for blk in self.blocks)

    def state_frame(self, state) -> tuple[int, int, int]:
        """(streams, h, w) a state was made for."""
        return int(state[3].shape[0]), int(state[3].shape[-2]), int(state[3].shape[-1])

    # -------------------------------------------------------------------------------- features
    def cell_stats(self, P: Tensor, G: Tensor) -> tuple[Tensor, Tensor]:
        """Per-cell local affine fit P ~ A G + b and means. P, G (n, 3, H, W) -> params (n, 12, gh, gw),
        means (n, 6, gh, gw) = (mean G, mean P)."""
        with torch.autocast(P.device.type, enabled=False):  # moments and the 3x3 solve need fp32
            return self._cell_stats(P.float(), G.float())

    def _cell_stats(self, P: Tensor, G: Tensor) -> tuple[Tensor, Tensor]:
        n, _, h, w = P.shape
        pre, cell, gh, gw = grid_shape(h, w, self.config)
        if pre > 1:
            P = F.avg_pool2d(P, pre)
            G = F.avg_pool2d(G, pre)
        return self.fit_cells(P, G, cell, gh, gw)

    def cell_means(self, x: Tensor) -> Tensor:
        """Per-cell means (n, c, gh, gw) of full-resolution frames (n, c, H, W), over :meth:`cell_stats`'s cells."""
        pre, cell, gh, gw = grid_shape(x.shape[-2], x.shape[-1], self.config)
        if pre > 1:
            x = F.avg_pool2d(x, pre)
        return F.avg_pool2d(x[..., : gh * cell, : gw * cell], cell)

    def fit_cells(self, P: Tensor, G: Tensor, cell: int, gh: int, gw: int) -> tuple[Tensor, Tensor]:
        """The per-cell fit of :meth:`cell_stats` on frames already downsampled ``pre`` x (fp32): cells of
        ``cell`` x ``cell`` pixels, the first ``gh`` x ``gw`` of them. (The CPU step pools its own way.)"""
        cfg = self.config
        n = P.shape[0]
        P, G = P[..., : gh * cell, : gw * cell], G[..., : gh * cell, : gw * cell]
        pool = lambda x: F.avg_pool2d(x, cell)  # noqa: E731
        mg, mp = pool(G), pool(P)
        gg = pool(_pair_product(G)) - _pair_product(mg)  # (n, 6, gh, gw) covariance of G
        pg = pool((P[:, :, None] * G[:, None]).reshape(n, 9, *P.shape[-2:])).reshape(n, 3, 3, gh, gw)
        pg = pg - mp[:, :, None] * mg[:, None]  # (n, 3, 3, gh, gw) cross-covariance
        eye = torch.tensor([1.0, 0, 0, 1, 0, 1], device=P.device, dtype=P.dtype)[None, :, None, None]
        inv = _inv3_sym((gg + cfg.eps * eye).permute(0, 2, 3, 1))  # (n, gh, gw, 3, 3)
        A = torch.einsum("nijhw,nhwjk->nhwik", pg, inv)
        b = mp.permute(0, 2, 3, 1) - torch.einsum("nhwij,nhwj->nhwi", A, mg.permute(0, 2, 3, 1))
        A = A - torch.eye(3, device=P.device, dtype=P.dtype)
        params = torch.cat([A.reshape(n, gh, gw, 9), b], -1).permute(0, 3, 1, 2)
        return params, torch.cat([mg, mp], 1)

    @staticmethod
    def _corr(a: Tensor, b: Tensor) -> Tensor:
        """Pearson correlation of two (..., 3, gh, gw) thumbnails over cells and channels -> (...)."""
        a = a.flatten(-3)
        b = b.flatten(-3)
        a = a - a.mean(-1, keepdim=True)
        b = b - b.mean(-1, keepdim=True)
        return (a * b).sum(-1) / ((a.square().sum(-1) * b.square().sum(-1)).sqrt() + 1e-6)

    def _features(self, P: Tensor, G: Tensor, guided: bool, state, reset: Tensor | None):
        """Everything before the SSM for a clip (b, t, 3, H, W). Returns features (b, t, gh, gw, F),
        the reset mask actually applied (b, t), the new fixed state and the cell means (b, t, 6, gh, gw)."""
        b, t = P.shape[:2]
        params, means = self.cell_stats(P.flatten(0, 1), G.flatten(0, 1))
        gh, gw = params.shape[-2:]
        means = means.reshape(b, t, 6, gh, gw)
        return self._stat_features(params.reshape(b, t, N_PARAMS, gh, gw), means, guided, state, reset) + (means,)

    def _stat_features(self, params: Tensor, means: Tensor, guided: bool, state, reset: Tensor | None):
        """:meth:`_features` from the cell statistics params (b, t, 12, gh, gw) and means (b, t, 6, gh, gw)."""
        b, t = params.shape[:2]
        thumb = means[:, :, :3]
        prev_feat, prev_thumb, has_prev = state[:3]
        cur = torch.cat([params, means], 2)  # (b, t, 18, gh, gw)
        prev = torch.cat([prev_feat[:, None], cur[:, :-1]], 1)
        pthumb = torch.cat([prev_thumb[:, None], thumb[:, :-1]], 1)
        had = torch.cat([has_prev[:, None] > 0, torch.ones(b, t - 1, dtype=torch.bool, device=params.device)], 1)
        cut = (self._corr(thumb, pthumb) < self.config.cut_corr) & had
        fresh = ~had | cut
        if reset is not None:
            fresh = fresh | reset
        delta = torch.where(fresh[:, :, None, None, None], torch.zeros_like(cur), cur - prev)
        flag = torch.ones_like(thumb[:, :, :1])
        feats = torch.cat(
            [
                params * 4,
                (delta[:, :, :N_PARAMS] * 20).clamp(-20, 20),
                means * 2 - 1,
                (delta[:, :, N_PARAMS:] * 20).clamp(-20, 20),
                flag * float(guided),
                flag * fresh[:, :, None, None, None],
                (means[:, :, :3] - means[:, :, 3:]).abs().mean(2, keepdim=True) * 4,
            ],
            2,
        )
        new_fixed = (cur[:, -1], thumb[:, -1], torch.full_like(has_prev, 2.0 if guided else 1.0))
        return feats.permute(0, 1, 3, 4, 2), fresh, new_fixed

    # ---------------------------------------------------------------------------------- network
    def corrects(self, guided: bool) -> bool:
        """Whether the per-cell colour correction (dA, db) is applied: guided unless ``config.guided_correction`` is
        off, processed-only unless ``config.processed_correction`` is (where off, the head's dA, db are replaced by
        exact zeros)."""
        return self.config.guided_correction if guided else self.config.processed_correction

    def _network(self, feats: Tensor, ssm_states, fresh: Tensor, stepping: bool, guided: bool):
        b, t, gh, gw, _ = feats.shape
        x = self.embed(feats)
        new_states = []
        reset = fresh[:, None].expand(b, gh * gw, t).reshape(b * gh * gw, t)
        for blk, mix, st in zip(self.blocks, self.mixers, ssm_states):
            xs = x.permute(0, 2, 3, 1, 4).reshape(b * gh * gw, t, -1)
            st = st.reshape(b * gh * gw, *st.shape[2:])
            if stepping:
                st = torch.where(reset[:, 0, None, None, None], torch.zeros_like(st), st)
                y, st = blk.step(xs[:, 0], st)
                y = y[:, None]
            else:
                y, st = blk(xs, st, reset)
            x = y.reshape(b, gh, gw, t, -1).permute(0, 3, 1, 2, 4)
            m = mix(x.reshape(b * t, gh, gw, -1).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            x = x + m.reshape(b, t, gh, gw, -1)
            new_states.append(st.reshape(b, gh * gw, *st.shape[1:]))
        coef = self.head(self.norm(x))
        if not self.corrects(guided):  # blend only: dA = db = 0
            coef = torch.cat([torch.zeros_like(coef[..., :N_PARAMS]), coef[..., N_PARAMS:]], -1)
        return coef, tuple(new_states)

    def _correct(self, P: Tensor, G: Tensor, coef: Tensor, strength: float) -> tuple[Tensor, Tensor]:
        """O = P + dA G + db with the (n, 13, gh, gw) coefficients upsampled to full resolution; also
        returns the blend weight (n, 1, h, w) upsampled from the last coefficient."""
        n, _, h, w = P.shape
        cf = F.interpolate(coef, size=(h, w), mode="bilinear", align_corners=False)
        dA = cf[:, :9].reshape(n, 3, 3, h, w) * strength
        out = P + (dA * G[:, None]).sum(2) + cf[:, 9:12] * strength
        return out.clamp(0.0, 1.0), torch.sigmoid(cf[:, 12:13])

    def _motion(self, g: Tensor, state, guided: bool, div: int, size: tuple[int, int]):
        """The blend's motion inputs for a clip, in float32: the guide's flow luminance ``g`` (b, t, 1, hf, wf) ->
        the backward flow (b, t, 2, h, w) in full-resolution pixels, the blend confidence (b, t, 1, h, w) and, guided,
        :func:`guide_gain` (b, t, 1, h, w; None processed-only). The previous frame of the clip's first is the
        state's."""
        b, t = g.shape[:2]
        cfg = self.config
        gprev = torch.cat([state[4][:, None], g[:, :-1]], 1).flatten(0, 1)
        cur = g.flatten(0, 1)
        gprev = gprev if guided else match_brightness(gprev, cur)
        flow, res = estimate_flow(cur, gprev, cfg.flow_levels, window=cfg.flow_window, smooth=cfg.flow_smooth)
        gain = None
        if guided:  # a stream whose previous frame was processed-only: no gain on this clip's first frame
            later = torch.ones(b, t - 1, dtype=torch.bool, device=g.device)
            orig = torch.cat([prev_was_guided(state)[:, None], later], 1)
            gain = guide_gain(cur, gprev, flow, orig.flatten())
        flow = flow * div  # full-resolution pixels
        conf = blend_confidence(res, flow, self.log_conf, cfg)

        def up(x):
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False).reshape(b, t, -1, *size)
        return up(flow), up(conf), None if gain is None else up(gain)

    def _run(self, P, I, state, reset, strength, stepping, blend: bool = True):
        if P.dim() != 5 or P.shape[2] != 3:
            raise ValueError(f"processed frames must be (B, T, 3, H, W), got {tuple(P.shape)}")
        if I is not None and I.shape != P.shape:
            raise ValueError(f"original frames {tuple(I.shape)} must match processed frames {tuple(P.shape)}")
        b, t, _, h, w = P.shape
        check_frame_size(h, w, self.config)
        if state is None:
            state = self.init_state(b, h, w, P.device)
        elif self.state_frame(state) != (b, h, w):
            raise ValueError(
                f"state is for {self.state_frame(state)[0]} stream(s) of {self.state_frame(state)[1:]} frames, got "
                f"{b} x {(h, w)}: reset the stream when the resolution changes"
            )
        G = P if I is None else I
        feats, fresh, fixed, means = self._features(P, G, I is not None, state, reset)
        coef, ssm_states = self._network(feats, state[self.N_FIXED:], fresh, stepping, I is not None)
        # contiguous: bilinear upsampling of the permuted view took half of a 720p CPU step (200 -> 96 ms; equal to
        # fp32 rounding, ~1e-7)
        coef = coef.permute(0, 1, 4, 2, 3).flatten(0, 1).to(P.dtype).contiguous()
        Oc, beta = self._correct(P.flatten(0, 1), G.flatten(0, 1), coef, strength)
        Oc, beta = Oc.reshape(P.shape), beta.reshape(b, t, 1, h, w)
        with torch.autocast(P.device.type, enabled=False):
            egain, elast, levels = brightness_records(means.float(), state, fresh, I is not None,
                                                      self.config.exposure_lock)
        if self.config.exposure_lock > 0:  # scaled by the strength as the rest: strength 0 returns P
            Oc = (Oc * egain.pow(strength)[:, :, None, None, None].to(P.dtype)).clamp(0.0, 1.0)

        # motion-compensated temporal blending at full resolution: flow of the guide from frame t to t-1 (all
        # frames at once), then a short recurrence. Blend off (the ablation): no flow, the corrected frames as they are
        div, hf, wf = flow_shape(h, w, self.config)
        with torch.autocast(P.device.type, enabled=False):
            g = _luma(G.flatten(0, 1).float())
            g = (F.avg_pool2d(g, div) if div > 1 else g).reshape(b, t, 1, hf, wf)
            if blend:
                flow, conf, gain = self._motion(g, state, I is not None, div, (h, w))
        cfg = self.config
        keep = (~fresh).to(P.dtype)[:, :, None, None, None] * strength
        sigma = torch.exp(self.log_gate[0 if I is not None else 1])
        prev = state[3].to(P.dtype)
        fading = I is None and cfg.fade_follow > 0
        # the processed frames' cell means, this clip's and each previous frame's, and the fade gain's reference
        mp = means[:, :, 3:6]
        mp_prev = torch.cat([state[0][:, None, N_PARAMS + 3 : N_PARAMS + 6], mp[:, :-1]], 1)
        ref, repeats = state[5], state[6]
        outs = []
        for i in range(t):
            ref, repeats = fade_reference(mp[:, i], mp_prev[:, i], ref, repeats, fresh[:, i])
            if not blend:
                prev = Oc[:, i]
                outs.append(prev)
                continue
            wp = warp_backward(prev, flow[:, i].to(P.dtype))
            if gain is not None:  # guided: follow the original's brightness change, as the operator does
                gi = gain[:, i].pow(elast[:, i, None, None, None])  # guide_elasticity
                wp = (wp * gi.to(P.dtype)).clamp(0.0, 1.0)  # the blend stays a convex combination
            elif fading:  # processed-only: make up a brightness lag that persists (a fade), not flicker
                with torch.autocast(P.device.type, enabled=False):
                    fg = fade_gain(mp[:, i], ref, self.cell_means(prev.float()), cfg.fade_follow, cfg.fade_shrink)
                    fg = F.interpolate(fg, size=(h, w), mode="bilinear", align_corners=False)
                wp = (wp * fg.to(P.dtype)).clamp(0.0, 1.0)
            gate = torch.exp(-(Oc[:, i] - wp).abs().mean(1, keepdim=True) / sigma)
            wgt = (beta[:, i] * conf[:, i].to(P.dtype) * gate * keep[:, i]).clamp(0.0, 1.0)
            prev = Oc[:, i] + wgt * (wp - Oc[:, i])
            outs.append(prev)
        O = torch.stack(outs, 1)
        fixed = fixed + (prev.float(), g[:, -1].float(), ref, repeats, levels)
        return O, fixed + ssm_states

    def forward(self, P: Tensor, I: Tensor | None = None, state=None, reset: Tensor | None = None, strength: float = 1.0,
                blend: bool = True):
        """The parallel scan over a clip. ``blend=False`` (a training ablation) switches the motion-compensated
        temporal blend off, so the output is the per-cell colour correction alone."""
        return self._run(P, I, state, reset, strength, stepping=False, blend=blend)

    def step(self, P: Tensor, I: Tensor | None = None, state=None, strength: float = 1.0):
        state_by_keyword(I, "original frame I")
        check_step_frames(P, I)
        O, state = self._run(P[:, None], None if I is None else I[:, None], state, None, strength, stepping=True)
        return O[:, 0], state
