"""Fast fixed-shape execution of the models' explicit ``step`` on CUDA: autocast, ``torch.compile``, CUDA graphs.

:class:`FastVideoStep` and :class:`FastPoseStep` run the *same* ``model.step`` as the eager path (it stays the
single source of truth: nothing here re-implements the math), on buffers whose shapes and addresses never change,
so one step can be captured as a CUDA graph and replayed with a single launch:

* **Precision.** The step runs under ``torch.autocast(dtype)`` rather than on a ``.half()``-ed module: the model
  keeps its own fp32 islands (``VideoSSM.cell_stats`` and the flow disable autocast; the SSM state, the
  ``dt``/``A`` discretisation and RMSNorm are fp32 by construction), which a ``.half()`` would break (the fp32
  features would meet fp16 weights). Autocast's weight-cast cache is off (``cache_enabled=False``): a cached cast
  made during warm-up and freed when the context closes would leave a dangling address in the graph.
* **Compile** (optional): ``torch.compile(dynamic=False)`` of the step *and* of the state write-back below, so
  Inductor can fuse the write-back into the kernels that produce the new state. Modes ``"default"`` and
  ``"max-autotune-no-cudagraphs"`` combine with our own graph; ``"reduce-overhead"`` brings Inductor's CUDA
  graphs instead and needs ``cuda_graph=False``.
* **CUDA graph with state write-back.** The step is explicit state in, new state out; a graph needs the state at
  fixed addresses. The captured body is ``O, new = model.step(P, I, state); state[i].copy_(new[i])``: it reads the
  static state buffers and, at its end, copies the new state into them (a true two-buffer ping-pong is impossible
  without the model writing into caller-given outputs, because a graph's outputs are allocated inside its own
  memory pool). Eager, the write-back is one ``copy_`` per state tensor (about 40 MB of state at 1080p);
  compiled, Inductor may fuse it into the kernels that produce the new state. Warm-up (3 steps, on a side stream: lazy
  cuBLAS/cuDNN/Triton initialisation and compilation happen there) runs before capture and the state is restored
  afterwards, so the first frame a caller sends is the stream's first frame.
* **Host constants.** The models build small constants with ``torch.tensor([...], device=x.device)``; on CUDA
  that is a host-to-device copy followed by a synchronisation, which is illegal during capture.
  :class:`FrozenHostConstants` serves those calls from device tensors created during warm-up.
* **Re-capture.** A step with another (batch, height, width, guided) starts a new stream (as
  :class:`~streamssm.video.filter.VideoFilter` does, with a warning) and captures a new graph.
* **uint8 frames** (:meth:`FastVideoStep.step_uint8`, :meth:`FastVideoStep.pipeline_uint8`): H x W x 3 uint8
  host frames go through pinned host buffers, with host-to-device and device-to-host copies on two side streams
  (one per copy engine), so in the pipelined mode frame t's upload and frame t-1's download overlap frame t's
  compute. The u8 <-> float conversion is the same as :func:`streamssm.video.filter.frame_to_float` /
  ``float_to_frame`` (``x / 255`` in, ``x * 255 + 0.5`` truncated out).

On a CPU model the graph is off (there is nothing to capture) and the class is a thin wrapper that equals the
eager step exactly in fp32 (``tests/test_fast.py``); ``compile`` works on CPU too (Inductor's C++ backend), but
on the CPU use :class:`~streamssm.video.cpu_step.CPUVideoStep` (what ``VideoFilter`` runs there): measured on a
2-core EPYC at 1280x720, one thread, compile took 91 s and ran the step in 430 ms against 589 ms eager, while
CPUVideoStep needs no compilation and runs it in ~100 ms (Inductor's CPU code for the warps and upsampling
gathers was no faster than eager ``grid_sample``).

Static outputs: a replayed graph writes its output into the same tensor every step. ``step`` returns a clone
by default; ``clone=False`` returns the static tensor itself, valid until the next step.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor
from torch.overrides import TorchFunctionMode

from streamssm.video.model import check_step_frames

log = logging.getLogger("streamssm")

__all__ = ["FastVideoStep", "FastPoseStep", "FrozenHostConstants"]

COMPILE_MODES = (None, "default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead")
WARMUP_STEPS = 3  # before capture: compilation, cuDNN/cuBLAS handles, Triton autotuning happen here


# ------------------------------------------------------------------------------------------------ helpers
def _freeze(data):
    """A hashable key for Python data given to ``torch.tensor`` (None when it is not plain numbers)."""
    if isinstance(data, (bool, int, float)):
        return (type(data).__name__, data)
    if isinstance(data, (list, tuple)):
        items = tuple(_freeze(x) for x in data)
        return None if any(i is None for i in items) else items
    return None


class FrozenHostConstants(TorchFunctionMode):
    """Serve ``torch.tensor(<Python numbers>, device=<device_type>)`` from a cache of device tensors.

    ``VideoSSM`` builds a ridge identity with ``torch.tensor([...], device=...)``.
    On CUDA that is a pageable host-to-device copy plus ``cudaStreamSynchronize``, which raises inside CUDA-graph
    capture ("operation not permitted when stream is capturing"). With this mode active during warm-up and
    capture, the first call creates the device tensor and every later call returns a device-side clone of it
    (a clone is a device kernel, legal in a graph, and keeps the cached value safe from in-place use).

    >>> with FrozenHostConstants("cpu") as consts:
    ...     a = torch.tensor([1.0, 2.0], device="cpu")
    ...     b = torch.tensor([1.0, 2.0], device="cpu")
    >>> len(consts.cache), torch.equal(a, b)
    (1, True)
    """

    def __init__(self, device_type: str = "cuda"):
        super().__init__()
        self.device_type = device_type
        self.cache: dict = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.tensor, torch.as_tensor) and args and not isinstance(args[0], Tensor):
            dev = kwargs.get("device")
            key = _freeze(args[0])
            if dev is not None and key is not None and torch.device(dev).type == self.device_type:
                key = (func.__name__, key, tuple(sorted((k, str(v)) for k, v in kwargs.items() if k != "device")),
                       str(torch.device(dev)))
                hit = self.cache.get(key)
                if hit is None:
                    hit = self.cache[key] = func(*args, **kwargs)
                return hit.clone()
        return func(*args, **kwargs)


def _raise_recompile_limit(n: int = 64) -> None:
    """Every FastVideoStep shape is a static-shape compile of the same code object: allow many."""
    import torch._dynamo

    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    if getattr(cfg, name, n) < n:
        setattr(cfg, name, n)


def _autocast(device_type: str, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype, cache_enabled=False)


def _video_step_into(model: nn.Module, P: Tensor, I: Tensor | None, strength: Tensor, state: tuple[Tensor, ...],
                     dtype: torch.dtype) -> Tensor:
    """``model.step`` whose new state is written into ``state``'s own tensors; returns the output frame.

    This function is what gets compiled and captured: it reads and writes only the caller's static buffers."""
    with _autocast(P.device.type, dtype):
        O, new = model.step(P, I, state, strength)
    for s, n in zip(state, new):
        s.copy_(n)  # the state ping-pong: the next replay reads what this one wrote
    return O


