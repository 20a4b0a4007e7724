"""Tests for streamssm.metrics: warping error, PSNR, SSIM, luminance."""
import cv2
import numpy as np
import pytest

from streamssm.metrics import (Flows, compute_flows, luminance_flicker, mean_luminance, psnr, ssim, warp, warp_error,
                               warp_errors)


def _texture(h=140, w=180, seed=0):
    rng = np.random.default_rng(seed)
    x = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 1.5)
    x = (x - x.min()) / (x.max() - x.min())
    return (x * 255).astype(np.uint8)


def _translating(T=5, dx=2, dy=1, h=96, w=128):
    big = _texture()
    return [np.ascontiguousarray(big[10 + t * dy:10 + t * dy + h, 10 + t * dx:10 + t * dx + w]) for t in range(T)]


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_translation_is_consistent(method):
    v = _translating()
    static_err = float(np.mean([((v[t].astype(float) - v[t + 1]) / 255) ** 2 for t in range(4)]) * 3)
    e = warp_error(v, flow=method)
    assert e < 0.02 * static_err and e < 2e-3


@pytest.mark.parametrize("method", ["deepflow", "tvl1"])
def test_contrib_flows_score_a_translation_or_say_what_is_missing(method):
    """DeepFlow and TV-L1 (opencv-contrib): consistent on a pure shift where cv2.optflow exists; otherwise a
    ValueError that names the method and the package to install."""
    import cv2

    v = _translating(T=3)
    if not hasattr(cv2, "optflow"):
        with pytest.raises(ValueError, match=f"{method}.*opencv-contrib-python-headless"):
            warp_error(v, flow=method)
        return
    static_err = float(np.mean([((v[t].astype(float) - v[t + 1]) / 255) ** 2 for t in range(2)]) * 3)
    assert warp_error(v, flow=method) < 0.02 * static_err


def test_exact_flow_gives_zero_and_masks_border():
    v = _translating(T=3, dx=2, dy=1)
    fwd = np.zeros((2, 96, 128, 2), np.float32)
    fwd[..., 0], fwd[..., 1] = -2, -1  # the crop window moves by (+2, +1): v_t(x) = v_{t+1}(x - (2, 1))
    h, w = 96, 128
    gx, gy = np.meshgrid(np.arange(w), np.arange(h))
    valid = np.broadcast_to(((gx - 2 >= 0) & (gy - 1 >= 0))[None], (2, h, w))
    assert warp_error(v, flows=Flows(fwd, valid, "exact")) < 1e-10
    # the automatic mask must exclude the border the content moved in from
    fl = compute_flows(v, "dis")
    assert not fl.valid[:, :, 0].any() and fl.valid.mean() > 0.9


def test_flicker_increases_warp_error():
    v = _translating(T=6)
    flows = compute_flows(v)
    rng = np.random.default_rng(0)
    gains = rng.choice([-1.0, 1.0], 6)
    errs = []
    for amp in (0.0, 0.03, 0.08):
        f = [np.clip(x / 255.0 + amp * g, 0, 1).astype(np.float32) for x, g in zip(v, gains)]
        errs.append(warp_error(f, flows=flows))
    assert errs[0] < errs[1] < errs[2]
    assert warp_errors(v, flows).shape == (5,)


def test_warp_is_backward():
    img = _texture(32, 32)
    flow = np.zeros((32, 32, 2), np.float32)
    flow[..., 0] = 3
    np.testing.assert_allclose(warp(img, flow)[:, :29], img[:, 3:])


def test_psnr_ssim_luminance():
    a = _texture(64, 64)
    assert psnr(a, a) == float("inf") and ssim(a, a) == pytest.approx(1.0)
    assert psnr([a, a], np.stack([a, a])) == float("inf")
    z = np.zeros((8, 8, 3), np.float32)
    assert psnr(z, z + 0.1) == pytest.approx(20.0)
    noisy = np.clip(a + np.random.default_rng(0).normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    assert 0.0 < ssim(a, noisy) < 0.9
    assert mean_luminance([np.full((4, 4, 3), 128, np.uint8)])[0] == pytest.approx(128 / 255, abs=1e-6)


def test_luminance_flicker():
    rng = np.random.default_rng(1)
    base = _texture(32, 32).astype(np.float32)
    T = [np.clip(base + 2.0 * t, 0, 255) for t in range(12)]  # a slow, consistent brightening
    gains = rng.uniform(-15, 15, 12)
    P = [np.clip(f + g, 0, 255) for f, g in zip(T, gains)]  # + a brightness flicker
    assert luminance_flicker(T, T, P) == pytest.approx(0.0, abs=1e-9)
    assert luminance_flicker(P, T, P) == pytest.approx(1.0)
    half = [np.clip(f + 0.5 * g, 0, 255) for f, g in zip(T, gains)]
    assert luminance_flicker(half, T, P) == pytest.approx(0.5, abs=0.02)
    frozen = [P[0]] * 12  # ignores the target's own brightening: flicker of its own
    assert luminance_flicker(frozen, T, P) > 0.05
    with pytest.raises(ValueError, match="same length"):
        luminance_flicker(P[:5], T, P)


def test_video_psnr_pools_mse():
    a = [np.zeros((4, 4, 3), np.float32)] * 2
    b = [a[0], a[0] + 0.1]  # first frame identical: pooled MSE = 0.005
    assert psnr(a, b) == pytest.approx(10 * np.log10(1 / 0.005))
