"""Stream: per-stream reset, snapshot/restore, isolation."""

from __future__ import annotations

import pytest
import torch

from streamssm.ssm import SSMBlock
from streamssm.stream import Stream


@pytest.fixture
def block():
    torch.manual_seed(0)
    blk = SSMBlock(8, expand=2, d_state=4, headdim=2, backend="torch")
    torch.nn.init.normal_(blk.out_proj.weight, std=0.2)
    return blk


def test_stream_matches_explicit_step(block):
    s = Stream(block, batch=3)
    x = torch.randn(10, 3, 8)
    st = None
    for t in range(10):
        y_explicit, st = block.step(x[t], st)
        assert torch.equal(s.step(x[t]), y_explicit)


def test_reset_one_stream_leaves_others(block):
    x = torch.randn(12, 3, 8)
    a, b = Stream(block, batch=3), Stream(block, batch=3)
    fresh = Stream(block, batch=1)
    for t in range(12):
        if t == 6:
            a.reset(torch.tensor([False, True, False]))
        ya, yb = a.step(x[t]), b.step(x[t])
        assert torch.equal(ya[[0, 2]], yb[[0, 2]]), "reset of stream 1 touched streams 0/2"
        if t >= 6:
            yf = fresh.step(x[t, 1:2])
            assert torch.allclose(ya[1:2], yf, atol=1e-6), "reset stream does not restart cleanly"
    assert not torch.allclose(a.state[1], b.state[1])


def test_snapshot_restore(block):
    s = Stream(block, batch=2)
    for _ in range(5):
        s.step(torch.randn(2, 8))
    snap = s.get_state()
    x = torch.randn(4, 2, 8)
    first = [s.step(x[i]) for i in range(4)]
    s.set_state(snap)
    second = [s.step(x[i]) for i in range(4)]
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="shape"):
        s.set_state(torch.zeros(3, 4, 2, 4))
    with pytest.raises(ValueError, match=r"shape \(B,\)=\(2,\)"):
        s.reset(torch.tensor([True]))


def test_stream_wraps_the_shipped_models():
    """The models' state depends on the stream's size: Stream takes it as dims, says so when it is missing, and
    steps as the explicit ``model.step(x, ..., state=)`` does."""
    from streamssm.export._spec import load_model

    pose = load_model("pose")
    for wrong in ((), (17, 2)):  # none, or too many
        with pytest.raises(ValueError, match=r"dims=\(K,\) for the pose model"):
            Stream(pose, batch=2, dims=wrong)
    with pytest.raises(ValueError, match=r"dims=\(H, W\) for the video model"):
        Stream(load_model("video"), batch=1, dims=(72,))
    s = Stream(pose, batch=2, dims=(17,))
    x = torch.rand(2, 17, 2)
    want, _ = pose.step(x, state=pose.init_state(2, 17), fps=30.0)
    assert torch.equal(s.step(x, fps=30.0), want)
    video = load_model("video")
    v = Stream(video, batch=1, dims=(64, 64))
    frame = torch.rand(1, 3, 64, 64)
    want, _ = video.step(frame, frame, state=video.init_state(1, 64, 64))
    assert torch.equal(v.step(frame, frame), want)


def test_reset_mask_must_cover_every_stream(block):
    s = Stream(block, batch=2)
    from streamssm.stream import kept_streams, reset_state

    with pytest.raises(ValueError, match="one entry per stream"):
        reset_state(s.state, s._fresh(), torch.tensor([True]))
    with pytest.raises(ValueError, match="int or a list of ints"):
        kept_streams(1.5, 2)
    assert kept_streams([], 3) == [0, 1, 2]  # nothing to drop


def test_stream_keeps_the_plain_step_x_state_contract():
    """A module of one's own with ``init_state(batch, device)`` and ``step(x, h)`` (no parameter named state)
    still gets the state second, positionally."""
    class Acc:
        def init_state(self, batch, dev):
            return torch.zeros(batch, device=dev)

        def step(self, x, h):
            h = h + x
            return h, h

    s = Stream(Acc(), batch=2)
    s.step(torch.ones(2))
    assert torch.equal(s.step(torch.ones(2)), torch.full((2,), 2.0))


