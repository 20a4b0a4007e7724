"""A fused native CPU step for the pose filter: the C twin of :meth:`PoseSSM.step <streamssm.pose.model.PoseSSM.step>`.

Why: a batched CPU step through PyTorch (eager or ``torch.compile``) is bound by memory passes and kernel
launches, not arithmetic: every op streams the state of all streams through the cache (measured on 2 cores at
B=256: 32 k stream-steps/s compiled for the ``small`` preset, 49 k for ``tiny``). ``native_step.c`` runs the whole
step -- features, both SSM blocks with the cross-joint mixer, head and output rule -- one stream at a time, so a
stream's state is read once and written once while its working set sits in L1/L2 (``tiny``: 263 floats per
keypoint; see ``benchmarks/pose_speed.py`` for the figures).

* **One definition.** The math is ``PoseSSM``'s; the C file follows ``_prepare``, ``_network`` and ``_run`` line
  by line and ``tests/pose/test_native.py`` checks it against ``PoseSSM.step`` (missing joints, dropouts, empty
  frames, 2-D and 3-D, strength, per-stream fps, a 300-step stream) to fp32 rounding.
* **Build.** The C file is compiled on first use, once per network size (the sizes are ``-D`` macros, so every
  loop has a constant trip count), with the system C compiler (``$CC``, else ``cc``/``gcc``/``clang``;
  ``-O3 -march=native``), into ``$STREAMSSM_CACHE`` or ``~/.cache/streamssm/native`` (keyed by source, flags,
  sizes and CPU). About a second; no PyTorch headers, no Python build tools. Without a compiler
  :func:`native_available` says why and callers fall back to the PyTorch step.
* **Threads.** Streams are independent, so a batch is split into contiguous ranges run by a thread pool;
  ``ctypes`` releases the GIL during the call. A stream's output does not depend on the split.
* **SIMD across keypoints.** The network runs 8 keypoints at once, one per vector lane, so every inner loop is
  plain vertical vector arithmetic. The SSM state is kept lane-major for it ((B, ceil(K/8), H*P, N, 8),
  :func:`lane_shape`); :class:`NativePoseStep` owns its state in that layout and updates it in place, while
  :func:`native_step` takes and returns PoseSSM's layout (explicit state in, new state out; the C step
  transposes each stream's state into a lane buffer and back).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from streamssm.pose.model import N_FEATURES, PoseSSM

log = logging.getLogger("streamssm")

__all__ = ["NativePoseStep", "native_available", "native_step", "pack_weights"]

SOURCE = Path(__file__).with_name("native_step.c")
CFLAGS = ("-O3", "-march=native", "-ffast-math", "-fopenmp-simd", "-fPIC", "-shared", "-std=c99")
_lock = threading.Lock()
_libs: dict[tuple, ctypes.CDLL] = {}
_failed: dict[tuple, str] = {}


def _sizes(model: PoseSSM) -> dict[str, int]:
    blk = model.blocks[0].ssm
    return dict(D_MODEL=model.config.d_model, D_INNER=blk.d_model, N_HEADS=blk.nheads, HEADDIM=blk.headdim,
                D_STATE=blk.d_state, N_LAYERS=len(model.blocks))


def _compiler() -> str | None:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    return None


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))][:2]
        return "".join(lines)
    except OSError:
        return platform.processor() or platform.machine()


def _cache_dir() -> Path:
    root = os.environ.get("STREAMSSM_CACHE") or Path.home() / ".cache" / "streamssm"
    return Path(root) / "native"


def _load(sizes: dict[str, int]) -> ctypes.CDLL:
    """Compile (once per size and machine) and load the step library; raises RuntimeError saying why not."""
    key = tuple(sorted(sizes.items()))
    with _lock:
        if key in _libs:
            return _libs[key]
        if key in _failed:
            raise RuntimeError(_failed[key])
        try:
            lib = _build(sizes)
        except OSError as e:  # an unwritable cache folder, a library that does not load
            _failed[key] = (f"the native pose step could not be built or loaded under {_cache_dir()} ({e}); "
                            "set STREAMSSM_CACHE to a writable folder")
            raise RuntimeError(_failed[key]) from e
        except RuntimeError as e:
            _failed[key] = str(e)
            raise
        _libs[key] = lib
        return lib


def _build(sizes: dict[str, int]) -> ctypes.CDLL:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found ($CC, cc, gcc or clang) to build the native pose step")
    src = SOURCE.read_bytes()
    defs = [f"-D{k}={v}" for k, v in sorted(sizes.items())]
    digest = hashlib.sha256(src + repr((CFLAGS, defs, cc, _cpu_id())).encode()).hexdigest()[:16]
    out = _cache_dir() / f"pose_step_{digest}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        cmd = [cc, *CFLAGS, *defs, str(SOURCE), "-o", tmp, "-lm"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            os.unlink(tmp)
            raise RuntimeError(f"building the native pose step failed: {' '.join(cmd)}: {e}") from e
        if r.returncode != 0:
            os.unlink(tmp)
            raise RuntimeError(f"building the native pose step failed ({' '.join(cmd)}):\n{r.stderr.strip()[-2000:]}")
        os.replace(tmp, out)  # atomic: a concurrent build of the same key writes the same bytes
    lib = ctypes.CDLL(str(out))
    lib.pose_step.restype = ctypes.c_int
    P = ctypes.c_void_p  # raw addresses (Tensor.data_ptr()): the cheapest argument conversion
    lib.pose_step.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, P, P, P, ctypes.c_float,
                              P, P, P, P, P, P, P, P, ctypes.c_int, P]
    lib.pose_weight_count.restype = ctypes.c_int
    return lib


def native_available(model: PoseSSM | None = None) -> tuple[bool, str]:
    """(True, "") when the native step builds and loads for ``model``'s size (the shipped size if None)."""
    if model is None:
        from streamssm.pose.filter import load_pose_model

        model = load_pose_model(None, torch.device("cpu"), "torch")
    try:
        _load(_sizes(model))
    except RuntimeError as e:
        return False, str(e)
    return True, ""


