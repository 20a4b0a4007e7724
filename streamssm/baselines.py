"""Classical causal smoothing filters: the baselines streamssm is compared against.

Every filter works on numpy arrays of shape ``(t, ...)``: time first, then any stream / keypoint /
coordinate dims, each element filtered independently (vectorised over ``...``). Each comes as a
stateful per-step object (``y_t = f.step(x_t)``, ``f.reset()``) and as a whole-sequence function that
runs the same object, so the math lives in one place:

=============================  ======================  =============================================
object                         function                parameters
=============================  ======================  =============================================
:class:`EMA`                   :func:`ema`             ``alpha``
:class:`OneEuro`               :func:`one_euro`        ``min_cutoff``, ``beta``, ``d_cutoff``, ``fps``
:class:`KalmanCV`              :func:`kalman_cv`       ``q``, ``r``, ``fps``
:class:`CausalSavGol`          :func:`savgol_causal`   ``window``, ``order``
=============================  ======================  =============================================

Missing input (NaN) is handled per element: the output holds the last output and the state is not
updated; the time that passes during a gap is remembered, so the next valid sample of One Euro and the
Kalman filter uses the true elapsed time. Before the first valid sample the output is NaN.

Metrics: :func:`mpjpe` (mean Euclidean error over the last axis) and :func:`accel_error` (SmoothNet's
acceleration error, Zeng et al., "SmoothNet: A Plug-and-Play Network for Refining Human Poses in
Videos", ECCV 2022: mean norm of the difference of second finite differences). :func:`tune_grid`
grid-searches a filter's parameters for any objective.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable

import numpy as np

__all__ = [
    "EMA", "OneEuro", "KalmanCV", "CausalSavGol",
    "ema", "one_euro", "kalman_cv", "savgol_causal",
    "FILTERS", "make_filter", "run_filter", "savgol_causal_coeffs",
    "mpjpe", "accel_error", "tune_grid",
]


class _Filter:
    """Common whole-sequence driver."""

    def reset(self) -> None:
        raise NotImplementedError

    def step(self, x: np.ndarray, dt: float | None = None) -> np.ndarray:
        raise NotImplementedError

    def filter(self, x: np.ndarray, timestamps: np.ndarray | None = None) -> np.ndarray:
        """Reset, then filter a whole sequence ``x`` (t, ...). ``timestamps`` (t,) seconds, optional."""
        x = np.asarray(x, dtype=np.float64)
        self.reset()
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            dt = None if timestamps is None or i == 0 else float(timestamps[i] - timestamps[i - 1])
            out[i] = self.step(x[i], dt)
        return out


class EMA(_Filter):
    """Exponential moving average ``y_t = alpha x_t + (1 - alpha) y_{t-1}``, ``y_0 = x_0``.

    >>> EMA(0.5).filter(np.array([0.0, 2.0, np.nan, 2.0])).tolist()
    [0.0, 1.0, 1.0, 1.5]
    """

    def __init__(self, alpha: float = 0.5):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.reset()

    def reset(self) -> None:
        self.y = None

    def step(self, x, dt=None):
        x = np.asarray(x, dtype=np.float64)
        if self.y is None:
            self.y = np.full(x.shape, np.nan)
        valid = np.isfinite(x)
        new = np.where(np.isnan(self.y), x, self.alpha * x + (1 - self.alpha) * self.y)
        self.y = np.where(valid, new, self.y)
        return self.y.copy()


def _smoothing_factor(dt, cutoff):
    """Casiez et al. 2012, eq. (4): alpha = 1 / (1 + tau / Te), tau = 1 / (2 pi fc)."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuro(_Filter):
    """The 1-euro filter: an adaptive-cutoff exponential smoother.

    G. Casiez, N. Roussel, D. Vogel, "1 euro filter: a simple speed-based low-pass filter for noisy
    input in interactive systems", CHI 2012. Per step (``Te`` = dt):

        dx_t  = (x_t - xhat_{t-1}) / Te                    (derivative against the *filtered* value)
        dxhat = alpha(Te, d_cutoff) dx_t + (1 - alpha) dxhat_{t-1}
        fc    = min_cutoff + beta |dxhat|
        xhat  = alpha(Te, fc) x_t + (1 - alpha) xhat_{t-1}

    with ``xhat_0 = x_0``, ``dxhat_0 = 0``, exactly as the authors' reference Python package
    (``OneEuroFilter`` 0.2.1) does, so outputs agree sample by sample. ``dt`` per step defaults to
    ``1 / fps``; after a NaN gap the elapsed time of the whole gap is used.

    >>> f = OneEuro(min_cutoff=1.0, beta=0.0, fps=30.0)
    >>> [round(float(f.step(v)), 4) for v in (0.0, 1.0, 1.0)]
    [0.0, 0.1732, 0.3164]
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0, fps: float = 30.0):
        if min_cutoff <= 0 or d_cutoff <= 0 or fps <= 0:
            raise ValueError("min_cutoff, d_cutoff and fps must be > 0")
        self.min_cutoff, self.beta, self.d_cutoff, self.fps = float(min_cutoff), float(beta), float(d_cutoff), float(fps)
        self.reset()

    def reset(self) -> None:
        self.x_hat = None
        self.dx_hat = None
        self.elapsed = None

    def step(self, x, dt=None):
        x = np.asarray(x, dtype=np.float64)
        dt = 1.0 / self.fps if dt is None or dt <= 0 else float(dt)
        if self.x_hat is None:
            self.x_hat = np.full(x.shape, np.nan)
            self.dx_hat = np.zeros(x.shape)
            self.elapsed = np.zeros(x.shape)
        valid = np.isfinite(x)
        started = np.isfinite(self.x_hat)
        te = self.elapsed + dt  # time since this element's last valid sample
        dx = np.where(started, (x - self.x_hat) / te, 0.0)
        a_d = _smoothing_factor(te, self.d_cutoff)
        dx_hat = np.where(started, a_d * dx + (1 - a_d) * self.dx_hat, 0.0)
        a = _smoothing_factor(te, self.min_cutoff + self.beta * np.abs(dx_hat))
        x_hat = np.where(started, a * x + (1 - a) * self.x_hat, x)
        self.x_hat = np.where(valid, x_hat, self.x_hat)
        self.dx_hat = np.where(valid, dx_hat, self.dx_hat)
        self.elapsed = np.where(valid | ~started, 0.0, te)
        return self.x_hat.copy()


class KalmanCV(_Filter):
    """Constant-velocity Kalman filter, independently per element (per coordinate).

    State ``[p, v]``, ``F = [[1, dt], [0, 1]]``, continuous white-noise acceleration with spectral
    density ``q`` (``Q = q [[dt^3/3, dt^2/2], [dt^2/2, dt]]``), measurement ``z = p + n``, ``n ~ N(0, r)``
    (Bar-Shalom, Li, Kirubarajan, "Estimation with Applications to Tracking and Navigation", 2001,
    sec. 6.2.2). Initialised at the first valid sample with ``p = z``, ``v = 0``,
    ``P = diag(r, v0_var)``. Output: the updated position. The predict and update steps are written
    out in scalars so that every element of ``x`` is its own 2-state filter.

    >>> f = KalmanCV(q=1e-3, r=1e-2, fps=30.0)
    >>> y = f.filter(np.arange(100.0) / 30.0)
    >>> bool(abs(y[-1] - 99 / 30.0) < 1e-4)
    True
    """

    def __init__(self, q: float = 1.0, r: float = 1.0, fps: float = 30.0, v0_var: float | None = None):
        if q < 0 or r <= 0 or fps <= 0:
            raise ValueError("need q >= 0, r > 0, fps > 0")
        self.q, self.r, self.fps = float(q), float(r), float(fps)
        # An uninformative velocity prior: large relative to a measurement's variance per frame^2.
        self.v0_var = float(v0_var) if v0_var is not None else 1e3 * self.r * self.fps ** 2
        self.reset()

    def reset(self) -> None:
        self.p = None

    def step(self, x, dt=None):
        x = np.asarray(x, dtype=np.float64)
        dt0 = 1.0 / self.fps if dt is None or dt <= 0 else float(dt)
        if self.p is None:
            self.p = np.full(x.shape, np.nan)
            self.v = np.zeros(x.shape)
            self.P00 = np.full(x.shape, self.r)
            self.P01 = np.zeros(x.shape)
            self.P11 = np.full(x.shape, self.v0_var)
            self.elapsed = np.zeros(x.shape)
        valid = np.isfinite(x)
        started = np.isfinite(self.p)
        dt = self.elapsed + dt0
        # predict
        p = self.p + dt * self.v
        v = self.v
        P00 = self.P00 + dt * (2 * self.P01 + dt * self.P11) + self.q * dt ** 3 / 3
        P01 = self.P01 + dt * self.P11 + self.q * dt ** 2 / 2
        P11 = self.P11 + self.q * dt
        # update
        s = P00 + self.r
        k0, k1 = P00 / s, P01 / s
        innov = x - p
        p_new, v_new = p + k0 * innov, v + k1 * innov
        P00n, P01n, P11n = (1 - k0) * P00, (1 - k0) * P01, P11 - k1 * P01
        upd = valid & started
        init = valid & ~started
        self.p = np.where(upd, p_new, np.where(init, x, self.p))
        self.v = np.where(upd, v_new, np.where(init, 0.0, self.v))
        self.P00 = np.where(upd, P00n, np.where(init, self.r, self.P00))
        self.P01 = np.where(upd, P01n, np.where(init, 0.0, self.P01))
        self.P11 = np.where(upd, P11n, np.where(init, self.v0_var, self.P11))
        self.elapsed = np.where(valid | ~started, 0.0, dt)
        return self.p.copy()


def savgol_causal_coeffs(window: int, order: int) -> np.ndarray:
    """(window,) FIR taps ``h`` with ``y_t = sum_i h[i] x_{t-i}``.

    Least-squares polynomial of degree ``order`` through the last ``window`` samples, evaluated at
    the newest one (Savitzky and Golay, Anal. Chem. 36(8), 1964, with the evaluation point moved to the
    window's end so that the filter is causal). ``order >= window`` is clipped to ``window - 1``.
    """
    if window < 1 or order < 0:
        raise ValueError(f"need window >= 1 and order >= 0, got {window}, {order}")
    order = min(order, window - 1)
    lag = -np.arange(window, dtype=np.float64)  # sample i is i steps in the past
    a = lag[:, None] ** np.arange(order + 1)[None, :]  # (window, order+1) Vandermonde
    # value at lag 0 = first polynomial coefficient = first row of the pseudo-inverse
    return np.linalg.pinv(a)[0]


class CausalSavGol(_Filter):
    """Causal Savitzky-Golay filter: a FIR over the last ``window`` valid samples.

    While fewer than ``window`` samples have been seen, the fit uses what is there (with the degree
    reduced to fit), so the first output equals the first input.

    >>> CausalSavGol(window=5, order=1).filter(np.arange(8.0)).round(6).tolist()  # a line passes exactly
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    """

    def __init__(self, window: int = 9, order: int = 2):
        self.window, self.order = int(window), int(order)
        # taps[n] for n valid samples, zero-padded to the window; row 0 unused
        self.taps = np.zeros((self.window + 1, self.window))
        for n in range(1, self.window + 1):
            self.taps[n, :n] = savgol_causal_coeffs(n, self.order)
        self.reset()

    def reset(self) -> None:
        self.buf = None

    def step(self, x, dt=None):
        x = np.asarray(x, dtype=np.float64)
        if self.buf is None:
            self.buf = np.zeros((self.window,) + x.shape)  # buf[0] newest
            self.count = np.zeros(x.shape, dtype=np.int64)
            self.y = np.full(x.shape, np.nan)
        valid = np.isfinite(x)
        shifted = np.concatenate([x[None], self.buf[:-1]], axis=0)
        self.buf = np.where(valid[None], shifted, self.buf)
        self.count = np.where(valid, np.minimum(self.count + 1, self.window), self.count)
        h = np.moveaxis(self.taps[self.count], -1, 0)  # (window, ...)
        y = (h * self.buf).sum(axis=0)
        self.y = np.where(valid, y, self.y)
        return self.y.copy()


def ema(x: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Whole-sequence :class:`EMA` over ``x`` (t, ...)."""
    return EMA(alpha).filter(x)


def one_euro(x: np.ndarray, fps: float = 30.0, min_cutoff: float = 1.0, beta: float = 0.0,
             d_cutoff: float = 1.0, timestamps: np.ndarray | None = None) -> np.ndarray:
    """Whole-sequence :class:`OneEuro` (Casiez et al. 2012) over ``x`` (t, ...)."""
    return OneEuro(min_cutoff, beta, d_cutoff, fps).filter(x, timestamps)


def kalman_cv(x: np.ndarray, fps: float = 30.0, q: float = 1.0, r: float = 1.0,
              timestamps: np.ndarray | None = None) -> np.ndarray:
    """Whole-sequence :class:`KalmanCV` over ``x`` (t, ...)."""
    return KalmanCV(q, r, fps).filter(x, timestamps)


def savgol_causal(x: np.ndarray, window: int = 9, order: int = 2) -> np.ndarray:
    """Whole-sequence :class:`CausalSavGol` over ``x`` (t, ...)."""
    return CausalSavGol(window, order).filter(x)


FILTERS: dict[str, type[_Filter]] = {"ema": EMA, "one_euro": OneEuro, "kalman": KalmanCV, "savgol": CausalSavGol}


def make_filter(name: str, **params) -> _Filter:
    """Build a filter object by name (``ema``, ``one_euro``, ``kalman``, ``savgol``)."""
    if name not in FILTERS:
        raise ValueError(f"unknown filter {name!r}, expected one of {sorted(FILTERS)}")
    return FILTERS[name](**params)


def run_filter(name: str, x: np.ndarray, **params) -> np.ndarray:
    """Whole-sequence run of filter ``name`` with ``params``."""
    return make_filter(name, **params).filter(x)


def mpjpe(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean Euclidean distance over the last (coordinate) axis, ignoring non-finite entries."""
    return float(np.nanmean(np.linalg.norm(np.asarray(pred) - np.asarray(target), axis=-1)))


def accel_error(pred: np.ndarray, target: np.ndarray) -> float:
    """SmoothNet acceleration error (Zeng et al., ECCV 2022): mean over frames and keypoints of
    ``|| (p_{t+1} - 2 p_t + p_{t-1}) - (g_{t+1} - 2 g_t + g_{t-1}) ||``; time on axis 0, coordinates
    last. In data units per frame^2 (multiply by fps^2 for units/s^2)."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    acc = lambda a: a[2:] - 2 * a[1:-1] + a[:-2]  # noqa: E731
    return float(np.nanmean(np.linalg.norm(acc(pred) - acc(target), axis=-1)))


def tune_grid(filter_name: str, noisy: np.ndarray, clean: np.ndarray, grid: dict[str, list],
              objective: Callable[[np.ndarray, np.ndarray], float] = mpjpe,
              fixed: dict | None = None) -> tuple[dict, float, list[tuple[dict, float]]]:
    """Exhaustive grid search of ``filter_name``'s parameters minimising ``objective(out, clean)``.

    Args:
        noisy, clean: (t, ...) arrays; the filter runs over ``noisy``.
        grid: parameter name -> candidate values, e.g. ``{"min_cutoff": [0.5, 1, 2], "beta": [0, 0.1]}``.
        objective: ``f(filtered, clean) -> float`` (default :func:`mpjpe`).
        fixed: parameters passed unchanged to every run (e.g. ``{"fps": 24.0}``).

    Returns:
        ``(best_params, best_score, [(params, score), ...])`` for all grid points, in grid order.

    >>> t = np.linspace(0, 1, 50)[:, None]
    >>> best, score, _ = tune_grid("ema", t + 0.01 * np.sin(40 * t), t, {"alpha": [0.3, 0.9]})
    >>> best
    {'alpha': 0.9}
    """
    keys = list(grid)
    results = []
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values))
        out = run_filter(filter_name, noisy, **params, **(fixed or {}))
        results.append((params, float(objective(out, clean))))
    if not results:
        raise ValueError("empty grid")
    best = min(results, key=lambda r: r[1] if np.isfinite(r[1]) else np.inf)
    return best[0], best[1], results
