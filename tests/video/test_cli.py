"""Tests for ``streamssm video`` (streamssm.video.cli): file, folder, webcam (live:FILE) and sample modes.

Most tests run the real command in a subprocess (``python -m streamssm.cli video ...``), so exit codes
and messages are what a user sees. Clips are 96x64, made here with raw PyAV; the filter loads a
random-init weights file (its output quality is not under test here, the plumbing is).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")

from tests import _media  # noqa: E402

W, H = 96, 64


def frame(i: int, w: int = W, h: int = H) -> np.ndarray:
    """``tests._media.frame`` (a moving gradient with a per-frame brightness wobble) at this file's size."""
    return _media.frame(i, w, h)


def make_clip(path: Path, n: int = 20, rate: int = 25, audio: bool = False, size=(W, H)) -> Path:
    """``n`` frames of :func:`frame` as H.264; ``audio`` adds a 440 Hz AAC tone as long as the video."""
    w, h = size
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if audio:
            sr = 44100
            aus = c.add_stream("aac", rate=sr, layout="mono")
        for i in range(n):
            f = av.VideoFrame.from_ndarray(frame(i, w, h), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, rate)
            c.mux(vs.encode(f))
        c.mux(vs.encode(None))
        if audio:
            total = sr * n // rate
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / sr)).astype(np.float32)
            for s in range(0, total, 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[None, s : s + 1024]), format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = sr, s, Fraction(1, sr)
                c.mux(aus.encode(af))
            c.mux(aus.encode(None))
    return path


def probe(path: Path) -> dict:
    """Frames decoded, size, average rate and audio duration (s, None without audio), straight from PyAV."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        n = sum(1 for _ in c.decode(vs))
        out = dict(frames=n, size=(vs.codec_context.width, vs.codec_context.height), rate=vs.average_rate, audio=None)
    with av.open(str(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            out["audio"] = float(sum(p.duration for p in c.demux(a) if p.size) * a.time_base)
    return out


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    import torch

    from streamssm.video.model import VideoSSM, VideoSSMConfig
    from streamssm.weights import save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "video_random.safetensors"
    m = VideoSSM(VideoSSMConfig(backend="torch"))
    save_weights(path, m, "video", m.config.to_dict())
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("clips")
    return dict(tone=make_clip(d / "tone.mp4", audio=True), plain=make_clip(d / "plain.mp4"),
                short=make_clip(d / "short.mp4", n=15))


def cli(*args, weights: Path | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m streamssm.cli video ...`` headless on the CPU; ``weights`` adds ``--weights``."""
    cmd = [sys.executable, "-m", "streamssm.cli", "video", *map(str, args)]
    if weights is not None:
        cmd += ["--weights", str(weights), "--device", "cpu"]
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r.stdout


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------
# file mode
# ------------------------------------------------------------------------------------------------
def test_round_trip_keeps_count_size_fps_and_audio(tmp_path, clips, weights):
    out = tmp_path / "out.mp4"
    stdout = ok(cli(clips["tone"], "--original", clips["plain"], "-o", out, "--report", weights=weights))
    info = probe(out)
    assert (info["frames"], info["size"], info["rate"]) == (20, (W, H), 25)
    assert info["audio"] is not None and abs(info["audio"] - 20 / 25) < 0.1, info
    assert "20 frames 96x64" in stdout and "fps" in stdout
    assert "E_warp" in stdout and "flow from originals" in stdout and "all 20 frames" in stdout
    assert not list(tmp_path.glob(".*partial*"))


def test_report_on_one_frame_says_why_there_is_no_score(tmp_path, clips, weights):
    stdout = ok(cli(clips["tone"], "-o", tmp_path / "one.mp4", "--max-frames", "1", "--report", weights=weights))
    assert "1 frames" in stdout and "no E_warp: it needs two consecutive frames" in stdout


def test_audio_from_the_original_when_the_processed_has_none(tmp_path, clips, weights):
    """A per-frame tool often drops the sound: the output then takes the original's, which the frames pair with."""
    out = tmp_path / "out.mp4"
    ok(cli(clips["plain"], "--original", clips["tone"], "-o", out, weights=weights))
    info = probe(out)
    assert info["frames"] == 20 and info["audio"] is not None and abs(info["audio"] - 20 / 25) < 0.1, info


