"""Flicker-prone per-frame image operators with a temporal parameter-jitter model.

A blind temporal-consistency filter sees a video ``P_t = f_t(I_t)`` produced by some unknown per-frame
operator ``f`` whose behaviour drifts from frame to frame, and should output a video close to a
consistent version ``f(I_t)`` with the behaviour held fixed (Lai et al., "Learning Blind Video
Temporal Consistency", ECCV 2018, Sec. 3). This module synthesises such pairs:

- every operator is a plain function ``fn(frame, params, stats) -> frame`` on ``(h, w, 3)`` RGB uint8;
- ``params`` is a dict of floats / float vectors drawn by a per-operator :class:`Param` table;
- :class:`Operator` draws base parameters once and makes them wander over time (mean-reverting random
  walk + per-frame noise + occasional persistent jumps), so ``apply(frame, t)`` flickers while
  ``apply_consistent(frame, t)`` keeps the base parameters.

Content-adaptive *global* operators (histogram equalisation, Reinhard colour transfer, grey-world
white balance) flicker even with fixed parameters because the statistic they adapt to changes with the
content. For these, ``stats`` holds that statistic: ``apply`` recomputes it on every frame, while
``apply_consistent`` uses the statistic frozen by :meth:`Operator.fit` (a reference frame, typically
the first frame of a shot); before any ``fit`` it falls back to the current frame. Local adaptive ops
(CLAHE, the cv2 edge-aware filters) are not frozen: their screen-space tiles/windows would not move
with the content, so only their parameters are held fixed.

``texture_noise`` is the one operator whose consistent target is the *clean* frame: its per-frame
noise realisation is the flicker itself and no screen-fixed pattern would be consistent under motion.

Train / evaluation split: :data:`TRAIN_OPERATORS` and :data:`HELDOUT_OPERATORS` (disjoint).
Demo operators with stable names: :data:`DEMO_OPERATORS`, :func:`make_demo_operator`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

__all__ = [
    "Param",
    "OperatorSpec",
    "Operator",
    "JitterConfig",
    "OPERATORS",
    "TRAIN_OPERATORS",
    "HELDOUT_OPERATORS",
    "DEMO_OPERATORS",
    "make_operator",
    "make_demo_operator",
]


# --------------------------------------------------------------------------------------------------
# parameter tables
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """A parameter in ``[lo, hi]`` (log-uniform if ``log``), with ``size`` components.

    ``jitter`` scales the temporal jitter of this parameter, in units of its normalised range
    (0 = never jitters). Integer parameters are rounded inside the operator function.
    """

    lo: float
    hi: float
    jitter: float = 1.0
    log: bool = False
    size: int = 1

    def to_unit(self, v: np.ndarray) -> np.ndarray:
        if self.log:
            return (np.log(v) - np.log(self.lo)) / (np.log(self.hi) - np.log(self.lo))
        return (v - self.lo) / (self.hi - self.lo)

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        u = np.clip(u, 0.0, 1.0)
        if self.log:
            return np.exp(np.log(self.lo) + u * (np.log(self.hi) - np.log(self.lo)))
        return self.lo + u * (self.hi - self.lo)


@dataclass(frozen=True)
class OperatorSpec:
    """One operator: its function, parameter table, and optional content statistic."""

    name: str
    fn: Callable[[np.ndarray, dict, dict | None], np.ndarray]
    params: dict[str, Param]
    stats: Callable[[np.ndarray], dict] | None = None  # content-adaptive global statistic
    consistent_is_clean: bool = False  # texture_noise: the target is the untouched frame
    per_frame_seed: bool = False  # fn takes ``noise_seed=[seed, t]`` (a new random field every frame)
    # Base-parameter sampling range in unit space; keeps base values away from the extremes so that
    # jitter has room on both sides.
    base_range: tuple[float, float] = (0.15, 0.85)


@dataclass(frozen=True)
class JitterConfig:
    """Temporal jitter of normalised parameters ``u_t = u_0 + s * (walk_t + noise_t + jump_t)``.

    walk: AR(1) ``w_t = rho w_{t-1} + walk_sigma * N(0,1)`` (slow drift, stationary std
    ``walk_sigma / sqrt(1 - rho^2)``); noise: i.i.d. ``noise_sigma * N(0,1)`` each frame;
    jump: with probability ``jump_prob`` per frame a new persistent offset ``U(-jump_scale, jump_scale)``.
    ``s`` = operator strength x per-parameter ``Param.jitter``.
    """

    rho: float = 0.95
    walk_sigma: float = 0.03
    noise_sigma: float = 0.04
    jump_prob: float = 0.03
    jump_scale: float = 0.35


# --------------------------------------------------------------------------------------------------
# small helpers (uint8 RGB in, uint8 RGB out)
# --------------------------------------------------------------------------------------------------
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601, same as cv2 RGB2YCrCb


def _f32(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) * (1.0 / 255.0)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _lut_apply(frame: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Apply a per-channel curve sampled at 256 levels: ``curves`` (256,) or (256, 3) in [0, 1]."""
    lut = np.clip(curves * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if lut.ndim == 1:
        return cv2.LUT(frame, lut)
    return cv2.LUT(frame, lut.reshape(256, 1, 3))


_LEVELS = np.linspace(0.0, 1.0, 256, dtype=np.float32)


def _scalar(p: dict, k: str) -> float:
    return float(np.asarray(p[k]).reshape(-1)[0])


# --------------------------------------------------------------------------------------------------
# operator functions
# --------------------------------------------------------------------------------------------------
def op_exposure(frame, p, stats=None):
    return _lut_apply(frame, _LEVELS * _scalar(p, "gain"))


def op_gamma(frame, p, stats=None):
    return _lut_apply(frame, _LEVELS ** _scalar(p, "gamma"))


def op_white_balance(frame, p, stats=None):
    return _lut_apply(frame, _LEVELS[:, None] * np.asarray(p["gains"], np.float32)[None, :])


def op_tone_curve(frame, p, stats=None):
    """Global sigmoidal contrast curve (normalised to map 0->0, 1->1) plus shadow lift."""
    k, m, lift = _scalar(p, "slope"), _scalar(p, "pivot"), _scalar(p, "lift")
    sig = lambda x: 1.0 / (1.0 + np.exp(-k * (x - m)))  # noqa: E731
    y = (sig(_LEVELS) - sig(0.0)) / (sig(1.0) - sig(0.0))
    y = lift + (1.0 - lift) * y
    return _lut_apply(frame, y)


def op_clahe(frame, p, stats=None):
    """CLAHE on BT.601 luma (YCrCb; several times cheaper than uint8 Lab at the same effect)."""
    tiles = int(round(_scalar(p, "tiles")))
    ycc = cv2.cvtColor(frame, cv2.COLOR_RGB2YCrCb)
    clahe = cv2.createCLAHE(clipLimit=_scalar(p, "clip"), tileGridSize=(tiles, tiles))
    ycc[..., 0] = clahe.apply(np.ascontiguousarray(ycc[..., 0]))
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


def op_color_grade(frame, p, stats=None):
    """ASC-CDL-like lift/gamma/gain per channel: ``y = (gain * (x + lift (1 - x))) ** (1 / gamma)``."""
    x = _LEVELS[:, None]
    lift, gam, gain = (np.asarray(p[k], np.float32)[None, :] for k in ("lift", "gamma", "gain"))
    y = np.clip(gain * (x + lift * (1.0 - x)), 0.0, 1.0) ** (1.0 / gam)
    return _lut_apply(frame, y)


def op_contrast_saturation(frame, p, stats=None):
    x = _f32(frame)
    luma = x @ _LUMA
    mean = float(luma.mean())
    c, s, b = _scalar(p, "contrast"), _scalar(p, "saturation"), _scalar(p, "brightness")
    y = (x - mean) * c + mean + b
    yl = ((luma - mean) * c + mean + b)[..., None]
    return _u8(yl + s * (y - yl))


def _lab_stats(frame: np.ndarray) -> dict:
    lab = cv2.cvtColor(_f32(frame), cv2.COLOR_RGB2Lab).reshape(-1, 3)
    return {"mean": lab.mean(0), "std": lab.std(0) + 1e-3}


def op_color_transfer(frame, p, stats=None):
    """Reinhard et al. 2001 mean/std colour transfer toward a target palette.

    Differs from the paper: statistics are matched in CIELAB (cv2, float) rather than l-alpha-beta.
    The target palette is ``mean = (L, a, b)``, ``std = source std * std_ratio``; ``amount`` blends.
    """
    st = stats if stats is not None else _lab_stats(frame)
    lab = cv2.cvtColor(_f32(frame), cv2.COLOR_RGB2Lab)
    tmean = np.array([_scalar(p, "L"), _scalar(p, "a"), _scalar(p, "b")], np.float32)
    tstd = st["std"] * np.asarray(p["std_ratio"], np.float32)
    out = (lab - st["mean"]) / st["std"] * tstd + tmean
    amt = _scalar(p, "amount")
    out = lab + amt * (out - lab)
    out[..., 0] = np.clip(out[..., 0], 0, 100)
    return _u8(cv2.cvtColor(out, cv2.COLOR_Lab2RGB))


def op_texture_noise(frame, p, stats=None, noise_seed=0):
    """Spatially correlated (low-pass, upsampled) luminance + weak chroma noise, new each frame.

    ``noise_seed`` (an int or a list of ints) fixes the realisation; :class:`Operator` passes
    ``[seed, t]`` so every frame gets a new field.
    """
    h, w = frame.shape[:2]
    scale = max(1.0, _scalar(p, "scale"))
    gh, gw = max(2, int(round(h / scale))), max(2, int(round(w / scale)))
    rng = np.random.default_rng(noise_seed)
    n = rng.standard_normal((gh, gw, 3), dtype=np.float32)
    n = cv2.resize(n, (w, h), interpolation=cv2.INTER_CUBIC)
    n = n[..., :1] + 0.3 * n  # mostly luminance, some chroma
    return _u8(_f32(frame) + _scalar(p, "amp") * n)


def op_jpeg(frame, p, stats=None):
    q = int(round(_scalar(p, "quality")))
    # cv2 encodes BGR: convert so that the codec's luma/chroma split (and subsampling) is the real one
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def op_detail_enhance(frame, p, stats=None):
    return cv2.detailEnhance(frame, sigma_s=_scalar(p, "sigma_s"), sigma_r=_scalar(p, "sigma_r"))


def op_stylization(frame, p, stats=None):
    return cv2.stylization(frame, sigma_s=_scalar(p, "sigma_s"), sigma_r=_scalar(p, "sigma_r"))


def op_edge_preserving(frame, p, stats=None):
    # flags: 1 = RECURS_FILTER (fast), 2 = NORMCONV_FILTER
    return cv2.edgePreservingFilter(frame, flags=1, sigma_s=_scalar(p, "sigma_s"),
                                    sigma_r=_scalar(p, "sigma_r"))


def op_bilateral(frame, p, stats=None):
    d = int(round(_scalar(p, "d")))
    return cv2.bilateralFilter(frame, d, _scalar(p, "sigma_color"), _scalar(p, "sigma_space"))


def _hist_stats(frame: np.ndarray) -> dict:
    y = cv2.cvtColor(frame, cv2.COLOR_RGB2YCrCb)[..., 0]
    hist = np.bincount(y.reshape(-1), minlength=256).astype(np.float64)
    cdf = np.cumsum(hist)
    nz = cdf[hist > 0][0] if (hist > 0).any() else 0.0
    denom = max(cdf[-1] - nz, 1.0)
    # same mapping as cv2.equalizeHist, kept as a LUT so it can be frozen on a reference frame
    return {"lut": np.clip((cdf - nz) / denom, 0.0, 1.0).astype(np.float32)}


def op_equalize_hist(frame, p, stats=None):
    """Per-frame histogram equalisation of BT.601 luma, blended by ``amount`` (auto contrast)."""
    st = stats if stats is not None else _hist_stats(frame)
    ycc = cv2.cvtColor(frame, cv2.COLOR_RGB2YCrCb)
    y = ycc[..., 0]
    eq = _lut_apply(y, st["lut"])
    a = _scalar(p, "amount")
    ycc[..., 0] = np.clip(y * (1.0 - a) + eq * a + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


def _grey_world_stats(frame: np.ndarray) -> dict:
    m = frame.reshape(-1, 3).mean(0).astype(np.float32) + 1.0
    return {"gains": (m.mean() / m).astype(np.float32)}


def op_auto_white_balance(frame, p, stats=None):
    """Grey-world auto white balance: per-channel gains equalise the channel means, blended."""
    st = stats if stats is not None else _grey_world_stats(frame)
    g = 1.0 + _scalar(p, "amount") * (st["gains"] - 1.0)
    return _lut_apply(frame, _LEVELS[:, None] * g[None, :])


# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------
OPERATORS: dict[str, OperatorSpec] = {
    s.name: s
    for s in [
        OperatorSpec("exposure", op_exposure, {"gain": Param(0.6, 1.6, log=True)}),
        OperatorSpec("gamma", op_gamma, {"gamma": Param(0.5, 2.0, log=True)}),
        OperatorSpec("white_balance", op_white_balance, {"gains": Param(0.7, 1.4, log=True, size=3)}),
        OperatorSpec("tone_curve", op_tone_curve, {"slope": Param(0.5, 10.0, log=True),
                                                   "pivot": Param(0.3, 0.7),
                                                   "lift": Param(0.0, 0.15)}),
        OperatorSpec("clahe", op_clahe, {"clip": Param(1.0, 6.0, log=True),
                                         "tiles": Param(2, 12, jitter=0.6)}),
        OperatorSpec("color_grade", op_color_grade, {"lift": Param(-0.08, 0.08, size=3),
                                                     "gamma": Param(0.7, 1.4, log=True, size=3),
                                                     "gain": Param(0.8, 1.25, log=True, size=3)}),
        OperatorSpec("contrast_saturation", op_contrast_saturation, {"contrast": Param(0.6, 1.6, log=True),
                                                                     "saturation": Param(0.3, 1.8),
                                                                     "brightness": Param(-0.1, 0.1)}),
        OperatorSpec("color_transfer", op_color_transfer, {"L": Param(30.0, 75.0),
                                                           "a": Param(-20.0, 20.0),
                                                           "b": Param(-20.0, 20.0),
                                                           "std_ratio": Param(0.6, 1.5, log=True, size=3),
                                                           "amount": Param(0.4, 1.0, jitter=0.5)},
                     stats=_lab_stats),
        OperatorSpec("texture_noise", op_texture_noise, {"amp": Param(0.01, 0.06, log=True),
                                                         "scale": Param(1.0, 4.0, jitter=0.3)},
                     consistent_is_clean=True, per_frame_seed=True),
        OperatorSpec("jpeg", op_jpeg, {"quality": Param(15, 70)}),
        OperatorSpec("detail_enhance", op_detail_enhance, {"sigma_s": Param(5.0, 60.0, log=True),
                                                           "sigma_r": Param(0.05, 0.4, log=True)}),
        OperatorSpec("stylization", op_stylization, {"sigma_s": Param(10.0, 100.0, log=True),
                                                     "sigma_r": Param(0.1, 0.6, log=True)}),
        OperatorSpec("edge_preserving", op_edge_preserving, {"sigma_s": Param(10.0, 100.0, log=True),
                                                             "sigma_r": Param(0.1, 0.6, log=True)}),
        OperatorSpec("bilateral", op_bilateral, {"d": Param(3, 7, jitter=0.5),
                                                 "sigma_color": Param(20.0, 120.0, log=True),
                                                 "sigma_space": Param(3.0, 10.0)}),
        OperatorSpec("equalize_hist", op_equalize_hist, {"amount": Param(0.5, 1.0, jitter=0.5)},
                     stats=_hist_stats),
        OperatorSpec("auto_white_balance", op_auto_white_balance, {"amount": Param(0.5, 1.0, jitter=0.5)},
                     stats=_grey_world_stats),
    ]
}

# Held out for evaluation: OpenCV's domain-transform family (detailEnhance and stylization are built on
# edgePreservingFilter, so all three go together: unseen edge-aware local operators) and per-frame
# histogram equalisation (an unseen content-adaptive global operator). Training keeps bilateral as
# its real OpenCV edge-aware filter.
HELDOUT_OPERATORS: list[str] = ["detail_enhance", "stylization", "edge_preserving", "equalize_hist"]
TRAIN_OPERATORS: list[str] = [n for n in OPERATORS if n not in HELDOUT_OPERATORS]


# --------------------------------------------------------------------------------------------------
# the jittered operator
# --------------------------------------------------------------------------------------------------
@dataclass
class Operator:
    """An operator with base parameters and a deterministic parameter trajectory over time.

    ``apply(frame, t)`` uses the jittered parameters at time ``t`` and, for content-adaptive ops, the
    statistic of the current frame: it flickers. ``apply_consistent(frame, t)`` uses the base
    parameters and the statistic frozen by :meth:`fit` (current frame if never fitted); ``t`` is
    accepted for symmetry and ignored. Both are deterministic functions of ``(seed, t, frame)``:
    calling them in any order gives the same result.

    >>> import numpy as np
    >>> op = make_operator("gamma", np.random.default_rng(0))
    >>> frame = np.full((8, 8, 3), 100, np.uint8)
    >>> op.apply(frame, 3).shape, op.apply_consistent(frame, 3).dtype
    ((8, 8, 3), dtype('uint8'))
    """

    spec: OperatorSpec
    seed: int
    strength: float = 1.0
    jitter: JitterConfig = field(default_factory=JitterConfig)
    base: dict[str, np.ndarray] = field(init=False)
    ref_stats: dict | None = field(init=False, default=None)
    _traj: dict[str, np.ndarray] = field(init=False, repr=False)  # unit-space offsets (t, size)
    _traj_state: tuple = field(init=False, repr=False)

    def __post_init__(self):
        ss = np.random.SeedSequence(self.seed)
        base_ss, traj_ss = ss.spawn(2)
        rng = np.random.default_rng(base_ss)
        lo, hi = self.spec.base_range
        self.base = {k: par.from_unit(rng.uniform(lo, hi, par.size)).astype(np.float32)
                     for k, par in self.spec.params.items()}
        self._traj = {k: np.zeros((0, par.size), np.float32) for k, par in self.spec.params.items()}
        nparam = sum(par.size for par in self.spec.params.values())
        self._traj_state = (np.random.default_rng(traj_ss), np.zeros(nparam), np.zeros(nparam))

    @property
    def name(self) -> str:
        return self.spec.name

    # -- parameters --------------------------------------------------------------------------------
    def _extend(self, n: int) -> None:
        """Grow the cached trajectory to at least ``n`` frames (sequential, so order-independent)."""
        have = next(iter(self._traj.values())).shape[0] if self._traj else n
        if have >= n:
            return
        n = max(n, 2 * have, 64)
        rng, walk, jump = self._traj_state
        cfg = self.jitter
        m, k = n - have, walk.shape[0]
        # draw everything for the m new frames at once; only the AR(1) / hold recursions loop
        eps_walk = cfg.walk_sigma * rng.standard_normal((m, k))
        jumps = rng.random((m, k)) < cfg.jump_prob
        jump_val = rng.uniform(-cfg.jump_scale, cfg.jump_scale, (m, k))
        eps_noise = cfg.noise_sigma * rng.standard_normal((m, k))
        out = np.empty((m, k), np.float32)
        for i in range(m):
            walk = cfg.rho * walk + eps_walk[i]
            jump = np.where(jumps[i], jump_val[i], jump)
            out[i] = walk + jump + eps_noise[i]
        self._traj_state = (rng, walk, jump)
        j = 0
        for key, par in self.spec.params.items():
            self._traj[key] = np.concatenate([self._traj[key], out[:, j:j + par.size]], 0)
            j += par.size

    def params_at(self, t: int) -> dict[str, np.ndarray]:
        """Jittered parameters at frame ``t`` (``t >= 0``)."""
        self._extend(t + 1)
        out = {}
        for key, par in self.spec.params.items():
            u = par.to_unit(self.base[key]) + self.strength * par.jitter * self._traj[key][t]
            out[key] = par.from_unit(u).astype(np.float32)
        return out

    # -- application --------------------------------------------------------------------------------
    def fit(self, reference: np.ndarray) -> "Operator":
        """Freeze the content statistic used by :meth:`apply_consistent` (no-op for non-adaptive ops)."""
        self.ref_stats = self.spec.stats(reference) if self.spec.stats is not None else None
        return self

    def _call(self, frame: np.ndarray, params: dict, stats: dict | None, t: int) -> np.ndarray:
        if self.spec.per_frame_seed:
            return self.spec.fn(frame, params, stats, noise_seed=[self.seed, t])
        return self.spec.fn(frame, params, stats)

    def apply(self, frame: np.ndarray, t: int) -> np.ndarray:
        _check_frame(frame)
        stats = self.spec.stats(frame) if self.spec.stats is not None else None
        return self._call(frame, self.params_at(t), stats, t)

    def apply_consistent(self, frame: np.ndarray, t: int = 0) -> np.ndarray:
        _check_frame(frame)
        if self.spec.consistent_is_clean:
            return frame.copy()
        stats = None
        if self.spec.stats is not None:
            stats = self.ref_stats if self.ref_stats is not None else self.spec.stats(frame)
        return self._call(frame, self.base, stats, 0)


def _check_frame(frame: np.ndarray) -> None:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an (h, w, 3) uint8 RGB frame, got {frame.dtype} {frame.shape}")


def make_operator(name: str, rng: np.random.Generator, strength: float | None = None,
                  jitter: JitterConfig | None = None) -> Operator:
    """Draw an operator ``name`` with random base parameters and jitter strength (``U(0.5, 1.5)``)."""
    if name not in OPERATORS:
        raise KeyError(f"unknown operator {name!r}; known: {sorted(OPERATORS)}")
    seed = int(rng.integers(0, 2**62))
    if strength is None:
        strength = float(rng.uniform(0.5, 1.5))
    return Operator(OPERATORS[name], seed, strength, jitter or JitterConfig())


# --------------------------------------------------------------------------------------------------
# demo operators: stable names, deterministic for a seed
# --------------------------------------------------------------------------------------------------
def _fixed(name: str, seed: int, strength: float, **base) -> Operator:
    op = Operator(OPERATORS[name], seed, strength)
    for k, v in base.items():
        op.base[k] = np.full(OPERATORS[name].params[k].size, v, np.float32)
    return op


# autocontrast / clahe / autowb adapt to the content of every frame, so they flicker on natural video
# with no jitter at all (strength 0). detail / stylize are deterministic edge-aware filters, which are
# nearly consistent on their own, so they get parameter jitter; gamma_jitter is jitter by definition.
DEMO_OPERATORS: dict[str, Callable[[int], Operator]] = {
    "autocontrast": lambda seed: _fixed("equalize_hist", seed, 0.0, amount=1.0),
    "clahe": lambda seed: _fixed("clahe", seed, 0.0, clip=4.0, tiles=8),
    "detail": lambda seed: _fixed("detail_enhance", seed, 1.0, sigma_s=20.0, sigma_r=0.15),
    "stylize": lambda seed: _fixed("stylization", seed, 1.0, sigma_s=40.0, sigma_r=0.3),
    "autowb": lambda seed: _fixed("auto_white_balance", seed, 0.0, amount=1.0),
    "gamma_jitter": lambda seed: _fixed("gamma", seed, 1.5, gamma=1.0),
}


def make_demo_operator(name: str, seed: int = 0) -> Operator:
    """A demo operator by stable name (see :data:`DEMO_OPERATORS`), deterministic for ``seed``."""
    if name not in DEMO_OPERATORS:
        raise KeyError(f"unknown demo operator {name!r}; known: {sorted(DEMO_OPERATORS)}")
    return DEMO_OPERATORS[name](seed)
