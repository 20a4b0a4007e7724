"""The native C pose step (streamssm/pose/native.py) against its reference, PoseSSM.step."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from streamssm.pose import native
from streamssm.pose.filter import PoseFilter, load_pose_model
from streamssm.pose.model import PoseSSM, PoseSSMConfig

SHIPPED = load_pose_model(None, "cpu", "torch")
_ok, _why = native.native_available(SHIPPED)
needs_native = pytest.mark.skipif(not _ok, reason=f"native pose step unavailable (no working C compiler?): {_why[:200]}")


def _hostile_stream(t: int, b: int, k: int, d: int, seed: int = 0):
    """Moving points with every kind of missing data the step has rules for."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(b, k, d, generator=g) * 40 + 300
    xs, cs = [], []
    for i in range(t):
        x = base + torch.randn(b, k, d, generator=g) * 2 + i * torch.linspace(-2, 2, b)[:, None, None]
        c = torch.rand(b, k, generator=g)
        c[c < 0.1] = 0  # confidence 0 = missing
        x[0, min(3, k - 1)] = float("nan")  # one joint never seen in stream 0
        if i % 7 == 3 and b > 1:
            x[1] = float("nan")  # whole empty frames: hold the last output
        if i < 4 and b > 2:
            x[2] = float("nan")  # a stream that starts empty
        if i == 10:
            c[:, 0] = float("inf")  # non-finite confidence = missing
            x[:, 1, 0] = float("inf")
        xs.append(x)
        cs.append(c)
    return xs, cs


def _run_both(model, xs, cs, fps, strength):
    st_ref = st_nat = None
    worst = 0.0
    for x, c in zip(xs, cs):
        with torch.no_grad():
            y_ref, st_ref = model.step(x, c, st_ref, fps=fps, strength=strength)
        y_nat, st_nat = native.native_step(model, x, c, st_nat, fps=fps, strength=strength)
        assert torch.equal(torch.isnan(y_ref), torch.isnan(y_nat)), "missing joints differ"
        worst = max(worst, float((y_ref - y_nat).nan_to_num().abs().max()))
    return worst, st_ref, st_nat


@needs_native
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("k", [5, 17, 33])
def test_native_step_matches_reference(d, k):
    b = 4
    xs, cs = _hostile_stream(120, b, k, d, seed=k + d)
    fps = torch.tensor([30.0, 25.0, 60.0, 24.0])
    worst, st_ref, st_nat = _run_both(SHIPPED, xs, cs, fps, strength=0.8)
    # points ~300 px: fp32 spacing 3e-5; the C step sums in another order (and with its own exp)
    assert worst < 2e-3, f"native vs PoseSSM.step: largest difference {worst:.2e} px"
    for i, (a, n) in enumerate(zip(st_ref, st_nat)):
        assert a.shape == n.shape
        assert float((a - n).abs().max()) < 2e-3 * max(1.0, float(a.abs().max())), f"state[{i}] differs"


@needs_native
def test_native_step_other_network_size():
    """The sizes are compile-time constants: another preset builds its own library and still matches."""
    torch.manual_seed(0)
    model = PoseSSM(PoseSSMConfig.preset("tiny", backend="torch")).eval()
    with torch.no_grad():  # a random network whose correction is not zero (head and out_proj start at zero)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    xs, cs = _hostile_stream(60, 3, 17, 2, seed=5)
    worst, _, _ = _run_both(model, xs, cs, 30.0, strength=1.0)
    with torch.no_grad():
        moved = float((model.step(xs[5], cs[5])[0] - xs[5]).nan_to_num().abs().max())
    assert moved > 1e-2, "the random network should change the points"
    assert worst < 2e-3, f"native vs PoseSSM.step (tiny preset): largest difference {worst:.2e} px"


@needs_native
def test_native_pose_step_lane_state_equals_explicit_state():
    """NativePoseStep (state kept in the kernel's lane layout) == native_step (PoseSSM's layout), bit for bit."""
    xs, cs = _hostile_stream(40, 3, 33, 2, seed=9)
    fast = native.NativePoseStep(SHIPPED, 3, 33, 2, threads=2)
    fast.set_fps(torch.tensor([30.0, 30.0, 50.0]))
    st = None
    for x, c in zip(xs, cs):
        y_fast = fast.step(x, c)
        y_ref, st = native.native_step(SHIPPED, x, c, st, fps=torch.tensor([30.0, 30.0, 50.0]))
        assert torch.equal(y_fast.nan_to_num(), y_ref.nan_to_num())
    for a, b in zip(fast.state, st):
        assert torch.equal(a, b)
    fast.reset()
    assert all(float(s.abs().max()) == 0 for s in fast.state)
    assert isinstance(fast.step(xs[0].numpy()), np.ndarray)  # numpy in, numpy out


