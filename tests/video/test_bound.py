"""``benchmarks/video_bound.py``: its objective is the scored warping error, and its solver finds the optimum.

The benchmark's claim ("no method does better at the same PSNR along the scorer's flow") rests on both."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamssm import metrics
from tests._bench import load_benchmark

@pytest.fixture(scope="module")
def bound():
    return load_benchmark("video_bound")


def _clip(t: int = 5, h: int = 40, w: int = 56, seed: int = 0):
    """A textured scene drifting by a fractional shift each frame, plus per-frame flicker: (originals, processed)."""
    rng = np.random.default_rng(seed)
    base = (rng.random((h + 20, w + 20, 3)) * 255).astype(np.float32)
    import cv2

    base = cv2.GaussianBlur(base, (0, 0), 1.5)
    I, P = [], []
    for k in range(t):
        m = np.float32([[1, 0, -0.7 * k - 5], [0, 1, -0.4 * k - 5]])
        f = cv2.warpAffine(base, m, (w, h), flags=cv2.INTER_LINEAR)
        I.append(np.clip(f, 0, 255).astype(np.uint8))
        P.append(np.clip(f * (1 + 0.15 * rng.standard_normal()) + 8 * rng.standard_normal((h, w, 3)), 0, 255)
                 .astype(np.uint8))
    return I, P


def test_objective_is_the_scored_warping_error(bound):
    I, P = _clip()
    flows = metrics.compute_flows(I, "farneback")
    grid, wgt = bound.sampling(flows)
    O = torch.from_numpy(np.stack(P)).double().div(255.0).permute(0, 3, 1, 2)
    warped = torch.nn.functional.grid_sample(O[1:], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    ours = float((wgt * (O[:-1] - warped) ** 2).sum())
    scored = metrics.warp_error(P, flows=flows)
    assert ours == pytest.approx(scored, rel=1e-5)


def test_optimum_minimises_the_objective(bound):
    I, P = _clip()
    flows = metrics.compute_flows(I, "farneback")
    grid, wgt = bound.sampling(flows)
    Pc = torch.from_numpy(np.stack(P)).double().div(255.0)[..., 1][:, None].contiguous()
    lam = 1.0

    def f(O):
        warped = torch.nn.functional.grid_sample(O[1:], grid, mode="bilinear", padding_mode="zeros",
                                                 align_corners=True)
        return float((wgt * (O[:-1] - warped) ** 2).sum() + lam * ((O - Pc) ** 2).sum() / (3 * Pc.numel()))

    x = bound.optimum(Pc, grid, wgt, lam, iters=60)
    g0, g1 = bound.gradient(Pc, Pc, grid, wgt, lam), bound.gradient(x, Pc, grid, wgt, lam)
    assert float(g1.norm()) < 1e-3 * float(g0.norm())  # converged: the gradient has all but vanished
    assert f(x) < 0.5 * f(Pc)
    rng = torch.Generator().manual_seed(0)
    for _ in range(3):  # no nearby output is better
        assert f(x) <= f(x + 1e-3 * torch.randn(x.shape, generator=rng, dtype=x.dtype)) + 1e-12


def test_optimum_trades_fidelity_for_consistency(bound):
    I, P = _clip()
    flows = metrics.compute_flows(I, "farneback")
    eP = metrics.warp_error(P, flows=flows)
    close = bound.optimum_uint8(P, flows, lam=50.0, iters=30)
    smooth = bound.optimum_uint8(P, flows, lam=0.05, iters=30)
    r_close, r_smooth = metrics.warp_error(close, flows=flows) / eP, metrics.warp_error(smooth, flows=flows) / eP
    assert r_smooth < r_close < 1.0
    assert metrics.psnr(close, P) > metrics.psnr(smooth, P)
