"""PoseFilter: the user-facing streaming pose smoother (state held for you).

Timestamps (optional, seconds, one clock for all streams of a batch): a frame that arrives ``k``
frame periods after the previous one (``k = round(dt * fps)``) means ``k - 1`` frames were dropped.
The filter steps over them as *missing* frames (every keypoint NaN: held, confidence 0), which is how
it was trained to see dropouts (whole-frame gaps of 1-8 frames, :mod:`streamssm.pose.noise`), so its
time constants stay in frames of the declared ``fps``. A gap longer than ``max_gap`` seconds makes the
held pose stale: the streams start over (as after :meth:`PoseFilter.reset`). Timestamps must increase.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from streamssm.pose.model import PoseSSM, PoseSSMConfig
from streamssm._args import Checked, as_positive, as_strength, as_timestamp
from streamssm._device import resolve_device
from streamssm.stream import FilterState, _describe, as_reset_mask, cat_streams, kept_streams, reset_state, take_streams
from streamssm.weights import PACKAGE_WEIGHTS, build_model, read_weights

DEFAULT_WEIGHTS = PACKAGE_WEIGHTS / "pose.safetensors"
MAX_KEYPOINTS = 4096  # per frame: MediaPipe Holistic has 543; more is a wrong axis order or hostile input
# keypoint-frames per parallel scan in filter(): 1024 frames of 33 keypoints peaked at ~180 MiB of scan
# intermediates on the CPU (measured for the CLI); longer inputs are scanned in pieces with the state carried
SCAN_KEYPOINT_FRAMES = 1024 * 33
# coordinates beyond this overflow the model's float32 arithmetic (squared distances pass 3.4e38 near 1e19)
MAX_COORDINATE = 1e18
log = logging.getLogger("streamssm")


def check_magnitude(points: Any, what: str = "points") -> None:
    """ValueError naming ``what`` when a finite coordinate exceeds :data:`MAX_COORDINATE` in magnitude (the output
    would be all NaN: float32 overflows); NaN/inf are missing keypoints, not checked. A tensor on a GPU is not
    checked (that would synchronise every step)."""
    if isinstance(points, Tensor):
        if points.device.type != "cpu":
            return
        if points.dtype == torch.float16:  # at most 65504 by construction
            return
        # a view (bfloat16, which numpy lacks, a float32 copy): numpy's reductions are cheaper on a small frame
        points = (points.float() if points.dtype == torch.bfloat16 else points).detach().numpy()
    a = np.asarray(points)
    # runs every step: one NaN-ignoring max (~1 us a 33-keypoint frame); only an inf among the coordinates (a
    # missing keypoint too) sends it to the exact, slower finite-only max
    big = float(np.fmax.reduce(np.abs(a), axis=None)) if a.size else 0.0
    if big > MAX_COORDINATE and not np.isfinite(big):
        big = float(np.max(np.abs(a), initial=0.0, where=np.isfinite(a)))
    if big > MAX_COORDINATE:
        raise ValueError(f"{what}: coordinates up to {big:.3g} in magnitude; beyond {MAX_COORDINATE:g} the filter's "
                         "float32 arithmetic overflows: rescale them (pixels, metres, millimetres all work)")


def load_pose_model(weights: str | Path | None = None, device: torch.device | str = "cpu", backend: str = "auto") -> PoseSSM:
    """Build a :class:`PoseSSM` from a safetensors file (default: the weights shipped in the package)."""
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be the path of a .safetensors file, got {type(weights).__name__}")
    path = Path(weights).expanduser() if weights is not None else DEFAULT_WEIGHTS
    config, tensors, _ = read_weights(path, "pose")
    # the names and shapes compared before the model is built: a small file may ask for a large one
    return build_model(PoseSSM, PoseSSMConfig, config, tensors, path, backend=backend).to(device).eval()


TRAINED_FPS = (24.0, 60.0)  # the frame rates the shipped weights were trained on (streamssm.pose.data)


def _plausible_fps(fps: float) -> float:
    """``fps``, with a log warning when it is far (over 2x) outside ``TRAINED_FPS``: the network sees log(fps / 30)
    as a feature, and its smoothing was never fitted there (a slideshow at 1e-9 fps, a mistyped 30000)."""
    lo, hi = TRAINED_FPS
    if not lo / 2 <= fps <= hi * 2:
        log.warning("pose: fps %g is far outside the %g-%g fps the shipped weights were trained on; the smoothing "
                    "may not carry over (is it the frame rate, in frames per second?)", fps, lo, hi)
    return fps


def _as_fps(value: Any) -> float | tuple[float, ...]:
    """``fps``: one positive frame rate, or one per stream (a sequence of B of them, kept as a tuple)."""
    if isinstance(value, (str, bytes)) or np.ndim(value) == 0:
        return _plausible_fps(as_positive(value, "fps", "frames per second"))
    if any(isinstance(v, (bool, np.bool_)) for v in np.ravel(np.asarray(value, dtype=object))):
        raise ValueError(f"fps must be numbers of frames per second, got {value!r:.60} (a bool among them)")
    try:
        vals = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"fps must be a number, or one per stream (a sequence of numbers), got "
                         f"{value!r:.60}") from None
    if vals.ndim != 1 or vals.size == 0:
        raise ValueError(f"fps must be a number, or one per stream (a 1-D sequence), got shape {vals.shape}")
    return tuple(_plausible_fps(as_positive(v, f"fps[{i}]", "frames per second")) for i, v in enumerate(vals))


def _writable(a: np.ndarray) -> np.ndarray:
    """``a``, copied if it is read-only (torch.from_numpy warns on those; the filter never writes its input)."""
    return a if a.flags.writeable else a.copy()


class _GivenFps(Checked):
    """``PoseFilter.fps``: :class:`~streamssm._args.Checked`, and the value set (by the constructor or the caller) is
    kept as ``_fps_given`` too: the rate the filter goes back to when every stream is dropped or reset.
    :meth:`PoseFilter.add_streams` and :meth:`PoseFilter.drop_streams` change the rates with the streams (``_fps``)
    and leave it."""

    def __set__(self, obj, value) -> None:
        super().__set__(obj, value)
        obj._fps_given = getattr(obj, self.slot)


class PoseFilter:
    """Causal jitter removal for keypoint streams, one frame at a time or a whole sequence at once.

    Args:
        weights: a ``.safetensors`` file from ``streamssm train pose``; default: shipped weights.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``.
        strength: 0 returns the input, 1 the full learned correction, in between a blend of the two. Above 1
            (up to 2 is accepted) the correction is extrapolated: it overshoots rather than smoothing more.
        fps: frame rate of the stream (the filter adapts its time constants to it); or one per stream, a
            sequence of B rates, for a batch of recordings at different rates run together, frame ``i`` of each
            in one call (no timestamps then: one clock cannot run at several frame rates).
        compile: run :meth:`step` through ``torch.compile`` (same outputs to fp32 rounding; the first step of
            each (B, K, D) compiles for seconds; about 0.12 ms per 33-keypoint frame on one CPU core against ~0.6 ms
            for the eager PyTorch step). It replaces the native C step below, which is faster still on a CPU.
        native: on the CPU, run :meth:`step` through the fused C step of :mod:`streamssm.pose.native` (same
            outputs to fp32 rounding; built once with the system C compiler, about a second; one 33-keypoint
            frame: ~0.01 ms in C, ~0.05 ms through this method, against ~0.6 ms eager; benchmarks/pose_speed.py).
            ``None`` (default): when the device is the CPU, ``compile`` is off and it builds
            (otherwise the PyTorch step, with one log line saying why); ``True``: required; ``False``: off.
            :meth:`filter` always runs the parallel scan.
        max_gap: seconds; with timestamps, a longer gap between frames starts the streams over (see the
            module docstring). Shorter gaps are stepped over as missing frames.

    Points are (K, D) for one stream or (B, K, D) for B independent streams, D = 2 or 3, in any units
    (pixels, metres, millimetres: the filter scales itself by the body's size) as long as every axis has the
    same unit: image coordinates normalised by a non-square image's width and height (MediaPipe's landmarks)
    are not, so multiply x by the width and y by the height first, and divide back after (``streamssm pose``
    does this for MediaPipe files). NaN/inf coordinates or confidence 0 mark a keypoint missing for that
    frame. ``confidence`` is a detector's score in [0, 1]; MediaPipe's visibility is not one (it moves low-
    visibility joints that are well placed): leave it out, or use it only to mark missing keypoints.
    numpy in, numpy out; torch in, torch out.

    One filter object is not thread-safe; filters in separate threads are independent.

    Batches: B streams in one call never influence each other: for a given B, a stream's outputs are
    bit-identical whatever the other streams hold (tests/test_isolation.py). Against the same stream
    run alone (B = 1) they agree to fp32 rounding (~1e-7 relative), not bit for bit: the CPU/GPU matmul
    kernels choose their blocking, hence the summation order, from the number of rows (B x K).
    :meth:`reset` with a mask, :meth:`add_streams` and :meth:`drop_streams` leave the other streams'
    state bit-identical.

    >>> import numpy as np
    >>> f = PoseFilter()
    >>> pts = np.random.default_rng(0).normal(size=(33, 2)).astype(np.float32)
    >>> f.step(pts).shape
    (33, 2)
    >>> f.reset()
    >>> f.filter(np.repeat(pts[None], 5, 0)).shape
    (5, 33, 2)
    """

    strength = Checked(as_strength, "0 returns the input, 1 the shipped smoothing, up to 2; checked when set.")
    fps = _GivenFps(_as_fps, "The streams' frame rate (the filter's time constants are in frames of it), or one per "
                             "stream (a sequence of B, kept as a tuple); checked when set.")

    def __init__(self, weights: str | Path | None = None, device: str = "auto", strength: float = 1.0, fps: float = 30.0,
                 backend: str = "auto", max_gap: float = 1.0, compile: bool = False, native: bool | None = None):
        self.strength, self.fps = strength, fps  # checked (Checked), before any work
        max_gap = as_positive(max_gap, "max_gap", "seconds")
        self.device = resolve_device(device)
        # compile: the same explicit step through torch.compile (Inductor; a C++ compiler on CPU), compiled per
        # (B, K, D) on first use. On the torch SSM backend: mamba's in-place Triton step kernel is not compile-safe.
        self.model = load_pose_model(weights, self.device, "torch" if compile else backend)
        self._step = torch.compile(self.model.step, dynamic=False) if compile else self.model.step
        self.native = self._use_native(native, compile)
        if self.native:
            from streamssm.pose.native import native_step

            self._step = functools.partial(native_step, self.model)
        self.max_gap = float(max_gap)
        self.state: tuple[Tensor, ...] | None = None
        self._shape: tuple[int, int] | None = None  # (B, K) of the running stream
        self._dims: int | None = None  # and its D (after set_state: the snapshot's, None from a plain tuple)
        self._last_t: float | None = None  # timestamp (s) of the last frame, when the caller gives them
        self._gap_restarts = 0  # frames in a row that each started over after a gap over max_gap (step)

    # --------------------------------------------------------------------------------- helpers
    def _use_native(self, native: bool | None, compile: bool) -> bool:
        if native is False or (native is None and (compile or self.device.type != "cpu")):
            return False
        if self.device.type != "cpu" or compile:
            raise ValueError("native=True needs device='cpu' and compile=False")
        from streamssm.pose.native import native_available

        ok, why = native_available(self.model)
        if not ok:
            if native:
                raise RuntimeError(f"native=True, but {why}")
            log.info("streamssm: native pose step unavailable, using the PyTorch step: %s", why.splitlines()[0])
        return ok

    def _to_tensor(self, points: Any, confidence: Any, lead: int) -> tuple[Tensor, Tensor | None, bool, Any]:
        is_torch = isinstance(points, Tensor)
        if not is_torch:
            try:
                points = np.asarray(points)
            except Exception as e:
                raise ValueError(f"points must be an array of shape (K, D) or (B, K, D), got {type(points).__name__}") from e
            if points.dtype == object or not np.issubdtype(points.dtype, np.number) or np.iscomplexobj(points):
                raise ValueError(f"points must be real numbers, got dtype {points.dtype}")
        elif points.is_complex() or points.dtype == torch.bool:
            raise ValueError(f"points must be real numbers, got dtype {points.dtype}")
        dtype = points.dtype
        check_magnitude(points)
        # asarray(order="C"), not ascontiguousarray: that makes a 0-d input 1-d, and the shape error would misquote it
        p = points if is_torch else torch.from_numpy(_writable(np.asarray(points, dtype=np.float32, order="C")))
        if p.dim() not in (lead + 2, lead + 3):
            want = "(K, D) or (B, K, D)" if lead == 0 else "(T, K, D) or (T, B, K, D)"
            raise ValueError(f"points must have shape {want}, got {tuple(p.shape)}")
        if p.shape[-1] not in (2, 3):
            raise ValueError(f"points must have D = 2 or 3 coordinates in the last axis, got shape {tuple(p.shape)}")
        if p.shape[-2] < 1:
            raise ValueError(f"points must have at least one keypoint, got shape {tuple(p.shape)}")
        if p.shape[-2] > MAX_KEYPOINTS:
            raise ValueError(f"points have {p.shape[-2]} keypoints per frame, more than MAX_KEYPOINTS={MAX_KEYPOINTS} "
                             f"(shape {tuple(p.shape)}: is the layout (K, D) / (B, K, D)?)")
        if p.dim() == lead + 3 and p.shape[lead] < 1:
            raise ValueError(f"points have 0 streams (B = 0), got shape {tuple(p.shape)}")
        c = None
        if confidence is not None:
            try:
                c = confidence if isinstance(confidence, Tensor) else \
                    torch.from_numpy(_writable(np.asarray(confidence, dtype=np.float32, order="C")))
            except (TypeError, ValueError) as e:
                raise ValueError(f"confidence must be numbers of shape {tuple(p.shape[:-1])} (points without D), got "
                                 f"{confidence!r:.60}") from e
            if tuple(c.shape) != tuple(p.shape[:-1]):
                raise ValueError(f"confidence must have shape {tuple(p.shape[:-1])} (points without D), got {tuple(c.shape)}")
            c = c.to(self.device, torch.float32)
        return p.to(self.device, torch.float32), c, is_torch, dtype

    def _model_fps(self, b: int, timed: bool) -> float | Tensor:
        """The ``fps`` argument of the model for a batch of ``b`` streams: the number, or a (b,) tensor."""
        fps = self.fps
        if not isinstance(fps, tuple):
            return fps
        if timed:
            raise ValueError(f"timestamps with one fps per stream ({len(fps)} rates): one clock cannot run at several "
                             "frame rates; leave the timestamps out (each call is the next frame of every stream), "
                             "or use a filter per frame rate")
        if len(fps) != b:
            raise ValueError(f"fps has {len(fps)} value(s), one per stream, but the frame has {b} stream(s): set the "
                             "filter's fps for these streams (f.fps = ...)")
        return torch.tensor(fps, dtype=torch.float32, device=self.device)

    def _gap(self, t: Any) -> tuple[float, int]:
        """(timestamp, frame periods since the previous frame; 1 for the first) after validating ``t``."""
        t = as_timestamp(t)
        if self._last_t is None or self.state is None:
            return t, 1
        dt = t - self._last_t
        if not dt > 0:
            raise ValueError(f"timestamp {t} s does not come after the previous frame's {self._last_t} s: "
                             "timestamps must strictly increase (call reset() to start a new stream)")
        return t, max(1, round(dt * self.fps))

    def _step_over(self, missing: int, b: int, k: int, d: int) -> None:
        """Advance the state over ``missing`` dropped frames (all keypoints missing), or start over
        when the gap is longer than ``max_gap``."""
        if missing <= 0 or self.state is None:
            return
        if missing + 1 > self.max_gap * self.fps:
            log.info("pose: %.3g s without frames (> max_gap %.3g s): starting the streams over",
                     (missing + 1) / self.fps, self.max_gap)
            self._gap_restarts += 1
            if self._gap_restarts == 3:  # three frames in a row each after a long gap: the clock's unit, not gaps
                log.warning("pose: the last 3 frames each came over max_gap (%g s) after the one before, so each "
                            "started the filter over and nothing is smoothed: timestamps are seconds "
                            "(milliseconds? divide by 1000)", self.max_gap)
            self.state = None
            return
        nan = torch.full((b, missing, k, d), float("nan"), device=self.device)
        _, self.state = self.model(nan, None, self.state, fps=self.fps, strength=self.strength)

    def _check_stream(self, b: int, k: int, d: int) -> None:
        if self._shape is not None and self._shape != (b, k) and self.state is not None:
            what = ("The keypoint count cannot change mid-stream: call reset() first" if self._shape[1] != k else
                    "Streams are added with add_streams() and removed with drop_streams() (or reset() first)")
            raise ValueError(f"this filter runs {self._shape[0]} stream(s) of {self._shape[1]} keypoints; got "
                             f"{b} x {k}. {what}")
        if self._dims is not None and self._dims != d and self.state is not None:
            raise ValueError(f"this stream's keypoints are {self._dims}-D; got {d}-D. The dimension cannot change "
                             "mid-stream: call reset() first")
        if k == 1 and self._shape != (b, k):
            log.warning("pose: one keypoint per frame has no body size to scale the correction by: the filter "
                        "passes it through unchanged (give the whole skeleton, 2 keypoints or more)")
        self._shape, self._dims = (b, k), d

    @staticmethod
    def _out(y: Tensor, is_torch: bool, dtype, like: Any):
        if is_torch:
            return y.to(like.device, like.dtype if like.is_floating_point() else torch.float32)
        y = y.cpu().numpy()
        return y.astype(dtype) if np.issubdtype(dtype, np.floating) else y

    # ------------------------------------------------------------------------------------- API
    @torch.no_grad()
    def step(self, points: Any, confidence: Any = None, timestamp: float | None = None):
        """Filter one frame: (K, D) or (B, K, D) -> same shape, same type.

        ``timestamp`` (s, optional): dropped frames before this one are stepped over as missing, a gap
        over ``max_gap`` starts over (module docstring). Without it, frames are one period apart."""
        p, c, is_torch, dtype = self._to_tensor(points, confidence, 0)
        single = p.dim() == 2
        if single:
            p = p[None]
            c = None if c is None else c[None]
        b, k, d = p.shape
        fps = self._model_fps(b, timestamp is not None)
        self._check_stream(b, k, d)
        if timestamp is not None:
            t, periods = self._gap(timestamp)
            if periods <= self.max_gap * self.fps:
                self._gap_restarts = 0
            self._step_over(periods - 1, b, k, d)
        else:  # no timeline at several frame rates
            t = None if self._last_t is None or isinstance(fps, Tensor) else self._last_t + 1.0 / fps
        y, self.state = self._step(p, c, self.state, fps=fps, strength=self.strength)
        self._last_t = t
        return self._out(y[0] if single else y, is_torch, dtype, points)

    @torch.no_grad()
    def filter(self, sequence: Any, confidence: Any = None, timestamps: Any = None):
        """Filter a whole sequence (T, K, D) or (T, B, K, D) with the parallel scan, continuing from
        (and advancing) the current state: the same result as calling :meth:`step` on every frame
        (with the same ``timestamps``, (T,) seconds, optional)."""
        p, c, is_torch, dtype = self._to_tensor(sequence, confidence, 1)
        single = p.dim() == 3
        if single:
            p = p[:, None]
            c = None if c is None else c[:, None]
        t, b, k, d = p.shape
        if t == 0:
            raise ValueError("sequence is empty (T = 0 frames)")
        fps = self._model_fps(b, timestamps is not None)
        self._check_stream(b, k, d)
        if timestamps is None:
            y = self._scan(p, c, fps)
            if self._last_t is not None:
                self._last_t = None if isinstance(fps, Tensor) else self._last_t + t / fps
        else:
            y = self._scan_timed(p, c, self._timeline(timestamps, t))
        return self._out(y[:, 0] if single else y, is_torch, dtype, sequence)

    def _scan(self, p: Tensor, c: Tensor | None, fps: float | Tensor | None = None) -> Tensor:
        """(T, B, K, D) -> (T, B, K, D) with the parallel scan, advancing the state; in chunks of
        :data:`SCAN_KEYPOINT_FRAMES` keypoint-frames with the state carried, so memory stays bounded
        whatever T (the API, the CLI and the demo all go through here)."""
        t, b, k, _ = p.shape
        n = max(1, SCAN_KEYPOINT_FRAMES // (b * k))
        fps = self.fps if fps is None else fps
        outs = []
        for s in range(0, t, n):
            y, self.state = self.model(p[s : s + n].transpose(0, 1), None if c is None else c[s : s + n].transpose(0, 1),
                                       self.state, fps=fps, strength=self.strength)
            outs.append(y.transpose(0, 1))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _timeline(self, timestamps: Any, t: int) -> list[tuple[int, int, np.ndarray, bool]]:
        """Validate (T,) timestamps and cut the frames into segments ``(start, stop, pos, restart)``:
        ``pos`` are the frames' places on the regular frame grid (holes = dropped frames, stepped over
        as missing), ``restart`` = the gap before the segment exceeds ``max_gap``. Same rules as
        :meth:`step`; updates the last timestamp."""
        try:
            ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(f"timestamps must be a sequence of numbers (seconds), got {type(timestamps).__name__}") from None
        if ts.shape != (t,):
            raise ValueError(f"timestamps must have one value per frame: {t} frames, got {ts.size} timestamps")
        if not np.isfinite(ts).all():
            i = int(np.flatnonzero(~np.isfinite(ts))[0])
            raise ValueError(f"timestamps must be finite; frame {i} is at {ts[i]}")
        first = np.nan if self._last_t is None or self.state is None else self._last_t
        prev = np.concatenate([[first], ts[:-1]])
        dt = ts - prev
        bad = np.flatnonzero(dt <= 0)
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"timestamps must strictly increase: frame {i} is at {ts[i]} s, after {prev[i]} s "
                             "(call reset() to start a new stream)")
        periods = np.where(np.isfinite(dt), np.maximum(1, np.round(np.nan_to_num(dt) * self.fps)), 1).astype(np.int64)
        restart = (periods > 1) & (periods > self.max_gap * self.fps)  # as step: only a gap with missing frames
        if t >= 3 and 2 * int(restart[1:].sum()) > t - 1:  # sparse keyframes, or a clock in the wrong unit
            log.warning("pose: %d of the %d steps between frames are gaps over max_gap (%g s; median step %g), so the "
                        "filter starts over at nearly every frame and smooths nothing: timestamps are seconds "
                        "(milliseconds? divide by 1000)", int(restart[1:].sum()), t - 1, self.max_gap,
                        np.median(np.diff(ts)))
        starts = sorted({0, *np.flatnonzero(restart).tolist()})
        segments = []
        for j, start in enumerate(starts):
            stop = starts[j + 1] if j + 1 < len(starts) else t
            k = periods[start:stop].copy()
            if restart[start]:
                k[0] = 1  # the stream starts over at this frame: no holes before it
            segments.append((start, stop, np.cumsum(k) - 1, bool(restart[start])))
        self._last_t = float(ts[-1])
        return segments

    def _scan_timed(self, p: Tensor, c: Tensor | None, segments) -> Tensor:
        out = torch.empty_like(p)
        _, b, k, d = p.shape
        for start, stop, pos, restart in segments:
            if restart:
                log.info("pose: gap over max_gap %.3g s before frame %d: starting the streams over", self.max_gap, start)
                self.state = None
            n = int(pos[-1]) + 1
            if n == stop - start:  # no holes: straight through
                out[start:stop] = self._scan(p[start:stop], None if c is None else c[start:stop])
                continue
            grid = torch.full((n, b, k, d), float("nan"), device=p.device)
            idx = torch.as_tensor(pos, device=p.device)
            grid[idx] = p[start:stop]
            cg = None
            if c is not None:
                cg = torch.zeros((n, b, k), device=p.device)
                cg[idx] = c[start:stop]
            out[start:stop] = self._scan(grid, cg)[idx]
        return out

    def reset(self, mask: Any = None) -> None:
        """Start over: every stream (``mask=None``) or those where ``mask`` (B,) is True (the others'
        state is untouched, bit for bit). Every stream: ``fps`` goes back to the value given (to the constructor, or
        set since), as when every stream is dropped: per-stream rates that came with :meth:`add_streams` go."""
        if mask is not None:  # refused before the first frame as after it (only its length is unknown then)
            mask = as_reset_mask(mask, None if self.state is None else self._shape[0])
        if mask is None or self.state is None:  # every stream: the rates that came with add_streams go with them
            self.state, self._shape, self._dims, self._last_t = None, None, None, None
            self._gap_restarts = 0
            self._fps = self._fps_given
            return
        b, k = self._shape
        fresh = self.model.init_state(b, k, self.device)
        self.state = reset_state(self.state, fresh, mask)

    def add_streams(self, n: int = 1, fps: Any = None) -> None:
        """Append ``n`` fresh streams (indices B .. B+n-1); the running ones keep their state. ``fps``: the new
        streams' frame rate (one, or ``n`` of them), needed when the filter has one per stream; given to a filter
        with one rate for all that differs from it, it makes the filter's ``fps`` one per stream."""
        if not (isinstance(n, (int, np.integer)) and n >= 1):
            raise ValueError(f"add_streams: n must be a positive integer, got {n!r}")
        if self.state is None:
            raise ValueError("add_streams: no stream is running yet (the first step sets B and K)")
        b, k = self._shape
        if fps is not None or isinstance(self.fps, tuple):
            if fps is None:
                raise ValueError(f"add_streams: this filter has one fps per stream; give the new streams' fps= (one "
                                 f"rate, or {n} of them)")
            new = _as_fps(fps)
            new = new if isinstance(new, tuple) else (new,) * int(n)
            if len(new) != n:
                raise ValueError(f"add_streams: fps has {len(new)} value(s) for {n} new stream(s)")
            old = self.fps if isinstance(self.fps, tuple) else (self.fps,) * b
            self._fps = old + new if len(set(old + new)) > 1 else new[0]  # checked; not the fps given (_GivenFps)
        self.state = cat_streams(self.state, self.model.init_state(int(n), k, self.device))
        self._shape = (b + int(n), k)

    def drop_streams(self, index: Any) -> None:
        """Remove the streams at ``index`` (an int or a list); the others keep their state and order, and with one
        ``fps`` per stream their rates. Dropping every stream, one at a time or all at once alike, is :meth:`reset`
        and puts ``fps`` back to the value given (to the constructor, or set since): the rates that came and went
        with the streams belonged to them, and a new stream is not run at the last one's rate."""
        if self.state is None:
            raise ValueError("drop_streams: no stream is running yet")
        b, k = self._shape
        keep = kept_streams(index, b)
        if not keep:
            self.reset()  # which puts fps back to the value given
            return
        if isinstance(self.fps, tuple) and len(self.fps) == b:  # the dropped streams' rates go with them
            self._fps = tuple(self.fps[i] for i in keep)  # checked; not the fps given (_GivenFps)
        self.state = take_streams(self.state, keep)
        self._shape = (len(keep), k)

    def get_state(self) -> FilterState | None:
        """A snapshot of every stream (copies; None before the first frame): a
        :class:`~streamssm.stream.FilterState`, the model's state tensors with the stream's last timestamp and
        the points' D, for :meth:`set_state` here or in another process (it pickles; ``torch.save`` works). The
        filter's settings (``fps``, one per stream or not, ``strength``) are not in it: the restoring filter's apply."""
        if self.state is None:
            return None
        return FilterState((s.clone() for s in self.state), self._last_t, self._dims)

    def set_state(self, state) -> None:
        """Restore a snapshot from :meth:`get_state` (shapes, dtype float32 and finiteness checked). Its last
        timestamp and D come with it (the next frame's are checked against them); a plain tuple of the state
        tensors starts the timeline at the next frame."""
        if state is None:
            self.reset()
            return
        if not isinstance(state, (tuple, list)) or not state or not all(isinstance(s, Tensor) for s in state):
            raise ValueError(f"pose state must be a tuple of tensors from get_state(), got {_describe(state)}")
        if state[0].dim() != 3:
            raise ValueError(f"pose state[0] must be (B, K, 3), got shape {tuple(state[0].shape)}")
        b, k = state[0].shape[:2]
        self.model.check_state(state, b, k)
        for i, s in enumerate(state):
            if s.dtype != torch.float32:
                raise ValueError(f"pose state[{i}] must be float32, got {s.dtype}")
            if not torch.isfinite(s).all():
                raise ValueError(f"pose state[{i}] contains NaN or inf: not a state this filter produced")
        self.state = tuple(s.to(self.device).clone() for s in state)
        self._shape, self._dims = (b, k), getattr(state, "dims", None)
        self._last_t = getattr(state, "last_timestamp", None)  # a plain tuple: the timeline starts at the next frame
