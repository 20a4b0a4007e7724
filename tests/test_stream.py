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
