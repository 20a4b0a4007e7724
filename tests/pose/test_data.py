"""Clip loading, resampling, split and batch sampling."""
from pathlib import Path

import numpy as np
import pytest

from streamssm.pose.data import VAL_SUBJECTS, PoseDataset, body_size, resample

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def datasets(tmp_path_factory):
    if not (DATA / "pose" / "cmu").is_dir():
        pytest.skip(f"shared data not found at {DATA} (expected ../shared/data next to the repo)")
    cache = tmp_path_factory.mktemp("pose_cache")
    return PoseDataset.from_dir(DATA, "train", cache_dir=cache), PoseDataset.from_dir(DATA, "val", cache_dir=cache)


def test_resample_linear_and_pingpong():
    x = np.arange(11.0)[:, None]  # 10 fps ramp over 1 s
    np.testing.assert_allclose(resample(x, 10.0, 20.0)[:, 0], np.arange(21) / 2)
    np.testing.assert_allclose(resample(x, 10.0, 10.0, speed=2.0)[:, 0], [0, 2, 4, 6, 8, 10])
    np.testing.assert_allclose(resample(x, 10.0, 10.0, length=14)[10:, 0], [10, 9, 8, 7])


def test_split_is_subject_disjoint(datasets):
    train, val = datasets
    assert {c.subject for c in val.clips} == set(VAL_SUBJECTS)
    assert not {c.subject for c in train.clips} & set(VAL_SUBJECTS)
    assert len(train.clips) >= 30 and len(val.clips) >= 10
    for c in train.clips + val.clips:  # metres: standing height 1.2-2.2 m
        h = c.positions[..., 1].max(axis=1) - c.positions[..., 1].min(axis=1)
        assert 0.8 < np.median(h) < 2.2, c.name


def test_sample_batch_shapes_units_and_dims(datasets):
    train, _ = datasets
    rng = np.random.default_rng(0)
    dims = set()
    for _ in range(12):
        b = train.sample_batch(rng, 3, 40)
        dims.add(b.clean.shape[-1])
        assert b.clean.shape[:3] == (3, 40, 17) and b.clean.dtype == np.float32
        assert np.isfinite(b.clean).all() and ((24 <= b.fps) & (b.fps <= 60)).all()
        np.testing.assert_allclose(b.body_size, body_size(b.clean), rtol=1e-5)
        for u, s in zip(b.units, b.body_size):
            lo, hi = {"px": (30, 3000), "norm": (0.05, 2.0), "m": (1.0, 3.0), "mm": (1000, 3000)}[u]
            assert lo < s < hi, (u, s)
    assert dims == {2, 3}
    b = train.sample_batch(rng, 2, 700, dim=2, units="norm")  # longer than most clips: ping-pong
    assert b.clean.shape == (2, 700, 17, 2) and b.units == ["norm", "norm"]


def test_sample_batch_is_deterministic_and_smooth(datasets):
    _, val = datasets
    a = val.sample_batch(np.random.default_rng(3), 2, 60, dim=3, units="m", fps_range=(30, 30))
    b = val.sample_batch(np.random.default_rng(3), 2, 60, dim=3, units="m", fps_range=(30, 30))
    np.testing.assert_array_equal(a.clean, b.clean)
    step = np.linalg.norm(np.diff(a.clean, axis=1), axis=-1)
    assert step.max() < 0.6  # < 18 m/s: clean mocap has no jumps


def test_p_flip_zero_draws_the_same_streams_and_flips_turn_the_axes(datasets):
    """``p_flip`` (another axis convention for a share of the training streams) must not draw from the generator at
    0: a draw there changed every stream after it, and with them the benchmark's test sets, made with the default.
    At 1 every stream is flipped: 2-D y up (the head now below the ankles in y), 3-D Y down or Z up."""
    _, val = datasets
    base = val.sample_batch(np.random.default_rng(5), 4, 30, dim=2, fps_range=(30, 30))
    same = val.sample_batch(np.random.default_rng(5), 4, 30, dim=2, fps_range=(30, 30), p_flip=0.0)
    np.testing.assert_array_equal(base.clean, same.clean)
    head, ankles = val.names.index("head"), [val.names.index(n) for n in ("left_ankle", "right_ankle")]

    def up(c, axis):  # head above the ankles along +axis, per stream
        return np.nanmean(c[:, :, head, axis] - c[:, :, ankles, axis].mean(-1), axis=1) > 0

    assert not up(base.clean, 1).any()  # image y runs down: the head has the smaller y
    flipped = val.sample_batch(np.random.default_rng(5), 4, 30, dim=2, fps_range=(30, 30), p_flip=1.0)
    assert up(flipped.clean, 1).all()
    three = val.sample_batch(np.random.default_rng(6), 16, 30, dim=3, units="m", fps_range=(30, 30), p_flip=1.0)
    y_down, z_up = ~up(three.clean, 1) & ~up(three.clean, 2), up(three.clean, 2)
    assert (y_down | z_up).all() and y_down.any() and z_up.any()


def test_vary_confidence_gives_each_stream_one_kind():
    """Training confidence per stream: none (1 wherever a point is given), the noise model's scaled and bent, one
    unrelated to the error, or the noise model's own; a missing point keeps 0 except where there is none at all."""
    from streamssm.train.pose import vary_confidence

    rng = np.random.default_rng(0)
    noisy = rng.normal(size=(400, 20, 5, 2)).astype(np.float32)
    noisy[:, 3, 1] = np.nan
    conf = rng.uniform(0.75, 1.0, (400, 20, 5)).astype(np.float32)
    conf[:, 3, 1] = 0.0
    conf[:, 4, 2] = 0.0  # a held dropout: given, confidence 0
    out = vary_confidence(noisy, conf, np.random.default_rng(1), p_none=0.35, p_scaled=0.3, p_noise=0.1)
    none = (out[:, 4, 2] == 1) & np.all(out[:, :3] == 1, axis=(1, 2))
    own = np.all(out == conf, axis=(1, 2))
    assert 0.25 < none.mean() < 0.45 and 0.15 < own.mean() < 0.35
    assert (out[:, 3, 1] == 0).all() and ((out[:, 4, 2] == 0) | none).all()
    other = ~none & ~own
    assert (out[other].max(axis=(1, 2)) <= 1.0).all() and 0.3 < other.mean() < 0.5
    np.testing.assert_array_equal(vary_confidence(noisy, conf, np.random.default_rng(1)), conf)
