"""TensorRT engines from the exported ONNX step graphs, and a runner with CUDA-resident state.

Works with NVIDIA TensorRT (``import tensorrt``) or TensorRT-RTX, whose 1.7 wheels
(``tensorrt-rtx-cu13-bindings``) install the module ``tensorrt_rtx_bindings``. TensorRT-RTX builds
without a GPU for the compute capabilities it is told (SM80 .. SM121; Turing SM75 is refused for these
graphs: "FP32 GEMM is not supported"), and has no SM90/SM100: datacenter GPUs (H100, H200) need
NVIDIA TensorRT. TensorRT-RTX networks are strongly typed, so it has no FP16 builder flag.

An engine file ``X.engine`` comes with ``X.engine.json``: the graph's streamssm metadata (model kind,
config, guided, dims), which the runner needs to size the state, and the build settings.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from streamssm._args import as_strength

from ._files import check_output_path, claim_temp, move_into_place
from ._spec import OUTPUT, StepSpec, new_stream_size, parse_shape, state_in, state_out

log = logging.getLogger("streamssm")

TRT_MODULES = ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings")
# frame shapes (BxKxD pose, BxCxHxW video) of the default optimisation profile: min, opt, max
DEFAULT_PROFILES = {
    "pose": ("1x1x{d}", "1x17x{d}", "16x133x{d}"),
    "video": ("1x3x64x64", "1x3x720x1280", "1x3x2160x3840"),
}
# TensorRT-RTX targets when no GPU is visible: all it lists from Ampere on (Turing cannot run FP32 GEMM)
RTX_DEFAULT_CCS = ("SM80", "SM86", "SM89", "SM120", "SM121")


def import_tensorrt():
    """The TensorRT module: ``tensorrt``, else ``tensorrt_rtx``, else ``tensorrt_rtx_bindings``."""
    errors = []
    for name in TRT_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError as e:  # a broken install raises ImportError too: report every attempt
            errors.append(f"{name}: {e}")
    raise ImportError("no TensorRT Python module could be imported (" + "; ".join(errors) +
                      "); pip install 'streamssm[tensorrt]' for TensorRT-RTX")


def _is_rtx(trt) -> bool:
    return "rtx" in trt.__name__


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _make_logger(trt, verbose: bool):
    """A logger that forwards to ``logging`` and keeps the errors, so a failed build can say why."""
    level = trt.Logger.VERBOSE if verbose else trt.Logger.WARNING

    class _Log(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.Logger.ERROR, trt.Logger.INTERNAL_ERROR):
                self.errors.append(msg)
                log.error("TensorRT: %s", msg)
            elif severity == trt.Logger.WARNING:
                log.warning("TensorRT: %s", msg)
            elif verbose:
                log.info("TensorRT: %s", msg)

    try:
        return _Log()
    except TypeError:  # a binding that does not allow subclassing ILogger
        lg = trt.Logger(level)
        lg.errors = []
        return lg


def read_onnx_spec(onnx_path: str | Path) -> StepSpec:
    import onnx

    p = Path(onnx_path)
    if not p.is_file():
        raise ValueError(f"{p}: {'is a directory' if p.is_dir() else 'no such file'}; expected an .onnx graph "
                         "written by 'streamssm export onnx'")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: not a graph at all
        raise ValueError(f"{p}: not a readable ONNX graph ({type(e).__name__}: {e}); expected an .onnx file "
                         "written by 'streamssm export onnx'") from None
    return StepSpec.from_metadata({q.key: q.value for q in proto.metadata_props}, onnx_path)


def profile_shapes(spec: StepSpec, min_shape, opt_shape, max_shape) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shape of every graph input from three frame shapes (``BxKxD`` / ``BxCxHxW``)."""
    per = []
    for s in (min_shape, opt_shape, max_shape):
        batch, dims = spec.split_frame_shape(parse_shape(s))
        per.append(spec.input_shapes(batch, *dims))
    out = {}
    for name in per[0]:
        lo, mid, hi = (p[name] for p in per)
        if not all(a <= b <= c for a, b, c in zip(lo, mid, hi)):
            raise ValueError(f"profile for {name} is not min <= opt <= max: {lo}, {mid}, {hi} "
                             f"(from frame shapes {min_shape}, {opt_shape}, {max_shape})")
        out[name] = (lo, mid, hi)
    return out


