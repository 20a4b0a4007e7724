"""The demo's input checks and temporary folders, without Gradio (``streamssm.demo.jobs``)."""

from __future__ import annotations

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


def test_a_closed_video_job_stops_its_work(tmp_path):
    """A request the user cancels is not iterated further (Gradio): closing the job at its first progress line
    stops it there, so it does not run on beside the next one (cancelled jobs used to run to their end, beyond
    --concurrency); run to its end it gives the result, the clip named in its summary."""
    from streamssm.demo.jobs import iter_video_job, make_video_filter, run_video_job

    seen = []

    def counting(**kw):
        f = make_video_filter(device="cpu", strength=kw["strength"])
        real = f.filter
        f.filter = lambda P, I, chunk: (seen.append(len(P)), real(P, I, chunk=chunk))[1]
        return f

    kw = dict(video=(SAMPLE_VIDEO, "my clip.mp4"), operator="gamma_jitter", max_frames=48, filter_factory=counting)
    job = iter_video_job(tmp_path, **kw)
    while not next(job).startswith("filtering frame 17"):
        pass
    job.close()
    assert seen == [16] and not (tmp_path / "deflickered.mp4").exists()
    res = run_video_job(tmp_path, **kw)
    assert sum(seen) == 16 + 48 and res.video.exists() and "my clip.mp4: 48" in res.summary
