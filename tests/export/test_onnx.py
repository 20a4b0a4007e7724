"""ONNX export of the step graphs: ONNX Runtime matches PyTorch while the state is threaded through.

Every test here may fail: a graph that does not export, does not generalise to another size, or
drifts from PyTorch over 20 steps is a failure, never a skip (only a missing onnx/onnxruntime skips).
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.export
onnx = pytest.importorskip("onnx", reason="ONNX export tests need onnx: pip install 'streamssm[export]'")
pytest.importorskip("onnxruntime", reason="ONNX export tests need onnxruntime: pip install 'streamssm[export]'")

from streamssm.export import OnnxRunner, export_onnx  # noqa: E402
from streamssm.export._spec import build_model, load_model  # noqa: E402
from streamssm.video.model import VideoSSMConfig  # noqa: E402
from tests.export._streams import perturbed, pose_frames, video_frames  # noqa: E402

# ONNX Runtime vs PyTorch, relative error per dtype, for the output and every state tensor of every step
ONNX_TOL = {torch.float32: 1e-4}


def assert_stream_close(got: np.ndarray, want: torch.Tensor, what: str, dtype=torch.float32) -> None:
    """Same NaN pattern (missing keypoints are NaN by design), then relative error on the rest."""
    want = want.detach().numpy()
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    fin = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), fin), f"{what}: NaN/inf in different places"
    a, b = got[fin].astype(np.float64), want[fin].astype(np.float64)
    err = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)
    assert err <= ONNX_TOL[dtype], f"{what}: relative error {err:.3g} > {ONNX_TOL[dtype]:g}"


def run_both(runner: OnnxRunner, model, frames: list[dict], batch: int, *dims: int, strength=0.8) -> None:
    """One fresh stream through the runner and through ``model.step``, compared at every step."""
    runner.init_state(batch, *dims)
    state = model.init_state(batch, *dims)
    for t, x in enumerate(frames):
        with torch.no_grad():
            if runner.kind == "pose":
                want, state = model.step(x["points"], x["confidence"], state, fps=x["fps"], strength=strength)
                got = runner.step(x["points"].numpy(), x["confidence"].numpy(), fps=x["fps"].numpy(), strength=strength)
            else:
                orig = x["original"] if runner.guided else None
                want, state = model.step(x["processed"], orig, state, strength=strength)
                got = runner.step(x["processed"].numpy(), None if orig is None else orig.numpy(), strength=strength)
        size = "x".join(map(str, (batch, *dims)))
        assert_stream_close(got, want, f"{runner.kind} {size} step {t}: output")
        for i, (a, b) in enumerate(zip(runner.get_state(), state)):
            assert_stream_close(a, b, f"{runner.kind} {size} step {t}: state {i}")


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def pose_model():
    return load_model("pose")  # the shipped weights


@pytest.fixture(scope="module")
def pose_onnx(tmp_path_factory, pose_model):
    # check=True: the exporter's own ONNX Runtime check at a second batch and K must pass too
    return export_onnx("pose", tmp_path_factory.mktemp("pose") / "pose.onnx", model=pose_model, dims=2, check=True)


@pytest.fixture(scope="module")
def video_model():
    torch.manual_seed(0)
    return perturbed(build_model("video", VideoSSMConfig().to_dict()))


@pytest.fixture(scope="module", params=[False, True], ids=["processed-only", "guided"])
def video_onnx(request, tmp_path_factory, video_model):
    path = tmp_path_factory.mktemp("video") / f"video_{'guided' if request.param else 'plain'}.onnx"
    # traced at 72x128; the tests below run it at 72x128 and at 96x160
    return export_onnx("video", path, model=video_model, guided=request.param, shape=(1, 72, 128), check=False)


# --------------------------------------------------------------------------------------- tests
def test_pose_graph_interface(pose_onnx, pose_model):
    proto = onnx.load(str(pose_onnx))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["streamssm.model"] == "pose" and meta["streamssm.dims"] == "2"
    n_state = len(pose_model.init_state(1, 17))
    ins = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    outs = [o.name for o in proto.graph.output]
    assert list(ins) == ["points", "confidence", "fps", "strength"] + [f"state_in_{i}" for i in range(n_state)]
    assert outs == ["output"] + [f"state_out_{i}" for i in range(n_state)]
    assert ins["points"] == ["batch", "keypoints", 2]  # dynamic batch and K, fixed D


@pytest.mark.parametrize("k", [17, 33])
def test_pose_onnx_matches_torch(pose_onnx, pose_model, k):
    """The same graph (traced at K=17) at K=17 and K=33, 20 steps, batch 2, missing joints included."""
    runner = OnnxRunner(pose_onnx)
    run_both(runner, pose_model, pose_frames(2, k, 2, seed=k), 2, k)


def test_pose_3d_onnx_matches_torch(tmp_path, pose_model):
    path = export_onnx("pose", tmp_path / "pose3d.onnx", model=pose_model, dims=3, check=False)
    run_both(OnnxRunner(path), pose_model, pose_frames(1, 21, 3, seed=3), 1, 21)


def test_video_onnx_matches_torch_at_two_resolutions(video_onnx, video_model):
    """One graph, traced at 72x128: a 20-step stream at 72x128, then a fresh one at 96x160."""
    runner = OnnxRunner(video_onnx)
    run_both(runner, video_model, video_frames(1, 72, 128, seed=1), 1, 72, 128)
    run_both(runner, video_model, video_frames(2, 96, 160, seed=2), 2, 96, 160)


def test_processed_only_graph_matches_torch_on_dark_footage_with_a_cut(tmp_path):
    """The shipped weights' processed-only graph on dark, smooth footage with a scene cut (the exporter's own "dusk"
    check), at 360p and 720p. ONNX Runtime summed the flow's whole-frame brightness statistics nearly one value after
    another, and the flow amplified the difference: relative error 2.1e-4 at 360p, 1.1e-3 at 720p (on real footage
    values up to 7/255 apart: export/README.md). With the means split by axis (_split_reductions): 5.5e-6, 6.7e-6."""
    from streamssm.export._onnx import DUSK_CUT, compare_with_torch

    path = export_onnx("video", tmp_path / "v.onnx", check=False)
    model = load_model("video")
    for size in [(360, 640), (720, 1280)]:
        err = compare_with_torch(path, model, 1, *size, steps=DUSK_CUT + 3, scene="dusk")
        assert err <= ONNX_TOL[torch.float32], f"{size}: relative error {err:.2e}"


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("keepdims", [1, 0])
def test_split_reductions_keep_the_mean_and_sum_accurately(opset, keepdims):
    """A ReduceMean over (-2, -1) becomes one per axis (axes as an attribute before opset 18, an input from it; a
    Squeeze when keepdims=0): the same shape, and on the squared deviations of a smooth 1/255-quantised frame the
    float64 mean to 1e-6 (one ReduceMean: 2.1e-5 here, 4e-5 on real footage)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from streamssm.export._onnx import _split_reductions

    inputs = ["x"]
    init = []
    attrs = {"keepdims": keepdims}
    if opset >= 18:
        init.append(numpy_helper.from_array(np.array([-2, -1], np.int64), "axes"))
        inputs.append("axes")
    else:
        attrs["axes"] = [-2, -1]
    graph = helper.make_graph([helper.make_node("ReduceMean", inputs, ["y"], **attrs)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 360, 640])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 1, 1][:2 + 2 * keepdims])],
                              initializer=init)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    _split_reductions(onnx, proto)
    onnx.checker.check_model(proto, full_check=True)
    assert [n.op_type for n in proto.graph.node] == ["ReduceMean"] * 2 + ["Squeeze"] * (1 - keepdims)
    yy, xx = np.mgrid[0:360, 0:640]
    smooth = np.round((0.2 + 0.5 * np.exp(-((yy - 100) ** 2 + (xx - 300) ** 2) / 2e4)) * 255) / 255
    x = np.broadcast_to(smooth, (2, 3, 360, 640)).astype(np.float32)
    x = ((x - x.mean()) ** 2).astype(np.float32)  # squared deviations, as a standard deviation sums
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want = x.astype(np.float64).mean((-2, -1), keepdims=bool(keepdims))
    assert got.shape == want.shape
    assert np.abs(got / want - 1).max() < 1e-6