def _frame_profile(spec: StepSpec, network, onnx_path, min_shape, opt_shape, max_shape) -> list[tuple[int, ...]]:
    """The (min, opt, max) frame shapes: the given ones, else :data:`DEFAULT_PROFILES` with the sizes the graph fixes
    (exported with ``dynamic_size=False``) put in; refused (ValueError naming the option) where a given shape
    disagrees with a fixed size, or is a video frame under the 64 px short side a resolution-generic graph needs."""
    from streamssm.video.model import HALF_FLOW_SIDE

    name = "points" if spec.kind == "pose" else "processed"
    declared = next(tuple(network.get_input(i).shape) for i in range(network.num_inputs)
                    if network.get_input(i).name == name)
    out = []
    for opt, given, default in zip(("--min", "--opt", "--max"), (min_shape, opt_shape, max_shape),
                                   DEFAULT_PROFILES[spec.kind]):
        shape = parse_shape(given) if given else parse_shape(default.format(d=spec.dims))
        if len(shape) != len(declared):
            raise ValueError(f"{opt} {given}: a {spec.kind} frame shape has {len(declared)} sizes "
                             f"({'BxKxD' if spec.kind == 'pose' else 'Bx3xHxW'})")
        fixed = [(i, d) for i, d in enumerate(declared) if d != -1]
        if given and any(shape[i] != d for i, d in fixed):
            letters = "BKD" if spec.kind == "pose" else "BCHW"
            raise ValueError(f"{opt} {given}: {onnx_path} fixes its input {name} to "
                             f"{'x'.join(letters[i] if d == -1 else str(d) for i, d in enumerate(declared))}")
        shape = tuple(d if d != -1 else v for d, v in zip(declared, shape))
        if spec.kind == "video" and -1 in declared[2:] and min(shape[2:]) < HALF_FLOW_SIDE:
            raise ValueError(f"{opt} {'x'.join(map(str, shape))}: a resolution-generic video graph needs frames with a "
                             f"short side of at least {HALF_FLOW_SIDE} px; export at the size you run (--static-size) "
                             "for smaller ones")
        out.append(shape)
    return out


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    fp16: bool = False,
    min_shapes=None,
    opt_shapes=None,
    max_shapes=None,
    *,
    compute_capabilities: list[str] | None = None,
    tf32: bool = False,
    workspace_mb: int | None = None,
    verbose: bool = False,
    overwrite: bool = False,
) -> Path:
    """Parse an exported step graph and build a TensorRT engine with one optimisation profile.

    Args:
        onnx_path: a graph written by :func:`export_onnx` (its metadata sizes the state).
        engine_path: the engine file to write, in an existing folder; ``<engine_path>.json`` is written beside it.
            Neither may be a device or a pipe.
        fp16: let TensorRT pick FP16 kernels (NVIDIA TensorRT's FP16 flag). TensorRT-RTX is strongly
            typed and raises here: its precision is the ONNX graph's.
        min_shapes, opt_shapes, max_shapes: frame shapes, ``"BxKxD"`` (pose) or ``"BxCxHxW"`` (video),
            as strings or tuples; every input's profile (state included) follows from them. Defaults:
            :data:`DEFAULT_PROFILES`.
        compute_capabilities: TensorRT-RTX only: targets such as ``["SM89"]`` or ``["CURRENT"]``;
            default CURRENT with a GPU, else :data:`RTX_DEFAULT_CCS`.
        tf32: allow TF32 matmuls (off by default: the SSM and the 3x3 colour solve are kept at fp32).
        workspace_mb: cap on the builder's workspace pool, in MiB (at least 1; None: TensorRT's default).
        overwrite: replace an existing engine and ``.json`` (regular files, or symbolic links: the links themselves
            are replaced); without it either existing is refused (FileExistsError) before the build.

    Returns the engine path. Build time and settings are in the ``.json`` beside it.
    """
    engine_path = check_output_path(engine_path, onnx_path, overwrite=overwrite)  # before any work
    meta_path = check_output_path(f"{engine_path}.json", onnx_path, overwrite=overwrite,
                                  what="the file to write (the engine's settings, beside it)")
    trt = import_tensorrt()
    spec = read_onnx_spec(onnx_path)
    if workspace_mb is not None and int(workspace_mb) < 1:
        raise ValueError(f"workspace_mb must be a positive number of MiB, got {workspace_mb}")
    # claimed before the build: an unwritable folder is said now; both are removed however the build ends
    tmp = claim_temp(engine_path)
    try:
        meta_tmp = claim_temp(meta_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        logger = _make_logger(trt, verbose)
        builder = trt.Builder(logger)
        flags = 0
        if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TensorRT 8.x; a no-op flag in 10.x
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise RuntimeError(f"TensorRT cannot parse {onnx_path}:\n  " + "\n  ".join(errs))
        shapes = profile_shapes(spec, *_frame_profile(spec, network, onnx_path, min_shapes, opt_shapes, max_shapes))

        config = builder.create_builder_config()
        if fp16:
            if not hasattr(trt.BuilderFlag, "FP16"):
                raise ValueError(f"{trt.__name__} builds strongly typed networks only (no FP16 builder flag): fp16 "
                                 f"needs an fp16 ONNX graph, which the models cannot trace yet; build fp32, or use "
                                 f"NVIDIA TensorRT")
            config.set_flag(trt.BuilderFlag.FP16)
        if not tf32 and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)
        if workspace_mb is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
        ccs: list[str] = []
        if hasattr(config, "set_compute_capability"):  # TensorRT-RTX: targets chosen at build time
            ccs = [c.upper() for c in
                   (compute_capabilities or (["CURRENT"] if _cuda_available() else RTX_DEFAULT_CCS))]
            config.num_compute_capabilities = len(ccs)
            for i, c in enumerate(ccs):
                if not hasattr(trt.ComputeCapability, c):
                    raise ValueError(f"unknown compute capability {c!r}; {trt.__name__} knows "
                                     f"{list(trt.ComputeCapability.__members__)}")
                config.set_compute_capability(getattr(trt.ComputeCapability, c), i)
        elif compute_capabilities:
            raise ValueError(f"{trt.__name__} builds for the GPU it runs on: compute_capabilities is TensorRT-RTX "
                             "only")

        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            t = network.get_input(i)
            if t.name not in shapes:
                raise RuntimeError(f"{onnx_path}: input {t.name!r} is not one this streamssm version knows; "
                                   "re-export")
            lo, mid, hi = shapes[t.name]
            declared = tuple(t.shape)
            if len(declared) != len(lo) or any(d not in (-1, v) for d, v in zip(declared, mid)):
                raise RuntimeError(f"{onnx_path}: input {t.name} is declared {declared} but the model's state is "
                                   f"{mid}: the graph was exported from another model version; re-export")
            if -1 in declared:
                profile.set_shape(t.name, lo, mid, hi)
        config.add_optimization_profile(profile)

        t0 = time.perf_counter()
        plan = builder.build_serialized_network(network, config)
        seconds = time.perf_counter() - t0
        if plan is None or logger.errors:  # an error logged with a plan returned still means a broken engine
            why = "; ".join(logger.errors) or "see the TensorRT log"
            raise RuntimeError(f"TensorRT could not build an engine from {onnx_path}: {why}")

        info = {
            **spec.to_metadata(),
            "tensorrt_module": trt.__name__,
            "tensorrt_version": getattr(trt, "__version__", "?"),
            "fp16": bool(fp16),
            "tf32": bool(tf32),
            "compute_capabilities": ccs,
            "profile": {k: [list(s) for s in v] for k, v in shapes.items()},
            "build_seconds": round(seconds, 3),
            "onnx": str(onnx_path),
        }
        # both written aside, then moved in, metadata first: an engine never lands without its settings
        with open(tmp, "wb") as f:
            f.write(memoryview(plan))
        meta_tmp.write_text(json.dumps(info, indent=1))
        check_output_path(engine_path, overwrite=overwrite)  # again, as the json's move does: the build took a while
        move_into_place(meta_tmp, meta_path, overwrite)
        move_into_place(tmp, engine_path, overwrite)
        log.info("built %s in %.1f s with %s %s", engine_path, seconds, trt.__name__, info["tensorrt_version"])
        return engine_path
    finally:
        tmp.unlink(missing_ok=True)
        meta_tmp.unlink(missing_ok=True)


