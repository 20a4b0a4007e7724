"""Faults injected into real runs (issue 8): Ctrl-C / SIGTERM, a full disk, a camera that stops, a
truncated or corrupt input, timestamps that jump. Each must end with a clear message and a non-zero
exit code (a clean 0 where the contract says so), and leave a playable output holding every frame
processed so far, without ever replacing or losing a file the user already had.

The signal and disk tests run ``python -m streamssm`` in a subprocess (real signals, a real
RLIMIT_FSIZE: writes past the limit fail with EFBIG, which the sinks treat like ENOSPC); the camera
test fakes ``cv2.VideoCapture`` in-process.
"""

from __future__ import annotations

import re
import resource
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")

from tests._media import FakeCapture, cli_cmd, digest, env, frame, frames_in, make_clip, run_cli, timestamps_in  # noqa: E402


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """Long enough (1200 frames) that a run is still going when the signal arrives."""
    return make_clip(tmp_path_factory.mktemp("long") / "long.mp4", n=1200, size=(96, 64))


def _kept(stderr: str) -> tuple[str, int]:
    m = re.search(r"streamssm: (?:interrupted; )?(\S+) holds the (\d+) frames", stderr)
    assert m, stderr
    return m.group(1), int(m.group(2))


def _signal_when(cmd: list[str], sig, ready, settle: float) -> subprocess.CompletedProcess:
    """Start ``cmd``, wait until ``ready()`` (the output is being written), give it ``settle`` seconds more, send
    ``sig``.

    The child gets SIGINT's and SIGHUP's default dispositions back first: a test run started in the background
    (``cmd &``, ``nohup``) hands its children an *ignored* SIGINT (and, under ``nohup``, SIGHUP), and the CLI then
    installs no handler for it (an ignored SIGHUP stays ignored, by design) -- the run would finish and this harness
    would read that as the CLI ignoring the signal."""
    def defaults():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                         preexec_fn=defaults)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 120:
            if p.poll() is not None:
                break
            if ready():
                time.sleep(settle)
                p.send_signal(sig)
                break
            time.sleep(0.01)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _run_and_signal(args, sig, partial: Path) -> subprocess.CompletedProcess:
    """``streamssm video ...``, signalled a second after its output is being written (the muxer's header is there)."""
    return _signal_when(cli_cmd("video", *args), sig, lambda: partial.exists() and partial.stat().st_size > 0, 1.0)