def test_runner_snapshot_restore_and_fresh_stream(pose_onnx):
    runner = OnnxRunner(pose_onnx)
    frames = pose_frames(1, 17, 2, steps=6)
    first = [runner.step(f["points"].numpy()) for f in frames[:3]]
    snap = runner.get_state()
    after = [runner.step(f["points"].numpy()) for f in frames[3:]]
    runner.set_state(snap)
    again = [runner.step(f["points"].numpy()) for f in frames[3:]]
    for a, b in zip(after, again):
        np.testing.assert_array_equal(a, b)
    runner.reset()  # a zeroed state is a fresh stream: the first output again
    np.testing.assert_array_equal(runner.step(frames[0]["points"].numpy()), first[0])
    assert not np.array_equal(first[0], first[2])


def test_runner_refuses_wrong_inputs(video_onnx):
    runner = OnnxRunner(video_onnx)
    frame = np.random.default_rng(0).uniform(size=(1, 3, 72, 128)).astype(np.float32)
    with pytest.raises(ValueError, match="guided|processed-only"):
        runner.step(frame, None if runner.guided else frame)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        runner.step(frame[:, :2], frame[:, :2] if runner.guided else None)


def test_export_refuses_a_graph_that_does_not_generalise(tmp_path, monkeypatch):
    """Traced below a 64 px short side, the video model's downsampling factor is fixed by Python arithmetic the tracer
    cannot record, and the graph (state 4 declared [batch, 1, height_div2, 48]) failed at every size, its own
    included: a resolution-generic export that small is refused before any work, with check=False too (it used to
    write the graph then), saying what to do instead; --static-size exports it."""
    import streamssm.export._onnx as exporter

    def no_trace(*a, **k):
        raise AssertionError("traced a graph that was bound to be refused")

    model = build_model("video", VideoSSMConfig(d_model=16, n_layers=1).to_dict()).eval()
    for shape, check in (((1, 48, 64), True), ((1, 48, 48), False), ((2, 128, 63), False)):
        with monkeypatch.context() as m:
            m.setattr(exporter.torch.onnx, "export", no_trace)
            with pytest.raises(ValueError, match="short side of at least 64 px.*dynamic_size=False"):
                export_onnx("video", tmp_path / "small.onnx", model=model, shape=shape, check=check)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left
    path = export_onnx("video", tmp_path / "s.onnx", model=model, shape=(1, 48, 48), dynamic_size=False, check=True)
    assert OnnxRunner(path).spec.static_size == (48, 48)


