"""PoseSSM: causal selective-SSM jitter removal for keypoint streams.

Design (why each piece is there):

* **Difference form.** The network never sees absolute coordinates. Per joint it sees the frame-to-frame
  displacement ``v_t = x_t - x_{t-1}`` (of the last *valid* sample: missing points are held) and predicts
  a correction ``d_t``; the output is ``y_t = x_t - strength * s_t * d_t``. A linear SSM over ``v``
  can express exactly an exponential smoother (``x_t - EMA_t = sum_s (1-a)^{t-s+1} v_s``), a
  constant-velocity Kalman filter, or a One Euro filter once its step size depends on the input --
  the selective ``dt`` gives that: integrate while the joint is still, forget at once when it moves.
  The output is translation invariant by construction.
* **Scale.** ``s_t`` is the frame's body size: the RMS distance of its valid joints to their centroid
  (held from the last frame that had two valid joints). Dividing by it makes one set of weights serve
  pixels, normalised coordinates, metres and millimetres.
* **Any K, 2-D or 3-D.** One token per joint (coordinates zero-padded to 3, plus a 2-D/3-D flag); the
  SSM runs over time for every (stream, joint); joints exchange information inside a frame through a
  mean-pooled (DeepSets) mixer, so K = 12, 17, 21, 25, 33 ... all work.
* **Missing data.** NaN/inf coordinates or confidence 0 mark a sample missing: it never reaches the
  state (the joint's last valid value is held, with confidence 0 as an input feature). A frame with no
  valid joint outputs the last output.

State (explicit, a flat tuple, first dim = stream b): ``prev_x (b,k,3)``, ``has_prev (b,k)``,
``scale (b,)``, ``last_out (b,k,3)``, ``has_out (b,)``, then one SSM state ``(b,k,h,p,n)`` per layer.
``forward`` (parallel scan over a whole clip) and ``step`` (one frame) give the same outputs.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from streamssm.ssm import RMSNorm, SSMBlock
from streamssm.stream import state_by_keyword

N_FEATURES = 12


@dataclass
class PoseSSMConfig:
    d_model: int = 32
    n_layers: int = 2
    expand: int = 2
    d_state: int = 16
    headdim: int = 16
    backend: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def preset(cls, name: str, backend: str = "auto") -> "PoseSSMConfig":
        """Named sizes: ``base`` (the v1 network, 1024 state floats per joint and layer), ``small`` (256),
        ``tiny`` (128; the shipped weights since session 5). State size bounds the batched speed (see
        benchmarks/RESULTS.md, pose speed)."""
        if name not in POSE_PRESETS:
            raise ValueError(f"pose preset must be one of {sorted(POSE_PRESETS)}, got {name!r}")
        return cls(**POSE_PRESETS[name], backend=backend)


POSE_PRESETS = {
    "base": dict(d_model=32, n_layers=2, expand=2, d_state=16, headdim=16),
    "small": dict(d_model=16, n_layers=2, expand=2, d_state=8, headdim=8),
    "tiny": dict(d_model=16, n_layers=2, expand=1, d_state=8, headdim=8),
}


def _cummax(x: Tensor, dim: int) -> Tensor:
    """Running maximum along ``dim`` (the values of ``torch.cummax``), as a log-depth doubling scan.

    ``torch.cummax`` has no ONNX export (neither the TorchScript nor the dynamo exporter); this uses
    only cat, narrow and maximum, and takes ceil(log2 T) steps (one for the streaming step, T = 2)."""
    n = x.shape[dim]
    s = 1
    while s < n:
        x = torch.maximum(x, torch.cat([x.narrow(dim, 0, s), x.narrow(dim, 0, n - s)], dim))
        s *= 2
    return x


def _ffill(x: Tensor, valid: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Forward-fill ``x`` along ``dim`` where ``valid`` is False (causal). Returns (filled, ever_valid).

    ``valid`` has x's shape up to and including ``dim``; positions with no valid sample yet get 0.
    """
    t = x.shape[dim]
    shape = [1] * valid.dim()
    shape[dim] = t
    idx = torch.arange(t, device=x.device).reshape(shape)
    idx = _cummax(torch.where(valid, idx, torch.full_like(idx, -1)), dim)
    ever = idx >= 0
    gidx = idx.clamp_min(0)
    while gidx.dim() < x.dim():
        gidx = gidx.unsqueeze(-1)
    gidx = gidx.expand_as(x)
    out = torch.gather(x, dim, gidx)
    e = ever
    while e.dim() < x.dim():
        e = e.unsqueeze(-1)
    return torch.where(e, out, torch.zeros_like(out)), ever


