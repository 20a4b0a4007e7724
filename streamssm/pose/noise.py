"""Estimator-like noise for clean pose sequences, calibrated on real MediaPipe output.

Shapes: ``(..., t, k, d)`` points, ``(..., t, k)`` confidence; any leading (stream) dims.

All magnitudes are relative to the body size ``S`` (median bounding-box diagonal of the clean
keypoints, :func:`streamssm.pose.data.body_size`) and scale with a per-stream noise ``level``
(log-uniform in ``level_range`` unless given) and a per-keypoint weight ``w_k`` (extremities noisier,
:func:`joint_weights`). Components, in the order they are applied:

1. white jitter, N(0, (level * sigma_white * w_k * S)^2) per coordinate, with a heavy tail: a fraction
   ``p_tail`` of samples is multiplied by ``tail_scale`` (real residuals have 3-9 % of samples beyond
   5 robust sigmas);
2. drift: AR(1) per coordinate, ``x_t = rho x_{t-1} + sqrt(1 - rho^2) e_t``, rho = exp(-1 / (tau fps)),
   stationary std level * sigma_drift * w_k * S;
3. outliers: a keypoint jumps by U(outlier_range) * S in a random direction for 1-3 frames
   (confidence drops to U(0.1, 0.5));
4. dropouts: per-keypoint (1-``max_dropout`` frames) and whole-frame (1-8 frames) gaps with
   confidence 0 and coordinates NaN or held at the last value (``missing='nan'|'hold'|'random'``).

Calibration (``benchmarks/pose_noise_calibration.py``): residual = raw - zero-phase Butterworth
low-pass (4th order, 3 Hz, filtfilt), 24 fps, 2-D pixels (aspect-correct), divided by the bbox
diagonal, over the 12 body landmarks (shoulders, elbows, wrists, hips, knees, ankles); residual std in
frequency bands from a Welch PSD. Real = MediaPipe 0.10.21 ``landmarks_raw`` of the shared EdgeTAM clips;
synthetic = validation CMU clips at 24 fps projected by a random camera plus :func:`add_noise` at
level 1 (mean of 64 streams). Numbers (x 1e-3 of the bbox diagonal):

    band               3-6 Hz  6-9 Hz  9-12 Hz  total std
    real juggle          4.9     3.0     2.7       7.4
    real cloth_magic     5.1     3.9     3.4       7.4
    real pingpong       17.0    15.8    12.6      28.1   (hard clip: legs occluded)
    synthetic level 1    4.5     3.3     3.3       6.8
    synthetic level 4   11.3    11.5    12.0      21.2
    clean CMU only       3.0     1.0     0.5       3.5   (real motion above 3 Hz, no noise)

Per part (std x 1e-3, shoulder/elbow/wrist/hip/knee/ankle): real juggle 3.3/5.6/7.1/4.1/9.3/10.3,
cloth 2.6/6.5/8.2/5.0/9.3/8.7; synthetic level 1 3.6/5.3/7.1/4.5/8.0/9.1.

So level 1 is a typical MediaPipe clip, level ~4 a hard one; the default ``level_range`` (0.3, 5)
covers both and cleaner estimators. The real high-frequency spectrum is nearly flat (white jitter
dominates; residual lag-1 autocorrelation -0.16..0.08), which is why ``sigma_white`` dominates
``sigma_drift``; the drift term models the slow wander a 3 Hz high-pass cannot see.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from streamssm.pose.data import body_size

__all__ = ["NoiseConfig", "joint_weights", "add_noise"]


@dataclass(frozen=True)
class NoiseConfig:
    """Noise parameters at ``level`` 1 (relative to body size ``S``); see the module docstring."""

    sigma_white: float = 0.0017
    p_tail: float = 0.04
    tail_scale: float = 4.0
    sigma_drift: float = 0.0006
    tau_drift: float = 0.3  # seconds
    p_outlier: float = 0.002  # per keypoint-frame, times level
    outlier_range: tuple[float, float] = (0.03, 0.15)
    p_dropout: float = 0.002  # per keypoint-frame start probability, times level
    max_dropout: int = 12
    p_frame_dropout: float = 0.003  # whole-frame gap start probability, times level
    level_range: tuple[float, float] = (0.3, 5.0)
    missing: str = "random"  # 'nan', 'hold' or 'random' (per stream)


# Relative jitter per body part, fitted to the per-landmark residual std of the real MediaPipe
# clips (shoulders = 1; wrists, knees and feet 2.5-3.5x noisier).
_PART_WEIGHTS = {
    "nose": 0.9, "eye": 0.9, "ear": 0.9, "mouth": 0.9, "head": 0.9, "neck": 0.9,
    "shoulder": 1.0, "elbow": 1.9, "wrist": 2.7, "pinky": 3.0, "index": 3.0, "thumb": 3.0,
    "pelvis": 1.4, "hip": 1.6, "knee": 3.4, "ankle": 3.6, "heel": 3.7, "foot_index": 3.8, "toe": 3.8,
}


def joint_weights(names) -> np.ndarray:
    """(k,) noise weight per keypoint name (``left_wrist``, ``nose``, ...); 1.5 for unknown names."""
    out = []
    for n in names:
        part = n.split("_", 1)[1] if n.startswith(("left_", "right_")) else n
        part = "eye" if part.startswith("eye") else part
        out.append(_PART_WEIGHTS.get(part, 1.5))
    return np.asarray(out, np.float64)


def _spread(start: np.ndarray, dur: np.ndarray, max_len: int) -> np.ndarray:
    """Mark ``dur`` frames from each True in ``start`` (time on axis -2 of (..., t, k))."""
    mask = start.copy()
    t = start.shape[-2]
    for lag in range(1, max_len):
        if lag >= t:
            break
        mask[..., lag:, :] |= start[..., :-lag, :] & (dur[..., :-lag, :] > lag)
    return mask


def _hold(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Forward-fill x (..., t, k, d) where ``valid`` (..., t, k) is False; NaN before the first valid."""
    t = x.shape[-3]
    idx = np.where(valid, np.arange(t)[:, None], -1)
    idx = np.maximum.accumulate(idx, axis=-2)
    out = np.take_along_axis(x, np.maximum(idx, 0)[..., None], axis=-3)
    return np.where((idx >= 0)[..., None], out, np.nan)


