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


def test_fade_envelope_fades_the_frame_or_one_half():
    """``fade_envelope``: factors in [0.05, 1], reaching 1 at one end of the clip, monotone in time, and either the
    whole frame or one half of it (the other half stays at 1); both kinds and both directions turn up."""
    from streamssm.data.video_clips import fade_envelope

    rng = np.random.default_rng(0)
    kinds, dirs = set(), set()
    for _ in range(60):
        env = fade_envelope(rng, 10, (8, 12))
        assert env.shape == (10, 8, 12, 1) and env.dtype == np.float32
        assert 0.05 - 1e-6 <= env.min() and env.max() <= 1.0 + 1e-6 and env.min() < 0.9 + 1e-6
        assert np.allclose(env[0], 1.0) or np.allclose(env[-1], 1.0)  # full brightness at one end
        mean = env.mean((1, 2, 3))
        assert np.all(np.diff(mean) >= -1e-6) or np.all(np.diff(mean) <= 1e-6)
        dirs.add("in" if mean[-1] > mean[0] else "out")
        ones = np.isclose(env, 1.0).all(0)[..., 0]  # pixels never faded
        assert ones.sum() in (0, 48), ones.sum()  # all faded, or exactly one half (48 of 96 pixels) untouched
        kinds.add(int(ones.sum()))
    assert kinds == {0, 48} and dirs == {"in", "out"}


def test_fade_clips_change_the_target_brightness_with_the_original(videos):
    """With ``p_fade=1`` every clip's original changes brightness over time, and the consistent target follows it
    (its mean-brightness ratio between first and last frame is on the same side of 1), where without fades the
    target of a still, static shot keeps its brightness. Faded clips never get a content-adaptive operator (its P
    would renormalise the fade away while its target kept it)."""
    from streamssm.video.operators import OPERATORS

    rng = np.random.default_rng(1)
    faded = VideoClipSampler(videos, p_real=0.0, p_cut=0.0, p_static=1.0, p_fade=1.0)
    plain = VideoClipSampler(videos, p_real=0.0, p_cut=0.0, p_static=1.0)
    for _ in range(6):
        c = faded.sample_clip(rng, 8, 48)
        ro = c["original"][-1].mean() / c["original"][0].mean()
        rt = c["target"][-1].mean() / c["target"][0].mean()
        assert abs(np.log(ro)) > 0.02 and np.sign(np.log(ro)) == np.sign(np.log(rt)), (ro, rt)
        assert OPERATORS[c["operator"]].stats is None, c["operator"]
        p = plain.sample_clip(rng, 8, 48)
        assert abs(np.log(p["original"][-1].mean() / p["original"][0].mean())) < 1e-6


def test_fade_clips_are_flagged_and_left_out_of_guided_batches(videos):
    """Each clip says whether its originals fade (``faded``), and the training stream passes the flag on, so
    ``without_faded`` can drop faded clips from a guided batch (fades are taught processed-only); a batch with
    no faded clip, or only faded ones, is kept whole."""
    import torch

    from streamssm.train.video import VideoTrainConfig, _ClipStream, without_faded

    rng = np.random.default_rng(2)
    s = VideoClipSampler(videos, p_fade=0.5)
    flags = {s.sample_clip(rng, 4, 32)["faded"] for _ in range(12)}
    assert flags == {True, False}
    assert VideoClipSampler(videos).sample_clip(rng, 4, 32)["faded"] is False

    cfg = VideoTrainConfig(batch=6, length=4, sizes=(32,), p_fade=0.5, workers=0)
    batch = next(iter(_ClipStream(videos, cfg, rank=0)))
    assert batch["faded"].dtype == torch.bool and batch["faded"].shape == (6,)

    faded = torch.tensor([True, False, True, False])
    b = {"processed": torch.arange(4.0)[:, None], "faded": faded}
    kept = without_faded(b)
    assert kept["processed"].flatten().tolist() == [1.0, 3.0] and not bool(kept["faded"].any())
    for same in (torch.zeros(4, dtype=torch.bool), torch.ones(4, dtype=torch.bool)):
        assert without_faded({"processed": b["processed"], "faded": same})["processed"].shape[0] == 4


