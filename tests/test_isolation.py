"""Isolation of batched streams (issue 8): B streams in one step never influence each other.

What is bit-exact and what is not (measured, fp32 on CPU with MKL/oneDNN): a stream's outputs are
bit-identical whatever the *other* streams of the batch contain, for a given B; resetting, adding or
dropping a stream leaves the others' state bit-identical. Against the same stream run alone (B = 1) the
outputs agree only to fp32 rounding (~1e-7 relative): the matmul/conv kernels choose their blocking,
hence the order of the sums, from the number of rows (B x K keypoints, B x grid cells), so changing B
changes the last bit. ``torch.nn.Linear`` alone shows it: rows of an (M, 64) @ (64, 128) product
differ in the last bit between M = 1 and M = 2, and are identical for a fixed M whatever the other rows.
So the tests below check bit-identity where the batch size is the same, and fp32 closeness across batch
sizes.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from streamssm import PoseFilter, VideoFilter
from tests.conftest import assert_rel_close

T = 14


def _poses(t=T, b=4, k=17, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(1, b, k, 2)) * 80 + 300
    return (base + np.cumsum(rng.normal(size=(t, b, k, 2)) * 3, 0)).astype(np.float32)


def _hostile(x: np.ndarray, keep: int, seed=1) -> np.ndarray:
    """The same batch with every stream but ``keep`` replaced by garbage: huge values, NaN, inf, missing
    frames, a different body size."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=x.shape).astype(np.float32) * 1e6
    y[:, :, ::3] = np.nan
    y[2::3] = np.inf
    y[5] = np.nan  # a whole frame missing for everyone else
    y[:, keep] = x[:, keep]
    return y


def _step_all(f: PoseFilter, x: np.ndarray) -> np.ndarray:
    return np.stack([f.step(x[i]) for i in range(len(x))])


# ------------------------------------------------------------------------------------------ pose
@pytest.mark.parametrize("path", ["step", "filter"])
def test_pose_stream_is_bit_identical_whatever_the_other_streams_hold(path):
    x = _poses()
    keep = 1
    run = (lambda f, s: _step_all(f, s)) if path == "step" else (lambda f, s: f.filter(s))
    a = run(PoseFilter(device="cpu"), x)
    b = run(PoseFilter(device="cpu"), _hostile(x, keep))
    np.testing.assert_array_equal(a[:, keep], b[:, keep])
    assert np.isfinite(a[:, keep]).all()


def test_pose_batched_equals_each_stream_alone_to_fp32_rounding():
    x = _poses()
    batched = _step_all(PoseFilter(device="cpu"), x)
    for s in range(x.shape[1]):
        alone = _step_all(PoseFilter(device="cpu"), x[:, s])
        assert_rel_close(torch.from_numpy(batched[:, s]), torch.from_numpy(alone), what=f"stream {s} batched vs alone")


def test_pose_reset_of_one_stream_leaves_the_others_bit_identical():
    x = _poses()
    f, ref = PoseFilter(device="cpu"), PoseFilter(device="cpu")
    out, ref_out = [], []
    for t in range(T):
        if t == 6:
            before = f.get_state()
            f.reset([False, False, True, False])
            after = f.get_state()
            for s0, s1 in zip(before, after):
                assert torch.equal(s0[[0, 1, 3]], s1[[0, 1, 3]])
        out.append(f.step(x[t]))
        ref_out.append(ref.step(x[t]))
    out, ref_out = np.stack(out), np.stack(ref_out)
    np.testing.assert_array_equal(out[:, [0, 1, 3]], ref_out[:, [0, 1, 3]])
    # the reset stream restarted: bit-identical to a stream that starts at t = 6 in a batch of the same size
    fresh = PoseFilter(device="cpu")
    late = _step_all(fresh, x[6:])
    np.testing.assert_array_equal(out[6:, 2], late[:, 2])


