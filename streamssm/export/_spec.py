"""What one exported step graph looks like: its wrapper module, tensor names, metadata and shapes.

Shared by the ONNX exporter, the ONNX Runtime runner, the TensorRT builder and the TensorRT runner,
so that all four agree on names and on the state's shapes. The state's layout is never written down
here: it is read from the model's own ``init_state`` (on the ``meta`` device, so no memory is used),
which keeps the export working while the models' state tuples change.

Graph interface (``s`` = number of state tensors, read from ``init_state``)::

    pose:   points (b, k, d), confidence (b, k), fps (b,), strength (1,), state_in_0..s-1
            -> output (b, k, d), state_out_0..s-1
    video:  processed (b, 3, h, w), [original (b, 3, h, w)], strength (1,), state_in_0..s-1
            -> output (b, 3, h, w), state_out_0..s-1

``state_out_i`` has the shape of ``state_in_i``; feeding it back as the next ``state_in_i`` is one
stream. Guided (``original`` given) and processed-only video are separate graphs: the model's
``guided`` feature flag is a Python constant, and a separate graph keeps the processed-only one
free of an unused full-resolution input.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

KINDS = ("pose", "video")
OUTPUT = "output"
META_PREFIX = "streamssm."


def state_in(i: int) -> str:
    return f"state_in_{i}"


def state_out(i: int) -> str:
    return f"state_out_{i}"


# ------------------------------------------------------------------------------------- wrappers
class PoseStep(nn.Module):
    """One :meth:`PoseSSM.step` with the state as explicit graph inputs and outputs.

    ``forward(points (b,k,d), confidence (b,k), fps (b,), strength (1,), *state) -> (output, *state)``.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, points: Tensor, confidence: Tensor, fps: Tensor, strength: Tensor, *state: Tensor):
        y, new_state = self.model.step(points, confidence, tuple(state), fps=fps, strength=strength)
        return (y, *new_state)


def _sanitised(frame: Tensor) -> Tensor:
    """In the graph, as :class:`~streamssm.video.filter.VideoFilter` does before its step: NaN -> 0 and everything
    clamped to [0, 1] (inf -> 1, -inf -> 0), so that one bad pixel from any runner (C++, TensorRT) cannot poison the
    state for good. ``x == x`` is False only for NaN (Equal/Where/Clip: ops every runtime has)."""
    return torch.where(frame == frame, frame, torch.zeros_like(frame)).clamp(0.0, 1.0)


class VideoStep(nn.Module):
    """One :meth:`VideoSSM.step` with the state as explicit graph inputs and outputs.

    ``forward(processed, [original,] strength (1,), *state) -> (output, *state)``; ``original`` is an
    input only when ``guided``.
    """

    def __init__(self, model: nn.Module, guided: bool):
        super().__init__()
        self.model = model
        self.guided = guided

    def forward(self, processed: Tensor, *rest: Tensor):
        if self.guided:
            original, strength, *state = rest
            original = _sanitised(original)
        else:
            original = None
            strength, *state = rest
        out, new_state = self.model.step(_sanitised(processed), original, tuple(state), strength=strength)
        return (out, *new_state)


