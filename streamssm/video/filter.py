"""VideoFilter: the user-facing streaming deflicker (state held for you)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from streamssm._args import Checked, as_exposure_lock, as_ghost_res, as_positive, as_strength, as_timestamp
from streamssm._device import resolve_device
from streamssm.stream import FilterState, _describe, as_reset_mask, cat_streams, kept_streams, reset_state, take_streams
from streamssm.video.cpu_step import CPUVideoPipeline, CPUVideoStep
from streamssm.video.model import VideoSSM, VideoSSMConfig, check_frame_size
from streamssm.weights import PACKAGE_WEIGHTS, build_model, read_weights

log = logging.getLogger("streamssm")
DEFAULT_WEIGHTS = PACKAGE_WEIGHTS / "video.safetensors"


def load_video_model(weights: str | Path | None = None, device: torch.device | str = "cpu", backend: str = "auto") -> VideoSSM:
    """Build a :class:`VideoSSM` from a safetensors file (default: the weights shipped in the package)."""
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be the path of a .safetensors file, got {type(weights).__name__}")
    path = Path(weights).expanduser() if weights is not None else DEFAULT_WEIGHTS
    config, tensors, extra = read_weights(path, "video")
    # the names and shapes compared before the model is built: a small file may ask for a large one
    model = build_model(VideoSSM, VideoSSMConfig, config, tensors, path, backend=backend)
    if "calibration" not in extra and "step" in extra:  # a training checkpoint, used as it is
        _unfinished_warning(str(path))
    return model.to(device).eval()


@functools.lru_cache(maxsize=None)
def _unfinished_warning(path: str) -> None:
    log.warning("%s: training weights, not finished (the shipped ones are: README, 'streamssm train'): strength 1 is "
                "the blend as trained, not the calibrated one; finish them with streamssm.train.video."
                "calibrate_blend and finish_processed_only for the README's figures", path)


def frame_to_float(frame: Any, name: str = "frame") -> tuple[np.ndarray, np.dtype]:
    """H x W x {1,3,4} or H x W, uint8 / uint16 / float in [0, 1] -> (H x W x 3 float32 RGB, input dtype)."""
    kind = "" if isinstance(frame, np.ndarray) else f"{type(frame).__name__} of "  # a str was "got shape ()"
    if not isinstance(frame, np.ndarray):
        try:
            frame = np.asarray(frame)
        except Exception as e:
            raise ValueError(f"{name} must be an H x W x 3 array, got {type(frame).__name__}") from e
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4) or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"{name} must be H x W x 3 (RGB), H x W x 4 (RGBA) or H x W (gray), got {kind}shape "
                         f"{frame.shape}")
    dtype = frame.dtype
    if dtype == np.uint8:
        x = frame.astype(np.float32) * (1.0 / 255.0)
    elif dtype == np.uint16:
        x = frame.astype(np.float32) * (1.0 / 65535.0)
    elif np.issubdtype(dtype, np.floating):
        x = frame.astype(np.float32)
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or inf")
        if x.max() > 2.0:  # values of 0..255 in a float array: clipped to [0, 1] they would come back nearly white
            # one message whatever the frame: Python shows it once per calling line, not once a frame
            _warn("a float frame has values above 1: float frames are read as [0, 1] and clipped; pass uint8, or "
                  "divide by 255", UserWarning)
    else:
        raise ValueError(f"{name} must be uint8, uint16 or float in [0, 1], got dtype {dtype}")
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    elif x.shape[2] == 4:
        x = x[..., :3]  # alpha is dropped: the filter works on colour
    return np.clip(x, 0.0, 1.0), dtype


def _restart_warning(old: tuple, new: tuple) -> None:
    """RuntimeWarning that a stream starts over: its frame size (W x H) or stream count changed, (B, H, W) keys.
    Attributed to the caller's line outside this module, whichever API method it came through."""
    what = []
    if old[1:] != new[1:]:
        what.append(f"frame size changed from {old[2]}x{old[1]} to {new[2]}x{new[1]}")
    if old[0] != new[0]:
        what.append(f"stream count changed from {old[0]} to {new[0]}")
    _warn(f"streamssm: {' and '.join(what)}; the filter starts over", RuntimeWarning)


