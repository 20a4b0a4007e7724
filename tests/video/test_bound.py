"""``benchmarks/video_bound.py``: its objective is the scored warping error, its solver finds the optimum, and its
streamssm flows follow known motion. The benchmark's rows mean what they say only if all three hold."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from streamssm import metrics
from tests._bench import load_benchmark


@pytest.fixture(scope="module")
def bound():
    return load_benchmark("video_bound")


SHIFT = (-0.7, -0.4)  # the clip's forward flow, px a frame


def _clip(t: int = 10, h: int = 40, w: int = 56, seed: int = 0):
    """A textured scene drifting by ``SHIFT`` each frame, plus per-frame flicker: (originals, processed)."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur((rng.random((h + 20, w + 20, 3)) * 255).astype(np.float32), (0, 0), 1.5)
    I, P = [], []
    for k in range(t):
        m = np.float32([[1, 0, SHIFT[0] * k - 5], [0, 1, SHIFT[1] * k - 5]])
        f = cv2.warpAffine(base, m, (w, h), flags=cv2.INTER_LINEAR)
        I.append(np.clip(f, 0, 255).astype(np.uint8))
        P.append(np.clip(f * (1 + 0.15 * rng.standard_normal()) + 8 * rng.standard_normal((h, w, 3)), 0, 255)
                 .astype(np.uint8))
    return I, P


def _scored_objective(O: np.ndarray, P: np.ndarray, flows, lam: float) -> float:
    """E_warp(O) + lam MSE(O, P) through streamssm.metrics (cv2.remap): not the benchmark's own code."""
    return metrics.warp_error(list(O.astype(np.float32)), flows=flows) + lam * float(np.mean((O - P) ** 2))


def test_gradient_is_that_of_the_scored_objective(bound):
    """The objective is quadratic, so a central difference along any direction is its exact directional derivative:
    the benchmark's gradient, summed over the channels, must match it (across several chunks of frame pairs)."""
    I, P = _clip()
    flows = metrics.compute_flows(I, "farneback")
    grid, wgt = bound.sampling(flows)
    rng = np.random.default_rng(1)
    Pf = np.stack(P).astype(np.float64) / 255.0
    O = np.clip(Pf + 0.05 * rng.standard_normal(Pf.shape), 0, 1)
    V = rng.standard_normal(Pf.shape)
    lam, eps = 0.7, 1e-2
    fd = (_scored_objective(O + eps * V, Pf, flows, lam) - _scored_objective(O - eps * V, Pf, flows, lam)) / (2 * eps)
    t = lambda a, ch: torch.from_numpy(np.ascontiguousarray(a[..., ch]))[:, None]  # noqa: E731
    ours = sum(float((bound.gradient(t(O, ch), t(Pf, ch), grid, wgt, lam, chunk=3) * t(V, ch)).sum())
               for ch in range(3))
    # OpenCV 4's remap rounds sampling positions to 1/32 px (relative ~3e-4 on E_warp); OpenCV 5 does not
    assert ours == pytest.approx(fd, rel=2e-3)


def test_optimum_minimises_the_objective(bound):
    I, P = _clip()
    flows = metrics.compute_flows(I, "farneback")
    grid, wgt = bound.sampling(flows)
    Pc = torch.from_numpy(np.stack(P)).double().div(255.0)[..., 1][:, None].contiguous()
    lam = 1.0
    x, res = bound.optimum(Pc, grid, wgt, lam, iters=60)
    g0 = bound.gradient(Pc, Pc, grid, wgt, lam)
    assert res < 1e-6 and float(bound.gradient(x, Pc, grid, wgt, lam).norm()) < 1e-4 * float(g0.norm())
    warm, res_warm = bound.optimum(Pc, grid, wgt, 0.5, iters=10, x0=x)  # a warm start still converges to lam's own
    cold, _ = bound.optimum(Pc, grid, wgt, 0.5, iters=60)
    assert float((warm - cold).abs().max()) < 1e-3 and res_warm < 1e-2


def test_optimum_trades_fidelity_for_consistency(bound):
    I, P = _clip()
    flows = metrics.compute_flows(I, "farneback")
    eP = metrics.warp_error(P, flows=flows)
    close, _, _ = bound.optimum_uint8(P, bound.sampling(flows), lam=50.0, iters=30)
    smooth, _, _ = bound.optimum_uint8(P, bound.sampling(flows), lam=0.05, iters=30)
    r_close, r_smooth = metrics.warp_error(close, flows=flows) / eP, metrics.warp_error(smooth, flows=flows) / eP
    assert r_smooth < r_close < 1.0
    assert metrics.psnr(close, P) > metrics.psnr(smooth, P)


def test_filter_flows_follow_a_known_shift(bound):
    I, _ = _clip(t=4, h=72, w=96)
    flows = bound.filter_flows(I)
    inner = flows.forward[:, 12:-12, 12:-12]
    assert np.allclose(np.median(inner.reshape(-1, 2), 0), SHIFT, atol=0.1)
    assert flows.valid[:, 12:-12, 12:-12].mean() > 0.9