@pytest.mark.parametrize("guided", [True, False], ids=["guided", "processed-only"])
def test_shipped_video_weights_export_at_the_smallest_size(tmp_path, guided):
    """At a 64 px short side (the smallest a graph serves) the exporter's own check passes with the shipped
    weights: its check frames are footage-like, so no single borderline flow decision fails a correct graph (noise
    frames failed it at 64x64, relative error 1.9e-3 at one pixel)."""
    for h, w in [(64, 64), (72, 128)]:
        path = export_onnx("video", tmp_path / f"v{h}x{w}.onnx", guided=guided, shape=(1, h, w), dynamic_size=False,
                           check=True)
        assert OnnxRunner(path).guided is guided


def test_a_graph_that_fails_its_check_replaces_nothing(tmp_path, monkeypatch):
    """The check runs on a temporary file: a graph that fails it leaves a file already at the path as it was (even
    with overwrite=True), and writes none where there was none."""
    import streamssm.export._onnx as exporter

    monkeypatch.setattr(exporter, "compare_with_torch", lambda *a, **k: 1.0)  # ONNX Runtime disagrees
    model = build_model("video", VideoSSMConfig(d_model=16, n_layers=1).to_dict()).eval()
    keep = tmp_path / "good.onnx"
    keep.write_bytes(b"the user's good graph")
    for out in (keep, tmp_path / "new.onnx"):
        with pytest.raises(RuntimeError, match="not written: ONNX Runtime disagrees"):
            export_onnx("video", out, model=model, shape=(1, 64, 64), check=True, overwrite=True)
    assert keep.read_bytes() == b"the user's good graph"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.onnx"]  # no new file, no temporary left


