"""A catalogue of bad inputs (issue 8): the Python API, the command line and the demo.

Each case sets up its files in a fresh folder, then does one wrong thing. The harness checks

* the specific error: the exception type (API) or exit status 2 without a traceback (CLI), and that
  the message names the file or argument and says what was expected;
* that nothing was left behind or damaged: the folder holds exactly the files it held before the
  wrong call, byte for byte (no partial output, no temporary file, no overwritten input).

A few cases are *contracts* rather than errors (NaN keypoints are "missing", a NaN pixel in a tensor is
sanitised, a resolution change starts the filter over); they check that documented behaviour instead.
The count of cases is quoted in the README ("Robustness"); keep the ids readable.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")

from streamssm import PoseFilter, VideoFilter  # noqa: E402
from streamssm.io import VideoIOError, open_sink, open_source  # noqa: E402
from streamssm.io.pose_files import read_pose  # noqa: E402
from streamssm.pose.filter import DEFAULT_WEIGHTS as POSE_WEIGHTS  # noqa: E402
from streamssm.video.filter import DEFAULT_WEIGHTS as VIDEO_WEIGHTS  # noqa: E402
from tests._media import frames_in, make_clip, run_cli  # noqa: E402


@dataclass
class Case:
    id: str
    setup: Callable[[Path], Callable[[], Any]]  # builds inputs in the folder, returns the wrong call
    error: type[BaseException] | int | None  # exception type, CLI exit status, or None (a contract)
    says: tuple[str, ...] = ()  # in the message; "{d}" is the case folder
    check: Callable[[Any, Path], None] | None = None  # for contracts: what the call returned must satisfy
    left: tuple[str, ...] = ()  # files the contract says stay (a playable partial output), else nothing


def _snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(d.rglob("*"))}


def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(Path(src).read_bytes())
    return dst


def _cli(*argv) -> Callable[[], tuple[int, str]]:
    """The CLI in-process (``streamssm.cli.main``): exit status and stderr."""
    def call():
        from streamssm.cli import main

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main([str(a) for a in argv])
        return code, err.getvalue()
    return call


def _subprocess(*argv) -> Callable[[], tuple[int, str]]:
    """The CLI as a user runs it: ``python -m streamssm ...``."""
    def call():
        r = run_cli(*argv, timeout=120)
        return r.returncode, r.stderr
    return call


# ------------------------------------------------------------------------------------------ inputs
def pts(k=17, d=2, t=None, seed=0):
    rng = np.random.default_rng(seed)
    shape = (k, d) if t is None else (t, k, d)
    return (rng.normal(size=shape) * 50 + 200).astype(np.float32)


def clip(d: Path, name="in.mp4", n=12, size=(64, 48)) -> Path:
    return make_clip(d / name, n=n, size=size)


def text_as(d: Path, name: str) -> Path:
    p = d / name
    p.write_text("this is a shopping list, not a video\n" * 40)
    return p


def pose_csv(d: Path, name="in.csv", rows=None) -> Path:
    rows = rows if rows is not None else [f"{f},{j},{100 + j + f},{50 + j}" for f in range(6) for j in range(3)]
    p = d / name
    p.write_text("frame,joint,x,y\n" + "\n".join(rows) + "\n")
    return p


def weights_copy(d: Path, src: Path, name: str, edit: Callable[[dict, dict], None] | None = None) -> Path:
    """A copy of shipped weights, optionally with its tensors/metadata edited."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    if edit is not None:
        edit(meta, tensors)
    out = d / name
    save_file(tensors, str(out), metadata=meta)
    return out


def _config(**change):
    def edit(meta, tensors):
        meta["streamssm.config"] = json.dumps({**json.loads(meta["streamssm.config"]), **change})
    return edit


def _tensor(fn):
    def edit(meta, tensors):
        k = sorted(tensors)[0]
        tensors[k] = fn(tensors[k])
    return edit


def readonly_dir(d: Path) -> Path:
    """A folder this process cannot create files in (chmod 0555; as root, which ignores that, /proc)."""
    ro = d / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    probe = ro / ".probe"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        return ro
    return Path("/proc")  # root: creating a file in /proc fails whatever the permissions


# ------------------------------------------------------------------------------------ helpers
def _pose_then(first, second, **kw):
    def call():
        f = PoseFilter(device="cpu", **kw)
        f.step(first)
        return f.step(second)
    return call


def _pose_nan_contract(y, d):
    # NaN/inf keypoints and NaN confidence are "missing": a keypoint never seen yet comes out NaN, a
    # frame with nothing holds the last output, and the state never holds a NaN
    y0, y1, y2, y3, f = y
    unseen = [3, 5]
    seen = [i for i in range(17) if i not in unseen]
    assert np.isnan(y0[unseen]).all() and np.isfinite(y0[seen]).all()
    np.testing.assert_array_equal(y1, y0)  # the all-missing frame holds the last output
    np.testing.assert_array_equal(y2, y0)  # so does a frame whose confidence is all NaN
    assert np.isfinite(y3).all()  # every keypoint seen now
    assert all(torch.isfinite(s).all() for s in f.state)


