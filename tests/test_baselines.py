"""Classical causal filters: reference agreement, causality, NaN handling."""
import cv2
import numpy as np
import pytest

from streamssm.baselines import (
    EMA, FILTERS, CausalSavGol, KalmanCV, OneEuro, accel_error, ema, kalman_cv, make_filter, mpjpe,
    one_euro, savgol_causal, savgol_causal_coeffs, tune_grid,
)

PARAMS = {"ema": dict(alpha=0.4), "one_euro": dict(min_cutoff=0.8, beta=0.5, d_cutoff=1.3, fps=30.0),
          "kalman": dict(q=5.0, r=0.1, fps=30.0), "savgol": dict(window=7, order=2)}


def _signal(t=300, shape=(), seed=0):
    rng = np.random.default_rng(seed)
    base = np.sin(np.linspace(0, 12, t)).reshape((t,) + (1,) * len(shape)) * 3
    return base + 0.3 * rng.standard_normal((t,) + shape)


@pytest.mark.parametrize("with_timestamps", [False, True])
def test_one_euro_matches_reference_package(with_timestamps):
    oef = pytest.importorskip("OneEuroFilter")  # PyPI 'oneeurofilter' 0.2.1 (Casiez's own package)
    x = _signal(shape=(3,))
    ts = 1.0 + np.cumsum(np.random.default_rng(1).uniform(0.01, 0.06, len(x))) if with_timestamps else None
    ours = one_euro(x, fps=30.0, min_cutoff=0.8, beta=0.5, d_cutoff=1.3, timestamps=ts)
    for j in range(x.shape[1]):
        ref = oef.OneEuroFilter(30.0, mincutoff=0.8, beta=0.5, dcutoff=1.3)
        expected = [ref(v, None if ts is None else t) for v, t in zip(x[:, j], ts if ts is not None else [None] * len(x))]
        np.testing.assert_allclose(ours[:, j], expected, atol=1e-6, rtol=0)


def test_kalman_zero_error_on_constant_velocity_line():
    t = np.arange(400) / 30.0
    x = np.stack([2.0 + 1.5 * t, -1.0 - 0.7 * t], axis=-1)  # (t, 2), noiseless line
    y = kalman_cv(x, fps=30.0, q=0.01, r=0.05)
    assert np.abs(y[200:] - x[200:]).max() < 1e-6
    # with noise it beats the raw measurement
    noisy = x + 0.05 * np.random.default_rng(0).standard_normal(x.shape)
    assert mpjpe(kalman_cv(noisy, 30.0, 0.01, 0.0025)[50:], x[50:]) < 0.5 * mpjpe(noisy[50:], x[50:])


