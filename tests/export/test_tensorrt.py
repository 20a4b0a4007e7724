"""TensorRT: the exported graphs parse and build into engines (no GPU needed with TensorRT-RTX), and
on a CUDA machine the engine runner matches PyTorch over a stream.

Skips only when no TensorRT module imports (building) or nothing can execute an engine (running);
a parse or build failure is a failure.
"""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.export
pytest.importorskip("onnx", reason="the TensorRT tests export ONNX first: pip install 'streamssm[export]'")
pytest.importorskip("onnxruntime", reason="the TensorRT tests export ONNX first: pip install 'streamssm[export]'")

from streamssm.export import TensorRTRunner, build_engine, export_onnx  # noqa: E402
from streamssm.export._spec import build_model, load_model  # noqa: E402
from streamssm.video.model import VideoSSMConfig  # noqa: E402
from tests.export._streams import perturbed, pose_frames, video_frames  # noqa: E402

# TensorRT's fp32 kernels (fused, other reduction orders; TF32 off) against PyTorch over 20 steps
TRT_TOL = {torch.float32: 1e-3}
# GPUs TensorRT-RTX 1.7 can build these graphs for (Turing is refused: "FP32 GEMM is not supported")
RTX_CAPABILITIES = {(8, 0), (8, 6), (8, 9), (12, 0), (12, 1)}


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("trt")
    video = perturbed(build_model("video", VideoSSMConfig().to_dict()))
    kw = dict(model=video, shape=(1, 72, 128), check=False)
    return {
        "pose": (export_onnx("pose", d / "pose.onnx", check=False), load_model("pose")),
        "video-guided": (export_onnx("video", d / "vg.onnx", guided=True, **kw), video),
        "video": (export_onnx("video", d / "v.onnx", guided=False, **kw), video),
    }


PROFILES = {
    "pose": ("1x1x2", "2x17x2", "8x64x2"),
    "video-guided": ("1x3x64x64", "1x3x360x640", "2x3x1080x1920"),
    "video": ("1x3x64x64", "1x3x360x640", "2x3x1080x1920"),
}


@pytest.mark.parametrize("name", list(PROFILES))
def test_engine_builds(trt, graphs, tmp_path, name):
    """Every op of the graph is TensorRT-compatible: the builder parses it and builds an engine with
    a batch x size optimisation profile (on a CPU-only machine for TensorRT-RTX's default targets)."""
    onnx_path, _ = graphs[name]
    lo, opt, hi = PROFILES[name]
    engine = build_engine(onnx_path, tmp_path / f"{name}.engine", min_shapes=lo, opt_shapes=opt, max_shapes=hi)
    assert engine.stat().st_size > 100_000
    info = json.loads(engine.with_name(engine.name + ".json").read_text())
    assert info["tensorrt_module"] == trt.__name__ and info["build_seconds"] > 0
    first_in = "points" if name == "pose" else "processed"
    assert info["profile"][first_in] == [[int(v) for v in s.split("x")] for s in (lo, opt, hi)]


def test_profile_must_be_ordered(trt, graphs, tmp_path):
    with pytest.raises(ValueError, match="min <= opt <= max"):
        build_engine(graphs["video"][0], tmp_path / "x.engine", min_shapes="1x3x720x1280", opt_shapes="1x3x360x640",
                     max_shapes="1x3x1080x1920")


def test_static_graph_gets_its_own_sizes_in_the_default_profile(trt, tmp_path):
    """A graph exported with dynamic_size=False fixes K (pose) or H, W (video): the default profile takes them from
    the graph instead of the generic defaults (which TensorRT would refuse), and a given shape that disagrees with
    them is refused naming the option."""
    onnx_path = export_onnx("pose", tmp_path / "static.onnx", shape=(1, 17), dynamic_size=False, check=False)
    engine = build_engine(onnx_path, tmp_path / "static.engine")
    info = json.loads((tmp_path / "static.engine.json").read_text())
    assert engine.is_file() and [s[1] for s in info["profile"]["points"]] == [17, 17, 17]
    with pytest.raises(ValueError, match="--min 1x5x2: .*static.onnx fixes its input points to Bx17x2"):
        build_engine(onnx_path, tmp_path / "other.engine", min_shapes="1x5x2")