def _pose_nan_frames():
    f = PoseFilter(device="cpu")
    x = pts()
    x0 = x.copy()
    x0[3] = np.nan
    x0[5, 0] = np.inf
    y0 = f.step(x0)
    y1 = f.step(np.full_like(x, np.nan))
    y2 = f.step(x, confidence=np.full(17, np.nan, np.float32))
    y3 = f.step(x)
    return y0, y1, y2, y3, f


def _video_tensor_nan():
    f = VideoFilter(device="cpu")
    x = torch.rand(2, 3, 48, 64)
    x[0, :, :4] = float("nan")
    x[1, 0, 0, 0] = float("inf")
    return f.step(x, x.clone()), f


def _video_tensor_nan_contract(out, d):
    y, f = out
    assert torch.isfinite(y).all() and all(torch.isfinite(s).all() for s in f.state)


def _video_size_change():
    f = VideoFilter(device="cpu")
    f.step(np.zeros((48, 64, 3), np.uint8))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        y = f.step(np.zeros((40, 64, 3), np.uint8))
    return y, [(str(x.message), x.filename) for x in w]


def _video_size_change_contract(out, d):
    """The warning gives sizes as W x H (as the size-mismatch error does), says nothing of the unchanged stream
    count, and points at the caller's line (this file), not the filter's internals."""
    y, msgs = out
    assert y.shape == (40, 64, 3)
    assert any(m == "streamssm: frame size changed from 64x48 to 64x40; the filter starts over" and f == __file__
               for m, f in msgs), msgs


def _video_set_state_nan():
    f = VideoFilter(device="cpu")
    f.step(np.zeros((48, 64, 3), np.uint8))
    st = list(f.get_state())
    st[7] = st[7].clone()  # the brightness records (prev_levels)
    st[7].view(-1)[0] = float("nan")
    f.set_state(tuple(st))


def _weights_load(kind: str, path: Path):
    return lambda: (PoseFilter if kind == "pose" else VideoFilter)(weights=path, device="cpu")


# ------------------------------------------------------------------------------------- catalogue
V = ("--device", "cpu", "--no-progress")

