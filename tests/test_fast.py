"""streamssm.fast: the fixed-shape fast paths (autocast, torch.compile, CUDA graphs) against the eager ``step``.

CPU tests: the fallback (no graph, no compile) equals the eager step bit for bit, state, reset, shape changes,
the uint8 paths and the host-constant cache. GPU tests (``pytest -m gpu``): graph-only, compiled + graph in fp32
and fp16, the uint8 pipeline and the pose graph, each over several steps against the eager step of the same model.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from streamssm.fast import FastPoseStep, FastVideoStep, FrozenHostConstants
from streamssm.pose.model import PoseSSM, PoseSSMConfig
from streamssm.video.filter import float_to_frame, frame_to_float
from streamssm.video.model import VideoSSM, VideoSSMConfig
from tests.conftest import assert_rel_close, rel_err
from tests.export._streams import perturbed, pose_frames

STEPS = 10
# torch.compile reorders the per-cell moments; the one-pass covariance (E[GG] - E[G]E[G]) and the 3x3 ridge
# solve of VideoSSM.cell_stats amplify that reordering into the SSM state (measured 1e-4 on CPU Inductor for
# outputs within 3e-5), so the compiled fp32 state gets a looser bound than the output the user sees.
FAST_TOL = {torch.float32: 1e-4, torch.float16: 2e-2}
COMPILED_STATE_TOL = {torch.float32: 1e-3, torch.float16: 2e-2}

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run with -m gpu on the device)")


def clip(b: int, h: int, w: int, steps: int = STEPS, seed: int = 0, cut: bool = True) -> list[tuple]:
    """(processed, original) pairs: a smooth textured scene drifting one pixel per frame, processed with a
    flickering colour gain, and (``cut``) a scene cut at 2/3 so the reset path runs too."""
    g = torch.Generator().manual_seed(seed)

    def scene():
        lo = torch.rand(b, 3, (h + steps) // 8 + 2, (w + steps) // 8 + 2, generator=g)
        big = F.interpolate(lo, scale_factor=8, mode="bicubic", align_corners=False)
        return (big + 0.1 * torch.rand(big.shape, generator=g)).clamp(0, 1)

    scenes = [scene(), scene()]
    out = []
    for t in range(steps):
        I = scenes[cut and t >= 2 * steps // 3][..., t : t + h, t : t + w].contiguous()
        gain = 1 + 0.1 * torch.randn(b, 3, 1, 1, generator=g)
        out.append(((I * gain + 0.02 * torch.randn(b, 3, 1, 1, generator=g)).clamp(0, 1), I))
    return out


def video_model(backend: str = "torch", small: bool = True) -> VideoSSM:
    cfg = VideoSSMConfig(d_model=16, n_layers=1, backend=backend) if small else VideoSSMConfig(backend=backend)
    torch.manual_seed(0)
    return perturbed(VideoSSM(cfg))


def eager_video(model, frames, guided=True, strength=1.0, dtype=torch.float32, device="cpu"):
    outs, state = [], None
    amp = dtype != torch.float32
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=amp and device != "cpu"):
        for P, I in frames:
            O, state = model.step(P.to(device), I.to(device) if guided else None, state, strength)
            outs.append(O.float())
    return outs, state


def assert_state_close(got, want, tol, what):
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        if float(b.norm()) == 0.0:
            assert float(a.norm()) <= 1e-6, f"{what}: state[{i}] should be zero"
        else:
            assert_rel_close(a.float(), b.float(), tol=tol, what=f"{what}: state[{i}]")


# ------------------------------------------------------------------------------------------- CPU
@pytest.mark.parametrize("guided", [True, False])
def test_cpu_fallback_equals_eager_exactly(guided):
    m = video_model()
    frames = clip(2, 72, 128, steps=6)
    want, want_state = eager_video(m, frames, guided, strength=0.7)
    fast = FastVideoStep(m, 72, 128, batch=2, guided=guided, dtype=torch.float32, compile=False, strength=0.7)
    assert not fast.cuda_graph  # no graph on a CPU model, whatever was asked
    for (P, I), O in zip(frames, want):
        assert torch.equal(fast.step(P, I if guided else None), O)
    for a, b in zip(fast.get_state(), want_state):
        assert torch.equal(a, b)


def test_cpu_state_reset_set_state_and_strength():
    m = video_model()
    frames = clip(1, 64, 96, steps=4)
    fast = FastVideoStep(m, 64, 96, dtype=torch.float32, compile=False)
    for P, I in frames[:2]:
        fast.step(P, I)
    snap = fast.get_state()
    a = [fast.step(P, I) for P, I in frames[2:]]
    fast.set_state(snap)
    b = [fast.step(P, I) for P, I in frames[2:]]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    fast.reset()
    fast.set_strength(0.3)
    want, _ = eager_video(m, frames, strength=0.3)
    assert all(torch.equal(fast.step(P, I), O) for (P, I), O in zip(frames, want))
    with pytest.raises(ValueError):
        fast.set_strength(3.0)
    with pytest.raises(ValueError):
        fast.set_state(snap[:-1])


def test_cpu_step_refuses_integer_frames_and_set_state_refuses_foreign_states():
    """step() took a uint8 (B, 3, H, W) tensor, copied it into the float buffers as 0..255 and returned near-white
    frames; set_state() took an integer state or a NaN one (the stream NaN from then on). Both are refused now, as
    VideoSSM.step and the filters' set_state refuse them, and the stream is as it was. Other float dtypes are taken,
    converted: the parallel scan under fp16 autocast gives some of its state in float16, and a filter() then step()
    on CUDA hands that state to the graph's buffers."""
    m = video_model()
    frames = clip(1, 64, 96, steps=3)
    fast = FastVideoStep(m, 64, 96, dtype=torch.float32, compile=False)
    fast.step(*frames[0])
    snap = fast.get_state()
    P, I = frames[1]
    with pytest.raises(ValueError, match="P \\(processed frames\\) must be floating point.*torch.uint8"):
        fast.step((P * 255).to(torch.uint8), I)
    with pytest.raises(ValueError, match="I \\(original frames\\) must be floating point"):
        fast.step(P, (I * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="state\\[0\\] is torch.int32, expected floating point \\(torch.float32\\)"):
        fast.set_state(tuple(s.int() for s in snap))
    nan = list(snap)
    nan[3] = torch.full_like(nan[3], float("nan"))
    with pytest.raises(ValueError, match="NaN or inf"):
        fast.set_state(nan)
    with pytest.raises(ValueError, match="does not match this stream's shapes"):
        fast.set_state([s.numpy() for s in snap])
    assert all(torch.equal(a, b) for a, b in zip(fast.state, snap))
    fast.set_state(tuple(s.double() for s in snap))  # converted as copied: the same values
    assert all(torch.equal(a, b) and a.dtype == torch.float32 for a, b in zip(fast.state, snap))
    want, _ = eager_video(m, frames)
    assert torch.equal(fast.step(P, I), want[1])


def test_cpu_shape_change_starts_a_new_stream():
    m = video_model()
    fast = FastVideoStep(m, 64, 96, dtype=torch.float32, compile=False)
    for P, I in clip(1, 64, 96, steps=3):
        fast.step(P, I)
    frames = clip(2, 80, 112, steps=3, seed=1)
    want, _ = eager_video(m, frames)
    with pytest.warns(RuntimeWarning, match="starts over"):
        got = [fast.step(P, I) for P, I in frames]
    assert fast.key == (2, 80, 112, True)
    assert all(torch.equal(x, y) for x, y in zip(got, want))


def _to_u8(x: torch.Tensor) -> np.ndarray:
    return (x.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)


def test_cpu_uint8_matches_videofilter_conversion():
    """step_uint8 = frame_to_float -> eager step -> float_to_frame, synchronously and pipelined."""
    m = video_model()
    frames = [(_to_u8(P)[0], _to_u8(I)[0]) for P, I in clip(1, 64, 96, steps=5)]
    state, want = None, []
    with torch.no_grad():
        for p, i in frames:
            P = torch.from_numpy(frame_to_float(p)[0]).permute(2, 0, 1)[None]
            I = torch.from_numpy(frame_to_float(i)[0]).permute(2, 0, 1)[None]
            O, state = m.step(P, I, state)
            want.append(float_to_frame(O[0].permute(1, 2, 0).numpy(), np.uint8))
    fast = FastVideoStep(m, 64, 96, dtype=torch.float32, compile=False)
    got = [fast.step_uint8(p, i) for p, i in frames]
    assert all(g.shape == (64, 96, 3) and g.dtype == np.uint8 for g in got)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    fast.reset()
    piped = [fast.pipeline_uint8(p, i) for p, i in frames] + [fast.flush_uint8()]
    assert piped[0] is None and fast.flush_uint8() is None
    assert all(np.array_equal(g, w) for g, w in zip(piped[1:], want))
    with pytest.raises(ValueError):
        fast.step_uint8(frames[0][0].astype(np.float32))


def test_frozen_host_constants_serve_the_models_constants():
    """The eager video step builds one host constant (the ridge identity of the cell fit; the block matcher's
    offsets went with it in session 4); under the mode it comes from the cache, same values."""
    m = video_model()
    P, I = clip(1, 64, 96, steps=1)[0]
    with torch.no_grad():
        want, _ = m.step(P, I, None)
        with FrozenHostConstants("cpu") as consts:
            m.step(P, I, None)
            got, _ = m.step(P, I, None)
    assert len(consts.cache) == 1
    assert torch.equal(got, want)


def test_cpu_pose_fallback_equals_eager_exactly():
    torch.manual_seed(0)
    m = perturbed(PoseSSM(PoseSSMConfig(d_model=16, n_layers=1, backend="torch")))
    frames = pose_frames(3, 17, 2, steps=8)
    fast = FastPoseStep(m, 3, 17, 2, compile=False, strength=0.8)
    fast.set_fps(frames[0]["fps"])
    state = None
    for i, f in enumerate(frames):
        conf = None if i % 3 == 0 else f["confidence"]  # None = all ones, also after a real confidence
        with torch.no_grad():
            want, state = m.step(f["points"], conf, state, f["fps"], 0.8)
        got = fast.step(f["points"], conf)
        assert torch.equal(torch.isnan(got), torch.isnan(want))
        assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(want))
    with pytest.raises(ValueError):
        fast.step(torch.zeros(3, 17, 3))