# ------------------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class StepSpec:
    """Everything a runner or builder needs to know about one exported graph.

    ``dims`` (pose only) is the coordinate count d (2 or 3), fixed at export; ``guided`` (video only)
    says whether the graph takes ``original``; ``static_size`` is the stream dims ((k,) or (h, w)) of a graph that
    takes only those (``export_onnx(dynamic_size=False)``), None for a resolution-generic one.
    """

    kind: str
    config: dict
    guided: bool = False
    dims: int = 2
    static_size: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"model kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "pose" and self.dims not in (2, 3):
            raise ValueError(f"pose dims must be 2 or 3, got {self.dims!r}")
        if self.static_size is not None:
            object.__setattr__(self, "static_size", tuple(int(d) for d in self.static_size))  # a JSON list too
            self._check_dims(self.static_size)

    # names ------------------------------------------------------------------------------------
    @property
    def frame_inputs(self) -> tuple[str, ...]:
        """The non-state inputs, in graph order."""
        if self.kind == "pose":
            return ("points", "confidence", "fps", "strength")
        return ("processed", "original", "strength") if self.guided else ("processed", "strength")

    @property
    def stream_dims(self) -> tuple[str, ...]:
        """What ``init_state(batch, *dims)`` takes after the batch: (keypoints,) or (height, width)."""
        return ("keypoints",) if self.kind == "pose" else ("height", "width")

    @property
    def n_state(self) -> int:
        return len(self.state_shapes(1, *((17,) if self.kind == "pose" else (64, 64))))

    def input_names(self) -> list[str]:
        return [*self.frame_inputs, *(state_in(i) for i in range(self.n_state))]

    def output_names(self) -> list[str]:
        return [OUTPUT, *(state_out(i) for i in range(self.n_state))]

    # shapes -----------------------------------------------------------------------------------
    def state_shapes(self, batch: int, *dims: int) -> list[tuple[int, ...]]:
        """Shapes of the state tensors of a stream of ``batch`` x (k) or x (h, w): from the model."""
        self._check_dims(dims)
        model = _meta_model(self.kind, json.dumps(self.config, sort_keys=True))
        return [tuple(s.shape) for s in model.init_state(batch, *dims, device="meta")]

    def state_dtypes(self) -> list[torch.dtype]:
        model = _meta_model(self.kind, json.dumps(self.config, sort_keys=True))
        dims = (17,) if self.kind == "pose" else (64, 64)
        return [s.dtype for s in model.init_state(1, *dims, device="meta")]

    def frame_shapes(self, batch: int, *dims: int) -> dict[str, tuple[int, ...]]:
        """Shapes of the non-state inputs (and of ``output``) for a stream of ``batch`` x dims."""
        self._check_dims(dims)
        if self.kind == "pose":
            (k,) = dims
            return {"points": (batch, k, self.dims), "confidence": (batch, k), "fps": (batch,), "strength": (1,),
                    OUTPUT: (batch, k, self.dims)}
        h, w = dims
        shapes = {"processed": (batch, 3, h, w), "strength": (1,), OUTPUT: (batch, 3, h, w)}
        if self.guided:
            shapes["original"] = (batch, 3, h, w)
        return shapes

    def input_shapes(self, batch: int, *dims: int) -> dict[str, tuple[int, ...]]:
        """Every graph input's shape for a stream of ``batch`` x dims (frames, scalars and state)."""
        shapes = {k: v for k, v in self.frame_shapes(batch, *dims).items() if k != OUTPUT}
        shapes.update({state_in(i): s for i, s in enumerate(self.state_shapes(batch, *dims))})
        return shapes

    def split_frame_shape(self, shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        """A user's frame shape (``BxKxD`` pose, ``BxCxHxW`` video) -> (batch, stream dims)."""
        if self.kind == "pose":
            if len(shape) != 3 or shape[2] != self.dims:
                raise ValueError(f"pose shapes are BxKxD with D={self.dims} (this graph), got {shape}")
            return shape[0], (shape[1],)
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"video shapes are Bx3xHxW, got {shape}")
        return shape[0], (shape[2], shape[3])

    def _check_dims(self, dims: tuple[int, ...]) -> None:
        if len(dims) != len(self.stream_dims):
            raise ValueError(f"{self.kind} streams are sized by (batch, {', '.join(self.stream_dims)}), "
                             f"got dims {dims}")

    def state_formulas(self) -> list[list[int | str]]:
        """Each state tensor's shape as Python expressions of ``batch`` and the stream dims (``keypoints``;
        ``height``, ``width``), e.g. ``["batch", 18, "height//32", "width//32"]``: fitted to the model's
        ``init_state`` at several sizes and checked at more (video: short sides of 64 px and up, where one
        graph serves every size). What a runner in another language needs to allocate the state; every state
        tensor starts as zeros. A dim no such formula fits (a model of one's own) is None: size it by running
        ``init_state``.

        A ``static_size`` graph gets numbers, those of its own size, and only ``batch`` as a name: its size may be
        one the formulas do not cover (video under 64 px, where the flow runs at full size: ``height//2`` would be
        wrong there)."""
        if self.static_size is not None:
            return self._static_formulas()
        probes = _formula_probes(self.kind)
        shapes = [self.state_shapes(*p) for p in probes]
        out = []
        for i in range(self.n_state):
            dims: list[int | str] = []
            for j in range(len(shapes[0][i])):
                sig = tuple(sh[i][j] for sh in shapes)
                try:
                    dims.append(sig[0] if len(set(sig)) == 1 else _fit_formula(sig, probes, self.stream_dims))
                except ValueError:  # a model of one's own whose sizes follow another rule: said, not guessed
                    dims.append(None)
            out.append(dims)
        return out

    def _static_formulas(self) -> list[list[int | str]]:
        """:meth:`state_formulas` of a ``static_size`` graph: each dim a number, or ``batch`` where it follows the
        batch."""
        batches = (1, 2, 3)
        shapes = [self.state_shapes(b, *self.static_size) for b in batches]
        out = []
        for i in range(self.n_state):
            dims: list[int | str] = []
            for j in range(len(shapes[0][i])):
                sig = tuple(sh[i][j] for sh in shapes)
                dims.append(sig[0] if len(set(sig)) == 1 else "batch" if sig == batches else None)
            out.append(dims)
        return out

    # metadata ---------------------------------------------------------------------------------
    def to_metadata(self) -> dict[str, str]:
        return {
            META_PREFIX + "state_shapes": json.dumps(self.state_formulas()),
            META_PREFIX + "state_init": "zeros",
            META_PREFIX + "sanitises_frames": json.dumps(self.kind == "video"),  # VideoStep: NaN -> 0, clamp
            META_PREFIX + "layout": ("points (batch, keypoints, d) float32 in any one unit on every axis (pixels, "
                                     "metres); NaN = missing" if self.kind == "pose" else
                                     "frames (batch, 3, height, width) float32 RGB in [0, 1] (NaN read as 0)"),
            META_PREFIX + "model": self.kind,
            META_PREFIX + "config": json.dumps(self.config, sort_keys=True),
            META_PREFIX + "guided": json.dumps(self.guided),
            META_PREFIX + "dims": json.dumps(self.dims),
            META_PREFIX + "inputs": json.dumps(list(self.frame_inputs)),
            META_PREFIX + "n_state": json.dumps(self.n_state),
            # the stream dims a --static-size graph takes ((k,) or (h, w)); null: any (video: short side >= 64)
            META_PREFIX + "static_size": json.dumps(None if self.static_size is None else list(self.static_size)),
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str | Path = "graph") -> "StepSpec":
        try:
            return cls(
                kind=meta[META_PREFIX + "model"],
                config=json.loads(meta[META_PREFIX + "config"]),
                guided=json.loads(meta.get(META_PREFIX + "guided", "false")),
                dims=json.loads(meta.get(META_PREFIX + "dims", "2")),
                static_size=json.loads(meta.get(META_PREFIX + "static_size", "null")),  # older graphs: none
            )
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"{source} has no streamssm metadata ({e}); export it with "
                             f"streamssm.export.export_onnx") from None