CASES = [
    # ---- Python API: PoseFilter ------------------------------------------------------------------
    Case("api-pose-1d-points", lambda d: lambda: PoseFilter(device="cpu").step(np.zeros(33, np.float32)),
         ValueError, ("points must have shape (K, D) or (B, K, D)", "(33,)")),
    Case("api-pose-4-coordinates", lambda d: lambda: PoseFilter(device="cpu").step(np.zeros((33, 4), np.float32)),
         ValueError, ("D = 2 or 3", "(33, 4)")),
    Case("api-pose-zero-keypoints", lambda d: lambda: PoseFilter(device="cpu").step(np.zeros((0, 2), np.float32)),
         ValueError, ("at least one keypoint",)),
    Case("api-pose-huge-keypoint-count", lambda d: lambda: PoseFilter(device="cpu").step(np.zeros((100_000, 2), np.float32)),
         ValueError, ("100000 keypoints", "MAX_KEYPOINTS")),
    Case("api-pose-string-dtype", lambda d: lambda: PoseFilter(device="cpu").step(np.full((17, 2), "1.0")),
         ValueError, ("points must be real numbers", "<U3")),
    Case("api-pose-complex-dtype", lambda d: lambda: PoseFilter(device="cpu").step(np.zeros((17, 2), np.complex64)),
         ValueError, ("points must be real numbers", "complex64")),
    Case("api-pose-joint-count-changes", lambda d: _pose_then(pts(17), pts(12)),
         ValueError, ("17 keypoints", "12", "call reset() first")),
    Case("api-pose-dimension-changes", lambda d: _pose_then(pts(17, d=2), pts(17, d=3)),
         ValueError, ("keypoints are 2-D", "got 3-D", "call reset() first")),
    Case("api-pose-fps-set-to-zero", lambda d: lambda: setattr(PoseFilter(device="cpu"), "fps", 0), ValueError,
         ("fps must be a positive number of frames per second", "0")),
    Case("api-pose-confidence-shape-mismatch",
         lambda d: lambda: PoseFilter(device="cpu").step(pts(), confidence=np.ones(16, np.float32)),
         ValueError, ("confidence must have shape (17,)", "(16,)")),
    Case("api-pose-nan-inf-and-missing-confidence", lambda d: _pose_nan_frames, None, check=_pose_nan_contract),
    Case("api-pose-coordinates-overflow", lambda d: lambda: PoseFilter(device="cpu").step(pts() * 1e19), ValueError,
         ("points: coordinates up to", "beyond 1e+18", "rescale")),
    Case("api-pose-empty-sequence", lambda d: lambda: PoseFilter(device="cpu").filter(np.zeros((0, 17, 2), np.float32)),
         ValueError, ("sequence is empty", "T = 0")),
    Case("api-pose-negative-fps", lambda d: lambda: PoseFilter(device="cpu", fps=-30), ValueError,
         ("fps must be a positive number", "-30")),
    Case("api-pose-fps-as-text", lambda d: lambda: PoseFilter(device="cpu", fps="thirty"), ValueError,
         ("fps must be a number", "'thirty'")),
    Case("api-pose-strength-out-of-range", lambda d: lambda: PoseFilter(device="cpu", strength=5), ValueError,
         ("strength must be in [0, 2]", "5")),
    Case("api-pose-timestamps-go-backwards",
         lambda d: lambda: PoseFilter(device="cpu").filter(pts(t=3), timestamps=[0.0, 0.1, 0.05]),
         ValueError, ("timestamps must strictly increase", "frame 2", "0.05")),
    Case("api-pose-timestamps-wrong-count",
         lambda d: lambda: PoseFilter(device="cpu").filter(pts(t=3), timestamps=[0.0, 0.1]),
         ValueError, ("one value per frame", "3 frames", "2 timestamps")),
    Case("api-pose-set-state-garbage", lambda d: lambda: PoseFilter(device="cpu").set_state("not a state"),
         ValueError, ("pose state must be a tuple of tensors", "str")),
    Case("api-pose-reset-mask-wrong-shape", lambda d: (lambda: (f := PoseFilter(device="cpu"), f.step(pts(t=2)),
                                                                 f.reset([True, False, True]))),
         ValueError, ("reset mask must have shape (B,)=(2,)", "(3,)")),
    Case("api-pose-reset-mask-of-indices", lambda d: (lambda: (f := PoseFilter(device="cpu"), f.step(pts(t=2)),
                                                                f.reset([0, 1]))),
         ValueError, ("reset mask must be booleans", "drop_streams()")),
    Case("api-pose-model-step-state-second", lambda d: (lambda: (m := PoseFilter(device="cpu").model,
                                                                  m.step(torch.rand(1, 17, 2), m.step(
                                                                      torch.rand(1, 17, 2))[1]))),
         TypeError, ("as its confidence", "state=state")),
    # ---- Python API: VideoFilter -----------------------------------------------------------------
    Case("api-video-two-channel-frame", lambda d: lambda: VideoFilter(device="cpu").step(np.zeros((48, 64, 2), np.uint8)),
         ValueError, ("frame must be H x W x 3", "(48, 64, 2)")),
    Case("api-video-int32-frame", lambda d: lambda: VideoFilter(device="cpu").step(np.zeros((48, 64, 3), np.int32)),
         ValueError, ("frame must be uint8, uint16 or float", "int32")),
    Case("api-video-nan-in-float-frame",
         lambda d: lambda: VideoFilter(device="cpu").step(np.full((48, 64, 3), np.nan, np.float32)),
         ValueError, ("frame contains NaN or inf",)),
    Case("api-video-empty-frame", lambda d: lambda: VideoFilter(device="cpu").step(np.zeros((0, 64, 3), np.uint8)),
         ValueError, ("frame must be H x W x 3", "(0, 64, 3)")),
    Case("api-video-frame-smaller-than-a-cell",
         lambda d: lambda: VideoFilter(device="cpu").step(np.zeros((20, 300, 3), np.uint8)),
         ValueError, ("frame is 300x20 pixels", "at least 32x32")),
    Case("api-video-original-size-mismatch",
         lambda d: lambda: VideoFilter(device="cpu").step(np.zeros((48, 64, 3), np.uint8), np.zeros((48, 80, 3), np.uint8)),
         ValueError, ("original frame is 80x48", "processed frame is 64x48", "same size")),
    Case("api-video-tensor-channels-last", lambda d: lambda: VideoFilter(device="cpu").step(torch.rand(1, 48, 64, 3)),
         ValueError, ("frame tensor must be (B, 3, H, W)", "(1, 48, 64, 3)")),
    Case("api-video-nan-in-tensor", lambda d: _video_tensor_nan, None, check=_video_tensor_nan_contract),
    Case("api-video-resolution-changes", lambda d: _video_size_change, None, check=_video_size_change_contract),
    Case("api-video-unpaired-clip",
         lambda d: lambda: VideoFilter(device="cpu").filter([np.zeros((48, 64, 3), np.uint8)] * 3,
                                                             [np.zeros((48, 64, 3), np.uint8)] * 2),
         ValueError, ("3 processed frames but 2 originals", "pair up")),
    Case("api-video-clip-with-a-missing-original",
         lambda d: lambda: VideoFilter(device="cpu").filter([np.zeros((48, 64, 3), np.uint8)] * 3,
                                                             [np.zeros((48, 64, 3), np.uint8), None, None]),
         ValueError, ("originals[1] is None", "step(frame, original=None)")),
    Case("api-pose-confidence-not-numbers",
         lambda d: lambda: PoseFilter(device="cpu").step(pts(), confidence="high"),
         ValueError, ("confidence must be numbers of shape (17,)", "'high'")),
    Case("api-device-not-cpu-or-cuda", lambda d: lambda: VideoFilter(device="mps"), ValueError,
         ("device must be 'auto', 'cpu' or 'cuda[:N]'", "'mps'")),
    Case("api-video-chunk-not-positive",
         lambda d: lambda: VideoFilter(device="cpu").filter([np.zeros((48, 64, 3), np.uint8)] * 3, chunk=-1),
         ValueError, ("chunk must be a positive whole number of frames", "-1")),
    Case("api-video-strength-set-to-nan",
         lambda d: lambda: setattr(VideoFilter(device="cpu"), "strength", float("nan")),
         ValueError, ("strength must be in [0, 2]", "nan")),
    Case("api-video-set-state-nan", lambda d: _video_set_state_nan, ValueError, ("video state[7] contains NaN",)),
    Case("api-video-timestamp-not-a-number",
         lambda d: lambda: VideoFilter(device="cpu").step(np.zeros((48, 64, 3), np.uint8), timestamp="noon"),
         ValueError, ("timestamp must be a number of seconds", "'noon'")),
    # ---- Python API: weights (safetensors only, validated before the model is built) -------------
    Case("api-weights-pickle-pt", lambda d: (torch.save({"w": torch.zeros(3)}, d / "model.pt"),
                                             _weights_load("pose", d / "model.pt"))[1],
         ValueError, ("{d}/model.pt", "pickle or torch.save checkpoint, not safetensors", "never unpickles")),
    Case("api-weights-pickle-renamed-safetensors",
         lambda d: ((d / "evil.safetensors").write_bytes(b"\x80\x04\x95" + b"\x00" * 64),
                    _weights_load("video", d / "evil.safetensors"))[1],
         ValueError, ("{d}/evil.safetensors", "not safetensors")),
    Case("api-weights-missing", lambda d: _weights_load("pose", d / "nope.safetensors"), ValueError,
         ("{d}/nope.safetensors does not exist", "expected a .safetensors file")),
    Case("api-weights-directory", lambda d: ((d / "w.safetensors").mkdir(), _weights_load("pose", d / "w.safetensors"))[1],
         ValueError, ("{d}/w.safetensors is a directory", "expected a .safetensors file")),
    Case("api-weights-wrong-kind", lambda d: _weights_load("pose", weights_copy(d, VIDEO_WEIGHTS, "v.safetensors")),
         ValueError, ("{d}/v.safetensors", "streamssm.model='video'", "expected 'pose'")),
    Case("api-weights-truncated",
         lambda d: ((d / "t.safetensors").write_bytes(VIDEO_WEIGHTS.read_bytes()[:5000]),
                    _weights_load("video", d / "t.safetensors"))[1],
         ValueError, ("{d}/t.safetensors is not a readable safetensors file",)),
    Case("api-weights-hostile-config",
         lambda d: _weights_load("pose", weights_copy(d, POSE_WEIGHTS, "big.safetensors", _config(d_model=10**9))),
         ValueError, ("{d}/big.safetensors", "config field 'd_model'", "integer in [0, 8192]")),
    Case("api-weights-unknown-config-field",
         lambda d: _weights_load("video", weights_copy(d, VIDEO_WEIGHTS, "u.safetensors", _config(exec="rm -rf /"))),
         ValueError, ("{d}/u.safetensors", "['exec']", "does not know")),
    Case("api-weights-wrong-tensor-shape",
         lambda d: _weights_load("pose", weights_copy(d, POSE_WEIGHTS, "s.safetensors", _tensor(lambda t: t.flatten()[:-1].clone()))),
         ValueError, ("{d}/s.safetensors", "the model expects")),
    Case("api-weights-nan-tensor",
         lambda d: _weights_load("pose", weights_copy(d, POSE_WEIGHTS, "n.safetensors", _tensor(lambda t: torch.full_like(t, float("nan"))))),
         ValueError, ("{d}/n.safetensors", "contains NaN or inf")),
    # ---- Python API: readers and writers ---------------------------------------------------------
    Case("api-io-image-renamed-mp4",
         lambda d: (cv2.imwrite(str(d / "photo.png"), np.zeros((48, 64, 3), np.uint8)),
                    os.replace(d / "photo.png", d / "photo.mp4"), lambda: open_source(d / "photo.mp4"))[2],
         VideoIOError, ("{d}/photo.mp4", "single image (png)", "expected a video file")),
    Case("api-io-random-bytes-mp4", lambda d: ((d / "r.mp4").write_bytes(np.random.default_rng(0).bytes(5000)),
                                              lambda: open_source(d / "r.mp4"))[1],
         VideoIOError, ("{d}/r.mp4", "not a readable video")),
    Case("api-io-sink-output-is-input",
         lambda d: (clip(d), lambda: open_sink(d / "in.mp4", fps=30, width=64, height=48, overwrite=True,
                                               protected=[d / "in.mp4"]))[1],
         VideoIOError, ("{d}/in.mp4", "same file as the input")),
    Case("api-io-sink-negative-size", lambda d: lambda: open_sink(d / "o.mp4", fps=30, width=-64, height=48),
         VideoIOError, ("{d}/o.mp4", "invalid output size -64x48")),
    Case("api-io-pose-binary-renamed-json", lambda d: ((d / "p.json").write_bytes(b"\xff\xfe\x00\x01" * 300),
                                                       lambda: read_pose(d / "p.json"))[1],
         ValueError, ("{d}/p.json", "not UTF-8 text", "expected .json pose data")),
    Case("api-io-pose-npz-with-pickled-object",
         lambda d: (np.savez(d / "o.npz", points=np.array([{"x": 1}], dtype=object)), lambda: read_pose(d / "o.npz"))[1],
         ValueError, ("{d}/o.npz", "cannot read as .npz")),
    Case("api-io-pose-csv-duplicate-rows",
         lambda d: (pose_csv(d, rows=["0,0,1,2", "0,1,3,4", "0,0,5,6"]), lambda: read_pose(d / "in.csv"))[1],
         ValueError, ("{d}/in.csv", "line 4: frame 0 joint '0' appears twice", "one row per (frame, joint)")),
    # ---- command line: streamssm video -------------------------------------------------------------
    Case("cli-video-missing-input", lambda d: _cli("video", d / "nope.mp4", "-o", d / "o.mp4", *V), 2,
         ("{d}/nope.mp4: no such file", "expected a video file")),
    Case("cli-video-text-renamed-mp4", lambda d: (text_as(d, "notes.mp4"), _subprocess("video", d / "notes.mp4", "-o", d / "o.mp4", *V))[1],
         2, ("{d}/notes.mp4: looks like a text file, not a video", "expected a video file")),
    Case("cli-video-directory-as-input", lambda d: ((d / "clip.mp4").mkdir(), _cli("video", d / "clip.mp4", "-o", d / "o.mp4", *V))[1],
         2, ("{d}/clip.mp4: is a directory", "expected a video file")),
    Case("cli-video-output-is-input", lambda d: (clip(d), _cli("video", d / "in.mp4", "-o", d / "in.mp4", "--overwrite", *V))[1],
         2, ("{d}/in.mp4: output is the same file as the input",)),
    Case("cli-video-output-exists", lambda d: (clip(d), clip(d, "o.mp4"), _cli("video", d / "in.mp4", "-o", d / "o.mp4", *V))[2],
         2, ("{d}/o.mp4: output already exists", "--overwrite")),
    Case("cli-video-output-is-a-fifo",
         lambda d: (clip(d), os.mkfifo(d / "o.mp4"),
                    _cli("video", d / "in.mp4", "-o", d / "o.mp4", "--overwrite", *V))[2],
         2, ("{d}/o.mp4: is a named pipe (FIFO), not a regular file", "--overwrite replaces only a regular file")),
    Case("cli-video-output-folder-missing", lambda d: (clip(d), _cli("video", d / "in.mp4", "-o", d / "no" / "o.mp4", *V))[1],
         2, ("{d}/no/o.mp4", "output directory {d}/no does not exist")),
    Case("cli-video-fps-on-a-video-file",
         lambda d: (clip(d), _cli("video", d / "in.mp4", "-o", d / "o.mp4", "--fps", 10, *V))[1],
         2, ("--fps sets the rate of an image-folder input", "{d}/in.mp4 is a video file")),
    Case("cli-video-read-only-output-folder",
         lambda d: (clip(d), (ro := readonly_dir(d)), _cli("video", d / "in.mp4", "-o", ro / "o.mp4", *V))[2],
         2, ("o.mp4: cannot create output file in",)),
    Case("cli-video-unknown-output-extension", lambda d: (clip(d), _cli("video", d / "in.mp4", "-o", d / "o.txt", *V))[1],
         2, ("{d}/o.txt: unknown output extension '.txt'", "expected one of .mp4")),
    Case("cli-video-mismatched-pair",
         lambda d: (clip(d), clip(d, "orig.mp4", n=9), _cli("video", d / "in.mp4", "--original", d / "orig.mp4", "-o", d / "o.mp4", *V))[2],
         2, ("frame counts differ", "{d}/in.mp4 (processed) has 12 frames", "{d}/orig.mp4 (original) has 9")),
    Case("cli-video-pair-sizes-differ",
         lambda d: (clip(d), clip(d, "orig.mp4", size=(96, 64)), _cli("video", d / "in.mp4", "--original", d / "orig.mp4", "-o", d / "o.mp4", *V))[2],
         2, ("frame sizes differ", "{d}/in.mp4 (processed) is 64x48", "{d}/orig.mp4 (original) is 96x64")),
    Case("cli-video-over-max-resolution",
         lambda d: (clip(d), _cli("video", d / "in.mp4", "-o", d / "o.mp4", "--max-resolution", "32x24", *V))[1],
         2, ("{d}/in.mp4: frame size 64x48 exceeds max_resolution 32x24",)),
    Case("cli-video-over-max-duration",
         lambda d: (clip(d), _cli("video", d / "in.mp4", "-o", d / "o.mp4", "--max-duration", "0.2", *V))[1],
         2, ("{d}/in.mp4: duration 0.40s exceeds max_duration=0.2s",)),
    Case("cli-video-over-max-input-frames",
         lambda d: (clip(d), _cli("video", d / "in.mp4", "-o", d / "o.mp4", "--max-input-frames", "5", *V))[1],
         2, ("{d}/in.mp4: 12 frames exceeds max_frames=5",)),
    Case("cli-video-bad-max-resolution-flag",
         lambda d: (clip(d), _cli("video", d / "in.mp4", "-o", d / "o.mp4", "--max-resolution", "huge", *V))[1],
         2, ("--max-resolution must be WIDTHxHEIGHT", "'huge'")),
    Case("cli-video-negative-max-frames",
         lambda d: (clip(d), _cli("video", d / "in.mp4", "-o", d / "o.mp4", "--max-frames", "-3", *V))[1],
         2, ("--max-frames must be at least 1", "-3")),
    Case("cli-video-weights-pickle",
         lambda d: (clip(d), torch.save({}, d / "w.pt"), _cli("video", d / "in.mp4", "-o", d / "o.mp4", "--weights", d / "w.pt", *V))[2],
         2, ("{d}/w.pt is a pickle or torch.save checkpoint",)),
    Case("cli-video-image-folder-size-changes",
         lambda d: ((d / "f").mkdir(), cv2.imwrite(str(d / "f" / "1.png"), np.zeros((48, 64, 3), np.uint8)),
                    cv2.imwrite(str(d / "f" / "2.png"), np.zeros((40, 64, 3), np.uint8)),
                    _cli("video", d / "f", "-o", d / "o.mp4", *V))[3],
         2, ("{d}/f/2.png: image is 64x40, expected 64x48", "o.mp4 holds the 1 frames filtered before the run stopped"),
         left=("o.mp4",)),
    # ---- command line: streamssm pose ------------------------------------------------------------
    Case("cli-pose-missing-input", lambda d: _subprocess("pose", d / "nope.csv", "-o", d / "o.csv"), 2,
         ("{d}/nope.csv: no such file", "expected a pose file")),
    Case("cli-pose-directory-as-input", lambda d: ((d / "x.csv").mkdir(), _cli("pose", d / "x.csv", "-o", d / "o.csv"))[1],
         2, ("{d}/x.csv: is a directory without OpenPose", "expected a pose file (.npz/.csv/.json)")),
    Case("cli-pose-wrong-columns",
         lambda d: ((d / "k.csv").write_text("frame,joint,u,v\n0,0,1,2\n"), _cli("pose", d / "k.csv", "-o", d / "o.csv"))[1],
         2, ("{d}/k.csv: expected header 'frame,joint,x,y[,z][,confidence or visibility]'", "'frame,joint,u,v'")),
    Case("cli-pose-empty-file", lambda d: ((d / "e.json").write_text(""), _cli("pose", d / "e.json", "-o", d / "o.json"))[1],
         2, ("{d}/e.json: empty file", "expected .json pose data")),
    Case("cli-pose-joint-count-changes",
         lambda d: ((d / "j.json").write_text(json.dumps({"frames": [{"keypoints": [[1, 2], [3, 4]]}, {"keypoints": [[1, 2]]}]})),
                    _cli("pose", d / "j.json", "-o", d / "o.json"))[1],
         2, ("{d}/j.json: inconsistent joint counts per frame [1, 2]", "expected the same number in every frame")),
    Case("cli-pose-frame-numbers-go-backwards",
         lambda d: ((d / "b.json").write_text(json.dumps({"frames": [{"frame": f, "keypoints": [[1, 2], [3, 4]]} for f in (0, 5, 3)]})),
                    _cli("pose", d / "b.json", "-o", d / "o.json"))[1],
         2, ("{d}/b.json: frame numbers must increase", "3 comes after 5")),
    Case("cli-pose-output-is-input", lambda d: (pose_csv(d), _cli("pose", d / "in.csv", "-o", d / "in.csv", "--overwrite"))[1],
         2, ("{d}/in.csv: output is the input file", "refusing to overwrite it")),
    Case("cli-pose-output-is-a-fifo",
         lambda d: (pose_csv(d), os.mkfifo(d / "o.csv"),
                    _cli("pose", d / "in.csv", "-o", d / "o.csv", "--overwrite"))[2],
         2, ("{d}/o.csv: is a named pipe (FIFO), not a regular file", "expected a pose file to write")),
    Case("cli-pose-json-fps-not-a-number",
         lambda d: ((d / "f.json").write_text(json.dumps({"fps": [25], "frames": [{"keypoints": [[1, 2]]}]})),
                    _cli("pose", d / "f.json", "-o", d / "o.json"))[1],
         2, ("{d}/f.json: its fps ([25]) is not a positive number", "pass --fps")),
    Case("cli-pose-json-dims-disagree",
         lambda d: ((d / "3.json").write_text(json.dumps({"dims": 3, "frames": [{"keypoints": [[1, 2]]}]})),
                    _cli("pose", d / "3.json", "-o", d / "o.json"))[1],
         2, ("{d}/3.json: 'dims' is 3 but keypoints have 2 numbers",)),
    Case("cli-pose-negative-fps", lambda d: (pose_csv(d), _cli("pose", d / "in.csv", "-o", d / "o.csv", "--fps", "-5"))[1],
         2, ("fps must be a positive number", "-5")),
    Case("cli-pose-unknown-extension", lambda d: (pose_csv(d), _cli("pose", d / "in.csv", "-o", d / "o.txt"))[1],
         2, ("{d}/o.txt: unknown output extension '.txt'", "expected one of .npz/.csv/.json")),
    Case("cli-pose-output-in-missing-dir-under-a-file",
         lambda d: (pose_csv(d), _cli("pose", d / "in.csv", "-o", d / "in.csv" / "o.csv"))[1],
         2, ("{d}/in.csv/o.csv: {d}/in.csv is a file, not a folder", "expected an output path inside a folder")),
    Case("cli-pose-one-openpose-frame",
         lambda d: ((d / "c_000000000000_keypoints.json").write_text(json.dumps({"version": 1.3, "people": []})),
                    _cli("pose", d / "c_000000000000_keypoints.json", "-o", d / "o.json"))[1],
         2, ("{d}/c_000000000000_keypoints.json: is one frame of OpenPose output", "pass the folder")),
    Case("cli-pose-openpose-folder-with-nobody",
         lambda d: ((d / "op").mkdir(), *[(d / "op" / f"c_{i:012d}_keypoints.json").write_text(
             json.dumps({"people": []})) for i in range(3)], _cli("pose", d / "op", "-o", d / "out"))[-1],
         2, ("{d}/op: nobody is detected in any of the 3 frames",)),
    Case("cli-pose-openpose-key-unknown",
         lambda d: ((d / "op").mkdir(), (d / "op" / "c_000000000000_keypoints.json").write_text(
             json.dumps({"people": [{"pose_keypoints_2d": [1, 2, 1, 3, 4, 1]}]})),
             _cli("pose", d / "op", "-o", d / "o.csv", "--key", "landmarks_raw"))[-1],
         2, ("{d}/op: --key 'landmarks_raw' is not an OpenPose keypoint array", "pose_keypoints_2d")),
    Case("cli-pose-coordinates-overflow",
         lambda d: (pose_csv(d, rows=[f"{f},{j},{1e30 * (j + 1)},{f}" for f in range(4) for j in range(3)]),
                    _cli("pose", d / "in.csv", "-o", d / "o.csv"))[1],
         2, ("{d}/in.csv: coordinates up to 3e+30 in magnitude", "rescale")),
    # ---- command line: streamssm export ----------------------------------------------------------
    Case("cli-export-onnx-output-is-the-weights",
         lambda d: (_copy(POSE_WEIGHTS, d / "my.safetensors"),
                    _cli("export", "onnx", "--model", "pose", "--weights", d / "my.safetensors", "-o",
                         d / "my.safetensors", "--overwrite"))[1],
         2, ("{d}/my.safetensors: is the input file", "refusing to overwrite it")),
    Case("cli-export-onnx-existing-output",
         lambda d: ((d / "old.onnx").write_bytes(b"a graph of the user's"),
                    _cli("export", "onnx", "--model", "pose", "-o", d / "old.onnx"))[1],
         2, ("{d}/old.onnx: already exists", "pass --overwrite")),
    Case("cli-export-onnx-output-is-a-directory", lambda d: _cli("export", "onnx", "--model", "pose", "-o", d),
         2, ("{d}: is a directory", "expected the file to write")),
    Case("cli-export-onnx-zero-size-shape",
         lambda d: _cli("export", "onnx", "--model", "pose", "-o", d / "p.onnx", "--shape", "0x17x2"),
         2, ("every size in a shape must be at least 1", "0x17x2")),
    Case("cli-export-onnx-guided-pose",
         lambda d: _cli("export", "onnx", "--model", "pose", "--guided", "-o", d / "p.onnx"),
         2, ("--guided is for --model video",)),
    Case("cli-export-tensorrt-not-an-onnx-file",
         lambda d: ((d / "x.onnx").write_text("hello"), _cli("export", "tensorrt", "--onnx", d / "x.onnx", "-o",
                                                                d / "x.engine"))[1],
         2, ("{d}/x.onnx: not a readable ONNX graph", "expected an .onnx file")),
    Case("cli-export-tensorrt-negative-workspace",
         lambda d: ((d / "x.onnx").write_text("hello"), _cli("export", "tensorrt", "--onnx", d / "x.onnx", "-o",
                                                                d / "x.engine", "--workspace-mb", "-5"))[1],
         2, ("--workspace-mb must be a positive number of MiB", "-5")),
]


