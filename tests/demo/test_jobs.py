"""The demo's input checks and temporary folders, without Gradio (``streamssm.demo.jobs``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from streamssm.demo.jobs import (
    SAMPLE_VIDEO,
    DemoError,
    Limits,
    TempSpace,
    check_upload,
    read_clip,
    sniff_pose_format,
    work_size,
)


def test_check_upload_refuses_paths_outside_the_roots(tmp_path):
    root, outside = tmp_path / "uploads", tmp_path / "elsewhere"
    root.mkdir(), outside.mkdir()
    secret = outside / "secret.mp4"
    secret.write_bytes(b"x" * 10)
    with pytest.raises(DemoError, match="secret.mp4: refused, the video is not a file uploaded to this app"):
        check_upload(secret, what="video", limits=Limits(), roots=[root])
    # a path that walks out of the root with .. is resolved first, and refused the same way
    with pytest.raises(DemoError, match="refused"):
        check_upload(root / ".." / "elsewhere" / "secret.mp4", what="video", limits=Limits(), roots=[root])
    # and a symlink inside the root pointing outside it
    (root / "link.mp4").symlink_to(secret)
    with pytest.raises(DemoError, match="refused"):
        check_upload(root / "link.mp4", what="video", limits=Limits(), roots=[root])


def test_check_upload_size_and_emptiness(tmp_path):
    ok = tmp_path / "a.mp4"
    ok.write_bytes(b"x" * 2000)
    assert check_upload(ok, what="video", limits=Limits(), roots=[tmp_path]) == (ok.resolve(), "a.mp4")
    with pytest.raises(DemoError, match=r"a.mp4: the file is 2 kB; this demo accepts uploads up to 1 kB"):
        check_upload(ok, what="video", limits=Limits(max_upload_mb=0.001), roots=[tmp_path])
    empty = tmp_path / "e.mp4"
    empty.touch()
    with pytest.raises(DemoError, match="e.mp4: the file is empty"):
        check_upload(empty, what="video", limits=Limits(), roots=[tmp_path])
    with pytest.raises(DemoError, match="gone from the server"):
        check_upload(tmp_path / "missing.mp4", what="video", limits=Limits(), roots=[tmp_path])


def test_video_caps_are_checked_before_decoding():
    with pytest.raises(DemoError, match=r"sample.mp4: the video is 4.0 s long; this demo takes videos up to 1 s"):
        read_clip(SAMPLE_VIDEO, "sample.mp4", Limits(max_seconds=1), 4)
    with pytest.raises(DemoError, match=r"sample.mp4: frame size 640x360 is larger than this demo takes \(320x240\)"):
        read_clip(SAMPLE_VIDEO, "sample.mp4", Limits(max_resolution=(320, 240)), 4)
    clip = read_clip(SAMPLE_VIDEO, "sample.mp4", Limits(work_px=100), 3)
    assert len(clip.frames) == 3 and clip.size == (100, 56) and clip.source_size == (640, 360)


def test_a_video_too_narrow_for_the_working_size_is_named(tmp_path):
    """A 64 x 1000 clip scales to 20 x 320 at the working size, under the filter's 32 px: a DemoError naming the
    user's size and pointing to the CLI (it used to surface as a server failure naming the scaled size)."""
    from tests._media import make_clip

    clip = make_clip(tmp_path / "tall.mp4", n=3, size=(64, 1000))
    with pytest.raises(DemoError, match=r"tall.mp4: the frames are 64x1000, scaled to 20x320 here .*streamssm video"):
        read_clip(clip, "tall.mp4", Limits(), 3)


def test_work_size_is_even_and_bounded():
    assert work_size(1920, 1080, 320) == (320, 180)
    w, h = work_size(101, 57, 320)  # small enough already: only rounded to even (H.264 4:2:0)
    assert w % 2 == 0 and h % 2 == 0 and abs(w - 101) <= 1 and abs(h - 57) <= 1
    w, h = work_size(1080, 1920, 321)
    assert w % 2 == 0 and h % 2 == 0 and max(w, h) <= 322


@pytest.mark.parametrize("content, ext", [
    (b"PK\x03\x04rest", ".npz"),
    (b'  {"frames": []}', ".json"),
    (b"\xef\xbb\xbf{\"frames\": []}", ".json"),
    (b"# fps=30\nframe,joint,x,y\n", ".csv"),
])
def test_pose_format_is_sniffed_from_content(tmp_path, content, ext):
    p = tmp_path / "upload.bin"
    p.write_bytes(content)
    assert sniff_pose_format(p, "upload.bin") == ext


