"""``streamssm pose``: the command line, run as a subprocess like a user would."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamssm.io.pose_files import PoseData, read_pose, write_pose


def _cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamssm.cli", "pose", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def juggle(shared_data, tmp_path) -> Path:
    p = tmp_path / "juggle.npz"
    shutil.copyfile(shared_data / "pose" / "mp_edgetam_juggle.npz", p)
    return p


def _small(juggle: Path, t: int = 48) -> PoseData:
    """2-D points + confidence from the real clip, with a gap, as a plain PoseData (no layout)."""
    d = read_pose(juggle)
    pts = d.points[:t, :, :2].copy()
    pts[10:13, 15] = np.nan  # a wrist lost for three frames
    return PoseData(pts, d.confidence[:t].copy(), None)


def test_mediapipe_npz(juggle, tmp_path):
    before = juggle.read_bytes()
    out = tmp_path / "out" / "filtered.npz"
    r = _cli(juggle, "-o", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert juggle.read_bytes() == before, "the input file was modified"
    for s in ("247 frames", "33 keypoints", "x, y in pixels (z filtered apart)", "24 fps (from file)",
              "of body size"):
        assert s in r.stdout, f"summary lacks {s!r}: {r.stdout}"
    with np.load(juggle) as a, np.load(out) as b:
        assert set(b.files) == set(a.files) | {"landmarks_filtered", "filtered_from"}
        for k in a.files:  # every input key is carried over unchanged
            np.testing.assert_array_equal(b[k], a[k])
        raw, filt = a["landmarks_raw"], b["landmarks_filtered"]
        assert filt.shape == raw.shape and np.isfinite(filt).all()
        np.testing.assert_array_equal(filt[..., 3], raw[..., 3])  # visibility untouched
        assert not np.allclose(filt[..., :3], raw[..., :3])
        # smoother: less frame-to-frame acceleration than the input
        acc = lambda x: np.abs(np.diff(x[..., :2], 2, axis=0)).mean()  # noqa: E731
        assert acc(filt) < acc(raw)
        # image landmarks: x, y filtered as 2-D points in pixels, exactly PoseFilter's result there (as
        # benchmarks/pose_quality.py measures MediaPipe output), z from a 3-D pass of its own
        from streamssm.pose.filter import PoseFilter

        wh = np.float32([a["width"], a["height"]])
        want = PoseFilter(device="cpu", fps=float(a["fps"])).filter(raw[..., :2] * wh)
        np.testing.assert_allclose(filt[..., :2] * wh, want, atol=1e-3)
        xyz = np.concatenate([raw[..., :2] * wh, raw[..., 2:3] * wh[0]], -1)
        want_z = PoseFilter(device="cpu", fps=float(a["fps"])).filter(xyz)[..., 2] / wh[0]
        np.testing.assert_allclose(filt[..., 2], want_z, atol=1e-5)


def test_csv_round_trip_with_overwrite(juggle, tmp_path):
    data = _small(juggle)
    src = write_pose(tmp_path / "in.csv", data)
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    r = _cli(src, "-o", out, "--fps", 30, "--overwrite", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "30 fps (--fps)" in r.stdout and "48 frames" in r.stdout and "2-D" in r.stdout
    back = read_pose(out)
    assert back.points.shape == data.points.shape and back.fps == 30.0
    np.testing.assert_array_equal(back.confidence, data.confidence)
    gap = ~np.isfinite(data.points)
    np.testing.assert_array_equal(np.isnan(back.points), gap)  # gaps stay gaps
    assert not np.allclose(back.points[~gap], data.points[~gap])


def test_json_round_trip_then_refuse_existing_output(juggle, tmp_path):
    data = _small(juggle, t=30)
    src = write_pose(tmp_path / "in.json", data)
    out = tmp_path / "out.json"
    r = _cli(src, "-o", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "30 fps (default, file has none)" in r.stdout
    back = read_pose(out)
    assert back.points.shape == (30, 33, 2)
    np.testing.assert_array_equal(back.confidence, data.confidence)
    written = out.read_bytes()
    r = _cli(src, "-o", out, cwd=tmp_path)
    assert r.returncode == 2 and "--overwrite" in r.stderr and "out.json" in r.stderr
    assert out.read_bytes() == written


@pytest.mark.parametrize("how", ["same", "dot", "absolute", "hardlink", "symlink"])
def test_output_is_input_refused(juggle, tmp_path, how):
    before = juggle.read_bytes()
    target = {"same": juggle.name, "dot": f"./sub/../{juggle.name}", "absolute": juggle.resolve()}.get(how)
    if how == "hardlink":
        target = tmp_path / "link.npz"
        os.link(juggle, target)
    elif how == "symlink":
        target = tmp_path / "sym.npz"
        target.symlink_to(juggle)
    (tmp_path / "sub").mkdir()
    r = _cli(juggle.name, "-o", target, "--overwrite", cwd=tmp_path)
    assert r.returncode != 0 and "input" in r.stderr, r.stderr
    assert juggle.read_bytes() == before


@pytest.mark.parametrize("name, content", [
    ("missing_columns.csv", "frame,joint,x\n0,0,1.0\n"),
    ("empty.json", ""),
    ("empty.csv", ""),
    ("does_not_exist.npz", None),
    ("garbage.npz", "not a zip file"),
])
def test_bad_input_names_the_file(tmp_path, name, content):
    if content is not None:
        (tmp_path / name).write_text(content)
    r = _cli(name, "-o", "out" + Path(name).suffix, cwd=tmp_path)
    assert r.returncode != 0
    assert name in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / ("out" + Path(name).suffix)).exists()


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is not None, reason="mediapipe is installed")
def test_video_without_mediapipe_says_how_to_install(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 64)
    r = _cli("clip.mp4", "-o", "out.mp4", cwd=tmp_path)
    assert r.returncode == 2
    assert "pip install 'streamssm[mediapipe]'" in r.stderr and "clip.mp4" in r.stderr


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None, reason="needs the optional mediapipe extra "
                    "(pip install 'streamssm[mediapipe]')")
def test_video_overlay_with_mediapipe(shared_data, tmp_path):
    """A real video through MediaPipe Pose, filtered live, drawn: the overlay plays, has every frame, and the
    filter lowered the landmarks' acceleration."""
    import av

    clip = tmp_path / "juggle.mp4"
    with av.open(str(shared_data / "videos" / "edgetam_05_default_juggle.mp4")) as src, av.open(str(clip), "w") as dst:
        # the first 40 frames, re-encoded small (MediaPipe per frame is the slow part)
        ins = src.streams.video[0]
        out = dst.add_stream("libx264", rate=ins.average_rate)
        out.width, out.height, out.pix_fmt = 640, 360, "yuv420p"
        for i, frame in enumerate(src.decode(ins)):
            if i == 40:
                break
            for p in out.encode(frame.reformat(width=640, height=360, format="yuv420p")):
                dst.mux(p)
        for p in out.encode():
            dst.mux(p)
    r = _cli("juggle.mp4", "-o", "overlay.mp4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "40 frames, 33 keypoints" in r.stdout
    m = re.search(r"mean acceleration ([0-9.]+)% -> ([0-9.]+)% of body size", r.stdout)
    assert m, r.stdout
    with av.open(str(tmp_path / "overlay.mp4")) as f:
        frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    assert len(frames) == 40 and frames[0].shape == (360, 640, 3)
    # both skeletons drawn: pure-ish red and green pixels exist somewhere in the clip
    red = sum(int(((x[..., 0] > 200) & (x[..., 1] < 60) & (x[..., 2] < 60)).sum()) for x in frames)
    green = sum(int(((x[..., 1] > 200) & (x[..., 0] < 60) & (x[..., 2] < 60)).sum()) for x in frames)
    assert red > 100 and green > 100, (red, green)
    assert float(m.group(2)) < 0.8 * float(m.group(1)), r.stdout  # the filter smoothed the real landmarks


def test_mediapipe_converted_to_csv_filters_alike(juggle, tmp_path):
    """MediaPipe's visibility is not a weight (module docstring), whichever file it comes in: the npz converted to
    csv (strength 0: the points unchanged) holds a ``visibility`` column, and filtering that csv gives what
    filtering the npz straight to csv gives. It used to be written as ``confidence`` and then weighed by
    (up to 0.16 of the image width apart)."""
    conv, direct, again = tmp_path / "conv.csv", tmp_path / "direct.csv", tmp_path / "again.csv"
    for args in ((juggle, "-o", conv, "--strength", 0), (juggle, "-o", direct), (conv, "-o", again)):
        r = _cli(*args, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    assert conv.read_text().splitlines()[1] == "frame,joint,x,y,z,visibility"
    a, b = read_pose(direct), read_pose(again)
    np.testing.assert_allclose(b.points, a.points, atol=1e-5)


def test_millisecond_timestamps_are_warned_about(tmp_path):
    """An npz whose 'timestamps' are MediaPipe's milliseconds: every frame would start the filter over, so nothing is
    smoothed; the run says so (it used to report -0% as if the filter had nothing to do)."""
    rng = np.random.default_rng(0)
    pts = (rng.normal(size=(30, 17, 2)) * 3 + 200).astype(np.float32)
    np.savez(tmp_path / "ms.npz", points=pts, timestamps=np.arange(30) * 1000 / 30, fps=30.0)
    r = _cli(tmp_path / "ms.npz", "-o", tmp_path / "o.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "29 of the 29 steps between frames are gaps over max_gap" in r.stderr and "milliseconds?" in r.stderr


def test_pixels_under_an_image_size_line_are_taken_as_pixels(tmp_path):
    """A hand-written csv in pixels with '# fps=30 width=1280 height=720': x, y past 4 cannot be normalised by that
    size, so they are filtered as pixels, with a warning (they were scaled by 1280 and 720, the wrong aspect)."""
    rng = np.random.default_rng(0)
    rows = [f"{f},{j},{400 + 30 * j + rng.normal()},{300 + 20 * j + rng.normal()}" for f in range(20) for j in range(5)]
    body = "frame,joint,x,y\n" + "\n".join(rows) + "\n"
    (tmp_path / "tagged.csv").write_text("# fps=30 width=1280 height=720\n" + body)
    (tmp_path / "plain.csv").write_text("# fps=30\n" + body)
    r = _cli(tmp_path / "tagged.csv", "-o", tmp_path / "a.csv", cwd=tmp_path)
    assert r.returncode == 0 and "taken as pixels" in r.stderr, r.stderr
    assert _cli(tmp_path / "plain.csv", "-o", tmp_path / "b.csv", cwd=tmp_path).returncode == 0
    a, b = read_pose(tmp_path / "a.csv"), read_pose(tmp_path / "b.csv")
    np.testing.assert_allclose(a.points, b.points, atol=1e-4)
    assert "image_size" not in a.meta  # the output does not claim the size either


def test_pose_file_errors_name_the_file(tmp_path):
    """What the reader refuses reaches the user as one line naming the file: no frames (the filter's 'sequence is
    empty (T = 0 frames)' named none), an --key the file lacks (with the keys it has), text in an .npz (without
    numpy's advice to load it unsafely)."""
    np.savez(tmp_path / "e.npz", points=np.zeros((0, 17, 2), np.float32))
    np.savez(tmp_path / "p.npz", points=np.zeros((5, 17, 2), np.float32))
    (tmp_path / "g.npz").write_text("garbage\n")
    for args, says in [(["e.npz", "-o", "a.npz"], "e.npz: no pose data: 'points' has shape (0, 17, 2)"),
                       (["p.npz", "-o", "x.csv", "--key", "nope"], "p.npz: key 'nope' (--key) is not in the file; "
                                                                  "it has ['points']"),
                       (["g.npz", "-o", "a.npz"], "g.npz: is not a valid .npz (zip) file")]:
        r = _cli(*args, cwd=tmp_path)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert "unsafe" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npz", "g.npz", "p.npz"]


def _jittered(t: int = 40, k: int = 17, seed: int = 0) -> np.ndarray:
    """(t, k, 2) a jittered body moving right, in pixels."""
    rng = np.random.default_rng(seed)
    body = rng.uniform(100, 400, (k, 2))
    return (body + np.arange(t)[:, None, None] * [2.0, 0.0] + rng.normal(0, 2, (t, k, 2))).astype(np.float32)


def test_npz_timestamps_are_used_with_fps(tmp_path):
    """An npz's 'timestamps' are seconds whatever rate is declared: with --fps (the file's own rate here) the dropped
    frames they show are stepped over as without it. They used to be dropped whenever --fps was given (nothing
    stepped over, a different result), and the summary called timestamp gaps "gap(s) in the frame numbers"."""
    ts = np.arange(40) / 30
    ts[20:] += 5 / 30  # 5 frames dropped
    np.savez(tmp_path / "ts.npz", points=_jittered(), timestamps=ts, fps=30.0)
    r = _cli("ts.npz", "-o", "a.npz", cwd=tmp_path)
    r_fps = _cli("ts.npz", "-o", "b.npz", "--fps", 30, cwd=tmp_path)
    assert r.returncode == 0 and r_fps.returncode == 0, r.stderr + r_fps.stderr
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        np.testing.assert_array_equal(b["points"], a["points"])
    for run in (r, r_fps):
        assert "1 gap(s) in the timestamps (5 dropped frames stepped over)" in run.stdout, run.stdout
    # frame numbers are still called so
    write_pose(tmp_path / "f.csv", PoseData(_jittered(t=3), None, 30.0, {"frame_numbers": [0, 1, 4]}))
    r = _cli("f.csv", "-o", "f_out.csv", cwd=tmp_path)
    assert r.returncode == 0 and "1 gap(s) in the frame numbers (2 dropped frames stepped over)" in r.stdout, r.stdout


@pytest.mark.parametrize("ext", [".csv", ".json", ".npz"])
def test_missing_keypoints_come_back_as_the_input_had_them(tmp_path, ext):
    """Keypoints the input marks missing come back in every format exactly as they were, coordinates and confidence:
    a csv's ``0,0,0`` (confidence 0), NaN coordinates with a confidence, a point with only y missing. The ``0,0``
    with confidence 0 used to come back as the filter's estimate with confidence 0, and the half-missing point as
    NaN, NaN. MediaPipe's visibility is no weight: a point of visibility 0 is a point, filtered like the others."""
    pts, conf = _jittered(t=30, k=6), np.full((30, 6), 0.9, np.float32)
    pts[10:15, 2], conf[10:15, 2] = 0.0, 0.0  # undetected, OpenPose-style
    pts[20:23, 3] = np.nan  # no coordinates, a confidence all the same
    pts[5, 4, 1] = np.nan  # y missing only
    src = write_pose(tmp_path / "in.csv", PoseData(pts, conf, 30.0))
    assert "\n10,2,0.0,0.0,0.0\n" in src.read_text()
    r = _cli(src, "-o", tmp_path / f"out{ext}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    back = read_pose(tmp_path / f"out{ext}")
    missing = np.zeros((30, 6), bool)
    missing[10:15, 2] = missing[20:23, 3] = missing[5, 4] = True
    np.testing.assert_array_equal(back.points[missing], pts[missing])  # NaN where NaN, 0 where 0
    np.testing.assert_array_equal(back.confidence, conf)
    assert np.isfinite(back.points[~missing]).all() and not np.allclose(back.points[~missing], pts[~missing])
    # visibility 0 (a csv's visibility column, as MediaPipe converted to csv gives it): filtered, not kept
    vis = tmp_path / "vis.csv"
    vis.write_text(src.read_text().replace("confidence", "visibility"))
    r = _cli(vis, "-o", tmp_path / f"vis_out{ext}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    back = read_pose(tmp_path / f"vis_out{ext}")
    assert np.isfinite(back.points[10:15, 2]).all() and not np.allclose(back.points[10:15, 2], 0)  # drawn to 0, 0
    np.testing.assert_array_equal(back.points[20:23, 3], pts[20:23, 3])


def test_frame_numbers_in_milliseconds_get_a_hint_about_frame_numbers(tmp_path):
    """A csv whose frame column holds milliseconds (0, 33, 67, ...): every step is a gap over max_gap. The warning
    used to say "timestamps are seconds (milliseconds? divide by 1000)", which does not fit frame numbers; it now
    says they count frames and how to turn milliseconds into them, once."""
    frames = [round(i * 1000 / 30) for i in range(30)]
    write_pose(tmp_path / "ms.csv", PoseData(_jittered(t=30), None, 30.0, {"frame_numbers": frames}))
    r = _cli("ms.csv", "-o", "out.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "29 of the 29 steps between frames are gaps over max_gap" in r.stderr, r.stderr
    assert "frame numbers count frames (median step 33 frames at 30 fps)" in r.stderr
    assert "ms * 30 / 1000" in r.stderr and "divide by 1000" not in r.stderr
    assert r.stderr.count("steps between frames") == 1


def test_fps_that_is_not_positive_names_the_flag(tmp_path):
    """--fps 0 used to be refused as "fps must be a positive number ...", which names no flag."""
    write_pose(tmp_path / "in.csv", PoseData(_jittered(t=5), None, 30.0))
    for bad in ("0", "-5", "nan"):
        r = _cli("in.csv", "-o", "out.csv", "--fps", bad, cwd=tmp_path)
        assert r.returncode == 2 and "--fps must be a positive number of frames per second" in r.stderr, r.stderr
    assert not (tmp_path / "out.csv").exists()


def test_mediapipe_npz_output_gets_the_fps_used(tmp_path):
    """A MediaPipe npz filtered with --fps gets that rate as its 'fps', as a csv or json output does; it used to
    keep the input's. Without --fps the input's key is kept as it was (an int stays an int)."""
    rng = np.random.default_rng(0)
    lm = np.concatenate([rng.uniform(0.3, 0.7, (20, 33, 3)), rng.uniform(0, 1, (20, 33, 1))], -1).astype(np.float32)
    np.savez(tmp_path / "mp.npz", landmarks_raw=lm, fps=24, width=640, height=480)
    assert _cli("mp.npz", "-o", "a.npz", "--fps", 30, cwd=tmp_path).returncode == 0
    assert _cli("mp.npz", "-o", "a.csv", "--fps", 30, cwd=tmp_path).returncode == 0
    assert _cli("mp.npz", "-o", "b.npz", cwd=tmp_path).returncode == 0
    assert read_pose(tmp_path / "a.npz").fps == read_pose(tmp_path / "a.csv").fps == 30.0
    with np.load(tmp_path / "b.npz") as b:
        assert b["fps"] == 24 and b["fps"].dtype == np.load(tmp_path / "mp.npz")["fps"].dtype


def test_a_forced_fps_never_contradicts_the_timestamps_written(tmp_path):
    """A MediaPipe npz with 30 fps timestamps filtered with --fps 60 (its timestamps left out, with a warning) was
    written with fps 60 beside those 30 fps timestamps: filtering the output again read every step as a dropped
    frame. Its fps stays the file's then; where the timestamps run at --fps, it becomes --fps."""
    rng = np.random.default_rng(1)
    lm = np.concatenate([rng.uniform(0.3, 0.7, (60, 33, 3)), rng.uniform(0, 1, (60, 33, 1))], -1).astype(np.float32)
    np.savez(tmp_path / "mp.npz", landmarks_raw=lm, fps=25.0, width=640, height=480, timestamps=np.arange(60) / 30)
    r = _cli("mp.npz", "-o", "a.npz", "--fps", 60, cwd=tmp_path)
    assert r.returncode == 0 and "run at 30 fps, not --fps 60" in r.stderr
    assert _cli("mp.npz", "-o", "b.npz", "--fps", 30, cwd=tmp_path).returncode == 0
    assert read_pose(tmp_path / "a.npz").fps == 25.0 and read_pose(tmp_path / "b.npz").fps == 30.0
    again = _cli("a.npz", "-o", "c.npz", cwd=tmp_path)
    assert again.returncode == 0 and "gap" not in again.stdout, again.stdout


def test_timestamps_left_out_fall_back_to_the_frame_numbers(tmp_path):
    """Where --fps disagrees with an npz's timestamps they are left out; the file's frame numbers ('frames'), which
    count frames at any rate, were left out with them, and the dropped frames they mark were not stepped over."""
    x = (np.random.default_rng(3).normal(size=(30, 5, 2)).cumsum(0) * 3 + 100).astype(np.float32)
    frames = np.r_[np.arange(10), np.arange(14, 34)]  # 4 frames dropped after the 10th
    np.savez(tmp_path / "in.npz", points=x, frames=frames, timestamps=frames / 30.0)
    r = _cli("in.npz", "-o", "out.npz", "--fps", 60, cwd=tmp_path)
    assert r.returncode == 0 and "by their frame numbers" in r.stderr
    assert "1 gap(s) in the frame numbers (4 dropped frames stepped over)" in r.stdout, r.stdout


def test_timestamps_set_the_rate_and_survive_conversion(tmp_path):
    """An npz with 15 fps timestamps and no fps was filtered on the default 30 fps grid: every step read as a
    dropped frame ("199 gap(s)"); its timestamps set the rate now. Converted to csv, an npz's timestamps were lost
    (frames renumbered one after another, its dropped frames gone): they become frame numbers. And a plain npz
    written with another --fps kept its timestamps beside an fps they contradict."""
    x = (np.random.default_rng(4).normal(size=(40, 5, 2)).cumsum(0) * 3 + 100).astype(np.float32)
    np.savez(tmp_path / "ts15.npz", points=x, timestamps=np.arange(40) / 15.0)
    r = _cli("ts15.npz", "-o", "a.npz", cwd=tmp_path)
    assert r.returncode == 0 and "15 fps (from its timestamps)" in r.stdout and "gap" not in r.stdout, r.stdout
    ts = np.r_[np.arange(20), np.arange(26, 46)] / 24.0  # 6 frames dropped after the 20th
    np.savez(tmp_path / "p.npz", points=x, fps=24.0, timestamps=ts)
    assert _cli("p.npz", "-o", "p.csv", cwd=tmp_path).returncode == 0
    frames = read_pose(tmp_path / "p.csv").meta["frame_numbers"]
    assert frames[19:21] == [19, 26]
    again = _cli("p.csv", "-o", "q.csv", cwd=tmp_path)
    assert "1 gap(s) in the frame numbers (6 dropped frames stepped over)" in again.stdout, again.stdout
    assert _cli("p.npz", "-o", "o30.npz", "--fps", 30, cwd=tmp_path).returncode == 0
    assert read_pose(tmp_path / "o30.npz").fps == 24.0  # its timestamps, kept, run at 24
    r = _cli("p.npz", "-o", "s.npz", "--strength", 3, cwd=tmp_path)
    assert r.returncode == 2 and "--strength must be in [0, 2]" in r.stderr