def test_sound_of_the_original_times_the_output_when_the_rates_differ(tmp_path, clips, weights):
    """A processed copy written at 30 fps of a 25 fps original, without sound: the output carries the original's
    sound, so it takes the original's timing (20 frames in 0.8 s); at 30 fps the sound would drift (and be cut)."""
    fast = make_clip(tmp_path / "fast.mp4", rate=30)
    out = tmp_path / "out.mp4"
    r = cli(fast, "--original", clips["tone"], "-o", out, weights=weights)
    ok(r)
    assert "takes the original's timing" in r.stderr, r.stderr
    info = probe(out)
    assert (info["frames"], info["rate"]) == (20, 25) and abs(info["audio"] - 20 / 25) < 0.1, info
    assert abs(_media.timestamps_in(out)[-1] - 19 / 25) < 1e-3


def test_folder_rate_set_against_the_original_leaves_its_sound_out(tmp_path, clips, weights):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(20):
        cv2.imwrite(str(folder / f"{i:02d}.png"), frame(i)[:, :, ::-1])
    out = tmp_path / "out.mp4"
    r = cli(folder, "--original", clips["tone"], "--fps", 15, "-o", out, weights=weights)
    ok(r)
    assert "--fps" in r.stderr and "leaves out the original's sound" in r.stderr, r.stderr
    info = probe(out)
    assert (info["frames"], info["rate"], info["audio"]) == (20, 15, None), info


def test_image_folder_in_video_out(tmp_path, weights):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(12):  # natural order: 2.png before 10.png
        cv2.imwrite(str(folder / f"{i}.png"), frame(i)[:, :, ::-1])
    out = tmp_path / "out.mp4"
    ok(cli(folder, "-o", out, "--fps", 24, weights=weights))
    info = probe(out)
    assert (info["frames"], info["size"], info["rate"], info["audio"]) == (12, (W, H), 24, None)


def test_video_to_png_folder_side_by_side_doubles_width(tmp_path, clips, weights):
    out = tmp_path / "pngs.mp4"  # a trailing slash makes a folder, whatever the name: the summary says so
    stdout = ok(cli(clips["plain"], "-o", f"{out}/", "--side-by-side", "--max-frames", 7, weights=weights))
    assert f"-> {out}/ (PNG frames)" in stdout, stdout
    files = sorted(out.glob("frame_*.png"))
    assert len(files) == 7
    img = cv2.imread(str(files[3]))[:, :, ::-1]
    assert img.shape == (H, 2 * W, 3)
    # the left half is the processed input (decoded once from H.264, so compare loosely)
    assert np.abs(img[:, :W].astype(int) - frame(3).astype(int)).mean() < 6


def test_mismatched_original_refused_naming_both(tmp_path, clips, weights):
    out = tmp_path / "out.mp4"
    r = cli(clips["plain"], "--original", clips["short"], "-o", out, weights=weights)
    assert r.returncode != 0
    assert str(clips["plain"]) in r.stderr and str(clips["short"]) in r.stderr and "frame counts differ" in r.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_output_equal_to_input_refused_and_input_unchanged(tmp_path, clips, weights):
    src = tmp_path / "in.mp4"
    src.write_bytes(clips["tone"].read_bytes())
    before = digest(src)
    r = cli(src, "-o", src, "--overwrite", weights=weights)
    assert r.returncode != 0 and "same file as the input" in r.stderr and str(src) in r.stderr
    assert digest(src) == before and sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_existing_output_refused_without_overwrite(tmp_path, clips, weights):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    r = cli(clips["plain"], "-o", out, weights=weights)
    assert r.returncode != 0 and "already exists" in r.stderr and "--overwrite" in r.stderr
    assert out.read_bytes() == b"precious"
    ok(cli(clips["plain"], "-o", out, "--overwrite", "--max-frames", 3, weights=weights))
    assert probe(out)["frames"] == 3


def _bad_input(tmp_path: Path, case: str) -> Path:
    if case == "missing":
        return tmp_path / "nope.mp4"
    if case == "empty folder":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty"
    p = tmp_path / "notes.mp4"
    p.write_text("this is a text file, not a video\n" * 20)
    return p


@pytest.mark.parametrize("case", ["missing", "empty folder", "text renamed .mp4"])
def test_bad_input_exits_nonzero_naming_the_path(tmp_path, case, weights):
    bad = _bad_input(tmp_path, case)
    r = cli(bad, "-o", tmp_path / "out.mp4", weights=weights)
    assert r.returncode == 2, r.stderr
    assert str(bad) in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out.mp4").exists()