@needs_native
def test_native_batched_streams_equal_each_alone():
    """Each stream is computed on its own (no batched matmul): batched == alone bit for bit, any thread split."""
    xs, cs = _hostile_stream(30, 5, 21, 3, seed=2)
    batched = native.NativePoseStep(SHIPPED, 5, 21, 3, threads=2)
    alone = [native.NativePoseStep(SHIPPED, 1, 21, 3, threads=1) for _ in range(5)]
    for x, c in zip(xs, cs):
        y = batched.step(x, c)
        for i, f in enumerate(alone):
            assert torch.equal(f.step(x[i : i + 1], c[i : i + 1]).nan_to_num(), y[i : i + 1].nan_to_num())


@needs_native
def test_posefilter_uses_native_on_cpu_and_matches_torch():
    x = (np.random.default_rng(0).normal(size=(50, 33, 2)) * 3).cumsum(0).astype(np.float32) + 300
    f_native, f_torch = PoseFilter(device="cpu"), PoseFilter(device="cpu", native=False)
    assert f_native.native and not f_torch.native
    y_n = np.stack([f_native.step(p) for p in x])
    y_t = np.stack([f_torch.step(p) for p in x])
    np.testing.assert_allclose(y_n, y_t, rtol=0, atol=2e-3)
    f_native.reset()
    np.testing.assert_allclose(f_native.filter(x), y_t, rtol=0, atol=2e-3)  # the scan, too


def test_no_compiler_falls_back_with_a_reason(monkeypatch, caplog):
    monkeypatch.setattr(native, "_compiler", lambda: None)
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setattr(native, "_failed", {})
    ok, why = native.native_available(SHIPPED)
    assert not ok and "no C compiler" in why
    with caplog.at_level(logging.INFO, logger="streamssm"):
        f = PoseFilter(device="cpu")
    assert not f.native and "native pose step unavailable" in caplog.text
    assert f.step(np.ones((33, 2), np.float32)).shape == (33, 2)  # the PyTorch step runs
    with pytest.raises(RuntimeError, match="no C compiler"):
        PoseFilter(device="cpu", native=True)
    with pytest.raises(ValueError, match="native=True needs"):
        PoseFilter(device="cpu", native=True, compile=True)


def test_build_error_names_the_command(monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMSSM_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setattr(native, "_failed", {})
    monkeypatch.setattr(native, "CFLAGS", native.CFLAGS + ("-include", str(tmp_path / "missing.h")))
    if native._compiler() is None:
        pytest.skip("no C compiler on this machine")
    ok, why = native.native_available(SHIPPED)
    assert not ok and "building the native pose step failed" in why and "native_step.c" in why
    assert not list(tmp_path.rglob("*.so")), "a failed build must leave no library behind"


@needs_native
def test_native_step_leaves_the_given_state_untouched():
    """Explicit state in, new state out: the caller's state tensors are not written (snapshots stay valid)."""
    xs, cs = _hostile_stream(12, 2, 33, 2, seed=4)
    st = None
    for x, c in zip(xs[:6], cs[:6]):
        _, st = native.native_step(SHIPPED, x, c, st)
    snap = tuple(s.clone() for s in st)
    y1, st1 = native.native_step(SHIPPED, xs[6], cs[6], st)
    assert all(torch.equal(a, b) for a, b in zip(st, snap)), "native_step wrote into the state it was given"
    y2, _ = native.native_step(SHIPPED, xs[6], cs[6], snap)
    assert torch.equal(y1.nan_to_num(), y2.nan_to_num())
    assert not all(torch.equal(a, b) for a, b in zip(st1, snap))


def test_unwritable_cache_falls_back_with_a_reason(monkeypatch, tmp_path):
    if native._compiler() is None:
        pytest.skip("no C compiler on this machine")
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should go")
    monkeypatch.setenv("STREAMSSM_CACHE", str(blocker))
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setattr(native, "_failed", {})
    ok, why = native.native_available(SHIPPED)
    assert not ok and "STREAMSSM_CACHE" in why
    assert not PoseFilter(device="cpu").native
