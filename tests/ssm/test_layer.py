"""SelectiveSSM / SSMBlock: forward == step loop == reference backend, chunking, resets, bad input."""

from __future__ import annotations

import pytest
import torch

from streamssm.ssm import SelectiveSSM, SSMBlock
from tests.conftest import assert_rel_close


def _layer(backend="torch", **kw):
    torch.manual_seed(0)
    return SelectiveSSM(16, d_state=8, headdim=4, chunk_size=16, backend=backend, **kw)


def _step_loop(mod, x, state=None):
    ys = []
    for t in range(x.shape[1]):
        y, state = mod.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1), state


@pytest.mark.parametrize("t", [1, 2, 7, 64, 1000])
@pytest.mark.parametrize("with_state", [False, True])
def test_forward_equals_step_equals_ref(t, with_state):
    torch.manual_seed(t)
    m = _layer()
    ref = _layer("ref")
    ref.load_state_dict(m.state_dict())
    x = torch.randn(3, t, 16)
    s0 = torch.randn(3, 4, 4, 8) if with_state else None
    y, s = m(x, s0)
    ys, ss = _step_loop(m, x, s0)
    yr, sr = ref(x, s0)
    assert_rel_close(y, yr, what="forward vs ref")
    assert_rel_close(ys, yr, what="step vs ref")
    assert_rel_close(s, sr, what="state forward vs ref")
    assert_rel_close(ss, sr, what="state step vs ref")


def test_layer_gradients_match_reference():
    m, ref = _layer(), _layer("ref")
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 70, 16)
    m(x)[0].pow(2).sum().backward()
    ref(x)[0].pow(2).sum().backward()
    for (name, p), pr in zip(m.named_parameters(), ref.parameters()):
        assert_rel_close(p.grad, pr.grad, tol=1e-4, what=f"grad {name}")


@pytest.mark.parametrize("chunks", [[1] * 12, [2] * 6, [7, 5], [12]])
def test_chunked_streaming_equals_whole(chunks):
    blk = SSMBlock(16, expand=2, d_state=4, headdim=4, backend="torch")
    torch.nn.init.normal_(blk.out_proj.weight, std=0.1)  # make the block non-trivial
    x = torch.randn(2, 12, 16)
    y, s = blk(x)
    out, st, i = [], None, 0
    for n in chunks:
        yc, st = blk(x[:, i : i + n], st)
        out.append(yc)
        i += n
    assert_rel_close(torch.cat(out, 1), y, what="chunked output")
    assert_rel_close(st, s, what="chunked final state")


def test_block_step_equals_forward():
    blk = SSMBlock(16, expand=2, d_state=4, headdim=4, backend="torch")
    torch.nn.init.normal_(blk.out_proj.weight, std=0.1)
    x = torch.randn(4, 33, 16)
    y, s = blk(x)
    ys, ss = _step_loop(blk, x)
    assert_rel_close(ys, y, what="block step vs forward")
    assert_rel_close(ss, s, what="block state")


def test_causality_of_layer():
    m = _layer()
    x = torch.randn(2, 50, 16)
    y, _ = m(x)
    x2 = x.clone()
    x2[:, 30] = 5.0
    y2, _ = m(x2)
    assert torch.equal(y[:, :30], y2[:, :30])
    assert not torch.allclose(y[:, 30:], y2[:, 30:])


def test_batch_streams_independent():
    m = _layer()
    x = torch.randn(4, 20, 16)
    y, s = m(x)
    for i in range(4):
        yi, si = m(x[i : i + 1])
        assert_rel_close(yi, y[i : i + 1], what=f"stream {i}")
        assert_rel_close(si, s[i : i + 1], what=f"state {i}")


def test_bad_inputs_raise_clear_errors():
    m = _layer()
    with pytest.raises(ValueError, match=r"\(B, T, D\) with D=16"):
        m(torch.randn(2, 16))  # rank 2 to forward
    with pytest.raises(ValueError, match=r"\(B, T, D\) with D=16"):
        m(torch.randn(2, 5, 15))  # wrong width: never broadcast
    with pytest.raises(ValueError, match=r"\(B, D\) with D=16"):
        m.step(torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match=r"expected \(B, H, P, N\)=\(2, 4, 4, 8\)"):
        m(torch.randn(2, 5, 16), torch.zeros(1, 4, 4, 8))  # state of another batch size
    with pytest.raises(ValueError, match=r"expected \(B, H, P, N\)"):
        m.step(torch.randn(2, 16), torch.zeros(2, 4, 4))
    x = torch.randn(2, 5, 16)
    x[1, 3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        m(x)
    with pytest.raises(ValueError, match="backend"):
        SelectiveSSM(8, headdim=2, backend="cuda-magic")
    with pytest.raises(ValueError, match="multiple of headdim"):
        SelectiveSSM(10, headdim=4)


def test_mamba_backend_refused_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the GPU tests cover the mamba backend")
    with pytest.raises(RuntimeError, match="not available"):
        SelectiveSSM(8, headdim=2, backend="mamba")
    assert SelectiveSSM(8, headdim=2, backend="auto").backend.name == "torch"