def _args(*argv) -> argparse.Namespace:
    """Parse ``video ...`` with a parser of our own: add_video_parser works on any sub-parsers object."""
    from streamssm.video.cli import add_video_parser

    p = argparse.ArgumentParser(prog="streamssm")
    add_video_parser(p.add_subparsers(dest="command"))
    return p.parse_args(["video", *map(str, argv)])


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupt_keeps_a_playable_output(tmp_path, clips, weights, monkeypatch, how):
    """Ctrl-C after 6 frames: exit 130, the output holds those 6 frames (and audio trimmed to them);
    SIGTERM: SystemExit(143) propagates after the output is finalised."""
    import signal

    from streamssm.video import cli as vcli

    real = vcli._make_filter

    class Interrupting:
        def __init__(self, *a, **kw):
            self.inner, self.n = real(*a, **kw), 0
            self.model = self.inner.model

        def reset(self):
            self.inner.reset()

        def step(self, p, i=None, **kw):
            if self.n == 6:
                if how == "ctrl-c":
                    raise KeyboardInterrupt
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # the handler runs at the next bytecode boundary
                    pass
            self.n += 1
            return self.inner.step(p, i, **kw)

    monkeypatch.setattr(vcli, "_make_filter", Interrupting)
    out = tmp_path / "out.mp4"
    args = _args(clips["tone"], "-o", out, "--weights", weights, "--device", "cpu", "--no-progress")
    if how == "ctrl-c":
        assert vcli.run_video(args) == 130
    else:
        with pytest.raises(SystemExit) as e:
            vcli.run_video(args)
        assert e.value.code == 143
    info = probe(out)
    assert (info["frames"], info["size"]) == (6, (W, H))
    assert info["audio"] is not None and info["audio"] < 6 / 25 + 0.1
    assert not list(tmp_path.glob(".*partial*"))


def test_options_of_another_mode_are_refused():
    from streamssm.video.cli import run_video

    with pytest.raises(ValueError, match="exactly one"):
        run_video(_args("a.mp4", "--sample", "-o", "x.mp4"))
    with pytest.raises(ValueError, match="--op is for"):
        run_video(_args("a.mp4", "-o", "x.mp4", "--op", "clahe"))
    with pytest.raises(ValueError, match="--record"):
        run_video(_args("--webcam", "0", "-o", "x.mp4"))


def test_arguments_are_checked_naming_the_option(tmp_path, clips, capsys):
    """Each refused before any work, naming the option: --fps on video files (it would be ignored), --fps and
    --strength out of range, and --sample with limits it does not use."""
    from streamssm.video.cli import run_video

    out = tmp_path / "x.mp4"
    cases = [(("a.mp4", "-o", out, "--fps", 10), "--fps sets the rate of an image-folder input"),
             ((clips["plain"], "--original", clips["short"], "-o", out, "--fps", 10), "are video files"),
             (("a.mp4", "-o", out, "--strength", -1), r"--strength must be in \[0, 2\]"),
             (("a.mp4", "-o", out, "--strength", "nan"), "--strength must be"),
             (("a.mp4", "-o", out, "--crf", 60), "--crf must be from 0"),
             (("--sample", "-o", out, "--max-duration", 1), "--max-duration does not apply to --sample"),
             (("--sample", "-o", out, "--max-input-frames", 5), "--max-input-frames does not apply"),
             (("--sample", "-o", out, "--max-resolution", "100x100"), "--max-resolution does not apply")]
    for argv, what in cases:
        with pytest.raises(ValueError, match=what):
            run_video(_args(*argv))
    # --fps is parsed as the writer will take it: a number or a fraction, positive, at most 1e5 (1e9 overflowed the
    # container's time base, a traceback)
    for bad in ("0", "1e9", "abc"):
        with pytest.raises(SystemExit):
            _args(str(tmp_path), "-o", out, "--fps", bad)
        assert "--fps: expected frames per second, a positive number up to 100000" in capsys.readouterr().err
    assert _args(str(tmp_path), "-o", out, "--fps", "30000/1001").fps == pytest.approx(30000 / 1001)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_too_small_input_refused_before_any_output(tmp_path, weights):
    """31x31 frames: refused naming the input, before the output is opened (no file left, no odd-size warning)."""
    path = tmp_path / "tiny"
    path.mkdir()
    for i in range(3):
        cv2.imwrite(str(path / f"{i}.png"), frame(i, 31, 31))
    out = tmp_path / "out.mp4"
    r = cli(path, "-o", out, weights=weights)
    assert r.returncode == 2, r.stderr
    assert "tiny" in r.stderr and "at least 32x32" in r.stderr and "yuv444p" not in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))