def test_pose_sniffer_refuses_binary(tmp_path):
    p = tmp_path / "pose.csv"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(DemoError, match="pose.csv: not a pose file"):
        sniff_pose_format(p, "pose.csv")


def test_temp_space_deletes_request_folders(tmp_path):
    space = TempSpace()
    root = space.root
    with space.request() as work:
        (work / "out.mp4").write_bytes(b"x")
        assert work.parent == root
    assert not work.exists()
    with pytest.raises(RuntimeError):
        with space.request() as work:
            raise RuntimeError("job failed")
    assert not work.exists() and space.requests_in_flight() == []
    space.close()
    assert not root.exists()
    given = TempSpace(tmp_path / "mine")  # a root we were given is not ours to delete
    given.close()
    assert (tmp_path / "mine").is_dir()


def test_sample_pose_asset_reads():
    from streamssm.demo.jobs import SAMPLE_POSE
    from streamssm.io.pose_files import read_pose

    d = read_pose(SAMPLE_POSE)
    assert d.points.shape == (96, 33, 3) and d.fps == 24.0 and d.meta["format"] == "npz-mediapipe"
    assert np.isfinite(d.points).all()
    assert SAMPLE_POSE.stat().st_size < 300_000


class _Counted:
    """A frame source that records each frame it hands out (the context manager and attributes of the real one)."""

    def __init__(self, src, work: list):
        self._src, self._work = src, work

    def __getattr__(self, name):
        return getattr(self._src, name)

    def __enter__(self):
        self._src.__enter__()
        return self

    def __exit__(self, *exc):
        return self._src.__exit__(*exc)

    def __iter__(self):
        for f in self._src:
            self._work.append("decode")
            yield f


def test_a_video_job_yields_after_every_frame_of_every_step(tmp_path, monkeypatch):
    """A cancelled request stops at the job's next yield (Gradio closes the handler there). The job yielded only
    between 16-frame filter pieces; decoding, the operator, the flow and the writing ran whole (Job.cancel() timed
    out after 5 s on a 120-frame job). Now at most one frame of any step's work runs between two yields."""
    import streamssm.demo.jobs as jobs
    import streamssm.io as sio
    import streamssm.metrics as metrics
    from streamssm.demo.jobs import iter_video_job, make_video_filter

    work: list[str] = []
    real_source, real_sink, real_flows, real_operator = sio.open_source, sio.open_sink, metrics.compute_flows, \
        jobs._operator
    monkeypatch.setattr(sio, "open_source", lambda *a, **k: _Counted(real_source(*a, **k), work))

    def sink(*a, **k):
        s = real_sink(*a, **k)
        write = s.write
        s.write = lambda f: (work.append("write"), write(f))[1]
        return s

    def flows(originals, *a, **k):
        work.extend(["flow"] * (len(originals) - 1))
        return real_flows(originals, *a, **k)

    def operator(name):
        op = real_operator(name)
        apply = op.apply
        op.apply = lambda f, i: (work.append("operator"), apply(f, i))[1]
        return op

    def counting(**kw):
        f = make_video_filter(device="cpu", strength=kw["strength"])
        real = f.step
        f.step = lambda P, I: (work.append("filter"), real(P, I))[1]
        return f

    monkeypatch.setattr(sio, "open_sink", sink)
    monkeypatch.setattr(metrics, "compute_flows", flows)
    monkeypatch.setattr(jobs, "_operator", operator)
    t = 20
    job = iter_video_job(tmp_path, video=(SAMPLE_VIDEO, "my clip.mp4"), operator="gamma_jitter", max_frames=t,
                         filter_factory=counting)
    between = []  # the work done between two yields
    while True:
        seen = len(work)
        try:
            next(job)
        except StopIteration as done:
            res = done.value
            break
        between.append(work[seen:])
    for step in ("decode", "operator", "filter", "flow", "write"):
        assert work.count(step) == (t - 1 if step == "flow" else t), step
        assert max(b.count(step) for b in between) == 1, step
    assert res.video.exists() and "my clip.mp4: 20" in res.summary

    # closed at a progress line (a cancelled request), the job stops there: nothing more is filtered or written
    work.clear()
    job = iter_video_job(tmp_path / "closed", video=(SAMPLE_VIDEO, "my clip.mp4"), operator="gamma_jitter",
                         max_frames=t, filter_factory=counting)
    (tmp_path / "closed").mkdir()
    while not next(job).startswith("filtering frame 3 "):
        pass
    job.close()
    assert work.count("filter") == 3 and "write" not in work and not (tmp_path / "closed" / "deflickered.mp4").exists()