def check_step_points(points: Any, confidence: Any = None, fps: Any = 30.0) -> None:
    """TypeError/ValueError naming the argument unless :meth:`PoseSSM.step`'s inputs are what it takes: ``points`` a
    (B, K, D) floating-point tensor, D = 2 or 3; ``confidence`` None or (B, K); ``fps`` positive (a number, or a
    tensor of one or B rates). Without them a numpy array or a (K, D) frame failed deep inside the step, an integer
    tensor came back integer (rounded), and fps 0 made the state NaN for good. Python checks of type, shape and
    dtype; fps's values are read only from a number or a CPU tensor, and not while tracing or compiling (no device
    sync, and a traced or exported graph gets no op from them)."""
    if not isinstance(points, Tensor):
        raise TypeError(f"points must be a torch tensor (B, K, D) of floats, got {type(points).__name__} "
                        "(numpy: torch.from_numpy(a).float(); or use PoseFilter, which takes numpy)")
    if points.dim() != 3 or points.shape[-1] not in (2, 3):
        hint = ": one stream's frame is points[None]" if points.dim() == 2 and points.shape[-1] in (2, 3) else ""
        raise ValueError(f"points must be (B, K, D) with D = 2 or 3, got shape {tuple(points.shape)}{hint}")
    if not points.is_floating_point():
        raise ValueError(f"points must be a floating-point tensor, got {points.dtype} (convert with points.float())")
    if confidence is not None and (not isinstance(confidence, Tensor) or confidence.shape != points.shape[:2]):
        got = tuple(confidence.shape) if isinstance(confidence, Tensor) else type(confidence).__name__
        raise ValueError(f"confidence must be None or a tensor of shape (B, K)={tuple(points.shape[:2])}, got {got}")
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    if isinstance(fps, numbers.Real) and not isinstance(fps, bool):  # the common case: no tensor made
        ok = math.isfinite(fps) and fps > 0
    else:
        try:
            f = fps if isinstance(fps, Tensor) else torch.as_tensor(fps, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"fps must be a positive number of frames per second, or one per stream, got "
                             f"{fps!r:.60}") from None
        if f.dtype == torch.bool or f.numel() not in (1, points.shape[0]):
            raise ValueError(f"fps must be one rate or one per stream ({points.shape[0]}), got {f.dtype} of shape "
                             f"{tuple(f.shape)}")
        if f.device.type != "cpu":
            return
        ok = bool(torch.isfinite(f).all() and (f > 0).all())
    if not ok:
        raise ValueError(f"fps must be a positive number of frames per second (or a tensor of them, one per stream), "
                         f"got {fps!r:.60}")