def test_slow_image_folder_is_filtered_not_restarted(tmp_path, weights):
    """An image folder at 0.5 fps (a time-lapse: 2 s a frame) is filtered like any clip: the filter's max_gap
    stretches to 3 frames (file_max_gap), where the default 1 s restarted it at every frame and left the flicker.
    Written to PNG (lossless), the output equals a filter that never restarts."""
    from streamssm.video.cli import file_max_gap
    from streamssm.video.filter import VideoFilter

    assert file_max_gap(Fraction(1, 2)) == 6.0 and file_max_gap(30) == 1.0
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = [frame(i) for i in range(6)]
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i}.png"), f[:, :, ::-1])
    out = tmp_path / "out"
    ok(cli(folder, "-o", f"{out}/", "--fps", 0.5, weights=weights))
    got = [cv2.imread(str(p))[:, :, ::-1] for p in sorted(out.glob("frame_*.png"))]
    want = VideoFilter(weights=weights, device="cpu", max_gap=100.0).filter(frames)
    restarted = VideoFilter(weights=weights, device="cpu", max_gap=1.0)
    fresh = [restarted.step(f, timestamp=2.0 * i) for i, f in enumerate(frames)]
    assert len(got) == 6
    assert max(np.abs(g.astype(int) - w).max() for g, w in zip(got, want)) <= 1
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(fresh[1:], frames[1:])) \
        < max(np.abs(a.astype(int) - b).max() for a, b in zip(want[1:], frames[1:]))


def test_summary_gives_the_output_size(tmp_path, clips, weights):
    stdout = ok(cli(clips["plain"], "-o", tmp_path / "sbs.mp4", "--side-by-side", weights=weights))
    assert f"20 frames {2 * W}x{H}" in stdout


# ------------------------------------------------------------------------------------------------
# webcam and sample modes
# ------------------------------------------------------------------------------------------------
def test_webcam_live_file_records(tmp_path, clips, weights):
    rec = tmp_path / "rec.mp4"
    stdout = ok(cli("--webcam", f"live:{clips['plain']}", "--op", "gamma_jitter", "--record", rec,
                    "--max-frames", 10, weights=weights))
    assert "latency median" in stdout and "ms" in stdout
    n = int(stdout.split("streamssm: ")[1].split(" frames")[0])
    dropped = int(stdout.split(" frames dropped")[0].rsplit(", ", 1)[1]) if " frames dropped" in stdout else 0
    info = probe(rec)
    # a live source drops frames the filter is too slow for; --max-frames counts the frames filtered (it used to
    # count the dropped ones too), so 10 come unless the 20-frame clip ran out first
    assert (n == 10 or n + dropped == 20) and info["frames"] == n and info["size"] == (W, H), stdout


def test_webcam_headless_without_record_refused(clips, weights):
    r = cli("--webcam", f"live:{clips['plain']}", "--max-frames", 3, weights=weights)
    assert r.returncode == 2 and "no display" in r.stderr and "--record" in r.stderr


def test_sample_end_to_end(tmp_path, weights):
    from streamssm.video.cli import SAMPLE

    assert SAMPLE.is_file() and SAMPLE.stat().st_size < 1_500_000
    out = tmp_path / "sample_out.mp4"
    stdout = ok(cli("--sample", "-o", out, "--max-frames", 8, weights=weights))
    info = probe(out)
    src = probe(SAMPLE)
    assert info["frames"] == 8 and info["size"] == (2 * src["size"][0], src["size"][1]) and info["rate"] == src["rate"]
    assert "E_warp" in stdout and "flow from originals" in stdout
    assert "exposure lock" not in stdout  # off: the summary names only the settings that are on
    stdout = ok(cli("--sample", "-o", tmp_path / "locked.mp4", "--max-frames", 4, "--exposure-lock", 0.3,
                    "--strength", 1.2, weights=weights))
    assert "fps), strength 1.2, exposure lock 0.3 ->" in stdout