def new_stream_size(spec: StepSpec, old: tuple[int, ...] | None, new: tuple[int, ...], source: str) -> None:
    """What a runner does when a step's size differs from its stream's (``old``; None: the first step), before
    it starts a stream of size ``new``: video warns (frames of another size start the stream over, as
    ``VideoFilter`` does); pose refuses (ValueError: a keypoint or stream count that changes is a mistake more
    often than a new stream, as ``PoseFilter`` says; ``init_state`` starts one)."""
    if old is None:
        return
    a, b = "x".join(map(str, old)), "x".join(map(str, new))
    if spec.kind == "pose":
        raise ValueError(f"this stream is {a} (streams x keypoints); got {b}: call init_state"
                         f"({', '.join(map(str, new))}) to start a new stream of that size")
    import logging

    logging.getLogger("streamssm").warning("%s: frames changed from %s to %s (batch x height x width): starting the "
                                           "stream over", source, a, b)


def _formula_probes(kind: str) -> list[tuple[int, ...]]:
    """(batch, *stream dims) at which :meth:`StepSpec.state_formulas` fits and checks: sizes that are not multiples
    of the grid, and far apart (video: short sides from 64 px, the resolution-generic range)."""
    if kind == "pose":
        return [(1, 17), (2, 33), (3, 5), (5, 133), (4, 1)]
    return [(1, 64, 64), (2, 72, 128), (3, 97, 65), (1, 144, 256), (2, 360, 641), (1, 719, 1281), (1, 1080, 1920)]