def add_noise(
    clean: np.ndarray,
    rng: np.random.Generator,
    *,
    names=None,
    weights: np.ndarray | None = None,
    fps: float | np.ndarray = 30.0,
    level: float | np.ndarray | None = None,
    size: float | np.ndarray | None = None,
    config: NoiseConfig = NoiseConfig(),
    **overrides,
) -> tuple[np.ndarray, np.ndarray]:
    """Add estimator-like noise. Returns ``(noisy, confidence)`` float32.

    Args:
        clean: (..., t, k, d) clean points in any units.
        rng: numpy Generator (all randomness comes from it).
        names: k keypoint names for :func:`joint_weights`; or give ``weights`` (k,); default ones.
        fps: frame rate, scalar or per stream (...,), sets the drift correlation time.
        level: noise level per stream (...,); default log-uniform in ``config.level_range``.
        size: body size per stream (...,) in the units of ``clean``; default :func:`body_size`.
        config, overrides: :class:`NoiseConfig`, fields overridable by keyword.

    Missing samples have confidence 0 and NaN (or held) coordinates.

    >>> rng = np.random.default_rng(0)
    >>> noisy, conf = add_noise(np.zeros((2, 50, 17, 2)) + np.arange(17)[:, None], rng)
    >>> noisy.shape, conf.shape
    ((2, 50, 17, 2), (2, 50, 17))
    """
    cfg = replace(config, **overrides) if overrides else config
    clean = np.asarray(clean, np.float64)
    *lead, t, k, d = clean.shape
    lead = tuple(lead)
    bshape = lead + (1, 1)  # broadcast per stream over (t, k)

    def per_stream(v, default):
        v = default if v is None else v
        return np.broadcast_to(np.asarray(v, np.float64), lead).reshape(bshape)

    if level is None:
        lo, hi = np.log(cfg.level_range[0]), np.log(cfg.level_range[1])
        level = np.exp(rng.uniform(lo, hi, size=lead))
    lvl = per_stream(level, None)
    s = per_stream(size, body_size(clean) if size is None else None)
    if weights is None:
        weights = joint_weights(names) if names is not None else np.ones(k)
    w = np.asarray(weights, np.float64).reshape(k)
    scale = lvl * s * w  # (..., 1, k)

    # 1. heavy-tailed white jitter
    white = rng.standard_normal(clean.shape)
    tail = rng.random(clean.shape[:-1]) < cfg.p_tail
    white = np.where(tail[..., None], white * cfg.tail_scale, white)
    noise = white * (cfg.sigma_white * scale)[..., None]

    # 2. AR(1) drift, started from its stationary distribution
    rho = np.exp(-1.0 / (cfg.tau_drift * per_stream(fps, None)))[..., None]  # (..., 1, 1, 1)
    innov = rng.standard_normal(clean.shape)
    drift = np.empty_like(innov)
    drift[..., 0, :, :] = innov[..., 0, :, :]
    a = np.sqrt(1.0 - rho[..., 0, :, :] ** 2)
    r = rho[..., 0, :, :]
    for i in range(1, t):
        drift[..., i, :, :] = r * drift[..., i - 1, :, :] + a * innov[..., i, :, :]
    noise += drift * (cfg.sigma_drift * scale)[..., None]

    # 3. outliers lasting 1-3 frames, with a constant displacement
    p_out = np.clip(cfg.p_outlier * lvl, 0, 0.5)
    start = rng.random(lead + (t, k)) < p_out
    dur = rng.integers(1, 4, size=lead + (t, k))
    direction = rng.standard_normal(clean.shape)
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True) + 1e-12
    disp = direction * (rng.uniform(*cfg.outlier_range, size=lead + (t, k)) * s)[..., None]
    jump = np.where(start[..., None], disp, 0.0)
    out_mask = start.copy()
    for lag in (1, 2):
        if lag < t:
            cont = start[..., :-lag, :] & (dur[..., :-lag, :] > lag)
            out_mask[..., lag:, :] |= cont
            jump[..., lag:, :, :] += np.where(cont[..., None], disp[..., :-lag, :, :], 0.0)
    noisy = clean + noise + jump

    # confidence: high, lower for noisier joints and bigger jitter; low during outliers
    base = rng.uniform(0.75, 1.0, size=lead + (1, k)) - 0.04 * (w - 1.0)
    z2 = (white ** 2).mean(axis=-1)
    conf = np.clip(base - 0.03 * z2 + 0.03 * rng.standard_normal(lead + (t, k)), 0.05, 1.0)
    conf = np.where(out_mask, rng.uniform(0.1, 0.5, size=conf.shape), conf)

    # 4. dropouts: per keypoint and whole frame
    p_drop = np.clip(cfg.p_dropout * lvl, 0, 0.5)
    drop = _spread(rng.random(lead + (t, k)) < p_drop,
                   rng.integers(1, cfg.max_dropout + 1, size=lead + (t, k)), cfg.max_dropout)
    p_fd = np.clip(cfg.p_frame_dropout * lvl[..., 0], 0, 0.5)  # (..., 1)
    fstart = (rng.random(lead + (t,)) < p_fd)[..., None]
    fdrop = _spread(fstart, rng.integers(1, 9, size=lead + (t, 1)), 8)
    missing = drop | fdrop
    conf = np.where(missing, 0.0, conf)
    mode = cfg.missing
    if mode == "random":
        hold = (rng.random(lead) < 0.5).reshape(bshape)
    elif mode in ("nan", "hold"):
        hold = np.full(bshape, mode == "hold")
    else:
        raise ValueError(f"missing must be 'nan', 'hold' or 'random', got {mode!r}")
    held = _hold(noisy, ~missing)
    noisy = np.where(missing[..., None], np.where(hold[..., None], held, np.nan), noisy)
    return noisy.astype(np.float32), conf.astype(np.float32)
