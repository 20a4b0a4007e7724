"""Tests for streamssm.data.video_clips on real footage."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamssm.data.video_clips import ClipBatchSampler, VideoClipSampler, build_cache, load_cache, load_videos
from streamssm.metrics import warp

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _video_paths(n=2):
    paths = sorted((DATA / "videos").glob("*.mp4"))[:n]
    if not paths:
        pytest.skip(f"real videos not found in {DATA / 'videos'} (expected ../shared/data next to the repo)")
    return paths


@pytest.fixture(scope="module")
def videos():
    return load_videos(_video_paths(), short_side=128, max_frames=24)


def test_load_and_cache_roundtrip(tmp_path):
    p = build_cache(_video_paths(1), tmp_path / "c.npz", short_side=96, max_frames=3)
    (arr,) = load_cache(p).values()
    assert arr.shape == (3, 96, 171, 3) and arr.dtype == np.uint8


def test_clip_shapes(videos):
    s = VideoClipSampler(videos, p_real=0.5)
    rng = np.random.default_rng(0)
    for _ in range(4):
        c = s.sample_clip(rng, 8, (48, 64))
        for k in ("processed", "original", "target"):
            assert c[k].shape == (8, 3, 48, 64) and c[k].dtype == np.float32
            assert 0.0 <= c[k].min() and c[k].max() <= 1.0
        assert c["cut_mask"].shape == (8,) and c["cut_mask"].dtype == bool
        if c["flow"] is not None:
            assert c["flow"].shape == (7, 2, 48, 64) and c["flow_valid"].shape == (7, 48, 64)


def test_real_mode_has_no_flow(videos):
    c = VideoClipSampler(videos, p_real=1.0).sample_clip(np.random.default_rng(1), 6, 32)
    assert c["flow"] is None and c["flow_valid"] is None


def test_real_flow_aligns_the_footage_and_marks_the_cut(videos):
    """``real_flow``: real-order clips get DIS flow between the originals (it aligns frame t+1 onto t far better
    than no motion compensation), the pair across a cut none."""
    s = VideoClipSampler(videos, p_real=1.0, p_cut=1.0, real_flow=True)
    c = s.sample_clip(np.random.default_rng(4), 8, 64)
    assert c["flow"].shape == (7, 2, 64, 64) and c["flow_valid"].shape == (7, 64, 64)
    (cut,) = np.flatnonzero(c["cut_mask"])
    assert not c["flow_valid"][cut - 1].any()
    o = c["original"].transpose(0, 2, 3, 1)
    for t in [t for t in range(7) if t != cut - 1]:
        m = c["flow_valid"][t]
        assert m.mean() > 0.3
        err = np.abs(warp(o[t + 1], c["flow"][t].transpose(1, 2, 0)) - o[t])[m].mean()
        assert err < 0.5 * np.abs(o[t + 1] - o[t])[m].mean() + 1e-3


def test_flow_reproduces_previous_frame(videos):
    s = VideoClipSampler(videos, p_real=0.0, p_cut=0.0, p_static=0.0)
    rng = np.random.default_rng(2)
    checked = 0
    for _ in range(6):
        c = s.sample_clip(rng, 6, 64)
        o = c["original"].transpose(0, 2, 3, 1)
        for t in range(5):
            flow = c["flow"][t].transpose(1, 2, 0)
            m = cv2.erode(c["flow_valid"][t].astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            if np.abs(flow).max() < 1.0 or m.mean() < 0.5:
                continue
            err = np.abs(warp(o[t + 1], flow) - o[t])[m].mean()
            no_comp = np.abs(o[t + 1] - o[t])[m].mean()
            assert err < 0.025 and err < 0.5 * no_comp
            checked += 1
    assert checked >= 5


def test_cut_is_flagged(videos):
    c = VideoClipSampler(videos, p_real=0.0, p_cut=1.0).sample_clip(np.random.default_rng(3), 8, 32)
    (cut,) = np.flatnonzero(c["cut_mask"])
    assert 2 <= cut <= 6
    assert not c["flow_valid"][cut - 1].any() and c["flow_valid"][cut].any()


def test_batch_sampler_deterministic_across_threads(videos):
    s = VideoClipSampler(videos)
    b0 = next(iter(ClipBatchSampler(s, batch_size=3, T=5, size=32, seed=4, num_threads=0)))
    b2 = next(iter(ClipBatchSampler(s, batch_size=3, T=5, size=32, seed=4, num_threads=2)))
    assert tuple(b0["processed"].shape) == (3, 5, 3, 32, 32)
    assert tuple(b0["flow"].shape) == (3, 4, 2, 32, 32) and tuple(b0["cut_mask"].shape) == (3, 5)
    for k in ("processed", "original", "target", "flow", "flow_valid", "cut_mask"):
        assert (b0[k] == b2[k]).all(), k