class TensorRTRunner:
    """Runs a step engine on a CUDA GPU with the state kept on the device, in torch tensors.

    Every buffer is allocated once, by :meth:`init_state`: the inputs, the output, and two sets of
    state tensors A and B. Two execution contexts share one scratch allocation; context 0 reads state
    A and writes B, context 1 reads B and writes A, and steps alternate between them (ping-pong). So
    each context's tensor addresses never change after :meth:`init_state`, which is what CUDA-graph
    capture needs (``cuda_graph=True`` asks TensorRT-RTX to capture them itself).

    ``step(frame, second=None, *, strength=1.0, fps=30.0) -> torch.Tensor`` (on the GPU, ready on the
    caller's current stream): same arguments as :class:`OnnxRunner.step`; frames may be CPU or CUDA
    tensors or numpy arrays. The returned tensor is one of two output buffers and is overwritten two
    steps later: clone it to keep it.
    """

    def __init__(self, engine_path: str | Path, device: str = "cuda", cuda_graph: bool = False, verbose: bool = False):
        import torch

        self.trt = trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise RuntimeError("TensorRTRunner needs a CUDA GPU and torch with CUDA; none is available here")
        self.engine_path = Path(engine_path)
        meta_path = Path(f"{engine_path}.json")
        if not meta_path.is_file():
            raise ValueError(f"{meta_path} is missing: build engines with streamssm.export.build_engine")
        self.info = json.loads(meta_path.read_text())
        self.spec = StepSpec.from_metadata(self.info, meta_path)
        self.device = torch.device(device)
        self.cuda_graph = cuda_graph
        self._logger = _make_logger(trt, verbose)
        with torch.cuda.device(self.device):
            self.runtime = trt.Runtime(self._logger)
            self.engine = self.runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            why = "; ".join(getattr(self._logger, "errors", [])) or "see the TensorRT log"
            raise RuntimeError(f"cannot deserialize {self.engine_path} with {trt.__name__}: {why}")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        want = set(self.spec.input_names()) | set(self.spec.output_names())
        if set(names) != want:
            raise ValueError(f"{self.engine_path}: tensors {sorted(names)} differ from the model's {sorted(want)}")
        self.stream = torch.cuda.Stream(self.device)
        self._contexts = []
        self._size = None
        self._parity = 0

    # -------------------------------------------------------------------------------- buffers
    def _dtype(self, name: str):
        import torch

        trt = self.trt
        table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32,
                 trt.DataType.INT64: torch.int64, trt.DataType.BOOL: torch.bool, trt.DataType.INT8: torch.int8,
                 trt.DataType.UINT8: torch.uint8}
        if hasattr(trt.DataType, "BF16"):
            table[trt.DataType.BF16] = torch.bfloat16
        return table[self.engine.get_tensor_dtype(name)]

    def _new_context(self):
        trt = self.trt
        strategy = trt.ExecutionContextAllocationStrategy.USER_MANAGED  # the two contexts share scratch memory
        if hasattr(self.engine, "create_runtime_config"):  # TensorRT-RTX (and TensorRT >= 10.11)
            rc = self.engine.create_runtime_config()
            rc.set_execution_context_allocation_strategy(strategy)
            if self.cuda_graph and hasattr(rc, "cuda_graph_strategy"):
                rc.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
            ctx = self.engine.create_execution_context(rc)
        else:
            ctx = self.engine.create_execution_context(strategy)
        if ctx is None:
            raise RuntimeError(f"TensorRT could not create an execution context for {self.engine_path}")
        return ctx

    def init_state(self, batch: int, *dims: int) -> None:
        """Allocate every buffer for ``batch`` x (k) pose or x (h, w) video streams, state zeroed."""
        import torch

        spec = self.spec
        shapes = spec.input_shapes(batch, *dims)
        out_shape = spec.frame_shapes(batch, *dims)[OUTPUT]
        dev = self.device
        self.stream.synchronize()  # a step in flight may still use the buffers about to be replaced
        self._inputs = {n: torch.zeros(shapes[n], dtype=self._dtype(n), device=dev) for n in spec.frame_inputs}
        n_state = spec.n_state
        self._states = [[torch.zeros(shapes[state_in(i)], dtype=self._dtype(state_in(i)), device=dev)
                         for i in range(n_state)] for _ in range(2)]
        self._outputs = [torch.empty(out_shape, dtype=self._dtype(OUTPUT), device=dev) for _ in range(2)]
        if len(self._contexts) < 2:
            self._contexts = [self._new_context(), self._new_context()]
        scratch = 0
        for p, ctx in enumerate(self._contexts):
            cur, nxt = self._states[p], self._states[1 - p]
            for name, shape in shapes.items():
                if not ctx.set_input_shape(name, shape):
                    raise ValueError(f"{name} {shape} is outside the engine's optimisation profile "
                                     f"{self.info.get('profile', {}).get(name)}")
            for name, buf in self._inputs.items():
                ctx.set_tensor_address(name, buf.data_ptr())
            for i in range(n_state):
                ctx.set_tensor_address(state_in(i), cur[i].data_ptr())
                ctx.set_tensor_address(state_out(i), nxt[i].data_ptr())
                got = tuple(ctx.get_tensor_shape(state_out(i)))
                if got != tuple(cur[i].shape):
                    raise RuntimeError(f"engine gives state_out_{i} {got} for a state_in_{i} of {tuple(cur[i].shape)}: "
                                       f"the graph does not generalise to this size")
            ctx.set_tensor_address(OUTPUT, self._outputs[p].data_ptr())
            if tuple(ctx.get_tensor_shape(OUTPUT)) != tuple(out_shape):
                raise RuntimeError(f"engine output {tuple(ctx.get_tensor_shape(OUTPUT))} != expected {out_shape}")
            missing = ctx.infer_shapes()
            if missing:
                raise RuntimeError(f"TensorRT needs shapes for {missing}")
            if hasattr(ctx, "update_device_memory_size_for_shapes"):
                scratch = max(scratch, ctx.update_device_memory_size_for_shapes())
            else:
                scratch = max(scratch, self.engine.device_memory_size_v2)
        # one scratch allocation for both contexts: they run one after the other on self.stream
        self._scratch = torch.empty(max(scratch, 1), dtype=torch.uint8, device=dev)
        for ctx in self._contexts:
            ctx.set_device_memory(self._scratch.data_ptr(), self._scratch.numel())
        self._size = (batch, *dims)
        self._parity = 0
        torch.cuda.synchronize(dev)

    def reset(self) -> None:
        """Zero the state (a fresh stream of the same size); before the first step there is none to zero."""
        if not getattr(self, "_states", None):
            return
        with self._on_stream():
            for s in self._states[self._parity]:
                s.zero_()

    def get_state(self) -> list:
        """A copy of the current state (torch CUDA tensors)."""
        with self._on_stream():
            state = [s.clone() for s in self._states[self._parity]]
        self._sync_out()
        return state

    def set_state(self, state) -> None:
        """Restore a snapshot taken with :meth:`get_state` (same stream size: call init_state with it first)."""
        if not getattr(self, "_states", None) or len(state) != len(self._states[self._parity]) or any(
                tuple(src.shape) != tuple(dst.shape) for dst, src in zip(self._states[self._parity], state)):
            raise ValueError("state does not match this stream: call init_state with the snapshot's size first")
        with self._on_stream():
            for dst, src in zip(self._states[self._parity], state):
                dst.copy_(src)

    def _on_stream(self):
        import torch

        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        return torch.cuda.stream(self.stream)

    def _sync_out(self):
        import torch

        torch.cuda.current_stream(self.device).wait_stream(self.stream)

    # ----------------------------------------------------------------------------------- step
    def step(self, frame, second=None, *, strength: float = 1.0, fps=30.0):
        import torch

        spec = self.spec
        strength = as_strength(strength)
        frame = torch.as_tensor(frame)
        if spec.kind == "video":
            for name, t in (("processed", frame), ("original", second)):
                if t is not None and not torch.as_tensor(t).is_floating_point():
                    raise ValueError(f"{name} frames must be floating point in [0, 1], got {torch.as_tensor(t).dtype} "
                                     "(divide uint8 by 255)")
        if spec.kind == "pose":
            fps_c = np.asarray(fps, np.float64).reshape(-1)
            if not (np.isfinite(fps_c) & (fps_c > 0)).all():
                raise ValueError(f"fps must be a positive number of frames per second, got {fps!r}")
            if frame.dim() != 3 or frame.shape[2] != spec.dims:
                raise ValueError(f"points must be (B, K, {spec.dims}) for this engine, got {tuple(frame.shape)}")
            size = tuple(frame.shape[:2])
        else:
            if frame.dim() != 4 or frame.shape[1] != 3:
                raise ValueError(f"processed frames must be (B, 3, H, W), got {tuple(frame.shape)}")
            if spec.guided != (second is not None):
                raise ValueError("this engine is guided: pass the original frame" if spec.guided else
                                 "this engine is processed-only: build a guided one to use an original frame")
            size = (frame.shape[0], *frame.shape[2:])
        if self._size != size:
            new_stream_size(spec, self._size, size, self.engine_path.name)
            self.init_state(*size)
        inp = self._inputs
        for t in (frame, second):  # CUDA inputs are read on self.stream: keep the allocator from reusing them
            if isinstance(t, torch.Tensor) and t.is_cuda:
                t.record_stream(self.stream)
        with self._on_stream():
            if spec.kind == "pose":
                inp["points"].copy_(frame, non_blocking=True)
                if second is None:
                    inp["confidence"].fill_(1.0)
                else:
                    inp["confidence"].copy_(torch.as_tensor(second), non_blocking=True)
                fps_t = torch.as_tensor(fps, dtype=torch.float32).reshape(-1).expand(size[0])
                inp["fps"].copy_(fps_t, non_blocking=True)
            else:
                inp["processed"].copy_(frame, non_blocking=True)
                if spec.guided:
                    inp["original"].copy_(torch.as_tensor(second), non_blocking=True)
            inp["strength"].fill_(float(strength))
            ok = self._contexts[self._parity].execute_async_v3(self.stream.cuda_stream)
        if not ok:
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        out = self._outputs[self._parity]
        self._parity ^= 1  # the state just written is the next step's input
        self._sync_out()
        return out


__all__ = ["build_engine", "TensorRTRunner", "import_tensorrt", "profile_shapes", "DEFAULT_PROFILES"]