# ------------------------------------------------------------------------------------------------
# pose uploads
# ------------------------------------------------------------------------------------------------
def _pose_job(tmp_path, path: Path, limits: Limits = Limits(), **kw):
    from streamssm.demo.jobs import run_pose_job

    work = tmp_path / f"work-{path.stem}"
    work.mkdir()
    return run_pose_job(work, pose=(path, path.name), limits=limits, device="cpu", **kw)


def test_pose_npz_over_the_caps_is_refused_by_its_header(tmp_path):
    """A 40 kB compressed .npz whose points are 40 MB of zeros is refused from the array's header, before its data
    is read; arrays beside the points are not read at all (a 391 kB file held 400 MB of the demo's memory)."""
    from tests.io.test_pose_files import _peak_bytes

    wide = tmp_path / "wide.npz"
    np.savez_compressed(wide, points=np.zeros((50, 5_000_000, 2), np.float32))
    with pytest.raises(DemoError, match=r"wide\.npz: 50 frames x 5000000 keypoints; this demo takes up to 20000 "
                                        r"frames and 256 keypoints \(use `streamssm pose` for big files\)"):
        assert _peak_bytes(lambda: _pose_job(tmp_path, wide)) < 10_000_000
    junk = tmp_path / "junk.npz"
    np.savez_compressed(junk, points=np.random.default_rng(0).random((20, 5, 2), np.float32), fps=np.float64(30),
                        junk=np.zeros(25_000_000, np.float32))
    res = []
    peak = _peak_bytes(lambda: res.append(_pose_job(tmp_path, junk)))
    assert res[0].metrics["frames"] == 20 and peak < 50_000_000, peak


@pytest.mark.parametrize("fps", [1e9, 1e-9, 1001.0])
def test_pose_frame_rate_out_of_range_is_named(tmp_path, fps):
    """fps 1e9 failed in the skeleton writer ('the server failed ... VideoIOError: /tmp/.../skeleton.mp4'), 1e-9 with
    'frame rate must be positive': both are refused naming the file and the range taken."""
    p = tmp_path / "odd rate.npz"
    np.savez(p, points=np.random.default_rng(0).random((10, 3, 2), np.float32), fps=np.float64(fps))
    rate = re.escape(f"{fps:g}")
    with pytest.raises(DemoError, match=rf"^odd rate\.npz: the file's frame rate is {rate} fps; this demo takes 1 to "
                                        r"1000 fps") as e:
        _pose_job(tmp_path, p)
    assert str(tmp_path) not in str(e.value)


def test_pose_video_write_failure_names_no_server_path(tmp_path, monkeypatch):
    """A VideoIOError from the skeleton writer (a full disk, say) is a DemoError without the request folder's path."""
    import streamssm.io as sio
    from streamssm.io import VideoIOError

    def full(path, **kw):
        raise VideoIOError(f"{path}: disk full (or file size limit) after 3 frames")

    monkeypatch.setattr(sio, "open_sink", full)
    p = tmp_path / "walk.npz"
    np.savez(p, points=np.random.default_rng(0).random((10, 3, 2), np.float32), fps=np.float64(30))
    with pytest.raises(DemoError, match=r"^could not write the skeleton video: skeleton\.mp4: disk full") as e:
        _pose_job(tmp_path, p)
    assert str(tmp_path) not in str(e.value)