def test_runner_refuses_what_would_poison_the_stream(tmp_path, pose_model):
    """OnnxRunner checks what the graph cannot: a non-positive fps or a strength out of [0, 2] (NaN from then on),
    integer video frames (read as [0, 1] values, saturated), frames under the 64 px short side (a raw ONNX Runtime
    error otherwise); a NaN pixel is sanitised as VideoFilter does, so the next output is finite."""
    pose = OnnxRunner(export_onnx("pose", tmp_path / "p.onnx", model=pose_model, check=False))
    pts = np.random.default_rng(0).random((1, 17, 2), np.float32)
    for kw, msg in [({"fps": 0}, "fps must be a positive"), ({"fps": -30}, "fps must be a positive"),
                    ({"strength": 5}, r"strength must be in \[0, 2\]"),
                    ({"strength": float("nan")}, r"strength must be in \[0, 2\]")]:
        with pytest.raises(ValueError, match=msg):
            pose.step(pts, **kw)
    video = OnnxRunner(export_onnx("video", tmp_path / "v.onnx", model=build_model(
        "video", VideoSSMConfig(d_model=16, n_layers=1).to_dict()).eval(), shape=(1, 64, 96), check=False))
    with pytest.raises(ValueError, match="floating point in \\[0, 1\\], got uint8"):
        video.step(np.zeros((1, 3, 64, 96), np.uint8))
    with pytest.raises(ValueError, match="32x40: .*short side of at least 64"):
        video.step(np.zeros((1, 3, 40, 32), np.float32))
    video.step(np.full((1, 3, 64, 96), np.nan, np.float32))
    assert np.isfinite(video.step(np.full((1, 3, 64, 96), 0.5, np.float32))).all()


def _baked_runner(tmp_path, model, **setting) -> OnnxRunner:
    """A video graph exported at 64 x 128 with one config setting baked in (``ghost_res=0.1``, ...), which its
    metadata must record."""
    import json

    import onnx

    (name, value), = setting.items()
    path = export_onnx("video", tmp_path / f"{name}{value}.onnx", model=model, shape=(1, 64, 128), **setting)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["streamssm.config"])[name] == value
    return OnnxRunner(path)


def test_ghost_guard_is_baked_into_the_video_graph(tmp_path):
    """export_onnx(ghost_res=) puts the guard in the graph (its metadata records it, and the check against PyTorch
    with the guard passes), and the guarded graph cuts a passing bar's trail that the unguarded one leaves."""
    model = load_model("video")
    bar = []
    for t in range(8):
        img = np.full((1, 3, 64, 128), 0.5, np.float32)
        img[..., 10 + 11 * t: 13 + 11 * t] = 0.95
        bar.append(img)
    worst = {}
    for g in (0.0, 0.1):
        runner = _baked_runner(tmp_path, model, ghost_res=g)
        worst[g] = max(float(np.abs(runner.step(x) - x).max()) for x in bar)
    assert worst[0.0] > 0.1 and worst[0.1] < worst[0.0] / 2
    with pytest.raises(ValueError, match="ghost_res is for the video model"):
        export_onnx("pose", tmp_path / "p.onnx", ghost_res=0.1)


