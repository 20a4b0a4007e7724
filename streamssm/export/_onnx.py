"""ONNX export of one step of the pose or video model, and an ONNX Runtime runner for the graph.

The exporter is the legacy TorchScript tracer (``torch.onnx.export(..., dynamo=False)``; the dynamo exporter is
not used or tested): it records the arithmetic on frame sizes (``h // pre // cell``, slices, reshapes) as graph ops,
so one graph serves every resolution. What the tracer cannot record -- a Python ``min``/``max`` on sizes -- is fixed
at the export shape: a resolution-generic video graph is refused under a 64 px short side before tracing, and
``export_onnx(check=True)`` runs the graph at a second shape against PyTorch and refuses a graph that does not
generalise.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from streamssm._args import as_exposure_lock, as_ghost_res, as_strength
from streamssm.video.model import HALF_FLOW_SIDE  # video: from it one graph serves every size (flow at half size)

from ._files import check_output_path, claim_temp, move_into_place
from ._spec import (OUTPUT, PoseStep, StepSpec, VideoStep, build_model, dynamic_axes, load_model, new_stream_size,
                    state_in, state_out)

log = logging.getLogger("streamssm")

MIN_OPSET = 17  # GridSample needs 16; 17 is the oldest opset we test (TensorRT 10 parses 9..23)
DEFAULT_EXPORT_SHAPE = {"pose": (2, 17), "video": (2, 144, 256)}  # (batch, *stream dims)
CHECK_TOL = 1e-4  # relative error allowed between ONNX Runtime and PyTorch, fp32


def _require(module: str, extra: str = "export"):
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(f"{module} is needed for ONNX export: pip install 'streamssm[{extra}]' ({e})") from None


def example_inputs(spec: StepSpec, batch: int, *dims: int, seed: int = 0, t: int = 0, scene: str = "texture"
                   ) -> dict[str, np.ndarray]:
    """Plausible random non-state inputs for step ``t`` of a stream of ``batch`` x dims (float32 numpy).

    Pose points (drawn anew for each ``seed + t``) include a missing joint (NaN) and a zero-confidence one, so the
    masking paths are part of every check. Video frames, in [0, 1], are one scene per ``seed``, like footage, with
    the processed frame's gain flickering per step. ``scene="texture"``: smooth shading and edges with fine texture,
    panning a pixel a step. (Independent noise frames would make every step a scene cut and put the flow on
    decisions that one float rounding flips.) ``scene="dusk"``: :func:`_dusk`, dark and smooth, quantised to 1/255,
    with a scene cut at step :data:`DUSK_CUT`."""
    rng = np.random.default_rng(seed + (t if spec.kind == "pose" else 0))
    shapes = spec.frame_shapes(batch, *dims)
    out: dict[str, np.ndarray] = {}
    if spec.kind == "pose":
        b, k, d = shapes["points"]
        pts = rng.normal(0, 0.3, (b, 1, d)) + rng.normal(0, 1, (1, k, d)) + rng.normal(0, 0.01, (b, k, d))
        pts[0, 0] = np.nan
        conf = rng.uniform(0.2, 1.0, (b, k))
        conf[-1, -1] = 0.0
        out = {"points": pts, "confidence": conf, "fps": np.full((b,), 30.0)}
    elif scene == "dusk":
        img = _dusk(shapes["processed"], t, rng)
        gain = np.random.default_rng([seed, t]).uniform(0.85, 1.15, img.shape[:2] + (1, 1))
        out["processed"] = np.round(np.clip(img * gain, 0, 1) * 255) / 255
        if spec.guided:
            out["original"] = np.round(img * 255) / 255
    elif scene == "texture":
        b, c, h, w = shapes["processed"]
        span = w + 64  # room to pan 64 steps
        coarse = rng.uniform(0.1, 0.9, (b, c, h // 8 + 2, span // 8 + 2))
        scene = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3)[:, :, :h, :span]  # blocks: edges
        from streamssm.video.model import _box  # the model's own box filter: shading to go with the edges

        blurred = _box(torch.from_numpy(np.ascontiguousarray(scene)), 9).numpy()
        scene = 0.6 * scene + 0.4 * blurred + rng.normal(0, 0.03, scene.shape)
        x0 = t % 64
        img = np.clip(scene[..., x0:x0 + w], 0, 1)
        gain = np.random.default_rng([seed, t]).uniform(0.9, 1.1, (b, c, 1, 1))
        out["processed"] = np.clip(img * gain, 0, 1)
        if spec.guided:
            out["original"] = img
    else:
        raise ValueError(f"scene is 'texture' or 'dusk', got {scene!r}")
    out["strength"] = np.ones(1)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


DUSK_CUT = 3  # the step at which a "dusk" stream cuts to another scene
DUSK_SIZE = (360, 640)  # where a resolution-generic graph's dusk check runs: whole-frame sums as long as footage's


def _dusk(shape: tuple[int, ...], t: int, rng: np.random.Generator) -> np.ndarray:
    """Step ``t`` of a dusk scene (b, c, h, w) in [0, 1]: a smooth sky gradient (colours drawn from ``rng``) over a
    near-black land under a soft, drifting ridge, and a dark figure walking 1% of the width a step. From step
    :data:`DUSK_CUT` on it is turned upside down and mirrored: a scene cut (thumbnail correlation about -0.8). What
    the processed-only graph drifted on before whole-frame means were split (:func:`_split_reductions`): large
    smooth areas (whose float32 sums round alike) and flat dark ones (where the flow's least squares amplify any
    difference)."""
    b, c, h, w = shape
    top, low = rng.uniform(0.3, 0.7, (b, c, 1, 1)), rng.uniform(0.1, 0.3, (b, c, 1, 1))
    yy, xx = np.linspace(0, 1, h)[:, None], np.linspace(0, 1, w)[None, :]
    sky = top * (1 - yy) + low * yy
    ridge = 0.6 + 0.1 * np.sin(2 * np.pi * (2 * xx + t / 50)) + 0.05 * np.sin(14 * np.pi * xx)
    land = 0.5 + 0.5 * np.tanh((yy - ridge) * h / 4)  # a soft edge, a pixel or two wide
    figure = np.exp(-(((xx - 0.3 - 0.01 * t) * w) ** 2 + ((yy - 0.5) * h) ** 2) / (2 * (0.08 * h) ** 2))
    img = (sky * (1 - land) + 0.03 * land) * (1 - 0.9 * figure)
    return np.ascontiguousarray(img[..., ::-1, ::-1]) if t >= DUSK_CUT else img


def _wrapper(spec: StepSpec, model: nn.Module) -> nn.Module:
    return PoseStep(model) if spec.kind == "pose" else VideoStep(model, spec.guided)


def _check_backend(model: nn.Module) -> None:
    from streamssm.ssm import Backend

    for name, m in model.named_modules():
        b = getattr(m, "backend", None)
        if isinstance(b, Backend) and b.name not in ("torch", "ref"):
            raise ValueError(f"{name or 'model'} runs the {b.name!r} backend, which does not trace: build the "
                             f"model with backend='torch' for export")


def export_onnx(
    model_kind: str,
    out_path: str | Path,
    weights: str | Path | None = None,
    opset: int = MIN_OPSET,
    *,
    model: nn.Module | None = None,
    guided: bool = False,
    dims: int = 2,
    shape: tuple[int, ...] | None = None,
    dynamic_size: bool = True,
    check: bool = True,
    ghost_res: float | None = None,
    exposure_lock: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Export one step of the ``"pose"`` or ``"video"`` model to ONNX, state as explicit inputs/outputs.

    Args:
        model_kind: ``"pose"`` or ``"video"``.
        out_path: the ``.onnx`` file to write (atomically), in an existing folder; never a device or a pipe.
        weights: safetensors weights (default: the package's); ignored when ``model`` is given.
        opset: ONNX opset, >= 17.
        model: an already built model (e.g. untrained, for tests); it is copied, never modified.
        guided: video only: the graph takes ``original`` (separate graphs, see :mod:`._spec`).
        dims: pose only: coordinates per keypoint, 2 or 3 (fixed in the graph).
        shape: (batch, *stream dims) traced at: (b, k) pose, (b, h, w) video. Video frames must have
            a short side >= 64 for a resolution-generic graph (below it the model's ``pre`` factor
            changes; see the README): a smaller one is refused before any work unless ``dynamic_size=False``.
        dynamic_size: batch is always dynamic; this makes k (pose) or h, w (video) dynamic too. With
            False the graph accepts only the traced k or h, w.
        check: run ONNX Runtime against PyTorch for 2 steps at the traced shape and at a second shape
            (other batch, and other k or h, w when dynamic), and video for 6 steps of dark footage with a scene
            cut (``scene="dusk"`` of :func:`example_inputs`, at 360 x 640 or the static size); raise if the
            relative error of the output or a state tensor exceeds 1e-4.
        ghost_res: video only: the ghost guard baked into the graph
            (:class:`~streamssm.video.filter.VideoFilter`'s ``ghost_res``); None: the weights' setting.
        exposure_lock: video only: the exposure lock baked into the graph (``VideoFilter``'s ``exposure_lock``);
            None: the weights' setting.
        overwrite: replace an existing ``out_path`` (a regular file, or a symbolic link: the link itself is
            replaced); without it an existing output is refused (FileExistsError) before any work.

    Returns:
        The path written. Graph interface and metadata: see :mod:`streamssm.export._spec`.

    >>> import os, tempfile
    >>> path = export_onnx("pose", os.path.join(tempfile.mkdtemp(), "pose.onnx"), dims=2)
    >>> [i.name for i in OnnxRunner(path).session.get_inputs()][:4]
    ['points', 'confidence', 'fps', 'strength']
    """
    out_path = check_output_path(out_path, weights if weights is not None else _package_weights(model_kind),
                                 overwrite=overwrite)  # before any work
    onnx = _require("onnx")
    top = min(max_opset(), onnx.defs.onnx_opset_version())
    if not MIN_OPSET <= opset <= top:
        raise ValueError(f"opset must be from {MIN_OPSET} (GridSample, and what the tests cover) to {top} (the newest "
                         f"both this torch's exporter and the installed onnx write), got {opset}")
    shape = tuple(shape or DEFAULT_EXPORT_SHAPE[model_kind])
    batch, sdims = shape[0], tuple(shape[1:])
    if model_kind == "video" and dynamic_size and len(sdims) == 2 and min(sdims) < HALF_FLOW_SIDE:
        # the graph would fix the flow's and the grid's downsampling at this size: wrong at every size (its
        # metadata's formulas hold from 64 px), so refused before tracing, not by the check after it
        raise ValueError(f"{out_path}: a resolution-generic video graph must be traced at frames with a short side "
                         f"of at least {HALF_FLOW_SIDE} px, got {sdims[0]}x{sdims[1]} (height x width): trace at "
                         f"{HALF_FLOW_SIDE} px or more, or export at the size you run with dynamic_size=False")
    tmp = claim_temp(out_path)  # before any work: an unwritable folder is said now, naming out_path
    try:
        if model is None:
            model = load_model(model_kind, weights)
        model = copy.deepcopy(model).cpu().float().eval()
        _check_backend(model)
        if ghost_res is not None:
            if model_kind != "video":
                raise ValueError("ghost_res is for the video model (its temporal blend), not pose")
            model.config.ghost_res = as_ghost_res(ghost_res)
        if exposure_lock is not None:
            if model_kind != "video":
                raise ValueError("exposure_lock is for the video model, not pose")
            model.config.exposure_lock = as_exposure_lock(exposure_lock)
        config = {**model.config.to_dict(), "backend": "torch"}
        # a static graph's metadata gives its state's sizes as numbers, at this size (the formulas hold from 64 px)
        spec = StepSpec(model_kind, config, guided=bool(guided) and model_kind == "video", dims=dims,
                        static_size=None if dynamic_size else sdims)
        spec._check_dims(sdims)

        # dynamic axes from the state shapes the model itself gives at other stream sizes
        if dynamic_size:
            # other sizes far enough apart that every size-dependent state dim (grids, cell counts) moves
            alt = [(batch + 1, *(d + 24 * (i + 1) for i, d in enumerate(sdims))),
                   (max(1, batch - 1), *(d + 72 - 24 * i for i, d in enumerate(sdims)))]
        else:
            alt = [(batch + 1, *sdims), (batch + 2, *sdims)]
        axes = dynamic_axes(spec, [(batch, *sdims), *alt])

        frames = {k: torch.from_numpy(v) for k, v in example_inputs(spec, batch, *sdims).items()}
        state = model.init_state(batch, *sdims)
        args = tuple(frames[n] for n in spec.frame_inputs) + tuple(state)
        _export_checked(onnx, spec, model, args, axes, opset, shape, alt, tmp, out_path, check)
        move_into_place(tmp, out_path, overwrite)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def _package_weights(kind: str) -> Path:
    """The shipped weights a default export reads (never to be written over)."""
    if kind == "pose":
        from streamssm.pose.filter import DEFAULT_WEIGHTS
    else:
        from streamssm.video.filter import DEFAULT_WEIGHTS
    return Path(DEFAULT_WEIGHTS)