def test_pose_json_nested_too_deeply_is_named(tmp_path):
    """'[[[[...' 200000 deep: 'the server failed (RecursionError ...)' before."""
    p = tmp_path / "deep.json"
    p.write_text('{"frames":' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(DemoError, match=r"^deep\.json: JSON nested too deeply"):
        _pose_job(tmp_path, p)


def _video_size(path) -> tuple[int, int]:
    import av

    with av.open(str(path)) as c:
        return c.streams.video[0].width, c.streams.video[0].height


def test_skeleton_panels_are_the_panel_size_whatever_the_units(tmp_path):
    """A hand in 0..1 coordinates got 52 px panels (titles cut: 'One Eurc'), points that never move a 6 x 64 video:
    the panels' long side is Limits.anim_panel_px, scaled up as well as down; still points get a square."""
    rng = np.random.default_rng(0)
    hand = tmp_path / "hand.npz"
    np.savez(hand, points=(0.45 + 0.05 * rng.random((12, 21, 2)) * [1, 2]).astype(np.float32), fps=np.float64(30))
    still = tmp_path / "still.npz"
    np.savez(still, points=np.full((12, 5, 2), 3.0, np.float32), fps=np.float64(30))
    pixels = tmp_path / "pixels.npz"
    np.savez(pixels, points=(rng.random((12, 17, 2)) * [400, 1500]).astype(np.float32), fps=np.float64(30))
    lim = Limits(anim_panel_px=320)
    w, h = _video_size(_pose_job(tmp_path, hand, lim).video)
    assert w % 3 == 0 and h == 320 and 160 <= w // 3 < 320, (w, h)  # taller than wide, as the hand
    assert _video_size(_pose_job(tmp_path, still, lim).video) == (3 * 320, 320)
    w, h = _video_size(_pose_job(tmp_path, pixels, lim).video)
    assert h == 320 and w // 3 >= 320 // 3, (w, h)  # scaled down; a sliver is widened to a third of its height


# ------------------------------------------------------------------------------------------------
# the result video
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("width", [640, 320, 180, 90, 40])
def test_panel_titles_stay_in_their_panels(width):
    """A portrait clip at --work-px 320 has 180 px panels: 'processed (gamma_jitter)' ran into the filtered half, and
    at 90 px the left title was cut by the right one. Each title now fits its panel: a smaller font, then '...'."""
    from streamssm.video.cli import _labeller

    frame = np.full((60, 2 * width, 3), 255, np.uint8)
    _labeller("processed (gamma_jitter)", "streamssm filtered", width)(frame)
    top = frame[1, :, 0]
    assert (top == 85).any() and not (top == 28).any()  # each backdrop darkens once: the two never overlap
    left = np.flatnonzero(top[:width] == 85)
    assert left[0] == 0 and left[-1] < width  # the left title's backdrop ends inside its panel
    from streamssm.video.cli import _fit_label

    text, scale, _, _ = _fit_label("processed (gamma_jitter)", width, 0.5)
    if width >= 180:
        assert text == "processed (gamma_jitter)"  # smaller, whole
    else:
        assert text.endswith("...") and scale == 0.35


def _boxes(path) -> list[str]:
    """The top-level boxes of an mp4, in file order."""
    import struct

    data, out, i = Path(path).read_bytes(), [], 0
    while i + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[i:i + 8])
        n = struct.unpack(">Q", data[i + 8:i + 16])[0] if n == 1 else n
        out.append(kind.decode("latin-1"))
        if n < 8:
            break
        i += n
    return out


def _moov_first(path) -> bool:
    b = _boxes(path)
    return b.index("moov") < b.index("mdat")


def test_open_sink_faststart_is_opt_in(tmp_path):
    """open_sink(faststart=True) puts the index (moov) before the data in mp4/mov/m4v, also for a partial run (the
    temporary file is rewritten before its rename); the default stays ffmpeg's (moov last); other containers
    ignore it."""
    from streamssm.io import open_sink, open_source

    frame = np.zeros((64, 64, 3), np.uint8)

    def write(name, partial=False, **kw):
        s = open_sink(tmp_path / name, fps=24, width=64, height=64, **kw)
        for _ in range(5):
            s.write(frame)
        s.close(partial=partial)
        return tmp_path / name

    assert not _moov_first(write("plain.mp4"))
    for name in ("fast.mp4", "fast.mov", "fast.m4v"):
        assert _moov_first(write(name, faststart=True)), name
    cut = write("cut.mp4", partial=True, faststart=True)
    assert _moov_first(cut) and not list(tmp_path.glob(".*partial*"))
    with open_source(str(cut)) as src:
        assert sum(1 for _ in src) == 5
    assert write("fast.mkv", faststart=True).stat().st_size > 0


def test_demo_outputs_are_faststart(tmp_path):
    """The page plays the result while it downloads: both the video job's and the pose job's mp4 are faststart."""
    from streamssm.demo.jobs import run_video_job

    res = run_video_job(tmp_path, video=(SAMPLE_VIDEO, "sample.mp4"), max_frames=3, device="cpu")
    assert _moov_first(res.video)
    p = tmp_path / "walk.npz"
    np.savez(p, points=np.random.default_rng(0).random((10, 3, 2), np.float32), fps=np.float64(30))
    assert _moov_first(_pose_job(tmp_path, p).video)


