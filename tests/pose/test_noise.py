"""The synthetic estimator noise model."""
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from streamssm.pose.bvh import BODY17
from streamssm.pose.data import PoseDataset, body_size
from streamssm.pose.noise import NoiseConfig, add_noise, joint_weights

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
QUIET = dict(p_outlier=0.0, p_dropout=0.0, p_frame_dropout=0.0)


def _walk(b=4, t=200, k=17, d=2, seed=0):
    rng = np.random.default_rng(seed)
    pose = rng.uniform(0, 100, size=(b, 1, k, d))
    return pose + np.linspace(0, 50, t)[None, :, None, None]


def test_shapes_dtype_and_determinism():
    clean = _walk()
    a = add_noise(clean, np.random.default_rng(1), names=BODY17, fps=30.0)
    b = add_noise(clean, np.random.default_rng(1), names=BODY17, fps=30.0)
    assert a[0].shape == clean.shape and a[1].shape == clean.shape[:-1]
    assert a[0].dtype == np.float32 and a[1].dtype == np.float32
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert ((a[1] >= 0) & (a[1] <= 1)).all()
    one, _ = add_noise(clean[0], np.random.default_rng(1))  # no stream dim
    assert one.shape == clean[0].shape


def test_noise_scales_with_level_and_body_size():
    clean = _walk(b=8, t=400)
    stds = []
    for level in (0.5, 1.0, 4.0):
        noisy, _ = add_noise(clean, np.random.default_rng(0), level=level, fps=30.0, **QUIET)
        stds.append(np.std(noisy - clean) / body_size(clean).mean())
    np.testing.assert_allclose(np.array(stds) / stds[1], [0.5, 1.0, 4.0], rtol=0.05)
    big, _ = add_noise(clean * 10, np.random.default_rng(0), level=1.0, fps=30.0, **QUIET)
    np.testing.assert_allclose(np.std(big - clean * 10) / 10, np.std(noisy - clean) / 4, rtol=0.05)


def test_extremities_noisier():
    w = joint_weights(BODY17)
    i = {n: j for j, n in enumerate(BODY17)}
    assert w[i["left_wrist"]] > w[i["left_elbow"]] > w[i["left_shoulder"]]
    assert w[i["right_ankle"]] > w[i["right_hip"]]
    clean = _walk(b=8, t=400)
    noisy, _ = add_noise(clean, np.random.default_rng(0), names=BODY17, level=1.0, **QUIET)
    err = np.abs(noisy - clean).mean(axis=(0, 1, 3))
    assert err[i["left_wrist"]] > 2 * err[i["left_shoulder"]]


def test_dropouts_nan_or_hold_with_zero_confidence():
    clean = _walk(b=6, t=300)
    cfg = NoiseConfig(p_dropout=0.02, p_frame_dropout=0.01)
    nan_out, conf = add_noise(clean, np.random.default_rng(0), config=cfg, missing="nan", level=1.0)
    miss = conf == 0
    assert 0.01 < miss.mean() < 0.5
    np.testing.assert_array_equal(np.isnan(nan_out).any(-1), miss)
    hold_out, conf_h = add_noise(clean, np.random.default_rng(0), config=cfg, missing="hold", level=1.0)
    np.testing.assert_array_equal(conf_h, conf)
    b, t, k = np.nonzero(miss[:, 1:] & ~miss[:, :-1])  # first missing frame after a valid one
    np.testing.assert_array_equal(hold_out[b, t + 1, k], hold_out[b, t, k])
    frame_gap = miss.all(axis=-1)
    assert frame_gap.any()  # whole-frame dropouts happen


def test_outliers_are_short_jumps():
    clean = _walk(b=4, t=500)
    noisy, conf = add_noise(clean, np.random.default_rng(0), level=1.0, p_outlier=0.01, p_dropout=0.0,
                            p_frame_dropout=0.0, sigma_white=0.0, sigma_drift=0.0, p_tail=0.0)
    size = body_size(clean)[:, None, None]
    jumped = np.linalg.norm(noisy - clean, axis=-1) > 0.02 * size
    assert jumped.mean() > 0.005
    assert (conf[jumped] <= 0.5).all()
    # no run longer than 3 frames (two overlapping events could make up to 5)
    run = jumped[:, 4:] & jumped[:, 3:-1] & jumped[:, 2:-2] & jumped[:, 1:-3] & jumped[:, :-4]
    assert run.mean() < 1e-3


def _hf_residual(points, fps):
    size = body_size(points)[:, None, None, None]
    b, a = signal.butter(4, 3.0 / (fps / 2))
    return ((points - signal.filtfilt(b, a, points, axis=1)) / size)[:, 5:-5].std()


def test_calibrated_against_real_mediapipe(tmp_path):
    """Level-1 synthetic high-frequency jitter is within a factor 1.5 of the typical real clips."""
    if not (DATA / "pose" / "cmu").is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    body12 = [11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]
    real = []
    for name in ("juggle", "cloth_magic"):
        with np.load(DATA / "pose" / f"mp_edgetam_{name}.npz") as z:
            wh = np.array([float(z["width"]), float(z["height"])])
            real.append(_hf_residual((z["landmarks_raw"][None, :, body12, :2] * wh).astype(np.float64), 24.0))
    ds = PoseDataset.from_dir(DATA, "val", cache_dir=tmp_path)
    rng = np.random.default_rng(0)
    batch = ds.sample_batch(rng, 16, 200, dim=2, fps_range=(24, 24), units="px")
    noisy, _ = add_noise(batch.clean, rng, names=ds.names, fps=24.0, level=1.0, p_dropout=0.0, p_frame_dropout=0.0)
    cols = [ds.names.index(n) for n in ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
                                       "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                                       "right_knee", "left_ankle", "right_ankle")]
    synth = _hf_residual(noisy[:, :, cols].astype(np.float64), 24.0)
    assert np.mean(real) / 1.5 < synth < np.mean(real) * 1.5, (real, synth)