class PoseSSM(nn.Module):
    """The pose filter network. See the module docstring for the design.

    ``forward(points (B,T,K,D), confidence (B,T,K) | None, state | None, fps=30., strength=1.)
    -> (filtered (B,T,K,D), state)``; ``step(points (B,K,D), confidence (B,K) | None, state, ...)``.

    >>> import torch
    >>> m = PoseSSM(PoseSSMConfig(d_model=16, n_layers=1, backend="torch"))
    >>> pts = torch.randn(2, 10, 17, 2)
    >>> y, st = m(pts)
    >>> y.shape
    torch.Size([2, 10, 17, 2])
    """

    def __init__(self, config: PoseSSMConfig | None = None):
        super().__init__()
        self.config = config = config or PoseSSMConfig()
        d = config.d_model
        self.embed = nn.Linear(N_FEATURES, d)
        self.blocks = nn.ModuleList(
            SSMBlock(d, expand=config.expand, d_state=config.d_state, headdim=config.headdim,
                     backend=config.backend, validate=False)
            for _ in range(config.n_layers)
        )
        self.mixers = nn.ModuleList(nn.Linear(d, d) for _ in range(config.n_layers))
        for m in self.mixers:  # start with no cross-joint mixing
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        self.norm = RMSNorm(d)
        self.head = nn.Linear(d, 3)
        nn.init.zeros_(self.head.weight)  # start as the identity filter
        nn.init.zeros_(self.head.bias)

    # ----------------------------------------------------------------------------------- state
    @property
    def n_fixed_state(self) -> int:
        return 5

    def state_shapes(self, batch: int, num_keypoints: int) -> list[tuple[int, ...]]:
        """Shapes of the state tuple: one table used by ``init_state`` and ``check_state``."""
        b, k = batch, num_keypoints
        fixed = [(b, k, 3), (b, k), (b,), (b, k, 3), (b,)]
        return fixed + [(b, k, blk.ssm.nheads, blk.ssm.headdim, blk.ssm.d_state) for blk in self.blocks]

    def init_state(self, batch: int, num_keypoints: int, device=None) -> tuple[Tensor, ...]:
        # all zeros; scale 0 = no body size seen yet (see _prepare): a fixed 1.0 would be in the caller's units
        return tuple(torch.zeros(s, device=device, dtype=torch.float32) for s in self.state_shapes(batch, num_keypoints))

    def check_state(self, state: tuple[Tensor, ...], batch: int, k: int) -> None:
        # runs on every step: compares shapes against the table, allocates nothing
        shapes = self.state_shapes(batch, k)
        if not isinstance(state, (tuple, list)) or len(state) != len(shapes):
            raise ValueError(f"pose state must be a tuple of {len(shapes)} tensors")
        for i, (s, r) in enumerate(zip(state, shapes)):
            if tuple(s.shape) != r:
                raise ValueError(
                    f"pose state[{i}] has shape {tuple(s.shape)}, expected {r} "
                    f"(batch={batch}, keypoints={k}); the keypoint count cannot change mid-stream"
                )

    # -------------------------------------------------------------------------------- features
    def _prepare(self, points: Tensor, confidence: Tensor | None, state: tuple[Tensor, ...], fps: float):
        """Everything before the SSM, for a whole clip (B, T, K, D). Returns features and what the
        output needs, and the new fixed state."""
        b, t, k, dim = points.shape
        x = points.float()
        if dim < 3:
            x = F.pad(x, (0, 3 - dim))
        finite = torch.isfinite(x).all(-1)
        conf = torch.ones(b, t, k, device=x.device) if confidence is None else confidence.float()
        conf = torch.nan_to_num(conf, nan=0.0, posinf=0.0, neginf=0.0).clamp(0, 1)
        valid = finite & (conf > 0)
        conf = conf * valid
        x = torch.where(valid[..., None], x, torch.zeros_like(x))  # NaN never goes further
        prev_x, has_prev, prev_scale, last_out, has_out = state[:5]

        # hold the last valid sample of each joint (state's prev_x stands at t = -1)
        xs = torch.cat([prev_x[:, None], x], 1)
        vs = torch.cat([has_prev[:, None] > 0, valid], 1)
        x_fill, ever = _ffill(xs, vs, dim=1)
        v = torch.where((ever[:, 1:] & ever[:, :-1])[..., None], x_fill[:, 1:] - x_fill[:, :-1], 0.0)
        x_fill, ever = x_fill[:, 1:], ever[:, 1:]

        # body size of each frame from its valid joints, held when fewer than two are valid
        nv = valid.sum(-1)  # (b, t)
        cen = (x * valid[..., None]).sum(2) / nv.clamp_min(1)[..., None]
        var = (((x - cen[:, :, None]) ** 2).sum(-1) * valid).sum(-1) / nv.clamp_min(1)
        s_frame = var.sqrt()
        ok = (nv >= 2) & (s_frame > 0)
        sc = torch.cat([prev_scale[:, None], s_frame], 1)
        sok = torch.cat([prev_scale[:, None] > 0, ok], 1)
        scale = _ffill(sc[..., None], sok, dim=1)[0][:, 1:, 0]  # (b, t); 0 until a body size is known

        # Until a frame with two valid joints gives a body size, the units are unknown: unit-free
        # features are zeroed and the correction (scaled by ``scale`` = 0) is off, so the output is the input.
        known = (scale > 0)[:, :, None, None]
        si = torch.where(known, scale[:, :, None, None], torch.ones_like(scale[:, :, None, None]))
        vn = torch.where(known, v / si, 0.0)
        speed = vn.norm(dim=-1, keepdim=True)
        rel = torch.where(ever[..., None] & known, (x_fill - cen[:, :, None]) / si, 0.0)
        is3d = torch.full_like(speed, float(dim == 3))
        fps_t = torch.as_tensor(fps, dtype=torch.float32, device=x.device).reshape(-1)
        lfps = torch.log(fps_t / 30.0)[:, None, None, None].expand_as(speed)
        gmot = (speed * valid[..., None]).sum(2, keepdim=True) / nv.clamp_min(1)[:, :, None, None]
        feats = torch.cat(
            [
                (10 * vn).clamp(-10, 10),
                (10 * speed).clamp(0, 10),
                conf[..., None],
                ever[..., None].float(),
                rel.clamp(-10, 10),
                is3d,
                lfps,
                (10 * gmot).clamp(0, 10).expand_as(speed),
            ],
            -1,
        )
        new_fixed = (x_fill[:, -1], ever[:, -1].float(), scale[:, -1])
        return feats, x_fill, ever, scale, valid, new_fixed, (last_out, has_out)

    # ---------------------------------------------------------------------------------- network
    def _network(self, feats: Tensor, ssm_states: tuple[Tensor, ...], stepping: bool):
        """feats (b, t, k, F) -> correction (b, t, k, 3); SSM runs over t for each (b, k)."""
        b, t, k, _ = feats.shape
        h = self.embed(feats)  # (b, t, k, d)
        new_states = []
        for blk, mix, st in zip(self.blocks, self.mixers, ssm_states):
            hs = h.permute(0, 2, 1, 3).reshape(b * k, t, -1)
            st = st.reshape(b * k, *st.shape[2:])
            if stepping:
                y, st = blk.step(hs[:, 0], st)
                y = y[:, None]
            else:
                y, st = blk(hs, st)
            h = y.reshape(b, k, t, -1).permute(0, 2, 1, 3)
            h = h + mix(h.mean(2, keepdim=True))
            new_states.append(st.reshape(b, k, *st.shape[1:]))
        return self.head(self.norm(h)), tuple(new_states)

    def _run(self, points, confidence, state, fps, strength, stepping):
        b, t, k, dim = points.shape
        if state is None:
            state = self.init_state(b, k, points.device)
        else:
            self.check_state(state, b, k)
        feats, x_fill, ever, scale, valid, fixed, (last_out, has_out) = self._prepare(points, confidence, state, fps)
        corr, ssm_states = self._network(feats, state[5:], stepping)
        y = x_fill - strength * scale[:, :, None, None] * corr
        # a frame with no valid joint holds the last output (the state's last_out stands at t = -1)
        frame_ok = valid.any(-1)
        ys = torch.cat([last_out[:, None], y], 1)
        oks = torch.cat([has_out[:, None] > 0, frame_ok], 1)
        y_hold, out_ever = _ffill(ys, oks, dim=1)
        y_hold, out_ever = y_hold[:, 1:], out_ever[:, 1:]
        y = torch.where(frame_ok[:, :, None, None], y, y_hold)
        y = torch.where(ever[..., None], y, torch.zeros_like(y))  # the state holds no NaN
        # a joint never seen so far has no estimate: NaN out (``ever`` is cumulative, so this also
        # covers held frames)
        y_out = torch.where(ever[..., None], y, torch.full_like(y, float("nan")))
        new_state = fixed + (y[:, -1], out_ever[:, -1].float()) + ssm_states
        return y_out[..., :dim].to(points.dtype), new_state

    def forward(self, points: Tensor, confidence: Tensor | None = None, state=None, fps: float | Tensor = 30.0,
                strength: float = 1.0):
        return self._run(points, confidence, state, fps, strength, stepping=False)

    def step(self, points: Tensor, confidence: Tensor | None = None, state=None, fps: float | Tensor = 30.0,
             strength: float = 1.0):
        state_by_keyword(confidence, "confidence")
        check_step_points(points, confidence, fps)
        y, state = self._run(points[:, None], None if confidence is None else confidence[:, None], state, fps,
                             strength, stepping=True)
        return y[:, 0], state