def test_exposure_lock_is_baked_into_the_video_graph(tmp_path):
    """export_onnx(exposure_lock=) puts the lock in the graph: recorded in its metadata, and over a clip under a
    global flicker the graph gives the PyTorch step's outputs with the lock, not those without."""
    import copy

    model = load_model("video")
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, (1, 3, 64, 160)).astype(np.float32)
    frames = [np.clip(base[..., 3 * t: 3 * t + 128] * np.exp(rng.normal(0, 0.06)), 0, 1) for t in range(8)]
    outs = {}
    for a in (0.0, 0.3):
        runner = _baked_runner(tmp_path, model, exposure_lock=a)
        outs[a] = [runner.step(np.ascontiguousarray(x)) for x in frames]
    locked = copy.deepcopy(model)
    locked.config.exposure_lock = 0.3
    state = None
    with torch.no_grad():
        for t, x in enumerate(frames):
            o, state = locked.step(torch.from_numpy(np.ascontiguousarray(x)), state=state)
            assert np.abs(outs[0.3][t] - o.numpy()).max() < 1e-4, t
    assert max(np.abs(a - b).max() for a, b in zip(outs[0.3], outs[0.0])) > 1e-2
    with pytest.raises(ValueError, match="exposure_lock is for the video model"):
        export_onnx("pose", tmp_path / "p.onnx", exposure_lock=0.3)


def test_export_rejects_old_opset(tmp_path, pose_model):
    with pytest.raises(ValueError, match="opset"):
        export_onnx("pose", tmp_path / "p.onnx", model=pose_model, opset=13)
    with pytest.raises(ValueError, match="opset must be from 17 .* got 99"):  # not 500 lines of TorchScript IR
        export_onnx("pose", tmp_path / "p.onnx", model=pose_model, opset=99)
    assert not (tmp_path / "p.onnx").exists()


def test_cli_export_onnx(tmp_path):
    from streamssm.export.cli import add_export_parser

    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "pose3.onnx"
    args = parser.parse_args(["export", "onnx", "--model", "pose", "-o", str(out), "--dims", "3", "--opset", "18",
                              "--no-check"])
    assert args.func(args) == 0
    proto = onnx.load(str(out))
    assert {p.key: p.value for p in proto.metadata_props}["streamssm.dims"] == "3"
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 18
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "onnx", "--model", "pose", "-o", str(out), "--dims", "4"])


def test_graph_declares_its_shapes_for_another_runtime(video_onnx, pose_onnx):
    """What a runner in another language reads from the file: every fixed dim as a number (the output's 3 channels),
    every size-dependent one named by its formula, and the state's shapes as formulas of batch/height/width that
    give init_state's shapes at any size (64 px and up), all zeros at the start."""
    import json

    from streamssm.export._spec import StepSpec

    for path, sizes in ((video_onnx, [(1, 64, 64), (2, 97, 130), (1, 720, 1280)]), (pose_onnx, [(1, 17), (3, 33)])):
        proto = onnx.load(str(path))
        meta = {p.key: p.value for p in proto.metadata_props}
        spec = StepSpec.from_metadata(meta)
        dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
                for v in [*proto.graph.input, *proto.graph.output]}
        if spec.kind == "video":
            assert dims["output"] == ["batch", 3, "height", "width"]
            assert dims["state_out_8"][1] == "height_div32_times_width_div32"  # the first SSM state
            assert dims["state_out_7"] == ["batch", 3]  # the exposure lock's level, the guide elasticity's sums
        else:
            assert dims["output"] == ["batch", "keypoints", 2]
        assert all(not str(d).startswith(("Gather", "Reshape")) for v in dims.values() for d in v), dims
        formulas = json.loads(meta["streamssm.state_shapes"])
        assert meta["streamssm.state_init"] == "zeros"
        for size in sizes:
            env = dict(zip(("batch", *spec.stream_dims), size))
            got = [tuple(d if isinstance(d, int) else eval(d, {}, env) for d in f) for f in formulas]
            assert got == spec.state_shapes(*size), size