def max_opset() -> int:
    """The newest ONNX opset this torch's exporter writes (torch 2.13: 23; the TorchScript exporter warns above 20,
    and 21-23 export and pass the check here)."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET as top
    except ImportError:  # pragma: no cover - a torch that moved it
        top = 20
    return int(top)


def _export_checked(onnx, spec, model, args, axes, opset, shape, alt, tmp: Path, out_path: Path, check: bool) -> None:
    """Trace to ``tmp``, add the metadata, check it (ONNX checker; ONNX Runtime against PyTorch when ``check``);
    the caller moves it over ``out_path`` only then: a graph that fails leaves what was there untouched."""
    batch, sdims = shape[0], tuple(shape[1:])
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer warns at every Python-level use of a size; check=True is the real test of those
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*Constant folding.*")
        torch.onnx.export(
            _wrapper(spec, model), args, str(tmp), input_names=spec.input_names(), output_names=spec.output_names(),
            dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    proto = onnx.load(str(tmp))
    _declare_shapes(proto, spec, axes, shape)
    _split_reductions(onnx, proto)
    for k, v in {**spec.to_metadata(), "streamssm.export_shape": "x".join(map(str, shape))}.items():
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string = (f"streamssm video step ({'guided' if spec.guided else 'processed-only'} video)"
                        if spec.kind == "video" else f"streamssm pose step, {spec.dims}-D keypoints")
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(tmp))

    if check:
        # the traced size and another, then (video) dark footage with a scene cut, at a frame size as footage's
        runs = [(batch, *sdims, "texture", 2), (*alt[0], "texture", 2)]
        if spec.kind == "video":
            runs.append((1, *(spec.static_size or DUSK_SIZE), "dusk", DUSK_CUT + 3))
        for b, *d, scene, steps in runs:
            try:
                err = compare_with_torch(tmp, model, b, *d, steps=steps, scene=scene)
                why = f"relative error {err:.2e} > {CHECK_TOL:g}"
            except Exception as e:  # ONNX Runtime refusing a size is the same finding, said differently
                err, why, cause = float("inf"), f"{type(e).__name__}: {str(e).strip()[:300]}", e
            else:
                cause = None
            if err > CHECK_TOL:
                raise RuntimeError(
                    f"{out_path}: not written: ONNX Runtime disagrees with PyTorch at batch {b} x {tuple(d)} on "
                    f"{scene} frames ({why}); traced at {shape}. If only the second size fails, tracing fixed a "
                    f"size-dependent choice (a Python min/max on sizes): export at the size you run, with "
                    f"dynamic_size=False"
                ) from cause


def _split_reductions(onnx, proto) -> None:
    """Rewrite every ``ReduceMean`` over several axes as one ``ReduceMean`` per axis, the last (contiguous) axis
    first: the same mean, summed about as accurately as PyTorch sums it.

    ONNX Runtime's CPU ReduceMean over a whole frame adds the values up in float32 nearly one after another: on the
    squared deviations of a 320 x 180 luminance (:func:`~streamssm.video.model.match_brightness`, the processed-only
    flow's brightness match) it was 4e-5 off (PyTorch's cascade sum: 1e-7, row means then their mean in ONNX
    Runtime: 2e-7). The Lucas-Kanade flow amplifies that in flat, dark regions (on one frame: 1.9e-5 in the
    matched luminance, 1e-2 px in the flow), and the processed-only output drifted from PyTorch by up to 2.9e-2
    (7/255) on real footage (export/README.md, "Agreement with PyTorch"). Only constant, same-signed axes are split;
    nothing else in the graph changes."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attrs.get("axes")
        if node.op_type == "ReduceMean" and axes is None and len(node.input) > 1:  # opset 18: axes as an input
            axes = consts.get(node.input[1])
        axes = None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
        if (node.op_type != "ReduceMean" or axes is None or len(axes) < 2
                or not (all(a < 0 for a in axes) or all(a >= 0 for a in axes))):
            nodes.append(node)
            continue
        keep = attrs.get("keepdims", 1)
        cur = node.input[0]
        for k, ax in enumerate(sorted(axes, reverse=True)):  # -1 before -2, 3 before 2: the innermost first
            last = k == len(axes) - 1
            out = node.output[0] if last and keep else f"{node.output[0]}__mean{k}"
            if opset >= 18:
                name = f"{node.output[0]}__axis{k}"
                graph.initializer.append(numpy_helper.from_array(np.array([ax], np.int64), name))
                nodes.append(helper.make_node("ReduceMean", [cur, name], [out], keepdims=1))
            else:
                nodes.append(helper.make_node("ReduceMean", [cur], [out], axes=[ax], keepdims=1))
            cur = out
        if not keep:
            name = f"{node.output[0]}__squeeze"
            graph.initializer.append(numpy_helper.from_array(np.array(axes, np.int64), name))
            nodes.append(helper.make_node("Squeeze", [cur, name], [node.output[0]]))
    del graph.node[:]
    graph.node.extend(nodes)