# ------------------------------------------------------------------------------------------------
# the numbers and the summary
# ------------------------------------------------------------------------------------------------
def test_no_consistent_target_is_neither_reported_nor_drawn(tmp_path):
    """clahe has no parameters to hold fixed (its 'consistent' output is the processed one): the JSON gave null for
    processed vs that target but a number for filtered vs it, and the plot drew a 'held fixed' curve over the
    processed one, while the summary said there was no such target."""
    from streamssm.demo.jobs import run_video_job

    res = run_video_job(tmp_path, video=(SAMPLE_VIDEO, "sample.mp4"), operator="clahe", max_frames=3, device="cpu")
    assert not any("consistent" in k for k in res.metrics), res.metrics
    assert list(res.luma) == ["processed", "filtered"]
    assert "clahe has no parameters to hold fixed" in res.summary and "held fixed:" not in res.summary


def test_strength_zero_says_identical(tmp_path):
    """At strength 0 the output is the processed clip: the summary said 'inf dB' and the JSON null."""
    from streamssm.demo.jobs import run_video_job

    res = run_video_job(tmp_path, video=(SAMPLE_VIDEO, "sample.mp4"), strength=0.0, max_frames=3, device="cpu")
    assert res.metrics["psnr_filtered_vs_processed_db"] is None
    assert "filtered vs processed: identical (strength 0: the filter is off)" in res.summary
    assert "inf" not in res.summary


def test_an_upload_with_sound_is_told_the_result_has_none(tmp_path):
    """The demo writes the picture only: said when the upload had sound (and only then)."""
    from streamssm.demo.jobs import run_video_job
    from tests.io.test_video_io import make_clip

    loud = make_clip(tmp_path / "loud.mp4", n=4, size=(128, 72), audio=True)
    res = run_video_job(tmp_path, video=(loud, "loud.mp4"), max_frames=4, device="cpu")
    assert "this clip has no sound" in res.summary and "`streamssm video` keeps" in res.summary
    (tmp_path / "quiet").mkdir()
    quiet = make_clip(tmp_path / "quiet.mp4", n=4, size=(128, 72))
    res = run_video_job(tmp_path / "quiet", video=(quiet, "quiet.mp4"), max_frames=4, device="cpu")
    assert "sound" not in res.summary


def test_an_image_upload_is_not_offered_a_folder(tmp_path):
    """The demo takes no folders of images: a PNG upload's message offers only a video file."""
    from PIL import Image

    png = tmp_path / "still.mp4"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(png, format="PNG")
    with pytest.raises(DemoError, match=r"still\.mp4: is a single image \(png\), not a video.*expected a video file$"):
        read_clip(png, "still.mp4", Limits(), 4)


def _write_clip(path, frames, size):
    from streamssm.io import open_sink

    import cv2

    with open_sink(path, fps=24, width=size[0], height=size[1]) as sink:
        for f in frames:
            sink.write(cv2.resize(f, size, interpolation=cv2.INTER_AREA))
    return path


def test_pair_at_another_resolution_of_the_same_shape_is_resized(tmp_path):
    """A processed video at half its original's resolution was refused, though both are resized to the working size
    anyway: taken, with a note; another aspect ratio (cropped or padded) is still refused, before decoding."""
    from streamssm.demo.jobs import run_video_job
    from streamssm.video.operators import make_demo_operator

    src = read_clip(SAMPLE_VIDEO, "s", Limits(work_px=640), 4).frames  # 640 x 360
    op = make_demo_operator("autocontrast")
    proc = [op.apply(f, i) for i, f in enumerate(src)]
    orig = _write_clip(tmp_path / "orig.mp4", src, (640, 360))
    half = _write_clip(tmp_path / "half.mp4", proc, (320, 180))
    res = run_video_job(tmp_path, video=(orig, "orig.mp4"), processed=(half, "half.mp4"), max_frames=4, device="cpu")
    assert res.metrics["mode"] == "pair" and (res.metrics["width"], res.metrics["height"]) == (320, 180)
    assert "half.mp4 is 320x180 and orig.mp4 640x360: both resized to 320x180" in res.summary
    square = _write_clip(tmp_path / "square.mp4", proc, (360, 360))
    with pytest.raises(DemoError, match=r"square\.mp4 is 360x360 but orig\.mp4 is 640x360: .* same frame shape"):
        run_video_job(tmp_path, video=(orig, "orig.mp4"), processed=(square, "square.mp4"), max_frames=4,
                      device="cpu")