def test_pose_adding_and_dropping_streams_leaves_the_others_untouched():
    x = _poses(b=3)
    new = _poses(b=1, seed=5)[:, 0]
    f = PoseFilter(device="cpu")
    _step_all(f, x[:6])
    before = f.get_state()
    f.add_streams(1)
    after = f.get_state()
    for s0, s1 in zip(before, after):
        assert torch.equal(s0, s1[:3]), "add_streams changed a running stream's state"
        assert not s1[3].any(), "the new stream does not start fresh"
    y = _step_all(f, np.concatenate([x[6:], new[6:, None]], 1))
    # the added stream: bit-identical to a stream starting at t = 6 in a batch of 4 (isolation, same B)
    ref = _step_all(PoseFilter(device="cpu"), np.concatenate([_hostile(x[6:], 0), new[6:, None]], 1))
    np.testing.assert_array_equal(y[:, 3], ref[:, 3])
    # the running streams: their states were kept bit for bit; their outputs move by B's rounding only
    cont = PoseFilter(device="cpu")
    _step_all(cont, x[:6])
    y3 = _step_all(cont, x[6:])
    assert_rel_close(torch.from_numpy(y[:, :3]), torch.from_numpy(y3), what="after add_streams")

    before = f.get_state()
    f.drop_streams(1)
    after = f.get_state()
    for s0, s1 in zip(before, after):
        assert torch.equal(s0[[0, 2, 3]], s1)
    assert f.step(x[0, :3]).shape == (3, 17, 2)
    with pytest.raises(ValueError, match="out of range"):
        f.drop_streams(7)


# ----------------------------------------------------------------------------------------- video
# Both ways the filter can step on the CPU: its default, and the model's own step (the GPU's path),
# where the filter offers the choice.
VIDEO_PATHS = [{}] + ([{"fast": False}] if "fast" in inspect.signature(VideoFilter).parameters else [])
VIDEO_IDS = ["default"] + (["model-step"] if len(VIDEO_PATHS) > 1 else [])


def _clip(t=6, b=3, h=48, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    I = torch.rand(t, b, 3, h, w, generator=g)
    gain = 0.8 + 0.4 * torch.rand(t, b, 1, 1, 1, generator=g)
    return (I * gain).clamp(0, 1), I


def _vstep(f: VideoFilter, P, I) -> torch.Tensor:
    return torch.stack([f.step(P[t], I[t]) for t in range(len(P))])


@pytest.mark.parametrize("kw", VIDEO_PATHS, ids=VIDEO_IDS)
def test_video_stream_is_bit_identical_whatever_the_other_streams_hold(kw):
    P, I = _clip()
    P2, I2 = P.clone(), I.clone()
    P2[:, [0, 2]] = torch.rand_like(P2[:, [0, 2]]) * 5 - 2  # out of range: clamped
    P2[3, 0] = float("nan")  # NaN: sanitised, never reaches another stream (nor this one's state)
    I2[:, 2] = 0.0
    a = _vstep(VideoFilter(device="cpu", **kw), P, I)
    b = _vstep(VideoFilter(device="cpu", **kw), P2, I2)
    assert torch.equal(a[:, 1], b[:, 1])
    assert torch.isfinite(b).all()


@pytest.mark.parametrize("kw", VIDEO_PATHS, ids=VIDEO_IDS)
def test_video_batched_equals_each_stream_alone_to_fp32_rounding(kw):
    P, I = _clip(b=2)
    batched = _vstep(VideoFilter(device="cpu", **kw), P, I)
    for s in range(2):
        alone = _vstep(VideoFilter(device="cpu", **kw), P[:, s : s + 1], I[:, s : s + 1])
        assert_rel_close(batched[:, s : s + 1], alone, what=f"video stream {s} batched vs alone")


@pytest.mark.parametrize("kw", VIDEO_PATHS, ids=VIDEO_IDS)
def test_video_reset_add_drop_leave_the_others_untouched(kw):
    P, I = _clip(t=8)
    f, ref = VideoFilter(device="cpu", **kw), VideoFilter(device="cpu", **kw)
    out, ref_out = [], []
    for t in range(8):
        if t == 4:
            f.reset([True, False, False])
        out.append(f.step(P[t], I[t]))
        ref_out.append(ref.step(P[t], I[t]))
    out, ref_out = torch.stack(out), torch.stack(ref_out)
    assert torch.equal(out[:, 1:], ref_out[:, 1:])
    fresh = _vstep(VideoFilter(device="cpu", **kw), P[4:], I[4:])
    assert torch.equal(out[4:, 0], fresh[:, 0])

    before = f.get_state()
    f.add_streams(2)
    f.drop_streams([0])
    after = f.get_state()
    for s0, s1 in zip(before, after):
        assert torch.equal(s0[1:], s1[:2]) and not s1[2:].any()
    assert f.step(torch.rand(4, 3, 48, 64)).shape == (4, 3, 48, 64)
    with pytest.raises(ValueError, match=r"shape \(B,\)=\(4,\)"):
        f.reset([True])