def _warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the first line outside this module (the caller's), whichever API method
    and list comprehension it came through."""
    level, frame = 3, sys._getframe(2)  # stacklevel 3: the frame that called our caller
    while frame is not None and frame.f_code.co_filename == __file__:
        level, frame = level + 1, frame.f_back
    warnings.warn(message, category, stacklevel=level)


def float_to_frame(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """An (H, W, 3) float frame in [0, 1] back to ``dtype``, C-contiguous whatever the layout of ``x`` (a transposed
    view's layout would otherwise carry over, and OpenCV's drawing functions refuse such an array)."""
    if dtype == np.uint8:
        return (x * 255.0 + 0.5).astype(np.uint8, order="C")
    if dtype == np.uint16:
        return (x * 65535.0 + 0.5).astype(np.uint16, order="C")
    return x.astype(dtype, order="C")


def _image_tensor(frame: Any) -> bool:
    """A CPU tensor laid out as a numpy image (H x W or H x W x {1, 3, 4}), which step() takes as one."""
    return (isinstance(frame, Tensor) and not frame.is_cuda and
            (frame.dim() == 2 or (frame.dim() == 3 and frame.shape[-1] in (1, 3, 4))))


def _image_in(frame: Any) -> Any:
    """An image-shaped CPU tensor (:func:`_image_tensor`) as numpy, anything else as it is. bfloat16, which numpy
    lacks, comes as float32 (its values exactly); :func:`_image_out` gives the output the tensor's dtype back."""
    if not _image_tensor(frame):
        return frame
    t = frame.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def _image_out(out: Any, frame: Any) -> Any:
    """The output for ``frame`` as it came in: a tensor of its dtype for a tensor frame (float16 and bfloat16
    included, in step() and filter() alike), numpy for numpy."""
    if isinstance(frame, Tensor) and isinstance(out, np.ndarray):
        return torch.from_numpy(out).to(frame.dtype)
    return out


def _rgb_uint8(frame: Any) -> bool:
    """An H x W x 3 uint8 numpy frame (what the CPU fast path takes as it is)."""
    return (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
            and frame.shape[0] >= 1 and frame.shape[1] >= 1)


def _rgb_uint8_pair(frame: Any, original: Any) -> bool:
    """``frame`` and ``original`` (if any) are both H x W x 3 uint8 numpy frames (the fast paths' input)."""
    return _rgb_uint8(frame) and (original is None or _rgb_uint8(original))


def _check_same_size(frame: np.ndarray, original: np.ndarray | None) -> None:
    if original is not None and original.shape != frame.shape:
        raise ValueError(f"original frame is {original.shape[1]}x{original.shape[0]} but the processed frame is "
                         f"{frame.shape[1]}x{frame.shape[0]}: they must be the same size")


class _Checkpoint(NamedTuple):
    """What a failed call gives back (:meth:`VideoFilter._checkpoint`): the state, the stream key, the clock, the
    frame count, and the CUDA graph of the running stream with the strength its device scalar holds."""
    state: tuple[Tensor, ...] | None
    key: tuple | None
    last_t: float | None
    frames_seen: int
    graph: Any
    graph_strength: float


class VideoFilter:
    """Causal deflicker for processed video, one frame at a time or a whole clip at once.

    Args:
        weights: ``.safetensors`` from ``streamssm train video``; default: the shipped weights.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``.
        strength: 0 returns the processed frame, 1 the learned correction and the calibrated temporal blend
            (up to 2). It scales both; the shipped weights' blend weight is 0.6 of the learned one where the
            content moves (``calibrate_blend``), so strength ~1.7 gives it its learned weight there.
        half: run the network in float16 on CUDA (default True there).
        max_gap: seconds; with timestamps (``step(..., timestamp=)``), a longer gap since the previous
            frame (a camera that stalled, a cut in a variable-frame-rate file) starts the streams over,
            since the blended previous output no longer matches the scene. Shorter gaps (dropped
            frames) need nothing: the blend is motion-compensated and gated per pixel. A frame given without a
            timestamp (``step``/``push`` without one, every frame of :meth:`filter`) clears the last one: the next
            timestamped frame is then checked neither for order nor for a gap (the time since the last timestamp
            says nothing once untimed frames came in between).
        fast: on the CPU, run each step with :class:`~streamssm.video.cpu_step.CPUVideoStep` (the same
            math rearranged for the CPU, ~4x faster; equal to ``VideoSSM.step`` to fp32 rounding, 1e-4) and
            :meth:`filter` frame by frame with it; on CUDA, run ``step`` on single H x W x 3 uint8 frames
            through :class:`~streamssm.fast.FastVideoStep` (the same ``VideoSSM.step`` replayed as a CUDA graph,
            pinned-memory copies; no compilation); ``False``: the model's own step and parallel scan.
        ghost_res: the ghost guard (:func:`~streamssm.video.model.blend_confidence`): a flow residual (luminance,
            0..1) at which the temporal blend is cut to 1/e, so that a thin or fast object the flow misses leaves
            no trail of copies; 0 (the weights' default): off; above about 1 it changes nothing. 0.3 removes
            three fifths of the trails of clean 720p footage (two fifths at 640 px) for little flicker left, 0.1
            nearly all of them for more (``benchmarks/video_ghosting.py``). None: the weights' own setting.
        exposure_lock: for a global brightness flicker (a timelapse, old film, an operator whose overall gain
            jitters): each whole frame is scaled towards a running average of its brightness, before the blend,
            which leaves such flicker wherever the content moves (:func:`~streamssm.video.model.exposure_gain`).
            Guided, the average is of its brightness over the original's, and it lets go while the original's own
            brightness moves (a fade, an exposure change), so those come through. Processed-only it is of the
            frame's own brightness: a real fade or exposure change comes through late, and the first frame after a
            start or a cut sets the reference. The value is the weight of a new frame in the average, in [0, 1]:
            smaller is steadier (0.05 very strong, 0.3 strong, 0.5 mild), 1 follows every frame, 0 (the weights'
            default) is off; scaled with ``strength`` like the rest (strength 0 returns P). None: the weights' own.

    ``step(frame, original=None)``: numpy H x W x 3 uint8 RGB in and out (gray, RGBA, 16-bit and float
    frames are converted; the output is H x W x 3 RGB in the input's dtype; a CPU tensor in that layout is taken as
    numpy and comes back a tensor, in step() and filter() alike), or torch (B, 3, H, W) float tensors in
    [0, 1], in and out, on the filter's device (B independent streams; NaN is read as 0 and values are
    clamped to [0, 1] on the device, without a host sync). With ``original`` (the frame the operator
    saw) the filter is guided; without it, it works on the processed frame alone. Guided, a change of the
    original's own brightness (a fade, auto-exposure, a light switched on) comes through, within ~3% while it
    happens; processed-only one frame cannot tell it from flicker: the output follows it late, about a fifth dark
    at worst during a fast fade from 30% and half dark in one from near black, and ends within ~3% of it a few
    frames after the fade; a repeated frame (a frame-rate conversion by repetition) is compared with the last
    frame that differed, not with its copy, though such clips still keep more exposure flicker than clips of
    distinct frames (``benchmarks/video_fade.py``).

    One filter object is not thread-safe; filters in separate threads are independent. On the CPU, outside
    :meth:`push`, a filter pickles and deep-copies (with its state; while :meth:`push` has a frame in the CPU
    pipeline it is refused, RuntimeError: :meth:`flush` first); :meth:`get_state` is the smaller snapshot, and
    the one that moves between devices and processes anywhere.

    A frame that is refused (ValueError: too small, a wrong type, dtype or size, a timestamp out of order) leaves
    the filter as it was, so the stream goes on with the next frame as if it had not been given.

    Batches: for a given B, a stream's outputs are bit-identical whatever the other streams hold;
    against the stream run alone they agree to fp32 rounding (matmul/conv kernels pick their
    summation order from the batch size). ``reset(mask)``, :meth:`add_streams` and
    :meth:`drop_streams` leave the other streams' state bit-identical.

    >>> import numpy as np
    >>> f = VideoFilter(device="cpu")
    >>> frame = np.zeros((72, 128, 3), np.uint8)
    >>> f.step(frame).shape
    (72, 128, 3)
    """

    strength = Checked(as_strength, "0 returns the processed frame, 1 the calibrated filter, up to 2 (class "
                       "docstring); checked when set.")
    max_gap = Checked(functools.partial(as_positive, name="max_gap", unit="seconds"),
                      "seconds: a longer gap between timestamps starts the streams over (class docstring); checked "
                      "when set.")

    @property
    def exposure_lock(self) -> float:
        """The exposure lock's weight (class docstring), the model's ``config.exposure_lock``; checked when set, and
        taken up by the next frame (the running stream keeps its state)."""
        return self.model.config.exposure_lock

    @exposure_lock.setter
    def exposure_lock(self, value) -> None:
        self.model.config.exposure_lock = as_exposure_lock(value)
        self._graph = None  # a CUDA graph holds the setting it was captured with: captured anew, the state carried

    def __init__(self, weights: str | Path | None = None, device: str = "auto", strength: float = 1.0,
                 half: bool | None = None, backend: str = "auto", max_gap: float = 1.0, fast: bool = True,
                 ghost_res: float | None = None, exposure_lock: float | None = None):
        self.strength = strength  # checked (Checked), before any work
        self.max_gap = max_gap
        ghost_res = None if ghost_res is None else as_ghost_res(ghost_res)
        exposure_lock = None if exposure_lock is None else as_exposure_lock(exposure_lock)
        self.device = resolve_device(device)
        self.model = load_video_model(weights, self.device, backend)
        if ghost_res is not None:
            self.model.config.ghost_res = ghost_res
        self.half = (self.device.type == "cuda") if half is None else bool(half)
        self._cpu = CPUVideoStep(self.model) if fast and self.device.type == "cpu" else None
        self._use_graph = bool(fast) and self.device.type == "cuda"
        self._graph = None  # FastVideoStep of the running (h, w, guided) stream, made on first use
        self._graph_strength = self.strength  # the strength its device scalar holds
        if exposure_lock is not None:
            self.exposure_lock = exposure_lock
        self._pipe: CPUVideoPipeline | None = None  # push()/flush() on the CPU fast path
        self._queued = None  # push() elsewhere: the output held back one call
        self.state: tuple[Tensor, ...] | None = None
        self._key: tuple | None = None  # (B, H, W, guided) of the running stream
        self._last_t: float | None = None  # timestamp (s) of the last frame, when the caller gives them
        self.frames_seen = 0

    def __getstate__(self) -> dict:
        """pickle / deepcopy: refused while :meth:`push` has a frame in the CPU pipeline (its worker threads and the
        frame in flight cannot be copied; TypeError "cannot pickle '_thread.RLock'" said neither why nor what to
        do), as :meth:`get_state` is."""
        if self._pipe is not None:
            raise RuntimeError("a frame given to push() is still in flight: call flush() before pickling or copying "
                               "the filter")
        return self.__dict__

    # ------------------------------------------------------------------------------- plumbing
    def _checkpoint(self, copy: bool = False) -> _Checkpoint:
        """The filter as it is, for :meth:`_rollback` after a call that fails part way. ``copy``: the state's tensors
        cloned, for a call that may step the CUDA graph, whose static buffers *are* ``self.state`` while it runs and
        change in place; otherwise references (every other step makes new state tensors)."""
        state = self.state
        if copy and state is not None:
            state = tuple(s.clone() for s in state)
        return _Checkpoint(state, self._key, self._last_t, self.frames_seen, self._graph, self._graph_strength)

    @contextlib.contextmanager
    def _all_or_nothing(self, copy: bool = False):
        """The filter as it was before the block where the block fails (a refused frame, out of memory, Ctrl-C):
        :meth:`_checkpoint` (``copy``: see there) before it, :meth:`_rollback` to it on any exception."""
        before = self._checkpoint(copy)
        try:
            yield
        except BaseException:
            self._rollback(before)
            raise

    def _rollback(self, cp: _Checkpoint) -> None:
        """Back to ``cp``. A state that is not the graph's static buffers (a clone) is copied into them by the next
        graph step (``_step_uint8_graph``: ``g.set_state`` when ``self.state is not g.state``)."""
        self.state, self._key, self._last_t, self.frames_seen = cp.state, cp.key, cp.last_t, cp.frames_seen
        # the failed call may have written the strength into this graph's device scalar: the next step writes it
        self._graph, self._graph_strength = cp.graph, None if cp.graph is not None else cp.graph_strength

    def _stream_key(self, b: int, h: int, w: int) -> None:
        key = (b, h, w)
        if self._key is not None and self._key != key and self.state is not None:
            _restart_warning(self._key, key)
            self.state = None
        self._key = key

    def _run(self, P: Tensor, I: Tensor | None, parallel: bool, timestamp: Any = None) -> Tensor:
        """P, I (B, T, 3, H, W) float on device, checked but for their size -> O (same); ``timestamp``: the
        (single) frame's, see :meth:`_admit`."""
        b, t, _, h, w = P.shape
        with self._all_or_nothing():  # references: these steps make new state tensors, they change none in place
            self._admit(h, w, timestamp)
            self._stream_key(b, h, w)
            amp = self.half and self.device.type == "cuda"
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                if parallel and self._cpu is None:
                    O, state = self.model(P, I, self.state, strength=self.strength)
                    # float32, as every step leaves it: under fp16 autocast the scan gives its SSM states in float16,
                    # which get_state/set_state and the CUDA graph's buffers do not take
                    self.state = tuple(s.float() for s in state)
                else:
                    step = self.model.step if self._cpu is None else self._cpu.step
                    outs = []
                    for i in range(t):
                        o, self.state = step(P[:, i], None if I is None else I[:, i], self.state, self.strength)
                        outs.append(o)
                    O = torch.stack(outs, 1)
        self.frames_seen += t
        return O.float()

    def _tensor_in(self, frame: Tensor, name: str) -> Tensor:
        if frame.dim() != 4 or frame.shape[1] != 3:
            raise ValueError(f"{name} tensor must be (B, 3, H, W) float in [0, 1], got shape {tuple(frame.shape)}")
        if not frame.is_floating_point():
            raise ValueError(f"{name} tensor must be floating point in [0, 1], got {frame.dtype}")
        if frame.shape[0] < 1 or frame.shape[2] < 1 or frame.shape[3] < 1:
            raise ValueError(f"{name} tensor is empty: shape {tuple(frame.shape)}")
        # NaN/inf would poison the state for good; sanitised on the device (an isfinite check would
        # cost a host sync per frame)
        return torch.nan_to_num(frame.to(self.device, torch.float32), nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)

    def _admit(self, h: int, w: int, timestamp: Any, running: bool | None = None) -> bool:
        """The last checks of an h x w frame, otherwise checked already, all made before it changes anything, so
        that a refused frame leaves the filter as it was (state, frame size, clock): its size (ValueError when it is
        too small for the model), then its ``timestamp`` (s). A timestamp must come after the last frame's; a gap
        over ``max_gap`` since it starts over (returns True). A frame without one clears the last timestamp, so
        that the next timestamped frame is not compared with one from before it (which read the frames in between
        as a gap). ``running``: whether a stream is running (default: there is a state)."""
        check_frame_size(h, w, self.model.config)
        if timestamp is None:
            self._last_t = None
            return False
        t = as_timestamp(timestamp)
        gap = False
        if self._last_t is not None and (self.state is not None if running is None else running):
            if not t > self._last_t:
                raise ValueError(f"timestamp {t} s does not come after the previous frame's {self._last_t} s: "
                                 "timestamps must strictly increase (call reset() to start a new stream)")
            if t - self._last_t > self.max_gap:
                log.info("video: %.3g s without frames (> max_gap %.3g s): starting the streams over",
                         t - self._last_t, self.max_gap)
                self.state = None
                gap = True
        self._last_t = t
        return gap

    # ------------------------------------------------------------------------------------- API
    def step(self, frame: Any, original: Any = None, timestamp: float | None = None):
        """Filter one frame (see the class docstring for the accepted types).

        ``timestamp`` (s, optional): see ``max_gap``; must increase from frame to frame."""
        if self._pipe is not None or self._queued is not None:
            raise RuntimeError("a frame given to push() is still in flight: call flush() before step()")
        return self._step(frame, original, timestamp)

    def _step(self, frame: Any, original: Any, timestamp: float | None):
        if _image_tensor(frame) and (original is None or _image_tensor(original)):  # H x W x 3 on the CPU: as numpy
            return _image_out(self._step(_image_in(frame), _image_in(original), timestamp), frame)
        if isinstance(frame, Tensor) or isinstance(original, Tensor):
            if not (isinstance(frame, Tensor) and (original is None or isinstance(original, Tensor))):
                raise ValueError(f"frame and original must both be torch tensors (B, 3, H, W) or both numpy images, got "
                                 f"{type(frame).__name__} and {type(original).__name__}")
            P = self._tensor_in(frame, "frame")
            I = None if original is None else self._tensor_in(original, "original")
            if I is not None and I.shape != P.shape:
                raise ValueError(f"original {tuple(I.shape)} and processed {tuple(P.shape)} frames differ in size")
            O = self._run(P[:, None], None if I is None else I[:, None], parallel=False, timestamp=timestamp)[:, 0]
            return O.to(frame.dtype)
        if self._cpu is not None and _rgb_uint8_pair(frame, original):
            return self._step_uint8(frame, original, timestamp)
        if self._use_graph and _rgb_uint8_pair(frame, original):
            return self._step_uint8_graph(frame, original, timestamp)
        p, dtype = frame_to_float(frame, "frame")
        P = torch.from_numpy(p).permute(2, 0, 1)[None, None].to(self.device)
        I = None
        if original is not None:
            i, _ = frame_to_float(original, "original")
            _check_same_size(p, i)
            I = torch.from_numpy(i).permute(2, 0, 1)[None, None].to(self.device)
        O = self._run(P, I, parallel=False, timestamp=timestamp)[0, 0]
        return float_to_frame(O.permute(1, 2, 0).cpu().numpy(), dtype)

    def _step_uint8(self, frame: np.ndarray, original: np.ndarray | None, timestamp: float | None) -> np.ndarray:
        """:meth:`step` for H x W x 3 uint8 frames on the CPU fast path: converted to and from float inside the
        fast step (the same ``frame_to_float`` / ``float_to_frame`` arithmetic), strip by strip."""
        _check_same_size(frame, original)
        with self._all_or_nothing():  # references: the fast step makes new state tensors
            self._admit(frame.shape[0], frame.shape[1], timestamp)
            self._stream_key(1, frame.shape[0], frame.shape[1])
            with torch.no_grad():
                out, self.state = self._cpu.step_uint8(frame, original, self.state, self.strength)
        self.frames_seen += 1
        return out

    def _step_uint8_graph(self, frame: np.ndarray, original: np.ndarray | None, timestamp: float | None) -> np.ndarray:
        """:meth:`step` for one H x W x 3 uint8 stream on CUDA: ``FastVideoStep.step_uint8`` (a CUDA graph of
        ``VideoSSM.step`` on static buffers). Its static state *is* ``self.state`` while the stream runs; a
        reset, ``set_state`` or a stream change hands the state over before the next step."""
        from streamssm.fast import FastVideoStep

        _check_same_size(frame, original)
        h, w = frame.shape[:2]
        guided = original is not None
        before = self._checkpoint()  # references: nothing changes these tensors in place before `touched` is set
        self._admit(h, w, timestamp)  # the last check (size, clock): a refused frame has changed nothing
        g, touched = self._graph, None
        try:
            self._stream_key(1, h, w)
            if g is None or g.key != (1, h, w, guided):
                if g is not None and g.key[:3] == (1, h, w) and self.state is g.state:
                    self.state = g.get_state()  # guided <-> processed-only: same state layout, carried over
                dtype = torch.float16 if self.half else torch.float32
                g = self._graph = FastVideoStep(self.model, h, w, 1, guided, dtype=dtype, compile=False,
                                                cuda_graph=True, strength=self.strength)
                self._graph_strength = self.strength
            touched = g  # from here on g's static state changes in place (reset, set_state, the capture's warm-up)
            if self.state is None:
                g.reset()
            elif self.state is not g.state:
                g.set_state(self.state)
            if self._graph_strength != self.strength:  # a device write only when it changes, not every frame
                g.set_strength(self.strength)
                self._graph_strength = self.strength
            out = g.step_uint8(frame, original)
        except BaseException:
            # Building or capturing a graph failed (CUDA out of memory, say): the filter as it was, clock included.
            # Not when the buffers changed in place were the state held before (the running graph's replay failed):
            # undoing that would take a copy of the state every frame.
            if before.state is None or touched is None or before.state is not touched.state:
                self._rollback(before)
            raise
        self.state = g.state
        self.frames_seen += 1
        return out

    # ------------------------------------------------------------------------------- pipelined
    def push(self, frame: Any, original: Any = None, timestamp: float | None = None):
        """:meth:`step` with one frame of delay: returns the *previous* frame's output (None for the first call);
        :meth:`flush` returns the last one. The outputs are the very frames ``step`` would give.

        On the CPU fast path with H x W x 3 uint8 frames this is a :class:`~streamssm.video.cpu_step.CPUVideoPipeline`:
        frame t's cell statistics and SSM run on the caller's thread, its flow on a worker thread, and frame t-1's
        full-resolution tail on another (run torch with one intra-op thread meanwhile, as ``streamssm video`` does
        on a CPU: ``torch.set_num_threads(1)``). Elsewhere it is ``step`` with the output held back. Call :meth:`flush`
        before ``step``, ``reset``, ``set_state``, ``add_streams`` or ``drop_streams``.

        A push that fails inside (out of memory, say) leaves the filter as it was, so the same frame can be given
        again, as after a failed ``step``. When it is the previous frame's tail that failed (on its thread) that
        frame's output is lost, and the stream goes on from the output before it, as after a failed ``flush``."""
        uint8 = _rgb_uint8_pair(frame, original)
        if self._pipe is None and not (self._cpu is not None and uint8):
            out = self._step(frame, original, timestamp)
            prev, self._queued = self._queued, out
            return prev
        f, o = frame, original
        if not uint8:
            raise ValueError("push(): this pipelined stream takes H x W x 3 uint8 frames (and originals); "
                             f"got {getattr(f, 'dtype', type(f).__name__)} {getattr(f, 'shape', '')}: flush() first")
        _check_same_size(f, o)
        running = self._pipe is not None or self.state is not None  # a stream stepped before its first push runs
        h, w = f.shape[:2]
        before = self._checkpoint()  # references: the pipeline makes new state tensors
        gap = self._admit(h, w, timestamp, running=running)
        pipe, new, restart = self._pipe, self._pipe is None, False
        had_frame = not new and pipe.in_flight
        try:
            if new:
                self._stream_key(1, h, w)
                pipe = self._pipe = CPUVideoPipeline(self._cpu, self.state, self.strength)
            elif gap or self._key != (1, h, w):
                if self._key != (1, h, w):
                    _restart_warning(self._key, (1, h, w))
                    self._key = (1, h, w)
                restart = True
            pipe.strength = self.strength
            out = pipe.push_uint8(f, o, restart=restart)  # a failure of this frame's steps changes nothing there
        except BaseException:  # out of memory, say: the filter as it was, clock and frame size included
            self._rollback(before)
            if new or (had_frame and not pipe.in_flight):
                # a pipeline made for this frame goes; so does one that took the previous frame's output and lost it
                # (its tail failed on the tail thread): the stream goes on from the last output returned, as after a
                # failed flush()
                self._pipe = None
                if pipe is not None:
                    pipe.close()
            raise
        if out is None and self._queued is not None:  # a float frame pushed before: its output is the one due now
            out, self._queued = self._queued, None
        self.frames_seen += 1
        self.state = self._pipe.state  # the state after the output returned (None until the first one)
        return out

    def flush(self):
        """The output held back by :meth:`push` (None if there is none); the pipeline's worker is released."""
        if self._pipe is not None:
            pipe, self._pipe = self._pipe, None
            try:
                out = pipe.flush()
                self.state = pipe.state
            finally:
                pipe.close()
            return out
        out, self._queued = self._queued, None
        return out

    def filter(self, frames: Sequence[Any] | Iterable[Any], originals: Sequence[Any] | None = None, chunk: int = 32) -> list:
        """Filter a clip with the parallel scan, ``chunk`` frames at a time with the state carried
        (continuing from, and advancing, the current state): the same frames as :meth:`step`. (On the CPU
        with ``fast``, frame by frame through the fast step, which is quicker there than the scan.) It reads
        every frame first and returns a list, so the whole clip, in and out, is in memory: for a long clip or a
        decoder's generator call :meth:`step` (or :meth:`push`) frame by frame, as ``streamssm video`` does.
        Frames are checked a chunk at a time, but a call is all or nothing: a refused frame (or any other error) in
        any chunk leaves the filter exactly as it was before the call (state, frame size, clock, ``frames_seen``).
        Not while a frame given to :meth:`push` is in flight (RuntimeError: :meth:`flush` first)."""
        if self._pipe is not None or self._queued is not None:
            raise RuntimeError("a frame given to push() is still in flight: call flush() before filter()")
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise ValueError(f"chunk must be a positive whole number of frames, got {chunk!r}")
        frames = list(frames)
        if originals is not None:
            originals = list(originals)
            if len(originals) != len(frames):
                raise ValueError(f"{len(frames)} processed frames but {len(originals)} originals: they must pair up")
            missing = [i for i, o in enumerate(originals) if o is None]
            if missing:
                raise ValueError(f"originals[{missing[0]}] is None: filter() takes an original for every frame or "
                                 "originals=None; step(frame, original=None) mixes the two modes frame by frame")
        if not frames:
            raise ValueError("no frames to filter")
        if any(isinstance(f, Tensor) and (f.dim() == 4 or f.is_cuda) for f in frames + (originals or [])):
            raise ValueError("filter() takes H x W x 3 frames (numpy, or CPU tensors in that layout); for (B, 3, H, W) "
                             "or CUDA tensors call step() frame by frame, or the model's parallel scan, "
                             "VideoFilter.model(P, I, state) on (B, T, 3, H, W)")
        # cloned where the frame-by-frame fallback below may step the CUDA graph, whose buffers change in place
        out = []
        with self._all_or_nothing(copy=self._use_graph):
            for s in range(0, len(frames), chunk):
                ps = [frame_to_float(_image_in(f), f"frame {s + i}") for i, f in enumerate(frames[s : s + chunk])]
                sizes = {p.shape for p, _ in ps}
                if len(sizes) != 1:
                    # a size change inside the chunk: fall back to frame-by-frame, which resets with a warning
                    for i, f in enumerate(frames[s : s + chunk]):
                        try:
                            out.append(self.step(f, None if originals is None else originals[s + i]))
                        except ValueError as e:  # step() does not know the frame's place in the clip
                            raise ValueError(f"frame {s + i}: {e}") from None
                    continue
                try:
                    check_frame_size(*ps[0][0].shape[:2], self.model.config)  # as _run would, with the frame's index
                except ValueError as e:
                    raise ValueError(f"frame {s}: {e}") from None
                P = torch.from_numpy(np.stack([p for p, _ in ps])).permute(0, 3, 1, 2)[None].to(self.device)
                I = None
                if originals is not None:
                    ii = [frame_to_float(_image_in(f), f"original {s + i}")[0]
                          for i, f in enumerate(originals[s : s + chunk])]
                    odd = [i for i, x in enumerate(ii) if x.shape != ps[0][0].shape]
                    if odd:
                        i = odd[0]
                        raise ValueError(f"original {s + i} ({ii[i].shape[1]}x{ii[i].shape[0]}) and frame {s + i} "
                                         f"({ps[0][0].shape[1]}x{ps[0][0].shape[0]}) differ in size")
                    I = torch.from_numpy(np.stack(ii)).permute(0, 3, 1, 2)[None].to(self.device)
                O = self._run(P, I, parallel=True)[0].permute(0, 2, 3, 1).cpu().numpy()
                out += [float_to_frame(o, d) for o, (_, d) in zip(O, ps)]  # each frame in its own dtype, as step()
        return [_image_out(o, f) for o, f in zip(out, frames)]  # as step(): a tensor frame comes back a tensor

    def reset(self, mask: Any = None) -> None:
        """Start over: every stream (``mask=None``) or those where ``mask`` (B,) is True (the others'
        state is untouched, bit for bit). A frame still in flight from :meth:`push` is dropped: its output is not
        returned, and the streams the mask keeps go on from their state after it, as ``step`` would have left it."""
        if mask is not None:  # checked before anything is dropped, and refused before the first frame as after it
            b = 1 if self._pipe is not None else None if self.state is None else self.model.state_frame(self.state)[0]
            mask = as_reset_mask(mask, b)
        if self._pipe is not None:  # one stream; its state after the frame in flight is in the pipeline until it ends
            pipe, self._pipe = self._pipe, None
            try:
                if mask is not None:  # reset([False]) used to drop the whole state: the frame in flight ends first
                    pipe.flush()
                    self.state = pipe.state
            finally:
                pipe.close()
        self._queued = None
        if mask is None or self.state is None:
            self.state, self._key, self._last_t = None, None, None
            return
        b, h, w = self.model.state_frame(self.state)
        self.state = reset_state(self.state, self.model.init_state(b, h, w, self.device), mask)

    def add_streams(self, n: int = 1) -> None:
        """Append ``n`` fresh streams (indices B .. B+n-1, same frame size); the running ones keep their state. Not
        while a frame given to :meth:`push` is in flight (RuntimeError: :meth:`flush` first)."""
        if self._pipe is not None or self._queued is not None:  # the pipeline would go on with its own B = 1 state
            raise RuntimeError("a frame given to push() is still in flight: call flush() before add_streams()")
        if isinstance(n, (bool, np.bool_)) or not (isinstance(n, (int, np.integer)) and n >= 1):
            raise ValueError(f"add_streams: n must be a positive integer, got {n!r}")
        if self.state is None:
            raise ValueError("add_streams: no stream is running yet (the first step sets B and the frame size)")
        b, h, w = self.model.state_frame(self.state)
        self.state = cat_streams(self.state, self.model.init_state(int(n), h, w, self.device))
        self._key = (b + int(n), h, w)

    def drop_streams(self, index: Any) -> None:
        """Remove the streams at ``index`` (an int or a list); the others keep their state and order. Not while a
        frame given to :meth:`push` is in flight (RuntimeError: :meth:`flush` first)."""
        if self._pipe is not None or self._queued is not None:
            raise RuntimeError("a frame given to push() is still in flight: call flush() before drop_streams()")
        if self.state is None:
            raise ValueError("drop_streams: no stream is running yet")
        b, h, w = self.model.state_frame(self.state)
        keep = kept_streams(index, b)
        if not keep:
            self.reset()
            return
        self.state = take_streams(self.state, keep)
        self._key = (len(keep), h, w)

    def get_state(self) -> FilterState | None:
        """A snapshot of every stream (copies; None before the first frame): a
        :class:`~streamssm.stream.FilterState`, the model's state tensors with the stream's last timestamp, for
        :meth:`set_state` here or in another process (it pickles; ``torch.save`` works). Not while a frame given to
        :meth:`push` is in flight (RuntimeError: :meth:`flush` first), so a snapshot always follows the last
        output returned."""
        if self._pipe is not None or self._queued is not None:
            raise RuntimeError("a frame given to push() is still in flight: call flush() before get_state()")
        if self.state is None:
            return None
        return FilterState((s.clone() for s in self.state), self._last_t)

    def set_state(self, state) -> None:
        """Restore a snapshot from :meth:`get_state` (shapes, dtype float32 and finiteness checked). Its last
        timestamp comes with it (the next frame's is checked against it); a plain tuple of the state tensors
        starts the timeline at the next frame."""
        if self._pipe is not None or self._queued is not None:
            raise RuntimeError("a frame given to push() is still in flight: call flush() before set_state()")
        if state is None:
            self.reset()
            return
        if not isinstance(state, (tuple, list)) or len(state) <= 3 or not all(isinstance(s, Tensor) for s in state):
            raise ValueError(f"video state must be a tuple of tensors from get_state(), got {_describe(state)}")
        if state[3].dim() != 4:
            raise ValueError(f"video state[3] must be (B, 3, H, W), got shape {tuple(state[3].shape)}")
        b, h, w = self.model.state_frame(state)
        ref = self.model.init_state(b, h, w, "meta")
        if len(state) != len(ref):
            raise ValueError(f"video state must have {len(ref)} tensors, got {len(state)} (a snapshot from another "
                             "version of streamssm or of its weights' layers? the state layout changes with them: "
                             "start the stream anew)")
        for i, (s, r) in enumerate(zip(state, ref)):
            if s.shape != r.shape or s.dtype != torch.float32:
                raise ValueError(f"video state[{i}] is {tuple(s.shape)} {s.dtype}, expected {tuple(r.shape)} "
                                 f"torch.float32 (for {b} stream(s) of {w}x{h} frames)")
            if not torch.isfinite(s).all():
                raise ValueError(f"video state[{i}] contains NaN or inf: not a state this filter produced")
        last_t = getattr(state, "last_timestamp", None)  # a plain tuple: the timeline starts at the next frame
        if last_t is not None:  # a NaN one refused every later timestamped frame as out of order
            try:
                last_t = as_timestamp(last_t)
            except ValueError as e:
                raise ValueError(f"video state's last_timestamp: {e}") from None
        self.state = tuple(s.to(self.device).clone() for s in state)
        self._key = (b, h, w)
        self._last_t = last_t