def test_savgol_is_causal_and_exact_on_polynomials():
    x = _signal(t=60)
    y = savgol_causal(x, window=9, order=2)
    for t in (0, 10, 30, 59):
        x2 = x.copy()
        x2[t] += 100.0
        y2 = savgol_causal(x2, window=9, order=2)
        np.testing.assert_array_equal(y2[:t], y[:t])
        assert y2[t] != y[t]
    tt = np.arange(50.0)
    quad = 0.3 * tt ** 2 - 2 * tt + 5
    np.testing.assert_allclose(savgol_causal(quad, 9, 2), quad, atol=1e-8)
    h = savgol_causal_coeffs(9, 2)
    assert h.shape == (9,) and np.isclose(h.sum(), 1.0)


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_step_equals_sequence_and_is_vectorised(name):
    x = _signal(t=80, shape=(2, 5, 3))
    f = make_filter(name, **PARAMS[name])
    seq = f.filter(x)
    f.reset()
    steps = np.stack([f.step(v) for v in x])
    np.testing.assert_array_equal(seq, steps)
    # each element is filtered on its own
    single = make_filter(name, **PARAMS[name]).filter(x[:, 1, 3, 2])
    np.testing.assert_allclose(seq[:, 1, 3, 2], single, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_nan_holds_output_and_does_not_update_state(name):
    x = _signal(t=100, shape=(2,))
    gap = [20, 21, 22, 50]
    xn = x.copy()
    xn[gap, 0] = np.nan
    xn[:3, 1] = np.nan  # missing at the start: NaN until the first valid sample
    f = make_filter(name, **PARAMS[name])
    y = f.filter(xn)
    assert np.isnan(y[:3, 1]).all() and np.isfinite(y[3:]).all()
    for t in gap:
        assert y[t, 0] == y[t - 1, 0]
    # after the gap the filter continues as if the missing samples never arrived (with the real time
    # that passed: timestamps of the kept samples)
    keep = np.setdiff1d(np.arange(100), gap)
    ref = make_filter(name, **PARAMS[name]).filter(x[keep, 0], timestamps=keep / 30.0)
    np.testing.assert_allclose(y[keep, 0], ref, rtol=1e-10, atol=1e-10)
    ref1 = make_filter(name, **PARAMS[name]).filter(x[3:, 1], timestamps=np.arange(3, 100) / 30.0)
    np.testing.assert_allclose(y[3:, 1], ref1, rtol=1e-10, atol=1e-10)


def test_ema_values():
    np.testing.assert_allclose(ema(np.array([0.0, 1.0, 1.0]), 0.5), [0.0, 0.5, 0.75])
    with pytest.raises(ValueError):
        EMA(0.0)


def test_filters_reduce_jitter():
    clean = np.sin(np.linspace(0, 8, 300))[:, None, None] * np.ones((1, 4, 2))
    noisy = clean + 0.1 * np.random.default_rng(0).standard_normal(clean.shape)
    for f in (EMA(0.3), OneEuro(1.0, 0.1, fps=30.0), KalmanCV(2.0, 0.01, fps=30.0), CausalSavGol(11, 2)):
        out = f.filter(noisy)
        assert accel_error(out, clean) < 0.5 * accel_error(noisy, clean), type(f).__name__


def test_metrics():
    a = np.zeros((10, 3, 2))
    assert mpjpe(a, a) == 0.0 and accel_error(a, a) == 0.0
    b = a.copy()
    b[5, :, 0] = 1.0  # one-frame spike: accel diff |1| at t=4,6 and |2| at t=5 over 8 frames
    assert accel_error(b, a) == pytest.approx((1 + 2 + 1) / 8)
    assert mpjpe(b, a) == pytest.approx(0.1)


def test_tune_grid_finds_minimum():
    clean = np.sin(np.linspace(0, 6, 200))[:, None, None]
    noisy = clean + 0.2 * np.random.default_rng(0).standard_normal(clean.shape)
    best, score, results = tune_grid("one_euro", noisy, clean, {"min_cutoff": [0.3, 1.0, 5.0], "beta": [0.0, 1.0]},
                                     fixed={"fps": 30.0})
    assert len(results) == 6 and score == min(s for _, s in results)
    assert best == min(results, key=lambda r: r[1])[0]
    best_acc, _, _ = tune_grid("ema", noisy, clean, {"alpha": [0.05, 0.5, 1.0]}, objective=accel_error)
    assert best_acc == {"alpha": 0.05}
    with pytest.raises(ValueError, match="unknown filter"):
        tune_grid("nope", noisy, clean, {"a": [1]})


@pytest.mark.parametrize("occlusion", [True, False])
def test_mc_ema_follows_motion_and_removes_flicker(occlusion):
    """A textured scene panning 2 px a frame under a +-10% per-frame gain: motion-compensated EMA (with and
    without its occlusion mask) passes the first frame through and cuts the warping error of the rest."""
    from streamssm import baselines_video as bv
    from streamssm import metrics

    rng = np.random.default_rng(0)
    lo = rng.random((20, 30, 3)).astype(np.float32)
    big = cv2.resize(lo, (240, 160), interpolation=cv2.INTER_CUBIC)
    I = [np.clip(big[20:140, 2 * t : 2 * t + 180] * 255, 0, 255).astype(np.uint8) for t in range(10)]
    gains = 1 + 0.1 * rng.standard_normal(10)
    P = [np.clip(i * g, 0, 255).astype(np.uint8) for i, g in zip(I, gains)]
    O = bv.mc_ema(P, I, alpha=0.3, occlusion=occlusion)
    assert np.array_equal(O[0], P[0])
    flows = metrics.compute_flows(I, "farneback")
    assert metrics.warp_error(O, flows=flows) < 0.3 * metrics.warp_error(P, flows=flows)