def _pose_step_into(model: nn.Module, points: Tensor, conf: Tensor, fps: Tensor, strength: Tensor,
                    state: tuple[Tensor, ...], dtype: torch.dtype) -> Tensor:
    with _autocast(points.device.type, dtype):
        y, new = model.step(points, conf, state, fps, strength)
    for s, n in zip(state, new):
        s.copy_(n)
    return y


# ------------------------------------------------------------------------------------------- the runner
class _StaticStep:
    """Holds the static buffers of one stream shape and runs ``fn(*args)`` on them, eagerly or as a CUDA graph.

    ``fn`` must write the new state into the state buffers itself (see ``_video_step_into``). Captured lazily on
    the first call (or by :meth:`capture`)."""

    def __init__(self, fn: Callable, args: tuple, state: tuple[Tensor, ...], device: torch.device, cuda_graph: bool,
                 compiled: bool):
        self.fn, self.args, self.state, self.device = fn, args, state, device
        self.cuda_graph = cuda_graph
        self.compiled = compiled
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: Tensor | None = None
        self.consts = FrozenHostConstants(device.type)

    def _call(self) -> Tensor:
        return self.fn(*self.args)

    def capture(self) -> None:
        if not self.cuda_graph or self.graph is not None:
            return
        # Dynamo does not trace through a user TorchFunctionMode cheaply, and compiled code keeps its constants
        # on the device already: the mode is for the eager body only.
        consts = contextlib.nullcontext() if self.compiled else self.consts
        snapshot = [s.clone() for s in self.state]
        try:
            cur = torch.cuda.current_stream(self.device)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(cur)
            with torch.no_grad(), torch.cuda.stream(side), consts:
                for _ in range(WARMUP_STEPS):
                    self._call()
            cur.wait_stream(side)
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            consts = contextlib.nullcontext() if self.compiled else self.consts
            with torch.no_grad(), consts, torch.cuda.graph(graph):
                out = self._call()
        finally:  # the warm-up advanced the stream, whether or not the capture then worked: put it back
            with torch.no_grad():
                for s, v in zip(self.state, snapshot):
                    s.copy_(v)
        self.graph, self.out = graph, out

    def __call__(self) -> Tensor:
        if not self.cuda_graph:
            with torch.no_grad():
                return self._call()
        if self.graph is None:
            self.capture()
        self.graph.replay()
        return self.out


