"""GPU-only checks (run on a CUDA machine: ``pytest -m gpu``): the fused mamba backend equals the torch
backend, forward and step, fp32 and bf16, with the caller's state untouched."""

from __future__ import annotations

import pytest
import torch

from streamssm.ssm import SelectiveSSM
from streamssm.ssm.ops import ssm_scan, ssm_step
from tests.conftest import assert_rel_close

pytestmark = pytest.mark.gpu

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _mamba():
    from streamssm.ssm import _mamba

    ok, why = _mamba.available()
    if not ok:
        pytest.skip(f"mamba-ssm Triton kernels unavailable: {why}")
    return _mamba


def _inputs(b, t, h, p, n, dtype):
    g = torch.Generator().manual_seed(0)
    f = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    x, B, C = f(b, t, h, p), f(b, t, n), f(b, t, n)
    dt = torch.rand(b, t, h, generator=g) * 0.2 + 0.01
    A = -(torch.rand(h, generator=g) * 4 + 0.5)
    D, s0 = f(h, p), f(b, h, p, n)
    cu = lambda v, d=torch.float32: v.cuda().to(d)  # noqa: E731
    return cu(x, dtype), cu(dt), cu(A), cu(B, dtype), cu(C, dtype), cu(D), cu(s0)


@needs_cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("t", [1, 7, 300])
def test_mamba_scan_matches_torch(dtype, tol, t):
    m = _mamba()
    x, dt, A, B, C, D, s0 = _inputs(4, t, 4, 16, 16, dtype)
    y, s = m.mamba_scan(x, dt, A, B, C, D, s0, 64)
    yr, sr = ssm_scan(x.float(), dt, A, B.float(), C.float(), D, s0, 64)
    assert_rel_close(y.float(), yr, tol=tol, what="y")
    assert_rel_close(s, sr, tol=tol, what="state")


@needs_cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_mamba_step_matches_torch_and_keeps_state(dtype, tol):
    m = _mamba()
    x, dt, A, B, C, D, s0 = _inputs(70000, 1, 2, 8, 16, dtype)  # > 65,535 rows: the grid-limit slicing
    before = s0.clone()
    y, s = m.mamba_step(x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D, s0)
    yr, sr = ssm_step(x[:, 0].float(), dt[:, 0], A, B[:, 0].float(), C[:, 0].float(), D, s0)
    assert torch.equal(s0, before), "the kernel mutated the caller's state"
    assert_rel_close(y.float(), yr, tol=tol, what="y")
    assert_rel_close(s, sr, tol=tol, what="state")


@needs_cuda
def test_layer_backends_agree_on_gpu():
    _mamba()
    torch.manual_seed(0)
    a = SelectiveSSM(64, d_state=16, headdim=16, backend="mamba").cuda()
    b = SelectiveSSM(64, d_state=16, headdim=16, backend="torch").cuda()
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 200, 64, device="cuda")
    ya, sa = a(x)
    yb, sb = b(x)
    assert_rel_close(ya, yb, tol=1e-4, what="forward")
    steps = []
    st = None
    for t in range(20):
        y, st = a.step(x[:, t], st)
        steps.append(y)
    assert_rel_close(torch.stack(steps, 1), yb[:, :20], tol=1e-4, what="step vs forward")