def _demo_cases() -> list[Case]:
    """The demo's own checks, through its Python functions (``streamssm.demo.jobs``)."""
    try:
        from streamssm.demo import jobs
    except Exception:  # the demo extra is not installed, or the demo is not there: no demo cases
        return []
    roots = lambda d: [d / "uploads"]  # noqa: E731

    def upload(d: Path, name: str, data: bytes) -> Path:
        (d / "uploads").mkdir(exist_ok=True)
        p = d / "uploads" / name
        p.write_bytes(data)
        return p

    return [
        Case("demo-path-outside-upload-folder",
             lambda d: ((d / "uploads").mkdir(), (d / "secret.mp4").write_bytes(b"x" * 100),
                        lambda: jobs.check_upload(d / "uploads" / ".." / "secret.mp4", what="video",
                                                  limits=jobs.Limits(), roots=roots(d)))[2],
             jobs.DemoError, ("secret.mp4: refused", "not a file uploaded to this app")),
        Case("demo-symlink-out-of-upload-folder",
             lambda d: ((d / "uploads").mkdir(), (d / "secret.mp4").write_bytes(b"x" * 100),
                        (d / "uploads" / "link.mp4").symlink_to(d / "secret.mp4"),
                        lambda: jobs.check_upload(d / "uploads" / "link.mp4", what="video", limits=jobs.Limits(),
                                                  roots=roots(d)))[3],
             jobs.DemoError, ("link.mp4: refused",)),
        Case("demo-text-renamed-mp4",
             lambda d: (upload(d, "holiday.mp4", b"not a video\n" * 100),
                        lambda: jobs.read_clip(d / "uploads" / "holiday.mp4", "holiday.mp4", jobs.Limits(), 4))[1],
             jobs.DemoError, ("holiday.mp4: looks like a text file, not a video",)),
        Case("demo-binary-as-pose-file",
             lambda d: (upload(d, "pose.json", b"\x00\x01\x02" * 100),
                        lambda: jobs.sniff_pose_format(d / "uploads" / "pose.json", "pose.json"))[1],
             jobs.DemoError, ("pose.json: not a pose file", "expected .npz")),
    ]


ALL = CASES + _demo_cases()


def test_catalogue_is_big_enough_and_ids_are_unique():
    ids = [c.id for c in ALL]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_bad_input(case: Case, tmp_path: Path):
    d = tmp_path
    call = case.setup(d)
    before = _snapshot(d)
    says = [s.replace("{d}", str(d)) for s in case.says]
    if case.error is None:
        case.check(call(), d)
    elif isinstance(case.error, int):
        code, err = call()
        assert code == case.error, err
        assert "Traceback" not in err, err
        for s in says:
            assert s in err, f"{s!r} not in {err!r}"
    else:
        with pytest.raises(case.error) as e:
            call()
        for s in says:
            assert s in str(e.value), f"{s!r} not in {str(e.value)!r}"
    after = _snapshot(d)
    for name in case.left:  # what the contract keeps must play
        assert frames_in(d / name) >= 1
        after.pop(name)
    assert after == before, f"files changed: before {sorted(before)} after {sorted(after)}"
    assert not [p for p in d.rglob("*") if "partial" in p.name or p.name.endswith(".tmp")]