def _declare_shapes(proto, spec: StepSpec, axes: dict[str, dict[int, str]], shape: tuple[int, ...]) -> None:
    """Write every graph input's and output's shape as the spec has it: fixed dims as numbers (the tracer leaves
    some outputs' channel counts as symbols like ``Gatheroutput_dim_1``), dynamic ones by their formula's name
    (``height_div32``), so that a runner reading the graph sees which dims are tied to which."""
    batch, sdims = shape[0], tuple(shape[1:])
    fixed = {**spec.input_shapes(batch, *sdims), OUTPUT: spec.frame_shapes(batch, *sdims)[OUTPUT]}
    fixed.update({state_out(i): s for i, s in enumerate(spec.state_shapes(batch, *sdims))})
    for value in [*proto.graph.input, *proto.graph.output]:
        want = fixed[value.name]
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(want):  # the tracer's own shapes disagree with the model's: leave them to the check
            continue
        for j, d in enumerate(dims):
            name = axes.get(value.name, {}).get(j)
            if name is not None:
                d.dim_param = name
            else:
                d.dim_value = want[j]


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b|| over the entries finite in b; inf if a and b disagree on which are NaN."""
    fa, fb = np.isfinite(a), np.isfinite(b)
    if a.shape != b.shape or not np.array_equal(fa, fb):
        return float("inf")
    a, b = a[fb].astype(np.float64), b[fb].astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def compare_with_torch(path: str | Path, model: nn.Module, batch: int, *dims: int, steps: int = 20, seed: int = 0,
                       providers=None, scene: str = "texture") -> float:
    """Largest relative error between :class:`OnnxRunner` and ``model.step`` (output and every state
    tensor) over ``steps`` steps of one stream, each runner feeding its own state back. ``scene``: the video frames
    (:func:`example_inputs`)."""
    runner = OnnxRunner(path, providers=providers)
    spec = runner.spec
    runner.init_state(batch, *dims)
    state = model.init_state(batch, *dims)
    wrapper = _wrapper(spec, model).eval()
    worst = 0.0
    for t in range(steps):
        x = example_inputs(spec, batch, *dims, seed=seed, t=t, scene=scene)
        x["strength"][:] = 0.8
        with torch.no_grad():
            out, *state = wrapper(*(torch.from_numpy(x[n]) for n in spec.frame_inputs), *state)
        got = runner.step(*(x[n] for n in spec.frame_inputs if n not in ("strength", "fps")),
                          strength=0.8, **({"fps": x["fps"]} if "fps" in x else {}))
        worst = max(worst, _rel_err(got, out.numpy()))
        for a, b in zip(runner.get_state(), state):
            worst = max(worst, _rel_err(a, b.numpy()))
    return worst


def _video_frame(x, name: str, sanitise: bool = True) -> np.ndarray:
    """A (B, 3, H, W) float frame in [0, 1] as contiguous float32, NaN/inf sanitised as :class:`VideoFilter` does (one
    NaN would otherwise poison the state for good) unless the graph does it itself (``sanitise=False``: graphs
    exported since session 18); ValueError naming ``name`` for another layout or an integer array (uint8 0..255
    would be taken for [0, 1] values and saturate)."""
    a = np.asarray(x)
    if a.ndim != 4 or a.shape[1] != 3 or 0 in a.shape:
        raise ValueError(f"{name} frames must be (B, 3, H, W), got {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name} frames must be floating point in [0, 1], got {a.dtype} (divide uint8 by 255)")
    if not sanitise:
        return np.ascontiguousarray(a, np.float32)
    # one copy a frame (this runs per step): the sanitised array is clipped in place
    a = np.nan_to_num(np.asarray(a, np.float32, order="C"), copy=True, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(a, 0.0, 1.0, out=a)


class OnnxRunner:
    """Runs an exported step graph with ONNX Runtime, holding the stream's state (numpy in, numpy out).

    ``threads``: ONNX Runtime's intra-op threads (default: its own choice); ``spinning``: let idle
    threads spin-wait (off: see ``__init__``).

    The state lives in two preallocated sets of buffers; each step reads one set and has ONNX Runtime
    write the new state straight into the other (I/O binding), then the two swap: no state is copied
    or allocated per frame.

    ``step(frame, second=None, *, strength=1.0, fps=30.0) -> output``: pose ``frame`` = points
    (b, k, d), ``second`` = confidence (b, k) or None (all 1); video ``frame`` = processed (b, 3, h, w),
    ``second`` = original (required by a guided graph, refused by a processed-only one). The first step starts a
    fresh stream (:meth:`init_state`); video frames of another size start it over, with a warning; pose points of
    another batch or keypoint count are refused (call :meth:`init_state` with the new size). A frame the checks
    refuse leaves the stream as it was.

    >>> import os, tempfile
    >>> runner = OnnxRunner(export_onnx("pose", os.path.join(tempfile.mkdtemp(), "pose.onnx"), check=False))
    >>> runner.init_state(1, 17)                      # one stream of 17 keypoints
    >>> y = runner.step(np.random.rand(1, 17, 2).astype(np.float32), fps=30.0)
    >>> y.shape
    (1, 17, 2)
    """

    def __init__(self, path: str | Path, providers: list | None = None, threads: int | None = None,
                 spinning: bool = False):
        ort = _require("onnxruntime")
        self.path = Path(path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        if not spinning:
            # A stream interleaves each step with other work (decoding, drawing, PyTorch); ONNX Runtime's
            # threads spin-waiting between steps steal those cores (a pose step interleaved with a
            # PyTorch one ran 5x slower on 2 cores). spinning=True for a process that only runs ORT.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), opts, providers=providers or ["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.spec = StepSpec.from_metadata(meta, self.path)
        # graphs that clean their frames themselves say so; older ones' frames are cleaned here
        self._graph_sanitises = meta.get("streamssm.sanitises_frames") == "true"
        names = [i.name for i in self.session.get_inputs()]
        if names != self.spec.input_names():
            raise ValueError(f"{self.path}: inputs {names} do not match what the installed streamssm model needs "
                             f"({self.spec.input_names()}): re-export the graph with this version")
        first = self.session.get_inputs()[0].shape  # points / processed: a str (symbolic) size is free
        self._sizes_free = any(not isinstance(d, int) for d in first[1:])
        self._fixed = [d if isinstance(d, int) else None for d in first]  # a --static-size graph's own sizes
        self._size: tuple[int, ...] | None = None
        self._state: list[np.ndarray] = []
        self._spare: list[np.ndarray] = []

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def guided(self) -> bool:
        return self.spec.guided

    def init_state(self, batch: int, *dims: int) -> None:
        """Start a fresh stream of ``batch`` x (k) for pose or x (h, w) for video."""
        shapes = self.spec.state_shapes(batch, *dims)
        dtypes = [torch.empty(0, dtype=d).numpy().dtype for d in self.spec.state_dtypes()]
        self._state = [np.zeros(s, d) for s, d in zip(shapes, dtypes)]
        self._spare = [np.zeros(s, d) for s, d in zip(shapes, dtypes)]
        self._size = (batch, *dims)

    def reset(self) -> None:
        """Zero the state (a fresh stream of the same size)."""
        for s in self._state:
            s.fill(0)

    def get_state(self) -> list[np.ndarray]:
        """A copy of the current state (snapshot)."""
        return [s.copy() for s in self._state]

    def set_state(self, state) -> None:
        """Restore a snapshot taken with :meth:`get_state` (same stream size)."""
        if len(state) != len(self._state) or any(np.shape(a) != b.shape for a, b in zip(state, self._state)):
            raise ValueError("state does not match this stream: call init_state with the snapshot's size first")
        for dst, src in zip(self._state, state):
            dst[...] = src

    def step(self, frame, second=None, *, strength: float = 1.0, fps=30.0) -> np.ndarray:
        spec = self.spec
        strength = as_strength(strength)
        if spec.kind == "pose":
            frame = np.ascontiguousarray(frame, dtype=np.float32)
            if frame.ndim != 3 or frame.shape[2] != spec.dims or 0 in frame.shape:
                raise ValueError(f"points must be (B, K, {spec.dims}) for this graph, B and K >= 1, got {frame.shape}")
            size = frame.shape[:2]
            conf = np.ones(size, np.float32) if second is None else np.ascontiguousarray(second, dtype=np.float32)
            fps_a = np.asarray(fps, np.float64).reshape(-1)
            if fps_a.size not in (1, size[0]) or not (np.isfinite(fps_a) & (fps_a > 0)).all():
                raise ValueError(f"fps must be a positive number of frames per second, or one per stream ({size[0]}), "
                                 f"got {fps!r}")
            fps_a = np.ascontiguousarray(np.broadcast_to(fps_a.astype(np.float32), (size[0],)))
            feeds = {"points": frame, "confidence": conf, "fps": fps_a}
        else:
            raw = np.asarray(frame)
            if raw.ndim == 4 and self._size != (raw.shape[0], *raw.shape[2:]) and raw.size \
                    and np.issubdtype(raw.dtype, np.floating) and float(np.nanmax(raw, initial=0.0)) > 1.5:
                log.warning("%s: processed frames reach %.4g: the graph takes floats in [0, 1] (divide 0..255 by "
                            "255)", self.path.name, float(np.nanmax(raw)))
            frame = _video_frame(frame, "processed", not self._graph_sanitises)
            if spec.guided != (second is not None):
                raise ValueError("this graph is guided: pass the original frame" if spec.guided else
                                 "this graph is processed-only: export with guided=True to use an original frame")
            size = (frame.shape[0], *frame.shape[2:])
            if min(size[1:]) < HALF_FLOW_SIDE and self._sizes_free:
                raise ValueError(f"processed frames are {size[2]}x{size[1]}: this resolution-generic graph needs a "
                                 f"short side of at least {HALF_FLOW_SIDE} px (export at the size you run, with "
                                 "--static-size, for smaller)")
            feeds = {"processed": frame}
            if spec.guided:
                feeds["original"] = _video_frame(second, "original", not self._graph_sanitises)
        feeds["strength"] = np.full((1,), strength, np.float32)
        for name, shape in spec.frame_shapes(*size).items():
            if name in feeds and feeds[name].shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {feeds[name].shape}")
        first = feeds[spec.frame_inputs[0]].shape
        if any(f is not None and f != g for f, g in zip(self._fixed, first)):  # checked before the stream changes
            want = "x".join("*" if f is None else str(f) for f in self._fixed)
            got = "x".join(map(str, first))
            raise ValueError(f"{spec.frame_inputs[0]} is {got}, but {self.path.name} was exported for {want} only "
                             "(--static-size): re-export at this size")
        if self._size != tuple(size):
            new_stream_size(spec, self._size, tuple(size), self.path.name)
            self.init_state(*size)

        io = self.session.io_binding()
        for name, value in feeds.items():
            io.bind_cpu_input(name, value)
        out = np.empty(spec.frame_shapes(*size)[OUTPUT], np.float32)
        io.bind_output(OUTPUT, "cpu", 0, out.dtype, out.shape, out.ctypes.data)
        for i, (cur, nxt) in enumerate(zip(self._state, self._spare)):
            io.bind_cpu_input(state_in(i), cur)
            io.bind_output(state_out(i), "cpu", 0, nxt.dtype, nxt.shape, nxt.ctypes.data)
        self.session.run_with_iobinding(io)
        self._state, self._spare = self._spare, self._state  # ping-pong
        return out


__all__ = ["export_onnx", "OnnxRunner", "compare_with_torch", "example_inputs", "build_model"]