class _FastStepBase:
    """State handling shared by the video and pose runners (the state lives in static buffers)."""

    _runner: _StaticStep
    state: tuple[Tensor, ...]

    def _setup_compile(self, fn: Callable, compile: bool, compile_mode: str | None, cuda_graph: bool) -> Callable:
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {compile_mode!r}")
        if compile and compile_mode == "reduce-overhead" and cuda_graph:
            raise ValueError("compile_mode='reduce-overhead' brings Inductor's own CUDA graphs: pass cuda_graph=False")
        if not compile:
            return fn
        _raise_recompile_limit()
        return torch.compile(fn, dynamic=False, mode=None if compile_mode == "default" else compile_mode)

    def capture(self) -> None:
        """Warm up and capture the CUDA graph now (otherwise the first step does it)."""
        self._runner.capture()

    def reset(self) -> None:
        """Start the stream over (zeros the static state in place: the graph keeps working)."""
        for s in self.state:
            s.zero_()

    def get_state(self) -> tuple[Tensor, ...]:
        return tuple(s.clone() for s in self.state)

    def set_state(self, state: Sequence[Tensor]) -> None:
        """Copy ``state`` into the static buffers (float32): floating-point tensors of their shapes, finite, as the
        filters' ``set_state`` checks (an integer or NaN state was taken as it was). Other float dtypes are converted
        as they are copied: the parallel scan under fp16 autocast gives some of its state in float16. One host sync
        for the values."""
        if (not isinstance(state, (tuple, list)) or len(state) != len(self.state)
                or any(not isinstance(a, Tensor) or a.shape != b.shape for a, b in zip(state, self.state))):
            raise ValueError("state does not match this stream's shapes (make it with the same batch and size)")
        for i, (a, b) in enumerate(zip(state, self.state)):
            if not a.is_floating_point():
                raise ValueError(f"state[{i}] is {a.dtype}, expected floating point ({b.dtype})")
        if not bool(torch.stack([torch.isfinite(s).all().to(self.state[0].device) for s in state]).all()):
            raise ValueError("state contains NaN or inf: not a state this step produced")
        for dst, src in zip(self.state, state):
            dst.copy_(src)

    def set_strength(self, strength: float) -> None:
        """Change the correction strength without re-capturing (it is a device scalar the graph reads)."""
        if not (0.0 <= float(strength) <= 2.0):
            raise ValueError(f"strength must be in [0, 2], got {strength}")
        self._strength.fill_(float(strength))


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