def test_a_nan_pixel_cannot_poison_the_graph(video_onnx):
    """Sanitised inside the graph (as VideoFilter does), so plain ONNX Runtime, TensorRT or a C++ runner cannot
    carry one NaN pixel in the state for good."""
    import onnxruntime as ort

    from streamssm.export._spec import StepSpec

    sess = ort.InferenceSession(str(video_onnx), providers=["CPUExecutionProvider"])
    spec = StepSpec.from_metadata(sess.get_modelmeta().custom_metadata_map)
    state = [np.zeros(s, np.float32) for s in spec.state_shapes(1, 72, 128)]
    frame = np.random.default_rng(0).random((1, 3, 72, 128), np.float32)
    for t in range(3):
        x = frame.copy()
        if t == 1:
            x[0, :, 5, 5] = np.nan
            x[0, :, 6, 6] = np.inf
        feeds = {"processed": x, "strength": np.ones(1, np.float32)}
        feeds.update({f"state_in_{i}": s for i, s in enumerate(state)})
        if spec.guided:
            feeds["original"] = x
        out, *state = sess.run(None, feeds)
        assert np.isfinite(out).all() and all(np.isfinite(s).all() for s in state), t


def test_runner_refuses_a_new_pose_size_and_keeps_the_stream(pose_onnx, tmp_path, caplog):
    runner, ref = OnnxRunner(pose_onnx), OnnxRunner(pose_onnx)
    frames = pose_frames(1, 17, 2, steps=4)
    for f in frames[:2]:
        runner.step(f["points"].numpy())
        ref.step(f["points"].numpy())
    with pytest.raises(ValueError, match=r"this stream is 1x17 .* got 1x18: call init_state\(1, 18\)"):
        runner.step(np.zeros((1, 18, 2), np.float32))
    np.testing.assert_array_equal(runner.step(frames[2]["points"].numpy()), ref.step(frames[2]["points"].numpy()))
    small = export_onnx("video", tmp_path / "s.onnx", model=build_model(
        "video", VideoSSMConfig(d_model=16, n_layers=1).to_dict()).eval(), shape=(1, 64, 96), dynamic_size=False,
        check=False)
    video = OnnxRunner(small)
    x = np.random.default_rng(0).random((1, 3, 64, 96), np.float32)
    video.step(x)
    snap = video.get_state()
    with pytest.raises(ValueError, match=r"exported for \*x3x64x96 only"):
        video.step(np.zeros((1, 3, 72, 96), np.float32))
    for a, b in zip(video.get_state(), snap):  # the refused frame left the stream as it was
        np.testing.assert_array_equal(a, b)
    with caplog.at_level("WARNING"):
        video.step(x * 255)  # not a new stream: no range check, but a new one warns
        OnnxRunner(small).step(x * 255)
    assert caplog.text.count("divide 0..255 by 255") == 1


