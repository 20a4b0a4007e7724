"""CPUVideoStep: :meth:`VideoSSM.step <streamssm.video.model.VideoSSM.step>` rearranged for CPU speed.

Same math, same state, same weights. The reference is ``VideoSSM.step`` itself (pure PyTorch; the trainer, the
parallel scan and the ONNX export use it), and ``tests/video/test_cpu_step.py`` checks that the two agree:
output and previous-output state within fp32 max abs diff 1e-4 over whole clips (measured 1e-5 to 3e-5 on real
clips at 360p-480p), guided and processed-only, with and without OpenCV; everything the network sees (cell
statistics, features, SSM states, flow luminance) and the fade gain's reference bit-identical, so the two cannot
drift apart. Only the order of fp32 roundings in the flow and the full-resolution tail differs.

Where the eager step spends its time on a CPU (2-core EPYC, 1280x720, one thread: ~540 ms; profiled with
torch.profiler and cProfile), and what is done here instead (~100 ms; ``benchmarks/video_cpu_speed.py``):

* **The full-resolution tail, ~45 %.** The eager step upsamples 13 coefficient planes to full resolution in one
  ``F.interpolate`` (60-80 ms: the CPU kernel is slow on many channels and on channels-last input), then runs
  ~20 elementwise ops over 3- to 13-plane full-size temporaries, each a fresh allocation and a trip through
  memory. Here the upsampling is separable -- along x on the small grid (a matmul with the interpolation
  matrix; the bilinear kernel also interpolates x first), along y per row strip: every strip lies between two
  grid rows a, c, so the corrected frame is ``P + wa (dA_a G + db_a) + wc (dA_c G + db_c)`` with row weights
  wa, wc and the 13 full-resolution coefficient planes are never formed -- and the correction, warp, occlusion
  gate, blend and the uint8 conversion run strip by strip on planar buffers that stay in cache.
* **Stride-1 box filters, ~30 %.** ``F.avg_pool2d`` with stride 1 is a naive k x k loop on CPU (9 ms for one
  7 x 7 box of a 640x360 plane; Lucas-Kanade needs ten a step). Here: box *sums* (OpenCV's ``boxFilter``, or two
  separable depthwise convolutions with a ones kernel) divided by the number of in-frame taps, which is
  ``count_include_pad=False``; the five LK moments are filtered together.
* **The warps** (``grid_sample``: 20-30 ms at 720p for 3 channels; the AVX2 gathers are slow on this CPU).
  With OpenCV 5, ``cv2.remap`` on float images with float maps is exact bilinear (checked at first use: 4.x
  quantises the sub-pixel position to 1/32 px, and then ``grid_sample`` is used), fed with the very pixel
  coordinates ``grid_sample``'s CPU kernel computes, ``(g + 1) (size - 1) / 2`` from the reference's normalised
  ``g``, so both sample the same points. The flow/confidence upsampling likewise goes through ``cv2.resize``
  (same half-pixel-centre bilinear).
* **Not changed: the cell statistics.** The per-cell affine fit (one-pass covariances, ridge 1e-3) turns a
  rounding difference in the pooled frames into a ~1000x larger one in the fitted parameters, so the pooling is
  the reference's own ``F.avg_pool2d`` (and the 2 x 2 pooling of the flow luminance the same sums in the same
  order, by strided adds: 4x faster than the kernel and bit-identical).
* **Pipelined** (:class:`CPUVideoPipeline`, what ``VideoFilter.push`` and ``streamssm video`` use on a CPU): the
  step split in a front that never reads the previous output (statistics, SSM, flow) and the full-resolution tail,
  so frame t's front and flow run while frame t-1's tail finishes; the same arithmetic, so the same frames.
* **No flow when nothing is blended:** when every stream starts over (first frame, scene cut, strength 0) the
  blend weight is exactly 0 and the flow and the warp are skipped.
* **uint8 in and out** (:meth:`CPUVideoStep.step_uint8`): H x W x 3 frames are split into planes once (what
  :func:`~streamssm.video.filter.frame_to_float` computes, ``x / 255``) and the output is rounded as
  :func:`~streamssm.video.filter.float_to_frame` does, strip by strip while the strip is in cache.

Inference only (no autograd). The caller's state is never written: each step returns new state tensors (the
output frame is, as in ``VideoSSM.step``, the same tensor as the new state's previous-output entry).

>>> import torch
>>> from streamssm.video.model import VideoSSM, VideoSSMConfig
>>> m = VideoSSM(VideoSSMConfig(d_model=16, n_layers=1, backend="torch"))
>>> fast = CPUVideoStep(m)
>>> P = torch.rand(1, 3, 72, 128)
>>> O, st = fast.step(P)
>>> O1, st1 = m.step(P)
>>> bool((O - O1).abs().max() < 1e-5)
True
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from streamssm.video.model import (FLOW_SHARP, N_PARAMS, VideoSSM, _grad, _luma, blend_confidence, brightness_records,
                                   check_frame_size, check_step_frames, fade_gain, fade_reference, flow_shape,
                                   grid_shape, guide_gain, lk_solve, match_brightness, prev_was_guided)

log = logging.getLogger("streamssm")

__all__ = ["CPUVideoStep", "CPUVideoPipeline", "opencv_exact", "estimate_flow_fast", "box_mean", "pool_exact", "lerp_map"]

# per-shape constants (index maps, window counts, kernels), never written after creation, least recently used first.
# Bounded: a frame size makes ~25 of them (its maps and its window counts at every flow pyramid level, ~4 MiB at
# 720p), so a process that sees many sizes (a server, one filter per upload) would otherwise keep every size's for
# good. _CONSTS_MAX holds the last ~8 sizes' worth: the steps of a few streams of different sizes still find theirs.
_CONSTS: OrderedDict = OrderedDict()
_CONSTS_MAX = 200
_CONSTS_LOCK = threading.Lock()  # CPUVideoPipeline's worker threads look constants up too


def _const(key, make):
    """The constant ``key``, made by ``make()`` on first use and kept in the bounded LRU ``_CONSTS``."""
    with _CONSTS_LOCK:
        v = _CONSTS.get(key)
        if v is not None:
            _CONSTS.move_to_end(key)
            return v
    v = make()  # outside the lock: make() may look up other constants (the strips read the lerp maps)
    with _CONSTS_LOCK:
        v = _CONSTS.setdefault(key, v)  # another thread may have made it meanwhile: one object for everyone
        _CONSTS.move_to_end(key)
        while len(_CONSTS) > _CONSTS_MAX:
            _CONSTS.popitem(last=False)
    return v


# --------------------------------------------------------------------------------------------- OpenCV
_CV: list = []  # [cv2 module or None], filled on first use


def opencv_exact():
    """The ``cv2`` module when it is importable and exact enough for the fast step, else None (checked once).

    Checked on random data against float64 references: ``remap`` (bilinear, float maps, replicated border) to
    1e-6 -- OpenCV 5 interpolates at the float position, 4.x rounds it to 1/32 px --, ``boxFilter`` sums to 1e-6
    relative, and ``resize`` (bilinear) against ``F.interpolate`` to 1e-6 at scale 2, 1e-5 at other scales
    (OpenCV computes the source positions in another precision)."""
    if _CV:
        return _CV[0]
    try:
        import cv2
    except ImportError:
        _CV.append(None)
        return None
    ok, why = True, ""
    try:
        rng = np.random.default_rng(0)
        h, w = 23, 31
        img = rng.random((h, w), dtype=np.float32)
        mx = (np.arange(w)[None] + rng.normal(0, 2.0, (h, w))).astype(np.float32)
        my = (np.arange(h)[:, None] + rng.normal(0, 2.0, (h, w))).astype(np.float32)
        x, y = np.clip(mx.astype(np.float64), 0, w - 1), np.clip(my.astype(np.float64), 0, h - 1)
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        tx, ty = x - x0, y - y0
        x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
        I = img.astype(np.float64)
        want = (1 - ty) * ((1 - tx) * I[y0, x0] + tx * I[y0, x1]) + ty * ((1 - tx) * I[y1, x0] + tx * I[y1, x1])
        got = cv2.remap(img, np.stack([mx, my], -1), None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if np.abs(got - want).max() > 1e-6:
            ok, why = False, f"cv2.remap is not exact bilinear (OpenCV {cv2.__version__} quantises coordinates)"
        box = cv2.boxFilter(img, -1, (7, 7), normalize=False, borderType=cv2.BORDER_CONSTANT)
        ref = F.conv2d(F.pad(torch.from_numpy(I)[None, None], (3, 3, 3, 3)), torch.ones(1, 1, 7, 7, dtype=torch.float64))
        if np.abs(box - ref[0, 0].numpy()).max() > 1e-6 * np.abs(ref.numpy()).max():
            ok, why = False, "cv2.boxFilter sums are not accurate to 1e-6"
        for size, tol in (((2 * h, 2 * w), 1e-6), ((3 * h, 3 * w + 1), 1e-5)):  # OpenCV's own source positions
            up = cv2.resize(img, size[::-1], interpolation=cv2.INTER_LINEAR)
            ref = F.interpolate(torch.from_numpy(img)[None, None], size=size, mode="bilinear", align_corners=False)
            if np.abs(up - ref[0, 0].numpy()).max() > tol:
                ok, why = False, "cv2.resize (bilinear) differs from F.interpolate"
    except Exception as e:  # an odd build: fall back to torch
        ok, why = False, f"{type(e).__name__}: {e}"
    if not ok:
        log.info("streamssm: CPU video step without OpenCV: %s", why)
    _CV.append(cv2 if ok else None)
    return _CV[0]


# ------------------------------------------------------------------------------------------ building blocks
def lerp_map(n_in: int, n_out: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear (``align_corners=False``) source indices and weights along one axis: ``(i0, i1, w0, w1)``,
    each (n_out,), as PyTorch's upsampling kernel computes them in fp32 (``src = (dst + 0.5) in/out - 0.5``
    clamped at 0, ``i1 = i0 + 1`` except at the last input)."""

    def make():
        scale = torch.tensor(n_in / n_out, dtype=torch.float32)
        src = ((torch.arange(n_out, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_min(0.0)
        i0 = src.to(torch.int64).clamp_max(n_in - 1)
        i1 = torch.where(i0 < n_in - 1, i0 + 1, i0)
        w1 = (src - i0.to(torch.float32)).clamp(0.0, 1.0)
        return i0, i1, 1.0 - w1, w1

    return _const(("lerp", n_in, n_out), make)


def _lerp_matrix(n_in: int, n_out: int) -> Tensor:
    """(n_in, n_out) matrix M with ``x @ M`` = bilinear upsampling of x along its last axis."""

    def make():
        i0, i1, w0, w1 = lerp_map(n_in, n_out)
        M = torch.zeros(n_in, n_out)
        cols = torch.arange(n_out)
        M.index_put_((i0, cols), w0, accumulate=True)
        M.index_put_((i1, cols), w1, accumulate=True)
        return M

    return _const(("lerpM", n_in, n_out), make)


def _strips(n_grid: int, n: int, rows: int) -> list[tuple]:
    """Row strips ``(slice, i0, i1, w0 (s, 1), w1 (s, 1), y (s, 1))`` of at most ``rows`` rows, each within one
    interval of the y interpolation map from ``n_grid`` to ``n`` rows (all its rows read grid rows i0 and i1)."""

    def make():
        i0, i1, w0, w1 = lerp_map(n_grid, n)
        key = (i0 * n_grid + i1).tolist()
        ys = torch.arange(n, dtype=torch.float32)[:, None]
        out, r0 = [], 0
        for r in range(1, n + 1):
            if r == n or key[r] != key[r0] or r - r0 == rows:
                out.append((slice(r0, r), int(i0[r0]), int(i1[r0]), w0[r0:r, None], w1[r0:r, None], ys[r0:r]))
                r0 = r
        return out

    return _const(("strips", n_grid, n, rows), make)


def pool_exact(x: Tensor, k: int) -> Tensor:
    """``F.avg_pool2d(x, k)`` bit for bit, as k^2 strided adds in the CPU kernel's order (row by row, then
    divided): 4x faster for k = 2 (the kernel is slow for small windows), no faster for k = 4."""
    if k == 1:
        return x
    x = x[..., : x.shape[-2] // k * k, : x.shape[-1] // k * k]
    s = x[..., 0::k, 0::k].clone()
    for i in range(k):
        for j in range(k):
            if i or j:
                s.add_(x[..., i::k, j::k])
    return s.div_(k * k)


def _counts(n: int, k: int) -> Tensor:
    """How many of the k taps centred on each of n positions fall inside [0, n)."""
    i = torch.arange(n)
    r = k // 2
    return ((i + r).clamp(max=n - 1) - (i - r).clamp(min=0) + 1).to(torch.float32)


def box_mean(x: Tensor, k: int, cv=None) -> Tensor:
    """``F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)`` for odd k and (n, c, h, w):
    box sums (``cv.boxFilter`` when ``cv`` is given, else separable depthwise convolutions with a ones kernel)
    divided by the number of in-frame taps (a window clipped by the frame is a rectangle, so that is the product
    of the per-axis counts)."""
    n, c, h, w = x.shape
    cnt = _const(("cnt", h, w, k), lambda: _counts(h, k)[:, None] * _counts(w, k)[None, :])
    if cv is not None:
        x = x.contiguous()
        s = torch.empty_like(x)
        xa, sa = x.numpy(), s.numpy()
        for i in range(n):
            for j in range(c):
                cv.boxFilter(xa[i, j], -1, (k, k), dst=sa[i, j], normalize=False, borderType=cv.BORDER_CONSTANT)
    else:
        kx = _const(("kx", c, k), lambda: torch.ones(c, 1, 1, k))
        ky = _const(("ky", c, k), lambda: torch.ones(c, 1, k, 1))
        s = F.conv2d(F.conv2d(x, kx, padding=(0, k // 2), groups=c), ky, padding=(k // 2, 0), groups=c)
    return s.div_(cnt)


def _upsample(x: Tensor, h: int, w: int, cv=None) -> Tensor:
    """``F.interpolate(x, (h, w), mode="bilinear", align_corners=False)`` plane by plane (the torch CPU kernel
    is 4x slower on a 3-channel frame than on its planes as a batch; ``cv.resize`` is faster still)."""
    n, c = x.shape[:2]
    if cv is None:
        return F.interpolate(x.reshape(n * c, 1, *x.shape[2:]), size=(h, w), mode="bilinear",
                             align_corners=False).reshape(n, c, h, w)
    x = x.contiguous()
    out = torch.empty(n, c, h, w)
    xa, oa = x.numpy(), out.numpy()
    for i in range(n):
        for j in range(c):
            cv.resize(xa[i, j], (w, h), dst=oa[i, j], interpolation=cv.INTER_LINEAR)
    return out


def _grid(base_x: Tensor, base_y: Tensor, flow_x: Tensor, flow_y: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
    """``warp_backward``'s normalised sampling coordinates, ``(p + flow) * 2 / (size - 1) - 1``, as two planes
    (n, s, w) (the same fp32 ops as the reference; planes, not an interleaved (.., 2) grid, for vectorised ops)."""
    gx = torch.add(flow_x, base_x).mul_(2.0 / max(w - 1, 1)).sub_(1.0)
    gy = torch.add(flow_y, base_y).mul_(2.0 / max(h - 1, 1)).sub_(1.0)
    return gx, gy


def _sample(x: Tensor, gx: Tensor, gy: Tensor, cv=None) -> Tensor:
    """``F.grid_sample(x, stack([gx, gy], -1), "bilinear", "border", align_corners=True)`` for planar contiguous
    x (n, c, h, w) and coordinates (n, s, w).

    With ``cv``: ``cv.remap`` (exact bilinear; a replicated border = grid_sample's border clamp) at the pixel
    coordinates grid_sample's CPU kernel unnormalises to, ``(g + 1) * ((size - 1) / 2)`` in fp32. ``gx`` and
    ``gy`` are overwritten."""
    if cv is None:
        return F.grid_sample(x, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="border", align_corners=True)
    n, c, h, w = x.shape
    mx = gx.add_(1.0).mul_((w - 1) / 2)
    my = gy.add_(1.0).mul_((h - 1) / 2)
    out = torch.empty(n, c, *gx.shape[1:])
    xa, mxa, mya, oa = x.numpy(), mx.numpy(), my.numpy(), out.numpy()
    for i in range(n):
        for j in range(c):
            cv.remap(xa[i, j], mxa[i], mya[i], cv.INTER_LINEAR, dst=oa[i, j], borderMode=cv.BORDER_REPLICATE)
    return out


def _coords(h: int, w: int) -> tuple[Tensor, Tensor]:
    """Pixel indices along x (w,) and y (h, 1), float32."""
    return _const(("coords", h, w), lambda: (torch.arange(w, dtype=torch.float32),
                                             torch.arange(h, dtype=torch.float32)[:, None]))


def _warp(x: Tensor, flow: Tensor, cv=None) -> Tensor:
    """:func:`~streamssm.video.model.warp_backward` (x planar (n, c, h, w), flow (n, 2, h, w))."""
    h, w = x.shape[-2:]
    xs, ys = _coords(h, w)
    return _sample(x.contiguous(), *_grid(xs, ys, flow[:, 0], flow[:, 1], h, w), cv)


def estimate_flow_fast(cur: Tensor, prev: Tensor, levels: int = 5, iters: int = 1, window: int = 7, smooth: int = 9,
                       cv=None) -> tuple[Tensor, Tensor]:
    """:func:`~streamssm.video.model.estimate_flow` with the box filters of :func:`box_mean` (the five
    Lucas-Kanade moments filtered as one stack, the smoothing's three planes likewise), the warps of
    ``cv.remap`` and the upsampling of ``cv.resize`` when ``cv`` is given."""
    cur, prev = cur.contiguous(), prev.contiguous()
    pyr = [(cur, prev)]
    for _ in range(levels - 1):
        pyr.append((pool_exact(pyr[-1][0], 2), pool_exact(pyr[-1][1], 2)))
    flow = None
    for c, p in reversed(pyr):
        n, _, h, w = c.shape
        if flow is None:
            flow = torch.zeros(n, 2, h, w)
        else:
            flow = _upsample(flow.mul_(2.0), h, w, cv)
        mom = torch.empty(n, 5, h, w)
        for _ in range(iters):
            wp = _warp(p, flow, cv)
            gx, gy = _grad(wp)
            e = torch.sub(c, wp, out=wp)
            for j, (a, b) in enumerate(((gx, gx), (gx, gy), (gy, gy), (gx, e), (gy, e))):
                torch.mul(a, b, out=mom[:, j : j + 1])
            sxx, sxy, syy, sxe, sye = box_mean(mom, window, cv).unbind(1)
            flow = flow + torch.stack(lk_solve(sxx, sxy, syy, sxe, sye), 1).clamp_(-2.0, 2.0)
        wgt = box_mean(torch.sub(c, _warp(p, flow, cv)).abs_(), 3, cv).div_(-FLOW_SHARP).exp_()
        sums = box_mean(torch.cat([flow * wgt, wgt], 1), smooth, cv)
        flow = sums[:, :2] / sums[:, 2:].add_(1e-6)
    res = box_mean(torch.sub(cur, _warp(prev, flow, cv)).abs_(), 3, cv)
    return flow, res


def _planes_u8(frames: np.ndarray, cv=None) -> Tensor:
    """(b, h, w, 3) uint8 -> (b, 3, h, w) float32 planes = ``frame_to_float``'s ``x.astype(float32) * (1 / 255)``."""
    b, h, w, _ = frames.shape
    out = torch.empty(b, 3, h, w)
    if cv is not None:
        for i in range(b):
            for j, p in enumerate(cv.split(frames[i])):
                out[i, j].copy_(torch.from_numpy(p))
    else:
        out.copy_(torch.from_numpy(frames).permute(0, 3, 1, 2))
    return out.mul_(1.0 / 255.0)


# ------------------------------------------------------------------------------------------------- the step
class CPUVideoStep:
    """``O, state = CPUVideoStep(model).step(P, I, state, strength)``: :meth:`VideoSSM.step` for one frame per
    stream, rearranged for the CPU (see the module docstring). Same arguments, state layout and results as
    ``model.step`` (to fp32 rounding); inference only.

    Args:
        model: the :class:`~streamssm.video.model.VideoSSM` (on the CPU; never modified).
        strip_px: pixels per row strip of the full-resolution tail (per stream). Bigger strips mean fewer op
            launches (each costs microseconds), smaller ones stay in cache; 2^16 was best at 720p.
        opencv: ``"auto"`` (use OpenCV's remap/boxFilter/resize when :func:`opencv_exact` finds them exact),
            ``False`` (torch only), ``True`` (require them).

    :meth:`step_uint8` takes and returns H x W x 3 uint8 frames (numpy, or (B, H, W, 3) for B streams) with the
    conversions of :func:`~streamssm.video.filter.frame_to_float` / ``float_to_frame``.

    >>> import numpy as np
    >>> from streamssm.video.model import VideoSSM, VideoSSMConfig
    >>> m = VideoSSM(VideoSSMConfig(d_model=16, n_layers=1, backend="torch"))
    >>> frame = np.zeros((64, 96, 3), np.uint8)
    >>> out, st = CPUVideoStep(m).step_uint8(frame, frame)
    >>> out.shape, out.dtype, len(st) == len(m.init_state(1, 64, 96))
    ((64, 96, 3), dtype('uint8'), True)
    """

    def __init__(self, model: VideoSSM, strip_px: int = 1 << 16, opencv: bool | str = "auto"):
        if any(p.device.type != "cpu" for p in model.parameters()):
            raise ValueError("CPUVideoStep runs a model on the CPU (use VideoSSM.step or FastVideoStep on CUDA)")
        if opencv not in ("auto", True, False):
            raise ValueError(f"opencv must be 'auto', True or False, got {opencv!r}")
        self.model = model
        self.strip_px = int(strip_px)
        self.cv = opencv_exact() if opencv else None
        if opencv is True and self.cv is None:
            raise RuntimeError("opencv=True but OpenCV is missing or its remap is not exact (OpenCV >= 5 needed)")

    def __call__(self, P: Tensor, I: Tensor | None = None, state=None, strength: float = 1.0):
        return self.step(P, I, state, strength)

    def __getstate__(self) -> dict:  # pickle/deepcopy: the cv2 module is looked up again on the other side
        return {**self.__dict__, "cv": self.cv is not None}

    def __setstate__(self, d: dict) -> None:
        self.__dict__.update(d)
        self.cv = opencv_exact() if d["cv"] else None

    # ------------------------------------------------------------------------------------------- API
    def step(self, P: Tensor, I: Tensor | None = None, state=None, strength: float = 1.0
             ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """P, I (b, 3, h, w) float in [0, 1] -> O (b, 3, h, w) float32, new state (as ``VideoSSM.step``, whose input
        checks these are)."""
        check_step_frames(P, I)
        P = P.float().contiguous()
        return self._step(P, None if I is None else I.float().contiguous(), state, strength, None)

    def step_uint8(self, frame: Any, original: Any = None, state=None, strength: float = 1.0
                   ) -> tuple[np.ndarray, tuple[Tensor, ...]]:
        """uint8 (h, w, 3) or (b, h, w, 3) frame(s) [and originals] -> uint8 output of the same shape, new state."""
        P, I, out, squeeze = self.planes_uint8(frame, original)
        _, state = self._step(P, I, state, strength, out)
        return (out[0] if squeeze else out), state

    def planes_uint8(self, frame: Any, original: Any = None) -> tuple[Tensor, Tensor | None, np.ndarray, bool]:
        """Checked uint8 (h, w, 3) / (b, h, w, 3) frame [and original] -> float planes P, I (b, 3, h, w), an empty
        uint8 output of the batched shape, and whether the input was a single frame."""
        f = np.ascontiguousarray(frame)
        o = None if original is None else np.ascontiguousarray(original)
        if f.dtype != np.uint8 or f.ndim not in (3, 4) or f.shape[-1] != 3:
            raise ValueError(f"frame must be uint8 (H, W, 3) or (B, H, W, 3), got {f.dtype} {f.shape}")
        if o is not None and (o.dtype != np.uint8 or o.shape != f.shape):
            raise ValueError(f"original must be uint8 of the frame's shape {f.shape}, got {o.dtype} {o.shape}")
        squeeze = f.ndim == 3
        if squeeze:
            f, o = f[None], None if o is None else o[None]
        P = _planes_u8(f, self.cv)
        return P, None if o is None else _planes_u8(o, self.cv), np.empty(f.shape, np.uint8), squeeze

    # ----------------------------------------------------------------------------------------- body
    @torch.no_grad()
    def _step(self, P: Tensor, I: Tensor | None, state, strength: float, out_u8: np.ndarray | None):
        front = self._front(P, I, state, strength)
        prev = None if state is None else state[3]
        O = self._tail(front, prev, out_u8)
        return O, front.state_with(O)

    def luma(self, P: Tensor, I: Tensor | None) -> Tensor:
        """The flow's luminance of a frame (what the state keeps as ``state[4]``), as the reference pools it."""
        div, _, _ = flow_shape(P.shape[-2], P.shape[-1], self.model.config)
        return pool_exact(_luma(P if I is None else I), div)

    @torch.no_grad()
    def flow_full(self, g: Tensor, g_prev: Tensor, h: int, w: int, guided: bool = True,
                  prev_guided: Tensor | None = None) -> Tensor:
        """Backward flow from the luminance ``g`` to ``g_prev`` and its confidence, upsampled to the full h x w:
        (b, 3, h, w) = flow x, flow y (full-resolution pixels), confidence; guided (b, 4, h, w), the 4th plane the
        guide's brightness gain (:func:`~streamssm.video.model.guide_gain`; 1 for the streams whose previous frame
        was processed-only, ``prev_guided`` (b,) bool False, as the reference does; None: all were guided). Reads no
        state but the previous frame's luminance, so :class:`CPUVideoPipeline` runs it on a thread of its own.
        Processed-only (``guided=False``) ``g_prev`` is brightness-matched to ``g`` first, as the reference does."""
        m, cfg, cv = self.model, self.model.config, self.cv
        div, _, _ = flow_shape(h, w, cfg)
        if not guided:
            g_prev = match_brightness(g_prev, g)
        flow, res = estimate_flow_fast(g, g_prev, cfg.flow_levels, window=cfg.flow_window, smooth=cfg.flow_smooth,
                                       cv=cv)
        gain = [guide_gain(g, g_prev, flow, prev_guided, box=lambda x, k: box_mean(x, k, cv),
                           warp=lambda x, f: _warp(x, f, cv))] if guided else []
        flow = flow * div  # full-resolution pixels
        conf = blend_confidence(res, flow, m.log_conf, cfg)
        return _upsample(torch.cat([flow, conf, *gain], 1), h, w, cv)

    @torch.no_grad()
    def _front(self, P: Tensor, I: Tensor | None, state, strength: float, g: Tensor | None = None,
               fu=None) -> "_Front":
        """Everything of a step that does not read the previous *output*: cell statistics, the SSM, the flow.
        (So :class:`CPUVideoPipeline` can run frame t's front while frame t-1's tail finishes.) ``g``: the
        frame's :meth:`luma` if already computed; ``fu``: its :meth:`flow_full` (or a future of it) if already
        under way."""
        m, cfg = self.model, self.model.config
        b, _, h, w = P.shape
        check_frame_size(h, w, cfg)
        if state is None:
            state = m.init_state(b, h, w)
        elif m.state_frame(state) != (b, h, w):
            raise ValueError(
                f"state is for {m.state_frame(state)[0]} stream(s) of {m.state_frame(state)[1:]} frames, got "
                f"{b} x {(h, w)}: reset the stream when the resolution changes"
            )
        G = P if I is None else I
        pre, cell, gh, gw = grid_shape(h, w, cfg)

        # cell statistics and the flow's luminance exactly as the reference computes them: the per-cell affine
        # fit amplifies a rounding difference in the pooled frames ~1000x (one-pass covariances, ridge 1e-3)
        Pp = F.avg_pool2d(P, pre) if pre > 1 else P
        Gp = Pp if I is None else F.avg_pool2d(G, pre) if pre > 1 else G
        params, means = m.fit_cells(Pp, Gp, cell, gh, gw)
        g = self.luma(P, I) if g is None else g
        feats, fresh, fixed = m._stat_features(params[:, None], means[:, None], I is not None, state, None)
        coef, ssm_states = m._network(feats, state[m.N_FIXED:], fresh, stepping=True, guided=I is not None)
        coef = coef[:, 0].permute(0, 3, 1, 2)  # (b, 13, gh, gw)

        keep = (~fresh[:, 0]).to(torch.float32) * strength  # (b,)
        blend = bool((keep != 0).any())  # else the blend weight is 0 everywhere: no flow, no warp
        sigma = None
        if blend:
            if fu is None:
                fu = self.flow_full(g, state[4], h, w, I is not None, prev_was_guided(state))
            sigma = torch.exp(m.log_gate[0 if I is not None else 1])
        else:
            fu = None
        # coefficients upsampled along x on the grid rows (a small matmul with the interpolation matrix), strength
        # folded in there
        cx = torch.cat([coef[:, :12] * strength, coef[:, 12:]], 1) @ _lerp_matrix(gw, w)  # (b, 13, gh, w)
        # the fade gain's reference (kept in every mode) and, processed-only, the cell means the tail's gain needs
        ref, repeats = fade_reference(means[:, 3:6], state[0][:, N_PARAMS + 3 : N_PARAMS + 6], state[5], state[6],
                                      fresh[:, 0])
        fading = blend and I is None and cfg.fade_follow > 0
        fade = (means[:, 3:6], ref) if fading else None
        egain, e, levels = brightness_records(means[:, None], state, fresh, I is not None, cfg.exposure_lock)
        egain = egain.pow(strength)[:, 0, None, None, None] if cfg.exposure_lock > 0 else None
        # the exponent on the guide's gain: none where it is 1 (x^1 = x, and most frames: ELASTIC_SNAP)
        elast = None if e is None or bool((e == 1.0).all()) else e[:, 0, None, None, None]
        return _Front(P, G, cx, gh, blend, fu, sigma, keep[:, None, None, None], fixed, g, (ref, repeats, levels),
                      ssm_states, m.corrects(I is not None), fade, egain, elast)

    def _tail(self, f: "_Front", prev: Tensor | None, out_u8: np.ndarray | None) -> Tensor:
        """The full-resolution rest of a step: correction, warp of the previous output ``prev``, gate, blend.

        Per strip, between grid rows a and c with row weights wa, wc, the corrected frame is
        P + wa (dA_a G + db_a) + wc (dA_c G + db_c) -- the 13 upsampled coefficient planes are never formed."""
        cv = self.cv
        P, G, cx, blend, fu = f.P, f.G, f.cx, f.blend, f.fu
        if fu is not None and not isinstance(fu, Tensor):
            fu = fu.result()  # a future: the pipeline's flow thread
        b, _, h, w = P.shape
        gh = f.gh
        dA = cx[:, :9].reshape(b, 3, 3, gh, 1, w)  # [i][j]: output channel i, guide channel j
        db = cx[:, 9:12, :, None]
        fx = None
        if blend:
            prev = prev.contiguous()
            xs, _ = _coords(h, w)
            if f.fade is not None:  # processed-only: the fade gain per cell, upsampled along x like the coefficients
                cfg = self.model.config
                fg = fade_gain(*f.fade, self.model.cell_means(prev), cfg.fade_follow, cfg.fade_shrink)
                fx = fg @ _lerp_matrix(fg.shape[-1], w)  # (b, 1, gh, w)

        O = torch.empty(b, 3, h, w)
        for sl, a, c, wa, wc, ys in _strips(gh, h, max(1, self.strip_px // w)):
            if f.correct:
                Gs = G[:, :, sl]
                Sa = torch.addcmul(db[:, :, a], dA[:, :, 0, a], Gs[:, 0:1])
                Sa.addcmul_(dA[:, :, 1, a], Gs[:, 1:2]).addcmul_(dA[:, :, 2, a], Gs[:, 2:3])
                Sc = torch.addcmul(db[:, :, c], dA[:, :, 0, c], Gs[:, 0:1])
                Sc.addcmul_(dA[:, :, 1, c], Gs[:, 1:2]).addcmul_(dA[:, :, 2, c], Gs[:, 2:3])
                Oc = torch.addcmul(P[:, :, sl], Sa, wa).addcmul_(Sc, wc).clamp_(0.0, 1.0)
            else:  # P + 0: the reference adds exact zeros
                Oc = P[:, :, sl].clamp(0.0, 1.0)
            if f.egain is not None:  # the exposure lock (exposure_gain)
                Oc.mul_(f.egain).clamp_(0.0, 1.0)
            Os = O[:, :, sl]
            if not blend:
                Os.copy_(Oc)
            else:
                fs = fu[:, :, sl]
                wp = _sample(prev, *_grid(xs, ys, fs[:, 0], fs[:, 1], h, w), cv)
                if fs.shape[1] > 3:  # guided: follow the original's brightness change (guide_gain, guide_elasticity)
                    wp.mul_(fs[:, 3:4] if f.elast is None else fs[:, 3:4].pow(f.elast)).clamp_(0.0, 1.0)
                elif fx is not None:  # processed-only: make up a persistent brightness lag (fade_gain)
                    wp.mul_(torch.mul(fx[:, :, a : a + 1], wa).addcmul_(fx[:, :, c : c + 1], wc)).clamp_(0.0, 1.0)
                d = wp.sub_(Oc)  # warped previous output - corrected frame
                gate = d.abs().mean(1, keepdim=True).neg_().div_(f.sigma).exp_()
                beta = torch.mul(cx[:, 12:13, a : a + 1], wa).addcmul_(cx[:, 12:13, c : c + 1], wc).sigmoid_()
                wgt = beta.mul_(fs[:, 2:3]).mul_(gate).mul_(f.keep4).clamp_(0.0, 1.0)
                torch.addcmul(Oc, d, wgt, out=Os)
            if out_u8 is not None:
                # = float_to_frame, in numpy (its float -> uint8 cast is 3x faster than torch's)
                qa = (Os.numpy() * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)
                if cv is not None:
                    for i in range(b):
                        cv.merge([qa[i, 0], qa[i, 1], qa[i, 2]], dst=out_u8[i, sl])
                else:
                    out_u8[:, sl] = qa.transpose(0, 2, 3, 1)
        return O


class _Front(NamedTuple):
    """What :meth:`CPUVideoStep._front` hands to ``_tail`` (and the new state, but for the output)."""

    P: Tensor
    G: Tensor
    cx: Tensor  # (b, 13, gh, w) coefficients upsampled along x, strength folded in
    gh: int
    blend: bool
    fu: Any  # flow_full's (b, 3 | 4, h, w): flow x, flow y, confidence[, guide gain]; or a future of it; None: no blend
    sigma: Tensor | None
    keep4: Tensor  # (b, 1, 1, 1)
    fixed: tuple
    g: Tensor
    ref: tuple  # the fade gain's reference (b, 3, gh, gw), repeat count (b, 1, gh, gw) (``fade_reference``) and the
    # brightness records (b, 3) (``exposure_gain``'s average, ``guide_elasticity``'s sums): the state's after the output
    ssm_states: tuple
    correct: bool  # False: dA = db = 0 exactly (``VideoSSM.corrects``), so the tail skips the correction
    fade: tuple | None  # processed-only: cell means (b, 3, gh, gw) of P_t and the fade gain's reference; None: none
    egain: Tensor | None  # (b, 1, 1, 1): the exposure lock's gain of the frame; None: the lock is off
    elast: Tensor | None = None  # (b, 1, 1, 1): guided, the exponent on the guide's gain; None: 1 (or processed-only)

    def state_with(self, O: Tensor) -> tuple[Tensor, ...]:
        """The full new state once the output ``O`` is known (the layout of ``VideoSSM.init_state``)."""
        return self.fixed + (O, self.g, *self.ref) + self.ssm_states


class CPUVideoPipeline:
    """Two frames in flight on three threads: frame t's cell statistics and SSM on the caller's thread, its flow
    on a worker, while frame t-1's full-resolution tail (correction, warp, blend, uint8) runs on another. The same
    arithmetic as :meth:`CPUVideoStep.step_uint8` frame by frame (the outputs are identical), one frame later.

    ``push_uint8(frame, original=None) -> frame t-1's output`` (None for the first frame), ``flush() -> the last
    output`` (None if nothing is pending). ``state``: the full state after the last output returned. Run torch
    and OpenCV on one intra-op thread each for the pipeline's lifetime (``torch.set_num_threads(1)``): three
    threads of work for the OS to spread over the cores, instead of one step spreading its small ops over them.
    Measured at 720p on 2 cores, shipped weights, guided: 28.6 fps against 23.5 frame by frame (session 9's run,
    ``benchmarks/video_cpu_speed.py``).

    >>> import numpy as np
    >>> from streamssm.video.model import VideoSSM, VideoSSMConfig
    >>> step = CPUVideoStep(VideoSSM(VideoSSMConfig(d_model=16, n_layers=1, backend="torch")))
    >>> frames = [np.full((64, 96, 3), 10 * i, np.uint8) for i in range(3)]
    >>> with CPUVideoPipeline(step) as pipe:
    ...     outs = [pipe.push_uint8(f) for f in frames] + [pipe.flush()]
    >>> outs[0] is None, len([o for o in outs if o is not None])
    (True, 3)
    """

    def __init__(self, step: CPUVideoStep, state=None, strength: float = 1.0):
        from concurrent.futures import ThreadPoolExecutor

        self.step = step
        self.strength = float(strength)
        self._front_state = state  # what the next front reads (its prev-output entry may be stale)
        self._prev_out = None if state is None else state[3]
        self.state = state
        self._pending = None  # (future of the tail, front, out array, squeeze)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="streamssm-tail")
        self._flow_pool = ThreadPoolExecutor(1, thread_name_prefix="streamssm-flow")

    def _finish(self):
        fut, front, out, squeeze = self._pending
        self._pending = None
        O = fut.result()
        self._prev_out = O
        self.state = front.state_with(O)
        return out[0] if squeeze else out

    @property
    def in_flight(self) -> bool:
        """Whether a frame's output is still to come (from the next push or flush)."""
        return self._pending is not None

    def push_uint8(self, frame, original=None, restart: bool = False) -> np.ndarray | None:
        """Frame t in, frame t-1's output out. ``restart``: frame t starts a new stream (a frame still in flight
        finishes as part of the old one). A failure of frame t's own steps changes nothing here, so the same frame
        can be pushed again; a failure of frame t-1's tail, seen here, loses that frame (none is in flight then)."""
        P, I, out, squeeze = self.step.planes_uint8(frame, original)
        # frame t's flow on its own thread (it needs only this and the previous luminance), its statistics and
        # SSM here, frame t-1's tail on the tail thread: three threads of work for the OS to spread over the cores
        g = self.step.luma(P, I)
        st = None if restart else self._front_state
        fu = None
        if st is not None and st[4].shape == g.shape:
            fu = self._flow_pool.submit(self.step.flow_full, g, st[4], P.shape[-2], P.shape[-1], I is not None,
                                        prev_was_guided(st))
        with torch.no_grad():
            front = self.step._front(P, I, st, self.strength, g=g, fu=fu)  # overlaps the previous tail
        done = self._finish() if self._pending is not None else None
        prev = None if st is None else self._prev_out
        self._pending = (self._pool.submit(self._tail, front, prev, out), front, out, squeeze)
        # the next front needs everything but the output (which only the tail reads)
        # (a zero-stride stand-in of the output's shape: the front reads only its shape, for the stream check)
        b, _, h, w = P.shape
        self._front_state = front.state_with(torch.zeros(1).expand(b, 3, h, w))
        return done

    def _tail(self, front, prev, out):
        with torch.no_grad():
            return self.step._tail(front, prev, out)

    def flush(self) -> np.ndarray | None:
        return self._finish() if self._pending is not None else None

    def close(self) -> None:
        try:
            if self._pending is not None:
                self._pending[0].result()
        finally:
            self._pool.shutdown(wait=True)
            self._flow_pool.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