# ---------------------------------------------------------------------------------------------- video
class FastVideoStep(_FastStepBase):
    """:meth:`VideoSSM.step <streamssm.video.model.VideoSSM.step>` at a fixed resolution, fast on CUDA.

    Args:
        model: a :class:`~streamssm.video.model.VideoSSM` on the device to run on (never modified).
        height, width, batch: the stream shape the buffers are made for; another shape re-captures.
        guided: whether steps get the original frame I (a separate graph from processed-only).
        dtype: autocast dtype (``torch.float32`` = no autocast). The model's fp32 parts stay fp32.
        compile: ``torch.compile(dynamic=False)`` the step (Inductor; minutes of compilation per shape).
        cuda_graph: capture one step as a CUDA graph (CUDA only; ignored on CPU).
        strength: correction strength (see :meth:`set_strength`).
        compile_mode: ``None``/``"default"``, ``"max-autotune-no-cudagraphs"``, or ``"reduce-overhead"`` (then
            ``cuda_graph=False``).

    ``step(P (b,3,h,w) float [0,1], I=None) -> O`` takes tensors (any device; copied into the static inputs).
    ``step_uint8(frame, original=None) -> frame`` takes numpy (h,w,3) or (b,h,w,3) uint8 and returns the same,
    synchronously; ``pipeline_uint8`` does the same with one frame of latency (returns frame t-1's output, None
    for the first) so that copies overlap compute; ``flush_uint8`` returns the last pending frame.

    >>> import torch
    >>> from streamssm.video.model import VideoSSM, VideoSSMConfig
    >>> m = VideoSSM(VideoSSMConfig(d_model=16, n_layers=1, backend="torch"))
    >>> fast = FastVideoStep(m, 72, 128, guided=False, dtype=torch.float32, compile=False)
    >>> P = torch.rand(1, 3, 72, 128)
    >>> O = fast.step(P)
    >>> O1, _ = m.step(P, None, m.init_state(1, 72, 128))
    >>> torch.equal(O, O1)
    True
    """

    def __init__(self, model: nn.Module, height: int, width: int, batch: int = 1, guided: bool = True,
                 dtype: torch.dtype = torch.float16, compile: bool = True, cuda_graph: bool = True,
                 strength: float = 1.0, compile_mode: str | None = None):
        self.model = model
        self.device = _model_device(model)
        self.dtype = dtype
        if self.device.type != "cuda" and cuda_graph:
            log.info("streamssm: FastVideoStep on %s: CUDA graphs are off", self.device)
        self.cuda_graph = bool(cuda_graph) and self.device.type == "cuda"
        self.compiled = bool(compile)
        self._fn = self._setup_compile(_video_step_into, compile, compile_mode, self.cuda_graph)
        self._strength = torch.tensor(1.0, device=self.device)
        self.set_strength(strength)
        self.key: tuple[int, int, int, bool] | None = None
        self._u8 = None
        self._pending: int | None = None
        self._setup(int(batch), int(height), int(width), bool(guided))

    # ------------------------------------------------------------------------------------------ buffers
    def _setup(self, b: int, h: int, w: int, guided: bool) -> None:
        if b < 1 or h < 1 or w < 1:
            raise ValueError(f"batch, height and width must be positive, got {(b, h, w)}")
        dev = self.device
        self.key = (b, h, w, guided)
        self.P = torch.zeros(b, 3, h, w, device=dev)
        self.I = torch.zeros(b, 3, h, w, device=dev) if guided else None
        self.state = tuple(self.model.init_state(b, h, w, dev))
        args = (self.model, self.P, self.I, self._strength, self.state, self.dtype)
        self._runner = _StaticStep(self._fn, args, self.state, dev, self.cuda_graph, self.compiled)
        self._u8 = None
        self._pending = None

    def _ensure(self, b: int, h: int, w: int, guided: bool) -> None:
        key = (b, h, w, guided)
        if key != self.key:
            warnings.warn(f"streamssm: FastVideoStep stream changed from (batch, h, w, guided)={self.key} to {key}; "
                          "the stream starts over and the step is captured again", RuntimeWarning, stacklevel=3)
            self._setup(*key)

    # ------------------------------------------------------------------------------------------ tensors
    def replay(self) -> Tensor:
        """One step on whatever is in the static inputs ``self.P`` (and ``self.I``); returns the static output."""
        return self._runner()

    def step(self, P: Tensor, I: Tensor | None = None, *, clone: bool = True) -> Tensor:
        """Filter one frame per stream: P, I (b, 3, h, w) float in [0, 1] -> O (b, 3, h, w) float32. Checked as
        ``VideoSSM.step`` checks them (a uint8 tensor was copied into the float buffers as 0..255 and came back
        white); uint8 frames go through :meth:`step_uint8`."""
        check_step_frames(P, I)
        self._ensure(P.shape[0], P.shape[2], P.shape[3], I is not None)
        self.P.copy_(P)
        if I is not None:
            self.I.copy_(I)
        O = self._runner()
        return O.clone() if clone else O

    # -------------------------------------------------------------------------------------------- uint8
    def _frames(self, frame, name: str) -> np.ndarray:
        a = np.asarray(frame)
        if a.dtype != np.uint8 or a.ndim not in (3, 4) or a.shape[-1] != 3:
            raise ValueError(f"{name} must be uint8 (H, W, 3) or (B, H, W, 3), got {a.dtype} {a.shape}")
        return a if a.ndim == 4 else a[None]

    def _u8_buffers(self):
        """Pinned host and device uint8 buffers, two slots each (frame t and t-1 in flight), and the events."""
        if self._u8 is not None:
            return self._u8
        b, h, w, guided = self.key
        dev = self.device
        n_in = 2 if guided else 1
        pin = lambda: torch.empty(b, h, w, 3, dtype=torch.uint8, pin_memory=True)  # noqa: E731
        devbuf = lambda: torch.empty(b, h, w, 3, dtype=torch.uint8, device=dev)  # noqa: E731
        ev = lambda: torch.cuda.Event()  # noqa: E731
        self._u8 = {
            "pin_in": [[pin() for _ in range(n_in)] for _ in range(2)],
            "dev_in": [[devbuf() for _ in range(n_in)] for _ in range(2)],
            "dev_out": [devbuf() for _ in range(2)],
            "pin_out": [pin() for _ in range(2)],
            "h2d_done": [ev() for _ in range(2)],  # upload of slot s finished (pinned input reusable)
            "consumed": [ev() for _ in range(2)],  # compute stream has read dev_in[s]
            "out_ready": [ev() for _ in range(2)],  # dev_out[s] written
            "d2h_done": [ev() for _ in range(2)],  # download of slot s finished
            "h2d": torch.cuda.Stream(dev),
            "d2h": torch.cuda.Stream(dev),
            "slot": 0,
        }
        return self._u8

    def _submit_uint8(self, frame, original) -> int:
        """Queue frame t (uploads, step, download); returns its slot. Does not wait for the result."""
        u = self._u8_buffers()
        s = u["slot"]
        u["slot"] ^= 1
        cur = torch.cuda.current_stream(self.device)
        u["h2d_done"][s].synchronize()  # the pinned input of slot s (frame t-2) has been uploaded
        hosts = [frame] + ([original] if original is not None else [])
        for host, pinned in zip(hosts, u["pin_in"][s]):
            pinned.numpy()[...] = host
        with torch.cuda.stream(u["h2d"]):
            u["h2d"].wait_event(u["consumed"][s])  # frame t-2 no longer needs dev_in[s]
            for pinned, d in zip(u["pin_in"][s], u["dev_in"][s]):
                d.copy_(pinned, non_blocking=True)
            u["h2d_done"][s].record(u["h2d"])
        cur.wait_event(u["h2d_done"][s])
        for d, static in zip(u["dev_in"][s], [self.P] + ([self.I] if self.I is not None else [])):
            static.copy_(d.permute(0, 3, 1, 2))
            static.mul_(1.0 / 255.0)  # = frame_to_float: x.astype(float32) * (1 / 255)
        u["consumed"][s].record(cur)
        O = self._runner()
        cur.wait_event(u["d2h_done"][s])  # frame t-2's download out of dev_out[s] is done
        q = (O * 255.0 + 0.5).clamp_(0.0, 255.0)  # = float_to_frame: (x * 255 + 0.5).astype(uint8)
        u["dev_out"][s].copy_(q.permute(0, 2, 3, 1))
        u["out_ready"][s].record(cur)
        with torch.cuda.stream(u["d2h"]):
            u["d2h"].wait_event(u["out_ready"][s])
            u["pin_out"][s].copy_(u["dev_out"][s], non_blocking=True)
            u["d2h_done"][s].record(u["d2h"])
        return s

    def _collect_uint8(self, s: int, squeeze: bool) -> np.ndarray:
        u = self._u8
        u["d2h_done"][s].synchronize()
        out = u["pin_out"][s].numpy().copy()  # the pinned slot is reused two frames later
        return out[0] if squeeze else out

    def _uint8_cpu(self, frame: np.ndarray, original: np.ndarray | None) -> np.ndarray:
        to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() * (1.0 / 255.0)  # noqa: E731
        O = self.step(to(frame), None if original is None else to(original), clone=False)
        return (O * 255.0 + 0.5).clamp_(0.0, 255.0).permute(0, 2, 3, 1).to(torch.uint8).numpy()

    def _uint8_args(self, frame, original):
        f = self._frames(frame, "frame")
        o = None if original is None else self._frames(original, "original")
        if o is not None and o.shape != f.shape:
            raise ValueError(f"original {o.shape} and processed {f.shape} frames differ in shape")
        b, h, w, _ = f.shape
        if (b, h, w, o is not None) != self.key:
            if self._pending is not None:
                raise RuntimeError("the stream shape changed with a frame in flight: call flush_uint8() first")
            self._ensure(b, h, w, o is not None)
        return f, o, np.asarray(frame).ndim == 3

    def step_uint8(self, frame, original=None) -> np.ndarray:
        """Synchronous: uint8 (h, w, 3) or (b, h, w, 3) frame(s) in, this step's filtered frame(s) out."""
        f, o, squeeze = self._uint8_args(frame, original)
        if self.device.type != "cuda":
            out = self._uint8_cpu(f, o)
            return out[0] if squeeze else out
        if self._pending is not None:
            raise RuntimeError("a pipelined frame is in flight: call flush_uint8() before step_uint8()")
        return self._collect_uint8(self._submit_uint8(f, o), squeeze)

    def pipeline_uint8(self, frame, original=None) -> np.ndarray | None:
        """One frame of latency: queue frame t, return frame t-1's output (None on the first call).

        Frame t's upload and frame t-1's download run on side streams while the GPU computes; the CPU copies
        frame t into pinned memory while frame t-1 computes. Call :meth:`flush_uint8` for the last frame."""
        f, o, squeeze = self._uint8_args(frame, original)
        if self.device.type != "cuda":
            prev, self._pending = self._pending, (self._uint8_cpu(f, o), squeeze)
            return None if prev is None else (prev[0][0] if prev[1] else prev[0])
        s = self._submit_uint8(f, o)
        prev, self._pending = self._pending, (s, squeeze)
        return None if prev is None else self._collect_uint8(*prev)

    def flush_uint8(self) -> np.ndarray | None:
        """The output of the last frame given to :meth:`pipeline_uint8` (None if there is none pending)."""
        prev, self._pending = self._pending, None
        if prev is None:
            return None
        if self.device.type != "cuda":
            return prev[0][0] if prev[1] else prev[0]
        return self._collect_uint8(*prev)