def test_a_logged_build_error_is_a_failure(trt, graphs, tmp_path):
    """A video profile under the 64 px short side is refused before TensorRT sees it (TensorRT itself logged
    'kMIN values are not self-consistent' and still returned a plan, which used to be written as a success)."""
    with pytest.raises(ValueError, match="short side of at least 64"):
        build_engine(graphs["video"][0], tmp_path / "x.engine", min_shapes="1x3x32x32")
    assert not (tmp_path / "x.engine").exists()


def _can_execute(trt) -> str | None:
    """Why no engine can run here, or None."""
    if not torch.cuda.is_available():
        return "TensorRTRunner executes on a CUDA GPU; torch.cuda.is_available() is False on this machine"
    cap = torch.cuda.get_device_capability()
    if "rtx" in trt.__name__ and cap not in RTX_CAPABILITIES:
        return f"{trt.__name__} cannot target this GPU (sm_{cap[0]}{cap[1]}); install NVIDIA TensorRT for it"
    return None


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["pose", "video-guided"])
def test_runner_matches_torch(trt, graphs, tmp_path, name):
    why = _can_execute(trt)
    if why:
        pytest.skip(why)
    onnx_path, model = graphs[name]
    lo, opt, hi = PROFILES[name]
    engine = build_engine(onnx_path, tmp_path / f"{name}.engine", min_shapes=lo, opt_shapes=opt, max_shapes=hi)
    runner = TensorRTRunner(engine)
    if name == "pose":
        batch, dims, frames = 2, (17,), pose_frames(2, 17, 2)
    else:
        batch, dims, frames = 1, (96, 160), video_frames(1, 96, 160)
    runner.init_state(batch, *dims)
    state = model.init_state(batch, *dims)
    for t, x in enumerate(frames):
        with torch.no_grad():
            if name == "pose":
                want, state = model.step(x["points"], x["confidence"], state, fps=x["fps"], strength=0.8)
                got = runner.step(x["points"], x["confidence"], fps=x["fps"], strength=0.8)
            else:
                want, state = model.step(x["processed"], x["original"], state, strength=0.8)
                got = runner.step(x["processed"], x["original"], strength=0.8)
        for what, a, b in [("output", got, want), *((f"state {i}", s, r) for i, (s, r) in
                                                      enumerate(zip(runner.get_state(), state)))]:
            a, b = a.float().cpu(), b.float()
            fin = torch.isfinite(b)
            assert torch.equal(torch.isfinite(a), fin), f"{name} step {t} {what}: NaN in different places"
            err = float((a[fin] - b[fin]).norm() / b[fin].norm().clamp_min(1e-30))
            assert err <= TRT_TOL[torch.float32], f"{name} step {t} {what}: relative error {err:.3g}"


def test_the_input_graph_is_never_the_engine(trt, graphs):
    """build_engine (the API, not only the CLI) refuses to write the engine over the graph it reads."""
    onnx_path = graphs["pose"][0]
    before = onnx_path.read_bytes()
    with pytest.raises(ValueError, match="is the input file"):
        build_engine(onnx_path, onnx_path)
    assert onnx_path.read_bytes() == before


def test_engine_settings_file_is_never_overwritten_unasked(trt, graphs, tmp_path):
    """``X.engine.json`` follows the engine's rules: an existing one needs --overwrite, a folder in its place is
    refused before the build (it used to be written over, or to fail after the engine had landed)."""
    import argparse

    from streamssm.export.cli import add_export_parser

    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    onnx_path, _ = graphs["pose"]
    engine = tmp_path / "p.engine"
    meta = tmp_path / "p.engine.json"
    meta.write_text('{"mine": 1}')
    args = parser.parse_args(["export", "tensorrt", "--onnx", str(onnx_path), "-o", str(engine)])
    with pytest.raises(FileExistsError, match="p.engine.json: already exists"):
        args.func(args)
    assert meta.read_text() == '{"mine": 1}' and not engine.exists()
    meta.unlink()
    meta.mkdir()
    with pytest.raises(ValueError, match="p.engine.json: is a directory"):
        args.func(args)
    assert not engine.exists()