def test_cpu_pipelined_run_equals_sequential(tmp_path, clips, weights, monkeypatch):
    """On a CPU the CLI pipelines the fast step over three threads (VideoFilter.push): the decoded output equals
    the frame-by-frame run's, frame for frame."""
    import contextlib

    import torch

    from streamssm.io import open_source
    from streamssm.video import cli as vcli

    outs = {}
    for mode in ("pipelined", "sequential"):
        if mode == "sequential":
            monkeypatch.setattr(vcli, "_cpu_pipeline", lambda filt, stack: False)
        else:
            with contextlib.ExitStack() as stack:
                want = (os.cpu_count() or 1) >= 2
                assert vcli._cpu_pipeline(vcli._make_filter(str(weights), "cpu", 1.0), stack) == want
                if want:
                    assert torch.get_num_threads() == 1  # one thread per stage while the pipeline runs
            monkeypatch.setattr(vcli, "_cpu_pipeline", lambda filt, stack: True)
        out = tmp_path / f"{mode}.mp4"
        vcli.filter_video(str(clips["tone"]), str(out), weights=str(weights), device="cpu", progress=False)
        with open_source(str(out)) as src:
            outs[mode] = [f.rgb for f in src]
    assert len(outs["pipelined"]) == len(outs["sequential"]) == probe(clips["tone"])["frames"]
    for t, (a, b) in enumerate(zip(outs["pipelined"], outs["sequential"])):
        assert np.array_equal(a, b), f"frame {t} differs"


def test_cpu_pipelined_interrupt_keeps_the_frame_in_flight(tmp_path, clips, weights, monkeypatch):
    """Ctrl-C while pipelined: the frame in flight is finished and written, so the output holds every frame
    given to the filter before the interrupt (6)."""
    from streamssm.video import cli as vcli

    real = vcli._make_filter

    class Interrupting:
        def __init__(self, *a, **kw):
            self.inner, self.n = real(*a, **kw), 0
            self.model = self.inner.model
            self._cpu = self.inner._cpu

        def reset(self):
            self.inner.reset()

        def push(self, p, i=None, **kw):
            if self.n == 6:
                raise KeyboardInterrupt
            self.n += 1
            return self.inner.push(p, i, **kw)

        def flush(self):
            return self.inner.flush()

    monkeypatch.setattr(vcli, "_make_filter", Interrupting)
    monkeypatch.setattr(vcli, "_cpu_pipeline", lambda filt, stack: True)
    out = tmp_path / "out.mp4"
    args = _args(clips["tone"], "-o", out, "--weights", weights, "--device", "cpu", "--no-progress")
    assert vcli.run_video(args) == 130
    assert probe(out)["frames"] == 6


def test_pairs_of_different_lengths_filter_their_common_start_with_max_frames(tmp_path, clips, weights):
    """A per-frame tool that dropped the last frames (the Haze2 pair: 122 processed, 124 original): refused, with
    the way out in the message, and --max-frames N pairs the first N of both (it used to be refused as well)."""
    out = tmp_path / "o.mp4"
    r = cli(clips["short"], "--original", clips["plain"], "-o", out, weights=weights)
    assert r.returncode == 2 and "--max-frames 15 filters those" in r.stderr, r.stderr
    ok(cli(clips["short"], "--original", clips["plain"], "-o", out, "--max-frames", 15, weights=weights))
    assert _media.frames_in(out) == 15
    r = cli(clips["short"], "--original", clips["plain"], "-o", out, "--max-frames", 16, "--overwrite", weights=weights)
    assert r.returncode == 2 and "frame counts differ" in r.stderr


def test_crf_and_preset_reach_the_encoder(tmp_path, clips, weights):
    """--crf/--preset set the encoder's quality: a higher crf and a slower preset give a smaller file."""
    fine, small = tmp_path / "fine.mp4", tmp_path / "small.mp4"
    ok(cli(clips["plain"], "-o", fine, "--crf", 4, weights=weights))
    ok(cli(clips["plain"], "-o", small, "--crf", 35, "--preset", "medium", weights=weights))
    assert small.stat().st_size < 0.5 * fine.stat().st_size
    assert _media.frames_in(small) == _media.frames_in(fine) > 0
