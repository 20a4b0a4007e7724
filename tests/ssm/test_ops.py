"""The three execution paths of the SSM recurrence agree: chunked scan, step loop, reference."""

from __future__ import annotations

import pytest
import torch

from streamssm.ssm.ops import ssm_scan, ssm_scan_ref, ssm_step
from tests.conftest import assert_rel_close


def _inputs(b, t, h, p, n, seed=0, dtype=torch.float32, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, h, p, generator=g, dtype=dtype)
    dt = (torch.rand(b, t, h, generator=g) * 0.5 + 0.01).to(dtype)
    A = -(torch.rand(h, generator=g) * 4 + 0.1)
    B = torch.randn(b, t, n, generator=g, dtype=dtype)
    C = torch.randn(b, t, n, generator=g, dtype=dtype)
    D = torch.randn(h, p, generator=g)
    s0 = torch.randn(b, h, p, n, generator=g)
    out = [x, dt, A, B, C, D, s0]
    if requires_grad:
        out = [v.clone().requires_grad_(True) for v in out]
    return out


@pytest.mark.parametrize("t", [1, 2, 7, 64, 1000])
@pytest.mark.parametrize("with_state", [False, True])
def test_scan_equals_ref(t, with_state):
    x, dt, A, B, C, D, s0 = _inputs(3, t, 4, 2, 8, seed=t)
    s0 = s0 if with_state else None
    y, s = ssm_scan(x, dt, A, B, C, D, s0, chunk_size=16)
    yr, sr = ssm_scan_ref(x, dt, A, B, C, D, s0)
    assert_rel_close(y, yr, what="y")
    assert_rel_close(s, sr, what="final state")


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_chunk_size_does_not_change_result(chunk):
    x, dt, A, B, C, D, s0 = _inputs(2, 50, 2, 3, 4, seed=1)
    y, s = ssm_scan(x, dt, A, B, C, D, s0, chunk_size=chunk)
    yr, sr = ssm_scan_ref(x, dt, A, B, C, D, s0)
    assert_rel_close(y, yr, what="y")
    assert_rel_close(s, sr, what="state")


def test_gradients_match_reference():
    args = _inputs(2, 37, 3, 2, 4, seed=2, requires_grad=True)
    args_r = [a.detach().clone().requires_grad_(True) for a in args]
    g = torch.Generator().manual_seed(3)
    wy, ws = torch.randn(2, 37, 3, 2, generator=g), torch.randn(2, 3, 2, 4, generator=g)
    y, s = ssm_scan(*args, chunk_size=8)
    ((y * wy).sum() + (s * ws).sum()).backward()
    yr, sr = ssm_scan_ref(*args_r)
    ((yr * wy).sum() + (sr * ws).sum()).backward()
    for name, a, ar in zip("x dt A B C D s0".split(), args, args_r):
        assert_rel_close(a.grad, ar.grad, tol=1e-4, what=f"grad {name}")


def test_step_does_not_mutate_state():
    x, dt, A, B, C, D, s0 = _inputs(2, 1, 2, 2, 3)
    before = s0.clone()
    _, s1 = ssm_step(x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D, s0)
    assert torch.equal(s0, before)
    assert not torch.equal(s1, s0)


def test_causality():
    x, dt, A, B, C, D, _ = _inputs(2, 40, 2, 2, 4, seed=4)
    y, _ = ssm_scan(x, dt, A, B, C, D, chunk_size=8)
    x2, B2 = x.clone(), B.clone()
    x2[:, 25] += 10.0
    B2[:, 25] -= 3.0
    y2, _ = ssm_scan(x2, dt, A, B2, C, D, chunk_size=8)
    assert torch.equal(y[:, :25], y2[:, :25]), "a future input changed a past output"
    assert not torch.allclose(y[:, 25:], y2[:, 25:])


def test_bf16_inputs_stay_close():
    x, dt, A, B, C, D, s0 = _inputs(2, 100, 2, 2, 4, seed=5)
    y, _ = ssm_scan(x.bfloat16(), dt, A, B.bfloat16(), C.bfloat16(), D, s0)
    assert y.dtype == torch.bfloat16
    yr, _ = ssm_scan_ref(x, dt, A, B, C, D, s0)
    assert_rel_close(y.float(), yr, dtype=torch.bfloat16, tol=2e-2, what="bf16 vs fp32")


@pytest.mark.parametrize(
    "bad",
    [
        dict(x=torch.zeros(2, 5, 3)),  # wrong rank
        dict(dt=torch.zeros(2, 5)),  # dt missing the head dim
        dict(A=torch.zeros(3)),  # wrong head count
        dict(B=torch.zeros(2, 4, 4)),  # B wrong T
    ],
)
def test_shape_errors(bad):
    x, dt, A, B, C, D, _ = _inputs(2, 5, 2, 2, 4)
    kw = dict(x=x, dt=dt, A=A, B=B, C=C, D=D)
    kw.update(bad)
    with pytest.raises(ValueError, match=r"must be"):
        ssm_scan(**kw)


@pytest.mark.parametrize("t,chunk", [(1, 4), (9, 4), (50, 8), (64, 16)])
def test_resets_exact(t, chunk):
    """A reset mid-clip (scene cut) equals restarting the stream: scan == ref == two separate scans."""
    x, dt, A, B, C, D, s0 = _inputs(3, t, 2, 2, 4, seed=10 + t)
    g = torch.Generator().manual_seed(t)
    reset = torch.rand(3, t, generator=g) < 0.15
    reset[0, 0] = True  # a reset at t=0 drops the initial state
    y, s = ssm_scan(x, dt, A, B, C, D, s0, chunk_size=chunk, reset=reset)
    yr, sr = ssm_scan_ref(x, dt, A, B, C, D, s0, reset=reset)
    assert_rel_close(y, yr, what="y with resets")
    assert_rel_close(s, sr, what="state with resets")
    # stream 1 split by hand at its resets
    b = 1
    cuts = [0] + [i for i in range(1, t) if reset[b, i]] + [t]
    state = None if reset[b, 0] else s0[b : b + 1]
    for i0, i1 in zip(cuts[:-1], cuts[1:]):
        if i0 > 0:
            state = None
        if i1 == i0:
            continue
        yi, state = ssm_scan(x[b : b + 1, i0:i1], dt[b : b + 1, i0:i1], A, B[b : b + 1, i0:i1], C[b : b + 1, i0:i1], D, state, chunk)
        assert_rel_close(yi, y[b : b + 1, i0:i1], what=f"segment {i0}:{i1}")