def test_script_export_refuses_an_existing_output_with_a_message(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "p.onnx"
    out.write_bytes(b"mine")
    script = Path(__file__).resolve().parents[2] / "export" / "onnx_export.py"
    r = subprocess.run([sys.executable, str(script), "onnx", "--model", "pose", "-o", str(out)], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "already exists; pass --overwrite" in r.stderr and "Traceback" not in r.stderr
    assert out.read_bytes() == b"mine"


def test_a_model_with_another_cell_size_exports_with_its_formulas(tmp_path):
    """The state formulas are fitted, not assumed: a grid of 24-px cells exports (it failed when only powers of
    two were tried) and its metadata says height//24."""
    import json

    model = build_model("video", VideoSSMConfig(d_model=16, n_layers=1, cell_px=24).to_dict()).eval()
    path = export_onnx("video", tmp_path / "c24.onnx", model=model, shape=(1, 96, 128), check=True)
    formulas = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["streamssm.state_shapes"])
    assert formulas[0] == ["batch", 18, "height//24", "width//24"]


def _readme_state_table() -> list[list[str]]:
    """export/README.md's table of the state tensors: one row of cells per state index, in order."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "export" / "README.md").read_text()
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.strip().startswith("|")]
    head = next(i for i, r in enumerate(rows) if r[0] == "state")
    table = []
    for r in rows[head + 2:]:
        if not r[0].isdigit():
            break
        table.append(r)
    assert [int(r[0]) for r in table] == list(range(len(table))), "state rows must be numbered 0, 1, 2, ..."
    return table


def _formula_text(cell: str) -> list:
    """A README shape cell, ``(batch, (height//32)\\*(width//32), 4)``, as metadata writes it: numbers and formulas."""
    inner = cell.replace("\\*", "*").strip()
    assert inner.startswith("(") and inner.endswith(")"), cell
    parts, depth, cur = [], 0, ""
    for ch in inner[1:-1]:  # split on the top level's commas only
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return [int(p) if p.isdigit() else p for p in parts if p]


def test_readme_state_table_is_the_exported_graphs(tmp_path, pose_onnx):
    """export/README.md's state table has one row per state input of the graphs the shipped weights export (video
    and pose), with the shapes their metadata gives: it listed 9 video states when the graph had 10."""
    import json

    table = _readme_state_table()
    video = export_onnx("video", tmp_path / "v.onnx", shape=(1, 64, 96), check=False)
    for path, col in ((video, 1), (pose_onnx, 3)):
        proto = onnx.load(str(path))
        meta = {p.key: p.value for p in proto.metadata_props}
        states = [i.name for i in proto.graph.input if i.name.startswith("state_in_")]
        rows = [r for r in table if r[col]]
        assert [f"state_in_{r[0]}" for r in rows] == states, (path.name, len(rows), len(states))
        assert len(rows) == int(meta["streamssm.n_state"])
        assert [_formula_text(r[col]) for r in rows] == json.loads(meta["streamssm.state_shapes"]), path.name


def test_static_size_graph_metadata_gives_its_true_state_shapes(tmp_path):
    """A --static-size graph at 48x48 (under 64 px the flow runs at full size): its metadata's state shapes are the
    numbers the graph takes (state 4 is (batch, 1, 48, 48), not height//2), and zero states built from them alone
    run in plain ONNX Runtime, at two batch sizes."""
    import json

    import onnxruntime as ort

    model = build_model("video", VideoSSMConfig(d_model=16, n_layers=1).to_dict()).eval()
    path = export_onnx("video", tmp_path / "s48.onnx", model=model, shape=(1, 48, 48), dynamic_size=False,
                       check=False)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    formulas = json.loads(meta["streamssm.state_shapes"])
    assert formulas[4] == ["batch", 1, 48, 48]
    assert all(d == "batch" or isinstance(d, int) for f in formulas for d in f), formulas
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        feeds = {"processed": np.full((batch, 3, 48, 48), 0.5, np.float32), "strength": np.ones(1, np.float32)}
        feeds.update({f"state_in_{i}": np.zeros([batch if d == "batch" else d for d in f], np.float32)
                      for i, f in enumerate(formulas)})
        out, *state = sess.run(None, feeds)
        assert out.shape == (batch, 3, 48, 48)
        assert [list(s.shape) for s in state] == [[batch if d == "batch" else d for d in f] for f in formulas]


def test_cli_says_static_size_for_a_small_dynamic_graph(tmp_path, capsys):
    """The exporter's refusal of a small resolution-generic graph names the command line's option, not the
    Python keyword (it ended '... with dynamic_size=False')."""
    from streamssm import cli

    out = tmp_path / "v.onnx"
    assert cli.main(["export", "onnx", "--model", "video", "-o", str(out), "--shape", "1x3x48x48"]) == 2
    err = capsys.readouterr().err
    assert "--static-size" in err and "dynamic_size" not in err, err
    assert not out.exists()