def test_stream_steps_without_autograd(block):
    """Stream is for inference: a state that kept its autograd graph would grow it every step (memory without
    bound) and its outputs could not go to numpy."""
    s = Stream(block, batch=2)
    for _ in range(3):
        y = s.step(torch.randn(2, 8))
    assert not y.requires_grad and all(t.grad_fn is None for t in torch.utils._pytree.tree_leaves(s.state))


def test_reset_mask_of_indices_is_refused(block):
    s = Stream(block, batch=3)
    with pytest.raises(ValueError, match="booleans, one per stream.*drop_streams"):
        s.reset([0, 2])  # would read as [False, True, True]


def test_filter_state_pickles_with_its_timeline(tmp_path):
    import copy
    import pickle

    from streamssm.stream import FilterState

    st = FilterState((torch.ones(2), torch.zeros(1, 3)), last_timestamp=1.5, dims=2)
    torch.save(st, tmp_path / "s.pt")
    for back in (torch.load(tmp_path / "s.pt"), pickle.loads(pickle.dumps(st)), copy.deepcopy(st)):
        assert isinstance(back, FilterState) and isinstance(back, tuple)
        assert (back.last_timestamp, back.dims, len(back)) == (1.5, 2, 2) and torch.equal(back[1], st[1])


def test_model_step_with_the_state_second_says_to_pass_it_by_keyword():
    from streamssm.export._spec import load_model

    pose = load_model("pose")
    x = torch.rand(1, 17, 2)
    _, st = pose.step(x)
    with pytest.raises(TypeError, match="as its confidence: pass the state by keyword"):
        pose.step(x, st)
    video = load_model("video")
    frame = torch.rand(1, 3, 32, 32)
    _, st = video.step(frame)
    with pytest.raises(TypeError, match="as its original frame I: pass the state by keyword"):
        video.step(frame, st)


def test_filters_refuse_a_mask_of_indices_before_the_first_frame_too():
    """VideoFilter().reset([0, 2, 5]) and PoseFilter().reset([0, 2, 5]) were accepted before the first frame (nothing
    to reset) though refused mid-stream; refused either way now. Booleans are fine before the first frame (there is
    no B yet to check their count against), as long as they are one row."""
    import numpy as np

    from streamssm import PoseFilter, VideoFilter
    from streamssm.stream import as_reset_mask

    for f in (VideoFilter(device="cpu"), PoseFilter(device="cpu")):
        with pytest.raises(ValueError, match="booleans, one per stream.*drop_streams"):
            f.reset([0, 2, 5])
        with pytest.raises(ValueError, match="shape \\(B,\\), one boolean per stream"):
            f.reset([[True, False]])
        f.reset([True, False])
        assert f.state is None
    v = VideoFilter(device="cpu")
    v.step(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="booleans"):
        v.reset([0, 2, 5])
    assert as_reset_mask([True, False], None).tolist() == [True, False]


@pytest.mark.parametrize("mask", ["abc", [None, True], [[1.5, "x"]]])
def test_a_mask_torch_cannot_read_is_refused_naming_the_mask(mask):
    """reset("abc") raised torch's "can't convert np.ndarray of type numpy.str_", naming neither reset nor its
    mask. Anything but booleans is refused as a mask of indices is, for the pose and video filters alike."""
    from streamssm import PoseFilter, VideoFilter

    for f in (PoseFilter(device="cpu"), VideoFilter(device="cpu")):
        with pytest.raises(ValueError, match="reset mask must be booleans, one per stream"):
            f.reset(mask)


@pytest.mark.parametrize("batch", [1.5, "2", True, 0])
def test_stream_batch_must_be_a_whole_number(block, batch):
    """Stream(module, batch=1.5) blamed missing stream sizes (its first state failed to build); the batch is checked
    first now, by name."""
    with pytest.raises(ValueError, match="batch must be a whole number of streams >= 1"):
        Stream(block, batch=batch)