# ----------------------------------------------------------------------------------------------- pose
class FastPoseStep(_FastStepBase):
    """:meth:`PoseSSM.step <streamssm.pose.model.PoseSSM.step>` for a fixed (batch, keypoints, dims), as a CUDA graph.

    Points, confidence and fps live in static buffers; ``step(points (b,k,d), confidence (b,k) | None) -> y``.
    A ``None`` confidence is all ones, which is what the model assumes for ``None``. ``fps`` is per stream
    (``set_fps``). ``dtype`` defaults to fp32 (the pose model's precision); ``compile`` as in
    :class:`FastVideoStep`.

    >>> import torch
    >>> from streamssm.pose.model import PoseSSM, PoseSSMConfig
    >>> m = PoseSSM(PoseSSMConfig(d_model=16, n_layers=1, backend="torch"))
    >>> fast = FastPoseStep(m, batch=2, k=17, d=2, compile=False)
    >>> x = torch.randn(2, 17, 2)
    >>> torch.equal(fast.step(x), m.step(x, None, m.init_state(2, 17))[0])
    True
    """

    def __init__(self, model: nn.Module, batch: int, k: int, d: int = 2, fps: float = 30.0, strength: float = 1.0,
                 dtype: torch.dtype = torch.float32, compile: bool = False, cuda_graph: bool = True,
                 compile_mode: str | None = None):
        if d not in (2, 3):
            raise ValueError(f"keypoints must be 2-D or 3-D, got d={d}")
        self.model = model
        self.device = dev = _model_device(model)
        self.cuda_graph = bool(cuda_graph) and dev.type == "cuda"
        self.compiled = bool(compile)
        self.dtype = dtype
        self.key = (int(batch), int(k), int(d))
        fn = self._setup_compile(_pose_step_into, compile, compile_mode, self.cuda_graph)
        b = self.key[0]
        self.points = torch.zeros(b, k, d, device=dev)
        self.confidence = torch.ones(b, k, device=dev)
        self.fps = torch.full((b,), float(fps), device=dev)
        self._strength = torch.tensor(1.0, device=dev)
        self.set_strength(strength)
        self.state = tuple(model.init_state(b, k, dev))
        args = (model, self.points, self.confidence, self.fps, self._strength, self.state, dtype)
        self._runner = _StaticStep(fn, args, self.state, dev, self.cuda_graph, self.compiled)
        self._ones = True

    def set_fps(self, fps) -> None:
        self.fps.copy_(torch.as_tensor(fps, dtype=torch.float32).reshape(-1).expand(self.key[0]))

    def replay(self) -> Tensor:
        return self._runner()

    def step(self, points: Tensor, confidence: Tensor | None = None, *, clone: bool = True) -> Tensor:
        if tuple(points.shape) != self.key:
            raise ValueError(f"points must be {self.key} for this FastPoseStep, got {tuple(points.shape)} "
                             "(make another one for another shape)")
        self.points.copy_(points)
        if confidence is not None:
            self.confidence.copy_(confidence)
            self._ones = False
        elif not self._ones:
            self.confidence.fill_(1.0)
            self._ones = True
        y = self._runner()
        return y.clone() if clone else y