def test_frame_cache_is_the_decode_kept_on_disk(tmp_path, monkeypatch):
    """--frame-cache: the same frames as decoding into memory, memory-mapped from one .npy a video; a second load
    decodes nothing; an edited video (new modification time) or other settings decode anew."""
    import os
    import pickle

    import streamssm.data.video_clips as vc

    paths = _video_paths(2)
    cache = tmp_path / "cache"
    a = load_videos(paths, short_side=96, max_frames=6, cache_dir=cache)
    b = load_videos(paths, short_side=96, max_frames=6)
    assert sorted(a) == sorted(b)
    for k in a:
        assert isinstance(a[k], vc.CachedFrames) and a[k].shape == b[k].shape and np.array_equal(a[k], b[k])
        again = pickle.loads(pickle.dumps(a[k]))  # a spawned data-loader worker gets the file name, not the frames
        assert len(pickle.dumps(a[k])) < 1000 and np.array_equal(again, b[k])
    files = sorted(cache.glob("*.npy"))
    assert len(files) == 2 and all(np.load(f).shape[0] == 6 for f in files)

    def no_decode(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(vc, "_frames_of", no_decode)
    c = load_videos(paths, short_side=96, max_frames=6, cache_dir=cache)
    assert all(np.array_equal(c[k], b[k]) for k in b)
    monkeypatch.undo()
    link = tmp_path / paths[0].name  # "edited": a copy of the file with another modification time
    link.write_bytes(paths[0].read_bytes())
    os.utime(link, ns=(1, 1))
    load_videos([link], short_side=96, max_frames=6, cache_dir=cache)
    load_videos([paths[0]], short_side=64, max_frames=6, cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == 4


def test_frame_size_change_is_named_and_the_cache_keeps_no_partial_file(tmp_path, monkeypatch):
    """A video whose frame size changes midway (a decoder giving 10 then 12 px wide frames here) is left out, named,
    whether decoded into memory or into the cache, and the cache keeps no file of it."""
    import streamssm.data.video_clips as vc

    (path,) = _video_paths(1)

    class Capture:
        def __init__(self, *a):
            self.widths = iter([10, 12])

        def isOpened(self):
            return True

        def read(self):
            w = next(self.widths, None)
            return (w is not None), None if w is None else np.zeros((8, w, 3), np.uint8)

        def get(self, prop):  # the memory estimate's frame count and size: unknown
            return 0.0

        def release(self):
            pass

    monkeypatch.setattr(vc.cv2, "VideoCapture", Capture)
    for cache in (None, tmp_path):
        with pytest.raises(OSError, match=f"no training video decodes: {path}: its frame size changes mid-video "
                                          "\\(frame 1: 12x8, first 10x8\\)"):
            load_videos([path], short_side=96, cache_dir=cache)
    assert [f.name for f in tmp_path.iterdir() if not f.name.endswith(".lock")] == []


def test_decoding_into_memory_warns_when_it_would_not_fit(caplog, monkeypatch):
    import streamssm.data.video_clips as vc

    paths = _video_paths(2)
    need, _ = vc._memory_estimate(paths, 96, 6, 1)
    assert need == sum(v.nbytes for v in load_videos(paths, short_side=96, max_frames=6).values())
    monkeypatch.setattr(vc, "_memory_estimate", lambda *a: (3e9, 4e9))
    with caplog.at_level("WARNING"):
        load_videos(paths[:1], short_side=96, max_frames=2)
    assert "~3.0 GB of frames in memory, in each process (4.0 GB available): --frame-cache DIR" in caplog.text


def test_frame_cache_write_errors_stop_the_run_and_a_built_cache_reads_without_writing(tmp_path, monkeypatch):
    """A cache that cannot be written (here: the disk full at the rename) stops loading with an error naming the
    folder and the video, instead of training on fewer videos; a decode killed outright leaves a .part that the
    next decode of that video removes; a cache already built is read even where nothing can be written."""
    import errno
    import os

    import streamssm.data.video_clips as vc

    (path,) = _video_paths(1)
    cache = tmp_path / "cache"
    cache.mkdir()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(vc.os, "replace", full)
        with pytest.raises(vc.FrameCacheError, match=f"{cache}: cannot write the frame cache .*{path.name}"):
            load_videos([path], short_side=64, max_frames=3, cache_dir=cache)
    dest = vc.cache_file(path, cache, 64, 3, 1)
    orphan = dest.with_name(dest.name + ".99999.part")
    orphan.write_bytes(b"half a video")
    os.utime(orphan, (1, 1))  # unwritten for long: a decode killed outright (a fresh one may be under way)
    load_videos([path], short_side=64, max_frames=3, cache_dir=cache)
    assert dest.exists() and not orphan.exists()
    with monkeypatch.context() as m:
        m.setattr(vc, "_locked", full)  # a read-only folder: not even a lock file can be made
        (a,) = load_videos([path], short_side=64, max_frames=3, cache_dir=cache).values()
        assert a.shape[0] == 3
        with pytest.raises(vc.FrameCacheError, match="cannot write the frame cache"):
            load_videos([path], short_side=48, max_frames=3, cache_dir=cache)  # not built yet