def pack_weights(model: PoseSSM) -> Tensor:
    """The model's weights as the one float32 array ``native_step.c`` reads (order in its header)."""
    f = lambda w: w.detach().float().contiguous().reshape(-1)  # noqa: E731
    t = lambda w: f(w.t())  # noqa: E731  nn.Linear's (out, in) -> (in, out): the C step's matrices are input-major
    parts = [t(model.embed.weight), f(model.embed.bias)]
    for blk, mix in zip(model.blocks, model.mixers):
        ssm = blk.ssm
        parts += [f(blk.norm.weight), t(blk.in_proj.weight), f(blk.in_proj.bias), t(ssm.x_proj.weight),
                  f(ssm.dt_bias), f(-torch.exp(ssm.A_log.float())), f(ssm.D), t(blk.out_proj.weight),
                  f(blk.out_proj.bias), t(mix.weight), f(mix.bias)]
    parts += [f(model.norm.weight), t(model.head.weight), f(model.head.bias)]
    return torch.cat(parts)


LANES = 8  # keypoints per SIMD lane group in native_step.c


def lane_shape(batch: int, k: int, model: PoseSSM) -> tuple[int, ...]:
    """One layer's SSM state in the C step's lane-major layout: (B, G, H * P, N, LANES), G = ceil(K / LANES)."""
    ssm = model.blocks[0].ssm
    return (batch, -(-k // LANES), ssm.nheads * ssm.headdim, ssm.d_state, LANES)


def from_lanes(lanes: Tensor, k: int, heads: int) -> Tensor:
    """A lane-major state (:func:`lane_shape`) in PoseSSM's layout (B, K, H, P, N), padding lanes dropped."""
    b, g, ch, n, _ = lanes.shape
    x = lanes.permute(0, 1, 4, 2, 3).reshape(b, g * LANES, ch, n)[:, :k]
    return x.reshape(b, k, heads, ch // heads, n).contiguous()


def _check_model(model: PoseSSM) -> None:
    if model.embed.in_features != N_FEATURES:
        raise ValueError(f"native pose step: the model takes {model.embed.in_features} features, the C step {N_FEATURES}")
    for blk in model.blocks:
        if blk.in_proj.bias is None or blk.out_proj.bias is None:
            raise ValueError("native pose step: expects in_proj and out_proj with biases (PoseSSM's SSMBlock)")
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("native pose step: the model must be on the CPU")


class _Runner:
    """The loaded library, the packed weights and a thread pool for one model."""

    def __init__(self, model: PoseSSM, threads: int | None = None):
        _check_model(model)
        self.lib = _load(_sizes(model))
        self.weights = pack_weights(model)
        if self.weights.numel() != self.lib.pose_weight_count():
            raise RuntimeError(f"native pose step: packed {self.weights.numel()} weights, the C step expects "
                               f"{self.lib.pose_weight_count()}")
        self.n_layers = len(model.blocks)
        self.threads = max(1, int(threads or torch.get_num_threads()))
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="streamssm-pose") if self.threads > 1 else None

    def __call__(self, points: Tensor, confidence: Tensor | None, fps: Tensor, strength: float,
                 state: tuple[Tensor, ...], out: Tensor, model_layout: bool = False,
                 ssm_out: tuple[Tensor, ...] | None = None) -> None:
        """Run one step in place on ``state`` (contiguous float32 CPU tensors: the five fixed tensors, then each
        layer's SSM state in the lane layout of :func:`lane_shape`, or PoseSSM's with ``model_layout``), writing
        ``out``. With ``model_layout``, ``ssm_out`` (PoseSSM's layout) receives the new SSM states instead."""
        b, k, d = points.shape
        ssm = (ctypes.c_void_p * self.n_layers)(*[s.data_ptr() for s in state[5:]])
        args = (k, d, points.data_ptr(), confidence.data_ptr() if confidence is not None else None, fps.data_ptr(),
                strength, *[s.data_ptr() for s in state[:5]], ssm, self.weights.data_ptr(), out.data_ptr(),
                int(model_layout), None if ssm_out is None else (ctypes.c_void_p * self.n_layers)(*[s.data_ptr() for s in ssm_out]))
        n = min(self.threads, b)
        if n <= 1 or self.pool is None:
            rc = self.lib.pose_step(0, b, *args)
            if rc:
                raise RuntimeError(f"native pose step failed (code {rc})")
            return
        edges = np.linspace(0, b, n + 1).astype(int)
        futs = [self.pool.submit(self.lib.pose_step, int(edges[i]), int(edges[i + 1]), *args) for i in range(n)]
        codes = [f.result() for f in futs]
        if any(codes):
            raise RuntimeError(f"native pose step failed (codes {codes})")


def _as_input(points, confidence, b_k_d=None):
    p = points if isinstance(points, Tensor) else torch.from_numpy(np.asarray(points))
    p = p.detach().to("cpu", torch.float32).contiguous()
    c = None
    if confidence is not None:
        c = confidence if isinstance(confidence, Tensor) else torch.from_numpy(np.asarray(confidence))
        c = c.detach().to("cpu", torch.float32).contiguous()
        if tuple(c.shape) != tuple(p.shape[:-1]):
            raise ValueError(f"confidence must have shape {tuple(p.shape[:-1])}, got {tuple(c.shape)}")
    if p.dim() != 3 or p.shape[-1] not in (2, 3):
        raise ValueError(f"points must be (B, K, 2|3), got {tuple(p.shape)}")
    if b_k_d is not None and tuple(p.shape) != b_k_d:
        raise ValueError(f"points must be {b_k_d} for this NativePoseStep, got {tuple(p.shape)}")
    return p, c


_runners: weakref.WeakKeyDictionary[PoseSSM, _Runner] = weakref.WeakKeyDictionary()  # one per live model


def native_step(model: PoseSSM, points, confidence=None, state=None, fps=30.0, strength: float = 1.0,
                threads: int | None = None) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``PoseSSM.step`` through the native step: points (B, K, D) -> (filtered (B, K, D), new state).

    Explicit state in, new state out (the given state is copied, never modified). The model's weights are
    packed on its first call: change them afterwards and the step keeps the packed copy. Raises RuntimeError
    when the step cannot be built (see :func:`native_available`)."""
    runner = _runners.get(model)
    if runner is None:
        runner = _runners[model] = _Runner(model, threads)
    p, c = _as_input(points, confidence)
    b, k, d = p.shape
    if state is None:
        state = model.init_state(b, k)
    else:
        model.check_state(state, b, k)
    # the small fixed state is copied and updated in place; the SSM states are read from the caller's tensors and
    # written into new ones (no copy of the large part)
    fixed = tuple(s.detach().to("cpu", torch.float32, memory_format=torch.contiguous_format, copy=True) for s in state[:5])
    ssm_in = tuple(s.detach().to("cpu", torch.float32).contiguous() for s in state[5:])
    ssm_new = tuple(torch.empty_like(s) for s in ssm_in)
    fps_t = torch.as_tensor(fps, dtype=torch.float32).reshape(-1).expand(b).contiguous()
    out = torch.empty(b, k, d)
    runner(p, c, fps_t, float(strength), fixed + ssm_in, out, model_layout=True, ssm_out=ssm_new)
    return out, fixed + ssm_new


class NativePoseStep:
    """The native step for a fixed (batch, keypoints, dims), with its own state, updated in place.

    ``step(points (B,K,D), confidence (B,K) | None) -> filtered`` (numpy in -> numpy out, torch in -> torch out);
    ``reset()``; ``state`` is the PoseSSM state tuple. Same contract as :class:`streamssm.fast.FastPoseStep`.

    >>> import torch
    >>> from streamssm.pose.model import PoseSSM, PoseSSMConfig
    >>> m = PoseSSM(PoseSSMConfig(d_model=16, n_layers=1, expand=1, d_state=8, headdim=8, backend="torch"))
    >>> fast = NativePoseStep(m, batch=2, k=17, d=2)  # doctest: +SKIP
    >>> x = torch.randn(2, 17, 2)
    >>> torch.allclose(fast.step(x), m.step(x)[0], atol=1e-5)  # doctest: +SKIP
    True
    """

    def __init__(self, model: PoseSSM, batch: int, k: int, d: int = 2, fps: float = 30.0, strength: float = 1.0,
                 threads: int | None = None):
        if d not in (2, 3):
            raise ValueError(f"keypoints must be 2-D or 3-D, got d={d}")
        self.model = model
        self.key = (int(batch), int(k), int(d))
        self._runner = _Runner(model, threads)
        self.fps = torch.full((self.key[0],), float(fps))
        self.strength = float(strength)
        b, k = self.key[:2]
        self._state = (*(s.contiguous() for s in model.init_state(b, k)[:5]),
                       *(torch.zeros(lane_shape(b, k, model)) for _ in model.blocks))
        self._out = torch.empty(self.key)

    @property
    def state(self) -> tuple[Tensor, ...]:
        """A copy of the state in PoseSSM's layout (what ``PoseSSM.step`` would hold)."""
        heads = self.model.blocks[0].ssm.nheads
        return (*(s.clone() for s in self._state[:5]), *(from_lanes(s, self.key[1], heads) for s in self._state[5:]))

    def set_fps(self, fps) -> None:
        self.fps.copy_(torch.as_tensor(fps, dtype=torch.float32).reshape(-1).expand(self.key[0]))

    def reset(self) -> None:
        for s in self._state:
            s.zero_()

    def step(self, points, confidence=None, *, clone: bool = True):
        """One step of every stream; returns a new array unless ``clone=False`` (then a buffer reused next step)."""
        is_np = not isinstance(points, Tensor)
        p, c = _as_input(points, confidence, self.key)
        self._runner(p, c, self.fps, self.strength, self._state, self._out)
        y = self._out.clone() if clone else self._out
        return y.numpy() if is_np else y