def test_compile_mode_is_checked():
    m = video_model()
    with pytest.raises(ValueError, match="compile_mode"):
        FastVideoStep(m, 64, 96, compile=True, compile_mode="fastest")


# ------------------------------------------------------------------------------------------- GPU
def _mamba_or_skip():
    from streamssm.ssm import _mamba

    ok, why = _mamba.available()
    if not ok:
        pytest.skip(f"mamba-ssm Triton kernels unavailable: {why}")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", ["torch", "mamba"])
def test_gpu_graph_fp32_equals_eager(backend):
    if backend == "mamba":
        _mamba_or_skip()
    m = video_model(backend, small=False).cuda()
    frames = clip(2, 96, 160)
    want, want_state = eager_video(m, frames, device="cuda")
    fast = FastVideoStep(m, 96, 160, batch=2, dtype=torch.float32, compile=False)
    for t, ((P, I), O) in enumerate(zip(frames, want)):
        assert_rel_close(fast.step(P.cuda(), I.cuda()), O, tol=1e-5, what=f"graph fp32 step {t}")
    assert fast._runner.graph is not None
    assert_state_close(fast.get_state(), want_state, 1e-5, "graph fp32")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("guided", [True, False])
def test_gpu_graph_with_the_exposure_lock_equals_eager(guided):
    """The exposure lock (``exposure_gain``: a short recurrence over the clip, in the graph as any other op) captured
    in the CUDA graph gives the eager step's outputs and level."""
    m = video_model("torch", small=False).cuda()
    m.config.exposure_lock = 0.3
    frames = [(P * (1 + 0.1 * (-1) ** t), I) for t, (P, I) in enumerate(clip(2, 96, 160))]  # a global flicker
    want, want_state = eager_video(m, frames, guided, device="cuda")
    fast = FastVideoStep(m, 96, 160, batch=2, guided=guided, dtype=torch.float32, compile=False)
    for t, ((P, I), O) in enumerate(zip(frames, want)):
        assert_rel_close(fast.step(P.cuda(), I.cuda() if guided else None), O, tol=1e-5, what=f"locked step {t}")
    assert fast._runner.graph is not None and float(want_state[7][:, 0].abs().max()) > 0
    assert_state_close(fast.get_state(), want_state, 1e-5, "locked graph fp32")