@pytest.mark.parametrize("sig,code,says", [(signal.SIGINT, 130, "interrupted"),
                                           (signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                           (signal.SIGHUP, 129, "terminated (SIGHUP)")],
                         ids=["ctrl-c", "sigterm", "sighup"])
def test_signal_mid_run_keeps_a_playable_output_with_every_frame(tmp_path, long_clip, sig, code, says):
    out = tmp_path / "out.mp4"
    before = digest(long_clip)
    r = _run_and_signal([long_clip, "-o", out, "--device", "cpu", "--no-progress"], sig, tmp_path / ".out.partial.mp4")
    assert r.returncode == code, r.stderr
    assert says in r.stderr and "Traceback" not in r.stderr
    where, n = _kept(r.stderr)
    assert Path(where) == out and 0 < n < 1200
    assert frames_in(out) == n, "the output does not hold every frame processed"
    assert not list(tmp_path.glob(".*partial*")), "temporary file left behind"
    assert digest(long_clip) == before


def test_interrupted_overwrite_keeps_the_old_output_and_writes_a_named_partial(tmp_path, long_clip):
    out = tmp_path / "out.mp4"
    make_clip(out, n=7, size=(96, 64))  # a previous, complete result
    old = digest(out)
    r = _run_and_signal([long_clip, "-o", out, "--overwrite", "--device", "cpu", "--no-progress"], signal.SIGINT,
                        tmp_path / ".out.partial.mp4")
    assert r.returncode == 130, r.stderr
    where, n = _kept(r.stderr)
    assert Path(where) == tmp_path / "out.partial.mp4"
    assert digest(out) == old and frames_in(out) == 7, "an incomplete run replaced a complete output"
    assert frames_in(tmp_path / "out.partial.mp4") == n > 0


def _limit_file_size(nbytes: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return apply


def test_disk_full_during_video_run_is_reported_and_leaves_nothing_corrupt(tmp_path):
    noisy = make_clip(tmp_path / "noisy.mp4", n=120, size=(256, 192), noise=True)  # ~30 kB a frame once filtered
    out = tmp_path / "out.mp4"
    before = digest(noisy)
    r = subprocess.run(cli_cmd("video", noisy, "-o", out, "--device", "cpu", "--no-progress"), capture_output=True,
                       text=True, timeout=120, env=env(), preexec_fn=_limit_file_size(60_000))
    assert r.returncode == 2, r.stderr
    assert "disk full" in r.stderr and str(out) in r.stderr and "Traceback" not in r.stderr
    # an mp4 cannot be finalised on a full disk (its index goes last): nothing half-written is left
    assert not out.exists() and not list(tmp_path.glob("*partial*")), list(tmp_path.iterdir())
    assert digest(noisy) == before


def test_disk_full_during_pose_write_leaves_nothing(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "in.npz", points=rng.normal(size=(3000, 33, 3)).astype(np.float32), fps=30.0)
    out = tmp_path / "out.csv"
    r = subprocess.run(cli_cmd("pose", tmp_path / "in.npz", "-o", out), capture_output=True, text=True, timeout=120,
                       env=env(), preexec_fn=_limit_file_size(50_000))
    assert r.returncode == 2, r.stderr
    assert "disk full" in r.stderr and str(out) in r.stderr and "nothing written" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz"]


def test_camera_that_stops_delivering_exits_1_with_the_recording_kept(tmp_path, monkeypatch, capsys):
    from streamssm.cli import main

    monkeypatch.setattr(cv2, "VideoCapture", lambda index: FakeCapture(frame, 40, delay=0.01))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    rec = tmp_path / "rec.mp4"
    code = main(["video", "--webcam", "0", "--record", str(rec), "--device", "cpu", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 1, err
    assert "camera stopped delivering frames" in err and "camera:0" in err
    n = int(re.search(r"streamssm: (\d+) frames", out).group(1))
    assert n >= 1 and frames_in(rec) == n, "the recording does not hold every frame filtered"
    assert f"{rec} holds the {n} frames" in err


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_truncated_or_corrupt_input_keeps_the_frames_before_the_damage(tmp_path, damage):
    src = make_clip(tmp_path / "in.mkv", n=60, size=(96, 64))
    data = bytearray(src.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        mid = len(data) // 2
        data[mid : mid + 3000] = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    src.write_bytes(bytes(data))
    out = tmp_path / "out.mp4"
    r = run_cli("video", src, "-o", out, "--device", "cpu", "--no-progress")
    assert r.returncode == 2, r.stderr
    assert "truncated" in r.stderr and str(src) in r.stderr and "Traceback" not in r.stderr
    where, n = _kept(r.stderr)
    assert Path(where) == out and n >= 5
    assert frames_in(out) == n


def test_timestamp_gap_is_kept_in_the_output_and_restarts_the_filter(tmp_path):
    pts = list(range(20)) + [i + 90 for i in range(20, 40)]  # 3 s without frames after frame 19
    src = make_clip(tmp_path / "gap.mp4", n=40, pts=pts)
    out = tmp_path / "out.mp4"
    r = run_cli("-v", "video", src, "-o", out, "--device", "cpu", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "starting the streams over" in r.stderr
    ts = timestamps_in(out)
    assert len(ts) == 40
    assert abs((ts[20] - ts[19]) - 91 / 30) < 0.05, "the gap was not kept"


def test_video_filter_restarts_only_after_a_gap_longer_than_max_gap():
    from streamssm import VideoFilter

    f, plain, fresh = VideoFilter(device="cpu", max_gap=0.5), VideoFilter(device="cpu"), VideoFilter(device="cpu")
    f.step(frame(0), timestamp=0.0)
    plain.step(frame(0))
    # 0.2 s later (dropped frames): the filter just goes on
    np.testing.assert_array_equal(f.step(frame(1), timestamp=0.2), plain.step(frame(1)))
    # 0.8 s later (> max_gap): it starts over, exactly like a fresh filter
    np.testing.assert_array_equal(f.step(frame(2), timestamp=1.0), fresh.step(frame(2)))
    np.testing.assert_array_equal(f.step(frame(3), timestamp=1.033), fresh.step(frame(3)))
    with pytest.raises(ValueError, match="strictly increase"):
        f.step(frame(4), timestamp=1.0)


def test_pose_frame_number_gaps_are_stepped_over_as_missing_frames(tmp_path):
    from streamssm import PoseFilter

    rng = np.random.default_rng(0)
    kept = [i for i in range(40) if not 10 <= i < 13]  # frames 10-12 dropped by the estimator
    x = (rng.normal(size=(40, 5, 2)).cumsum(0) * 3 + 100).astype(np.float32)
    lines = ["# fps=30.0", "frame,joint,x,y"] + [f"{i},{j},{float(x[i, j, 0])!r},{float(x[i, j, 1])!r}" for i in kept for j in range(5)]
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    r = run_cli("pose", tmp_path / "in.csv", "-o", tmp_path / "out.csv")
    assert r.returncode == 0, r.stderr
    assert "1 gap(s) in the frame numbers (3 dropped frames stepped over)" in r.stdout
    got = np.loadtxt(tmp_path / "out.csv", delimiter=",", skiprows=2)
    assert sorted(set(got[:, 0].astype(int))) == kept
    grid = x.copy()
    grid[10:13] = np.nan  # what "stepped over as missing" means
    want = PoseFilter(device="cpu", fps=30).filter(grid)[kept]
    np.testing.assert_allclose(got[:, 2:].reshape(len(kept), 5, 2), want, rtol=1e-5, atol=1e-3)


def test_restored_state_starts_a_new_timeline():
    """A snapshot restored with set_state continues from its own next frame: timestamps seen after the snapshot
    was taken do not refuse the restored stream's next one (both filters)."""
    from streamssm import PoseFilter, VideoFilter

    x = np.random.default_rng(0).normal(size=(4, 5, 2)).astype(np.float32) * 3 + 100
    pose = PoseFilter(device="cpu", fps=30)
    pose.step(x[0], timestamp=10.0)
    snap = pose.get_state()
    want = pose.step(x[1], timestamp=10.033)
    pose.step(x[2], timestamp=11.0)
    pose.set_state(snap)
    np.testing.assert_array_equal(pose.step(x[1], timestamp=10.033), want)
    video = VideoFilter(device="cpu")
    video.step(frame(0), timestamp=10.0)
    snap = video.get_state()
    want = video.step(frame(1), timestamp=10.033)
    video.step(frame(2), timestamp=11.0)
    video.set_state(snap)
    np.testing.assert_array_equal(video.step(frame(1), timestamp=10.033), want)


def test_pose_filter_and_step_restart_alike_when_max_gap_is_below_a_frame():
    """With max_gap shorter than one frame period, back-to-back frames are no gap: filter(timestamps=) and
    step(timestamp=) give the same frames (neither starts over)."""
    from streamssm import PoseFilter

    x = (np.random.default_rng(1).normal(size=(12, 5, 2)).cumsum(0) * 3 + 100).astype(np.float32)
    ts = np.arange(12) / 30.0
    a, b = PoseFilter(device="cpu", fps=30, max_gap=0.01), PoseFilter(device="cpu", fps=30, max_gap=0.01)
    stepped = np.stack([a.step(x[i], timestamp=ts[i]) for i in range(12)])
    np.testing.assert_allclose(b.filter(x, timestamps=ts), stepped, rtol=1e-5, atol=1e-4)


def test_pose_fps_override_does_not_read_recording_timestamps_as_gaps(tmp_path):
    """An npz with ``timestamps`` (seconds, 30 fps) filtered with --fps 60: the frames are taken as 60 fps
    samples, not as 30 fps ones with a dropped frame before each (which the filter would step over), and a warning
    says the timestamps were left out. (At the file's own rate they are used: tests/pose/test_cli.py.)"""
    from streamssm import PoseFilter

    x = (np.random.default_rng(2).normal(size=(40, 5, 2)).cumsum(0) * 3 + 100).astype(np.float32)
    np.savez(tmp_path / "in.npz", points=x, timestamps=np.arange(40) / 30.0)
    r = run_cli("pose", tmp_path / "in.npz", "-o", tmp_path / "out.npz", "--fps", "60")
    assert r.returncode == 0, r.stderr
    assert "gap" not in r.stdout and "'timestamps' run at 30 fps, not --fps 60" in r.stderr
    got = np.load(tmp_path / "out.npz")["points"]
    np.testing.assert_allclose(got, PoseFilter(device="cpu", fps=60).filter(x), rtol=1e-5, atol=1e-3)


def test_png_folder_output_is_replaced_only_by_a_complete_run(tmp_path):
    from streamssm.io import open_sink

    out = tmp_path / "frames"
    with open_sink(out, fps=30, width=64, height=48) as s:  # an earlier, complete result: 5 frames
        for i in range(5):
            s.write(frame(i))
    old = {p.name: digest(p) for p in out.iterdir()}
    with pytest.raises(KeyboardInterrupt):
        with open_sink(out, fps=30, width=64, height=48, overwrite=True) as s:
            s.write(frame(10))
            s.write(frame(11))
            raise KeyboardInterrupt
    assert {p.name: digest(p) for p in out.iterdir()} == old, "an interrupted run touched the old frames"
    assert sorted(p.name for p in (tmp_path / "frames.partial").iterdir()) == ["frame_000000.png", "frame_000001.png"]
    with open_sink(out, fps=30, width=64, height=48, overwrite=True) as s:  # a complete run replaces them
        for i in range(3):
            s.write(frame(20 + i))
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{i:06d}.png" for i in range(3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "frames.partial"]  # no hidden staging left


def test_sigterm_during_pose_write_exits_143_and_leaves_nothing(tmp_path):
    """SIGTERM while the pose CLI writes (its temporary file is there): status 143, a message, no output and no
    temporary file left (it was a 0-byte hidden file before the pose CLI took SIGTERM as an exception)."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "in.npz", points=rng.normal(size=(40000, 33, 3)).astype(np.float32), fps=30.0)
    out = tmp_path / "out.csv"
    r = _signal_when(cli_cmd("pose", tmp_path / "in.npz", "-o", out), signal.SIGTERM,
                     lambda: bool(list(tmp_path.glob(".out.csv.*.tmp"))), 0.0)
    assert r.returncode == 143, r.stderr
    assert "terminated (SIGTERM)" in r.stderr and "Traceback" not in r.stderr
    assert sorted(q.name for q in tmp_path.iterdir()) == ["in.npz"]