def _fit_formula(sig: tuple[int, ...], probes: list[tuple[int, ...]], stream_dims: tuple[str, ...]) -> str:
    """The expression of ``batch`` and the stream dims that gives ``sig`` at every probe: the dim itself, a floor
    division by a power of two, or a product of two of those (a grid's cell count)."""
    names = ("batch", *stream_dims)
    divisors = range(2, 257)  # (h // a) // b == h // (a * b): one division covers a downsampling and a cell size
    terms: list[tuple[str, Any]] = [(n, lambda p, j=j: p[j]) for j, n in enumerate(names)]
    for j, n in enumerate(stream_dims, 1):
        terms += [(f"{n}//{q}", lambda p, j=j, q=q: p[j] // q) for q in divisors]
    cands = list(terms)
    if len(stream_dims) == 2:  # a grid's cell count: (height//q)*(width//q)
        cands += [(f"({stream_dims[0]}//{q})*({stream_dims[1]}//{q})", lambda p, q=q: (p[1] // q) * (p[2] // q))
                  for q in divisors]
    for text, f in cands:
        if all(f(p) == v for p, v in zip(probes, sig)):
            return text
    raise ValueError(f"no formula of {names} gives the state size {sig} at {probes}")


def formula_name(text: str) -> str:
    """An ONNX dim name for a formula: ``height//32`` -> ``height_div32``, ``a*b`` -> ``a_times_b``."""
    return text.replace("//", "_div").replace("*", "_times_").replace("(", "").replace(")", "")


def dynamic_axes(spec: StepSpec, probes: list[tuple[int, ...]]) -> dict[str, dict[int, str]]:
    """``torch.onnx.export`` dynamic axes, found by comparing the shapes at several (batch, *dims)
    probes: a dim that changes between probes is dynamic. Dims that always equal the batch or a stream
    dim get its name; other varying dims (grid sizes, cell counts) get one name per distinct pattern,
    so e.g. the grid height shared by two state tensors is one symbol."""
    names: dict[tuple[int, ...], str] = {}
    batch_sig = tuple(p[0] for p in probes)
    names[batch_sig] = "batch"
    for j, dname in enumerate(spec.stream_dims):
        names.setdefault(tuple(p[1 + j] for p in probes), dname)
    per_probe_inputs = [spec.input_shapes(p[0], *p[1:]) for p in probes]
    per_probe_out = [spec.frame_shapes(p[0], *p[1:])[OUTPUT] for p in probes]
    formulas = spec.state_formulas()
    axes: dict[str, dict[int, str]] = {}

    def visit(name: str, shapes: list[tuple[int, ...]], out_name: str | None = None):
        ranks = {len(s) for s in shapes}
        if len(ranks) != 1:
            raise ValueError(f"{name} changes rank between stream sizes: {shapes}")
        ax = {}
        for j in range(len(shapes[0])):
            sig = tuple(s[j] for s in shapes)
            if len(set(sig)) == 1:
                continue
            if name.startswith("state_in_") and isinstance(formulas[int(name.rsplit("_", 1)[1])][j], str):
                ax[j] = formula_name(formulas[int(name.rsplit("_", 1)[1])][j])  # fitted and checked at 7 sizes
            else:
                ax[j] = names.setdefault(sig, f"{name}_dim{j}")
        if ax:
            axes[name] = ax
            if out_name is not None:
                axes[out_name] = dict(ax)

    for name in per_probe_inputs[0]:
        out_name = state_out(int(name.rsplit("_", 1)[1])) if name.startswith("state_in_") else None
        visit(name, [s[name] for s in per_probe_inputs], out_name)
    visit(OUTPUT, per_probe_out)
    return axes


@lru_cache(maxsize=8)
def _meta_model(kind: str, config_json: str) -> nn.Module:
    """The model built on the meta device (no memory, no weights): only for ``init_state`` shapes."""
    config = json.loads(config_json)
    with torch.device("meta"):
        return build_model(kind, config)


def build_model(kind: str, config: dict) -> nn.Module:
    """An untrained model of ``kind`` from a config dict (the torch backend: it is what traces)."""
    config = {**config, "backend": "torch"}
    if kind == "pose":
        from streamssm.pose.model import PoseSSM, PoseSSMConfig

        return PoseSSM(PoseSSMConfig(**config))
    if kind == "video":
        from streamssm.video.model import VideoSSM, VideoSSMConfig

        return VideoSSM(VideoSSMConfig(**config))
    raise ValueError(f"model kind must be one of {KINDS}, got {kind!r}")


def load_model(kind: str, weights: str | Path | None = None) -> nn.Module:
    """The model with weights (default: the package's), on the CPU, torch backend, eval mode."""
    if kind == "pose":
        from streamssm.pose.filter import load_pose_model

        return load_pose_model(weights, device="cpu", backend="torch")
    if kind == "video":
        from streamssm.video.filter import DEFAULT_WEIGHTS, load_video_model

        if weights is None and not Path(DEFAULT_WEIGHTS).is_file():
            raise ValueError(f"no video weights are shipped yet ({DEFAULT_WEIGHTS} is missing): "
                             f"pass the weights file (weights=, --weights)")
        return load_video_model(weights, device="cpu", backend="torch")
    raise ValueError(f"model kind must be one of {KINDS}, got {kind!r}")


def parse_shape(text: str | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """``"1x3x360x640"`` -> (1, 3, 360, 640); tuples pass through."""
    if isinstance(text, (tuple, list)):
        shape = tuple(int(v) for v in text)
    elif not re.fullmatch(r"\d+(x\d+)+", text.strip().lower()):
        raise ValueError(f"a shape is written like 1x3x360x640 (video) or 1x17x2 (pose), got {text!r}")
    else:
        shape = tuple(int(v) for v in text.strip().lower().split("x"))
    if min(shape) < 1:
        raise ValueError(f"every size in a shape must be at least 1, got {text!r}")
    return shape