@pytest.mark.gpu
@needs_cuda
def test_gpu_recapture_on_shape_change_and_reset():
    m = video_model("torch").cuda()
    fast = FastVideoStep(m, 64, 96, dtype=torch.float32, compile=False)
    for P, I in clip(1, 64, 96, steps=3):
        fast.step(P.cuda(), I.cuda())
    g0 = fast._runner.graph
    frames = clip(2, 80, 128, steps=4, seed=1)
    want, _ = eager_video(m, frames, guided=False, device="cuda")
    with pytest.warns(RuntimeWarning, match="starts over"):
        got = [fast.step(P.cuda()) for P, _ in frames]
    assert fast._runner.graph is not g0 and fast.key == (2, 80, 128, False)
    for t, (a, b) in enumerate(zip(got, want)):
        assert_rel_close(a, b, tol=1e-5, what=f"after re-capture, step {t}")
    fast.reset()  # zeroing the static state in place: the same graph starts a fresh stream
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = [fast.step(P.cuda()) for P, _ in frames]
    for t, (a, b) in enumerate(zip(again, want)):
        assert_rel_close(a, b, tol=1e-5, what=f"after reset, step {t}")


@pytest.mark.gpu
@needs_cuda
def test_gpu_failed_capture_leaves_the_state_as_it_was(monkeypatch):
    """The capture's warm-up steps advance the static state; a capture that then fails (CUDA out of memory, say)
    must still put the state back, so the stream goes on from where it was."""
    m = video_model("torch").cuda()
    frames = clip(1, 64, 96, steps=4)
    _, state = eager_video(m, frames[:3], device="cuda")
    fast = FastVideoStep(m, 64, 96, dtype=torch.float32, compile=False)
    fast.set_state(state)
    before = fast.get_state()

    def fail(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    with monkeypatch.context() as mp:
        mp.setattr(torch.cuda, "graph", fail)
        with pytest.raises(RuntimeError, match="simulated"):
            fast.step(frames[3][0].cuda(), frames[3][1].cuda())
    for i, (a, b) in enumerate(zip(fast.state, before)):
        assert torch.equal(a, b), f"state[{i}] changed by the failed capture"
    want, _ = eager_video(m, frames, device="cuda")
    assert_rel_close(fast.step(frames[3][0].cuda(), frames[3][1].cuda()), want[3], tol=FAST_TOL[torch.float32],
                     what="the step after a failed capture")


@pytest.mark.gpu
@needs_cuda
def test_gpu_uint8_sync_and_pipelined():
    m = video_model("torch").cuda()
    frames = [(_to_u8(P), _to_u8(I)) for P, I in clip(2, 64, 96, steps=6)]
    state, want = None, []
    with torch.no_grad():
        for p, i in frames:
            P = torch.from_numpy(p).cuda().permute(0, 3, 1, 2).float() * (1.0 / 255.0)
            I = torch.from_numpy(i).cuda().permute(0, 3, 1, 2).float() * (1.0 / 255.0)
            O, state = m.step(P, I, state)
            want.append((O * 255.0 + 0.5).clamp(0, 255).permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy())
    fast = FastVideoStep(m, 64, 96, batch=2, dtype=torch.float32, compile=False)
    got = [fast.step_uint8(p, i) for p, i in frames]
    fast.reset()
    piped = [fast.pipeline_uint8(p, i) for p, i in frames] + [fast.flush_uint8()]
    assert piped[0] is None
    for name, outs in (("sync", got), ("pipelined", piped[1:])):
        for t, (g, w) in enumerate(zip(outs, want)):
            assert g.shape == w.shape and g.dtype == np.uint8
            diff = np.abs(g.astype(int) - w.astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, f"{name} uint8 step {t}: max diff {diff.max()}"


@pytest.mark.gpu
@needs_cuda
def test_gpu_videofilter_uint8_graph_path_equals_eager():
    """VideoFilter on CUDA sends single uint8 frames through FastVideoStep (a graph of the same step): the same
    frames as ``fast=False`` (the model's eager step), across a reset, a state snapshot/restore, a switch from
    guided to processed-only and a strength change."""
    from streamssm.video.filter import VideoFilter

    frames = [(_to_u8(P)[0], _to_u8(I)[0]) for P, I in clip(1, 64, 96, steps=8)]
    fast = VideoFilter(device="cuda", half=False)
    ref = VideoFilter(device="cuda", half=False, fast=False)

    def both(p, i, what):
        a, b = fast.step(p, i), ref.step(p, i)
        diff = np.abs(a.astype(int) - b.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, f"{what}: max diff {diff.max()}"

    for t, (p, i) in enumerate(frames[:4]):
        both(p, i, f"guided step {t}")
    assert fast._graph is not None and fast._graph._runner.graph is not None  # the graph path ran
    snap_f, snap_r = fast.get_state(), ref.get_state()
    for t, (p, _) in enumerate(frames[4:6]):
        both(p, None, f"processed-only step {t}")
    fast.set_state(snap_f)
    ref.set_state(snap_r)
    fast.strength = ref.strength = 0.5
    for t, (p, i) in enumerate(frames[4:]):
        both(p, i, f"restored, strength 0.5, step {t}")
    fast.reset()
    ref.reset()
    for t, (p, i) in enumerate(frames[:3]):
        both(p, i, f"after reset, step {t}")


def _check_pose(backend: str, compile: bool) -> None:
    torch.manual_seed(0)
    m = perturbed(PoseSSM(PoseSSMConfig(backend=backend))).cuda()
    frames = pose_frames(64, 33, 3, steps=STEPS)
    fast = FastPoseStep(m, 64, 33, 3, compile=compile)
    fast.set_fps(frames[0]["fps"])
    state = None
    for t, f in enumerate(frames):
        x, c, fps = f["points"].cuda(), f["confidence"].cuda(), f["fps"].cuda()
        with torch.no_grad():
            want, state = m.step(x, c, state, fps)
        got = fast.step(x, c)
        assert torch.equal(torch.isnan(got), torch.isnan(want)), f"pose step {t}: NaN pattern differs"
        assert_rel_close(torch.nan_to_num(got), torch.nan_to_num(want), tol=1e-4 if compile else 1e-5,
                         what=f"pose step {t}")
    assert rel_err(fast.state[-1], state[-1]) <= (1e-3 if compile else 1e-5)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", ["torch", "mamba"])
def test_gpu_pose_graph_equals_eager(backend):
    if backend == "mamba":
        _mamba_or_skip()
    _check_pose(backend, compile=False)


# the compiled cases last: each costs a cold Inductor compile (tens of seconds)
@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_gpu_compiled_graph_equals_eager(dtype):
    m = video_model("torch", small=False).cuda()
    frames = clip(1, 96, 160)
    want, want_state = eager_video(m, frames, dtype=dtype, device="cuda")
    fast = FastVideoStep(m, 96, 160, dtype=dtype, compile=True)
    for t, ((P, I), O) in enumerate(zip(frames, want)):
        assert_rel_close(fast.step(P.cuda(), I.cuda()), O, tol=FAST_TOL[dtype], what=f"compiled {dtype} step {t}")
    assert_state_close(fast.get_state(), want_state, COMPILED_STATE_TOL[dtype], f"compiled {dtype}")
    if dtype == torch.float16:  # and fp16 stays close to the fp32 truth
        ref, _ = eager_video(m, frames, device="cuda")
        fast.reset()
        for t, ((P, I), O) in enumerate(zip(frames, ref)):
            assert_rel_close(fast.step(P.cuda(), I.cuda()), O, tol=FAST_TOL[dtype], what=f"fp16 vs fp32 step {t}")


@pytest.mark.gpu
@needs_cuda
def test_gpu_pose_compiled_graph_equals_eager():
    _check_pose("torch", compile=True)
