"""Tests for streamssm.io.video: sources, sinks, audio carry-over, atomic output, bad input.

Clips are made here with raw PyAV (not with our sink) so a sink bug cannot hide a reader bug.
"""

from __future__ import annotations

import functools
import http.server
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")

from streamssm.io import (  # noqa: E402
    Frame,
    ThreadedSink,
    VideoIOError,
    open_sink,
    open_source,
    paired,
    prefetch,
    sigterm_as_exception,
    to_rate,
)
from tests._media import FakeCapture  # noqa: E402

W, H = 64, 48


def pattern(i: int, w: int = W, h: int = H) -> np.ndarray:
    """Frame ``i``: a flat level 8*i (recoverable after lossy coding) plus a noise strip.

    The noise keeps every frame's packet about the same size, so cutting a file in half cuts
    it near frame 15 rather than inside the first keyframe.
    """
    img = np.full((h, w, 3), (8 * i) % 256, np.uint8)
    img[:, : w // 4] = np.random.default_rng(i).integers(0, 256, (h, w // 4, 3), dtype=np.uint8)
    return img


def level(rgb: np.ndarray) -> int:
    """Inverse of :func:`pattern`: the frame index from the flat area."""
    return int(round(float(rgb[:, rgb.shape[1] // 2 :].mean()) / 8))


def make_clip(path, n=30, size=(W, H), rate=30, pts=None, audio=False, options=None, codec="libx264"):
    """Encode ``n`` pattern frames with PyAV; ``pts`` (in 1/rate units) makes gaps; ``audio`` adds a 440 Hz AAC tone."""
    w, h = size
    rate = Fraction(rate)
    with av.open(str(path), "w", options=options or {}) as c:
        vs = c.add_stream(codec, rate=rate)
        vs.width, vs.height = w, h
        vs.pix_fmt = "yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p"
        tb = 1 / rate
        if audio:
            sr = 44100
            aus = c.add_stream("aac", rate=sr, layout="mono")
        for i in range(n):
            f = av.VideoFrame.from_ndarray(pattern(i, w, h), format="rgb24")
            f.pts = i if pts is None else pts[i]
            f.time_base = tb
            c.mux(vs.encode(f))
        c.mux(vs.encode(None))
        if audio:
            total = int(sr * n / rate)
            t = np.arange(total) / sr
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for s in range(0, total, 1024):
                chunk = tone[s : s + 1024][None, :]
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = sr, s, Fraction(1, sr)
                c.mux(aus.encode(af))
            c.mux(aus.encode(None))
    return Path(path)


def probe(path):
    """(video frames decoded, (w, h), average rate, pix_fmt, audio info or None) straight from PyAV."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        n = sum(1 for _ in c.decode(vs))
        info = (n, (vs.codec_context.width, vs.codec_context.height), vs.average_rate, vs.codec_context.pix_fmt)
    with av.open(str(path)) as c:
        audio = None
        if c.streams.audio:
            a = c.streams.audio[0]
            pk = [p for p in c.demux(a) if p.size]
            dur = sum(p.duration for p in pk) * a.time_base
            audio = dict(codec=a.codec_context.name, rate=a.codec_context.sample_rate, duration=float(dur),
                         payload=[bytes(p) for p in pk])
    return (*info, audio)


def copy_through(src_spec, out, src_kw=None, **sink_kw):
    with open_source(src_spec, **(src_kw or {})) as src, open_sink(out, fps=src.rate, width=src.width, height=src.height, **sink_kw) as sink:
        for fr in src:
            sink.write(fr.rgb)
    return out


@pytest.fixture
def clip(tmp_path):
    return make_clip(tmp_path / "in.mp4")


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [Fraction(30000, 1001), Fraction(30), Fraction(25)])
def test_round_trip_keeps_count_size_fps(tmp_path, rate):
    src_path = make_clip(tmp_path / "in.mp4", rate=rate)
    with open_source(src_path) as src:
        assert (src.width, src.height, src.rate, src.frame_count, src.audio) == (W, H, rate, 30, False)
        frames = list(src)
    assert [f.index for f in frames] == list(range(30))
    assert [level(f.rgb) for f in frames] == list(range(30))
    assert np.allclose([f.timestamp for f in frames], np.arange(30) / float(rate), atol=1e-3)
    assert all(f.rgb.dtype == np.uint8 and f.rgb.shape == (H, W, 3) and f.rgb.flags.c_contiguous for f in frames)

    out = tmp_path / "out.mp4"
    with open_sink(out, fps=float(rate), width=W, height=H) as sink:  # a float fps must come back exact
        for f in frames:
            sink.write(f.rgb)
    n, size, avg_rate, pix_fmt, audio = probe(out)
    assert (n, size, avg_rate, pix_fmt, audio) == (30, (W, H), rate, "yuv420p", None)
    with open_source(out) as back:
        assert back.rate == rate and back.frame_count == 30
        assert [level(f.rgb) for f in back] == list(range(30))


def test_to_rate_snaps_ntsc():
    assert to_rate(29.97) == to_rate(30000 / 1001) == Fraction(30000, 1001)
    assert to_rate(23.976) == Fraction(24000, 1001)
    assert to_rate("60000/1001") == Fraction(60000, 1001)
    assert to_rate(30) == 30 and to_rate(12.5) == Fraction(25, 2)
    with pytest.raises(VideoIOError):
        to_rate(0)


def test_audio_survives_untouched(tmp_path):
    src_path = make_clip(tmp_path / "tone.mp4", audio=True)
    with open_source(src_path) as src:
        assert src.audio
    out = copy_through(src_path, tmp_path / "out.mp4", audio_from=src_path)
    a_in, a_out = probe(src_path)[-1], probe(out)[-1]
    assert a_out is not None
    assert (a_out["codec"], a_out["rate"]) == (a_in["codec"], a_in["rate"]) == ("aac", 44100)
    assert abs(a_out["duration"] - a_in["duration"]) < 0.1
    # Remuxed, not re-encoded: the payload bytes are the very same packets.
    k = min(len(a_in["payload"]), len(a_out["payload"]))
    assert k > 30 and a_out["payload"][:k] == a_in["payload"][:k]
    assert probe(out)[:3] == (30, (W, H), 30)


def test_audio_reencoded_when_container_cannot_hold_it(tmp_path, caplog):
    src_path = make_clip(tmp_path / "tone.mp4", n=10, audio=True)
    out = copy_through(src_path, tmp_path / "out.webm", audio_from=src_path)
    a = probe(out)[-1]
    assert a["codec"] == "opus" and abs(a["duration"] - 10 / 30) < 0.1
    assert "re-encoding" in caplog.text


def test_image_folder_in_video_out(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):  # natural order: 2.png before 10.png
        cv2.imwrite(str(folder / f"{i}.png"), pattern(i)[:, :, ::-1])
    (folder / "notes.txt").write_text("ignored")
    with open_source(folder, fps=24) as src:
        assert (src.frame_count, src.width, src.height, src.rate) == (12, W, H, 24)
        frames = list(src)
    assert [f.index for f in frames] == list(range(12))
    assert np.array_equal(frames[5].rgb, pattern(5))
    assert np.allclose([f.timestamp for f in frames], np.arange(12) / 24)
    out = copy_through(folder, tmp_path / "out.mp4", src_kw={"fps": 24})
    n, size, rate, _, _ = probe(out)
    assert (n, size, rate) == (12, (W, H), 24)


@pytest.mark.parametrize("suffix", ["frames/", "frames"])
def test_video_in_png_folder_out(tmp_path, clip, suffix):
    out = str(tmp_path / suffix)
    copy_through(clip, out)
    files = sorted(Path(out).iterdir())
    assert [f.name for f in files] == [f"frame_{i:06d}.png" for i in range(30)]
    with open_source(clip) as src:
        decoded = [f.rgb for f in src]
    with open_source(out) as back:
        assert all(np.array_equal(a.rgb, b) for a, b in zip(back, decoded))  # PNG is lossless


def test_live_source_is_paced_and_yields_frames(tmp_path, clip):
    with open_source(f"live:{clip}") as src:
        assert src.live and src.frame_count is None and (src.width, src.height) == (W, H)
        frames = list(src)
    ts = np.array([f.timestamp for f in frames])
    assert len(frames) >= 25  # a slow CI machine may drop a few late frames, like a camera
    assert np.all(np.diff(ts) > 0)
    assert ts[-1] == pytest.approx(29 / 30, abs=0.15)  # real time, not as fast as possible


def test_irregular_timestamps_are_reported(tmp_path):
    pts = [i for i in range(32) if i not in (10, 11)]  # frames 10 and 11 dropped
    path = make_clip(tmp_path / "vfr.mp4", n=30, pts=pts)
    with open_source(path) as src:
        ts = np.array([f.timestamp for f in src])
    dt = np.diff(ts)
    assert len(ts) == 30
    assert dt.max() == pytest.approx(3 / 30, abs=1e-3) and np.median(dt) == pytest.approx(1 / 30, abs=1e-3)
    assert int(np.argmax(dt)) == 9

    # The sink keeps the gap when given timestamps.
    out = tmp_path / "out.mp4"
    with open_source(path) as src, open_sink(out, fps=src.rate, width=W, height=H) as sink:
        for f in src:
            sink.write(f.rgb, f.timestamp)
    with open_source(out) as back:
        assert np.allclose([f.timestamp for f in back], ts, atol=1e-3)


def test_frames_faster_than_the_nominal_rate_keep_their_times(tmp_path):
    """A variable-frame-rate clip whose frames come at twice its average rate in a burst, then slower: the sink
    keeps every frame's time (to 1/16 frame), where a grid at the nominal rate pushed the burst later and later
    (0.5 s behind by its end, out of step with the audio)."""
    rng = np.random.default_rng(0)
    ms = np.cumsum([0] + list(rng.integers(12, 22, 29)) + list(rng.integers(60, 90, 15)))
    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.time_base = vs.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(ms):
            f = av.VideoFrame.from_ndarray(pattern(i), format="rgb24")
            f.pts, f.time_base = int(t), Fraction(1, 1000)
            c.mux(vs.encode(f))
        c.mux(vs.encode(None))
    out = tmp_path / "out.mp4"
    with open_source(path) as src, open_sink(out, fps=src.rate, width=W, height=H) as sink:
        ts = []
        for f in src:
            sink.write(f.rgb, f.timestamp)
            ts.append(f.timestamp)
    assert np.allclose(ts, ms / 1000, atol=1e-3)
    with open_source(out) as back:
        got = [f.timestamp for f in back]
    assert len(got) == len(ms)
    assert np.abs(np.array(got) - ms / 1000).max() < 1 / (16 * float(src.rate)) + 1e-3


def test_avi_with_b_frames_is_timed_by_its_rate(tmp_path):
    """AVI stores no presentation times: with B-frames FFmpeg's guesses come out of order (6, 8, 7, 9 ...), which
    stopped the filter ("timestamps must strictly increase") a few frames in. AVI frames are timed by index."""
    path = make_clip(tmp_path / "bf.avi", n=30)  # libx264's default settings use B-frames
    with av.open(str(path)) as c:
        raw = [f.pts for f in c.decode(c.streams.video[0])]
    assert np.any(np.diff(raw) <= 0), "the clip should have out-of-order guessed timestamps (the case tested)"
    with open_source(path) as src:
        frames = list(src)
    assert [level(f.rgb) for f in frames] == list(range(30))  # presentation order
    assert np.allclose([f.timestamp for f in frames], np.arange(30) / 30, atol=1e-9)


def test_avi_round_trip_and_its_gaps(tmp_path):
    """AVI output stays on the frame grid (its muxer is constant-rate: finer ticks would be stored as empty
    frames), and an AVI input whose timestamps increase keeps them: dropped frames stay gaps, through the sink too."""
    pts = [i for i in range(32) if i not in (10, 11)]
    path = make_clip(tmp_path / "gaps.avi", n=30, pts=pts, codec="mpeg4")  # no B-frames
    with open_source(path) as src:
        ts = [f.timestamp for f in src]
    assert np.allclose(ts, np.array(pts) / 30, atol=1e-6)
    out = tmp_path / "out.avi"
    with open_source(path) as src, open_sink(out, fps=src.rate, width=W, height=H) as sink:
        for f in src:
            sink.write(f.rgb, f.timestamp)
    n, size, rate, _, _ = probe(out)
    assert (n, size, rate) == (30, (W, H), 30)
    with open_source(out) as back:
        got = np.array([f.timestamp for f in back])
    # H.264 in AVI is read back with FFmpeg's guessed times (each frame at the next one's decode time): the gap
    # comes through, two frames long, but may sit a frame early
    assert got[-1] == pytest.approx(ts[-1], abs=1e-6)
    assert np.allclose(np.sort(np.diff(got)), np.sort(np.diff(ts)), atol=1e-6)


@pytest.mark.parametrize("ext", [".ts", ".m4v"])
def test_transport_stream_and_m4v_round_trip(tmp_path, ext):
    """MPEG-TS and .m4v outputs read back whole, at their rate (TS players take the rate from the H.264 stream's
    timing: 1/16-frame ticks there read as 16 times the rate, and a complete file as truncated), gaps kept."""
    rate = Fraction(30000, 1001)
    pts = [i for i in range(32) if i not in (10, 11)]
    out = tmp_path / f"out{ext}"
    with open_sink(out, fps=rate, width=W, height=H) as sink:
        for i, t in enumerate(pts):
            sink.write(pattern(i), t / rate)
    with av.open(str(out)) as c:  # 30 frames over 32 frame periods (mp4 counts the gap; TS reads the stream's)
        assert abs(c.streams.video[0].average_rate / rate - 1) < 0.1
    with open_source(out) as back:
        frames = list(back)
    assert [level(f.rgb) for f in frames] == list(range(30))
    got = np.array([f.timestamp for f in frames])
    assert np.allclose(got - got[0], (np.array(pts) - pts[0]) / float(rate), atol=1e-3)


def test_webm_says_it_loses_the_pixel_aspect(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        with open_sink(tmp_path / "o.webm", fps=25, width=W, height=H, sample_aspect=Fraction(32, 27)) as sink:
            sink.write(np.zeros((H, W, 3), np.uint8))
    assert "pixel aspect ratio 32/27 is not kept" in caplog.text and "o.webm" in caplog.text


def test_variable_rate_clip_through_avi_reads_back_whole(tmp_path):
    """A variable-rate clip (24 fps, a 0.5 s gap, 30 fps: nominal 120 fps) written to AVI, a constant-rate container,
    keeps its frame times as gaps, which AVI's index counts as frame slots (hundreds for 40 frames). Reading it back
    is not a truncation: the frames reach the announced end (it used to stop with 'decoded only 40 of 327')."""
    pts = [5 * i for i in range(20)] + [95 + 60 + 4 * i for i in range(20)]
    path = make_clip(tmp_path / "vfr.mkv", n=40, rate=120, pts=pts, codec="mpeg4")
    out = tmp_path / "out.avi"
    with open_source(path) as src, open_sink(out, fps=src.rate, width=W, height=H) as sink:
        for f in src:
            sink.write(f.rgb, f.timestamp)
    with open_source(out) as back:
        got = [f.timestamp for f in back]
    # whole, and ending where it should to a frame (FFmpeg's guessed AVI times may run a frame early: see above)
    assert len(got) == 40 and got[-1] == pytest.approx(pts[-1] / 120, abs=4.5 / 120)


def test_out_of_order_timestamps_fall_back_to_the_rate(tmp_path, caplog):
    """Any other container whose timestamps go backwards: a warning naming the file, and the frames from there on
    timed at the nominal rate (still increasing)."""
    path = make_clip(tmp_path / "back.mkv", n=12, pts=[0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10])
    with av.open(str(path)) as c:
        raw = [f.pts for f in c.decode(c.streams.video[0])]
    if np.all(np.diff(raw) > 0):
        pytest.skip(f"this FFmpeg build rewrote the repeated timestamp ({raw}): nothing out of order to read")
    with caplog.at_level("WARNING"), open_source(path) as src:
        ts = [f.timestamp for f in src]
    assert len(ts) == 12 and np.all(np.diff(ts) > 0)
    assert "back.mkv" in caplog.text and "nominal" in caplog.text


CORNER = np.zeros((H, W, 3), np.uint8)
CORNER[: H // 4, : W // 4] = 255  # a white block in the stored frame's top-left corner


def _corner_clip(path: Path, degrees: int = 0) -> Path:
    """Three frames of ``CORNER`` as H.264 in mp4, with a display rotation of ``degrees`` (PyAV >= 15 writes it)."""
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        if degrees:
            if not hasattr(vs, "set_display_rotation"):
                pytest.skip(f"PyAV {av.__version__} cannot write a display matrix (needs PyAV >= 15)")
            vs.set_display_rotation(degrees)
        for i in range(3):
            f = av.VideoFrame.from_ndarray(CORNER, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 30)
            c.mux(vs.encode(f))
        c.mux(vs.encode(None))
    return path


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_display_rotation_is_applied(tmp_path, degrees):
    """A phone clip stored landscape with a display rotation comes out upright (its frames turned as a player
    shows them; the size swapped for 90 and 270)."""
    with open_source(_corner_clip(tmp_path / "rot.mp4", degrees)) as src:
        assert (src.width, src.height) == ((H, W) if degrees % 180 else (W, H))
        rgb = next(iter(src)).rgb
    want = np.rot90(CORNER, degrees // 90)  # counter-clockwise, as the display matrix says
    assert rgb.shape == want.shape
    assert np.abs(rgb.astype(int) - want).mean() < 8


@pytest.mark.parametrize("flip,degrees", [("left-right", 0), ("upside-down", 0), ("left-right", 90)])
def test_display_mirror_is_applied_not_read_as_a_turn(tmp_path, flip, degrees):
    """An mp4 whose track matrix mirrors the picture (a front camera's, an editor's flip): FFmpeg's rotation angle
    reads a left-right mirror as 180 degrees, which used to turn the picture upside down. Made by mirroring the
    track header's matrix (ISO 14496-12 tkhd: nine big-endian 16.16 / 2.30 numbers; its first row negated mirrors
    left to right, its second upside down), after a display rotation where one is written: mirrored first, then
    turned, as the matrix composes them."""
    import struct

    path = _corner_clip(tmp_path / "mirror.mp4", degrees)
    data = bytearray(path.read_bytes())
    at = data.index(b"tkhd") + 4 + 4 + 20 + 8 + 8  # type, version/flags, times/id/duration, reserved, layer..volume
    m = list(struct.unpack(">9i", data[at : at + 36]))
    if not degrees:
        assert m == [65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30]
    row = 0 if flip == "left-right" else 3
    m[row], m[row + 1] = -m[row], -m[row + 1]
    data[at : at + 36] = struct.pack(">9i", *m)
    path.write_bytes(bytes(data))
    with open_source(path) as src:
        assert (src.width, src.height) == ((H, W) if degrees % 180 else (W, H))
        rgb = next(iter(src)).rgb
    want = np.rot90(CORNER[:, ::-1], degrees // 90) if flip == "left-right" else CORNER[::-1]
    assert rgb.shape == want.shape and np.abs(rgb.astype(int) - want).mean() < 8


def _pq(nits):
    """SMPTE ST 2084's inverse EOTF, written out here from the standard (not imported) to check the reader's."""
    m1, m2, c1, c2, c3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875
    y = (np.asarray(nits, np.float64) / 10000.0) ** m1
    return ((c1 + c2 * y) / (1.0 + c3 * y)) ** m2


def _hdr_clip(path, signal_rgb, trc, primaries=9):
    """A lossless 10-bit BT.2020 clip (FFV1, 4:4:4, limited range) of 3 frames holding ``signal_rgb`` (H, W, 3)
    non-linear values in [0, 1], tagged with transfer ``trc`` and ``primaries`` (9: BT.2020, 1: BT.709)."""
    from av.video.reformatter import ColorRange, Colorspace

    with av.open(str(path), "w") as c:
        vs = c.add_stream("ffv1", rate=30)
        vs.width, vs.height, vs.pix_fmt = signal_rgb.shape[1], signal_rgb.shape[0], "yuv444p10le"
        vs.codec_context.color_trc, vs.codec_context.color_primaries, vs.codec_context.colorspace = trc, primaries, 9
        vs.codec_context.color_range = 1
        code = np.round(np.clip(signal_rgb, 0, 1) * 65535).astype(np.uint16)
        for i in range(3):
            f = av.VideoFrame.from_ndarray(code, format="rgb48le").reformat(
                format="yuv444p10le", dst_colorspace=Colorspace.BT2020, dst_color_range=ColorRange.MPEG)
            f.pts, f.time_base = i, Fraction(1, 30)
            c.mux(vs.encode(f))
        c.mux(vs.encode(None))
    with av.open(str(path)) as c:
        if c.streams.video[0].codec_context.color_trc != trc:
            pytest.skip(f"this FFmpeg build did not store the transfer tag {trc} in {path.name}")


def _rgb_to_xyz(primaries, white=(0.3127, 0.3290)):
    """The RGB -> XYZ matrix of a set of (x, y) primaries and white point (SMPTE RP 177)."""
    xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in [*primaries, white]]).T
    return xyz[:, :3] * np.linalg.solve(xyz[:, :3], xyz[:, 3])


# BT.709 -> BT.2020 linear RGB, from the two standards' primaries, to put known BT.709 colours into the HDR clips
_709_TO_2020 = np.linalg.solve(_rgb_to_xyz([(0.708, 0.292), (0.170, 0.797), (0.131, 0.046)]),
                               _rgb_to_xyz([(0.64, 0.33), (0.30, 0.60), (0.15, 0.06)]))


@pytest.mark.parametrize("trc", [16, 18], ids=["pq", "hlg"])
def test_hdr_input_is_tone_mapped_to_sdr(tmp_path, caplog, trc):
    # Patches of known light, relative to the 203 cd/m2 reference white, in BT.709 primaries: greys at 0.25
    # and 1.0 (reference white), a red and a green at 0.5, and black. Expected SDR codes from the
    # documented mapping: below the knee (0.6) light is kept and encoded with gamma 1/2.4; reference white
    # lands at 0.8 light (the Reinhard knee); colours keep their hue (no cross-talk into other channels).
    patches = [(0.25, 0.25, 0.25), (1.0, 1.0, 1.0), (0.5, 0.0, 0.0), (0.0, 0.5, 0.0), (0.0, 0.0, 0.0)]
    light = np.array([np.array(p) @ _709_TO_2020.T for p in patches])  # (5, 3) BT.2020, x reference white
    if trc == 16:
        signal = _pq(light * 203.0)
    else:  # HLG: invert BT.2100's OOTF (Yd = Ys^1.2 on a 1000 cd/m2 display, Fd = Ys^0.2 E), then the OETF
        yd = light @ np.array([0.2627, 0.6780, 0.0593]) * 203.0 / 1000.0
        ys = yd ** (1 / 1.2)
        scene = np.where(ys[:, None] > 0, light * 203.0 / 1000.0 / np.maximum(ys, 1e-9)[:, None] ** 0.2, 0.0)
        a, b, c = 0.17883277, 0.28466892, 0.55991073
        scene = np.clip(scene, 0, 1)
        signal = np.where(scene <= 1 / 12, np.sqrt(3 * scene), a * np.log(np.maximum(12 * scene - b, 1e-9)) + c)
    img = np.repeat(np.repeat(signal[None], 16, 0), 16, 1)  # 5 patches of 16 x 16
    path = tmp_path / ("pq.mkv" if trc == 16 else "hlg.mkv")
    _hdr_clip(path, img, trc)
    with caplog.at_level("INFO"), open_source(path) as src:
        frames = [f.rgb for f in src]
    assert len(frames) == 3 and frames[0].dtype == np.uint8 and frames[0].shape == (16, 80, 3)
    assert path.name in caplog.text and "tone-mapped" in caplog.text
    got = np.array([frames[1][8, 16 * i + 8].astype(int) for i in range(len(patches))])
    want_light = np.array([[0.25] * 3, [0.8] * 3, [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0]])
    want = np.round(255 * want_light ** (1 / 2.4))
    # within 3 codes where there is light; near black gamma 1/2.4 is steep, so a colour's other channels are
    # checked in light: 10-bit quantisation leaves them a few 1e-4 (codes up to ~12), none of the colour
    lit = want_light > 0
    assert np.abs(got - want)[lit].max() <= 3, (got.tolist(), want.tolist())
    assert ((got[~lit] / 255.0) ** 2.4).max() < 2e-3, got.tolist()


def test_hdr_on_bt709_primaries_gets_no_gamut_conversion(tmp_path):
    """PQ tagged on BT.709 primaries (screen recordings, some transcodes): a pure red stays pure, where the
    BT.2020 -> BT.709 matrix would push it out of gamut (its green and blue clipped to 0, its red up)."""
    light = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])
    img = np.repeat(np.repeat(_pq(light * 203.0)[None], 16, 0), 16, 1)
    _hdr_clip(tmp_path / "pq709.mkv", img, 16, primaries=1)
    with open_source(tmp_path / "pq709.mkv") as src:
        rgb = next(iter(src)).rgb
    red, green = rgb[8, 8].astype(int), rgb[8, 24].astype(int)
    want = round(255 * 0.5 ** (1 / 2.4))
    assert abs(red[0] - want) <= 3 and abs(green[1] - want) <= 3
    assert ((np.array([red[1], red[2], green[0], green[2]]) / 255.0) ** 2.4).max() < 2e-3


def test_hdr_tone_curve_is_continuous_and_monotonic():
    from streamssm.io.hdr import HLG, PQ, HDRToSDR

    ramp = np.repeat(np.arange(0, 65536, 16, dtype=np.uint16)[:, None, None], 3, 2)  # greys, every code
    for trc in (PQ, HLG):
        out = HDRToSDR(trc)(ramp)[:, 0, 0].astype(int)
        assert out[0] == 0 and out[-1] >= 250  # black stays black; the brightest code is near SDR white
        assert (np.diff(out) >= 0).all() and np.diff(out).max() <= 2  # no step back, no jump (no banding)


# ---------------------------------------------------------------------------------------------
# Pipeline helpers
# ---------------------------------------------------------------------------------------------


def test_prefetch_and_threaded_sink_match_serial(tmp_path, clip):
    out = tmp_path / "threaded.mp4"
    with prefetch(open_source(clip), depth=3) as src:
        assert src.frame_count == 30 and src.fps == 30.0  # properties forwarded
        with ThreadedSink(open_sink(out, fps=src.rate, width=src.width, height=src.height), depth=3) as sink:
            for f in src:
                sink.write(f.rgb, f.timestamp)
    with open_source(out) as a, open_source(copy_through(clip, tmp_path / "serial.mp4")) as b:
        assert all(np.array_equal(x.rgb, y.rgb) for x, y in paired(a, b))


def test_prefetch_propagates_errors_after_good_frames(tmp_path):
    path = make_clip(tmp_path / "fast.mp4", options={"movflags": "faststart"})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    got = []
    with pytest.raises(VideoIOError, match="truncated"):
        with prefetch(open_source(path)) as src:
            got.extend(src)
    assert len(got) > 0


def test_threaded_sink_reraises_encoder_errors(tmp_path):
    with pytest.raises(VideoIOError, match="expected uint8"):
        with ThreadedSink(open_sink(tmp_path / "o.mp4", fps=30, width=W, height=H)) as sink:
            sink.write(pattern(0))
            sink.write(np.zeros((H, W), np.uint8))  # wrong shape: raised on this or a later call
            for i in range(20):
                sink.write(pattern(i))


def test_paired_refuses_mismatched_lengths(tmp_path):
    a = make_clip(tmp_path / "a.mp4", n=30)
    b = make_clip(tmp_path / "b.mp4", n=20)
    with open_source(a) as sa, open_source(b) as sb:
        with pytest.raises(VideoIOError) as e:
            next(paired(sa, sb))  # known counts: refused before any decoding
    assert str(a) in str(e.value) and str(b) in str(e.value)

    # Matroska has no frame count up front: refused when one runs out.
    a, b = make_clip(tmp_path / "a.mkv", n=12), make_clip(tmp_path / "b.mkv", n=10)
    with open_source(a) as sa, open_source(b) as sb:
        assert sa.frame_count is None
        got = []
        with pytest.raises(VideoIOError) as e:
            got.extend(paired(sa, sb))
    assert len(got) == 10 and str(a) in str(e.value) and str(b) in str(e.value)

    with open_source(tmp_path / "a.mp4") as sa, open_source(tmp_path / "a.mp4") as sb:
        assert sum(1 for _ in paired(sa, sb)) == 30


# ---------------------------------------------------------------------------------------------
# Refusals and bad input
# ---------------------------------------------------------------------------------------------


def test_output_equal_to_input_refused(tmp_path, clip):
    before = clip.read_bytes()
    link = tmp_path / "link.mp4"
    link.symlink_to(clip)
    for target in (clip, link, tmp_path / "." / "in.mp4"):
        with pytest.raises(VideoIOError, match="same file as the input"):
            open_sink(target, fps=30, width=W, height=H, overwrite=True, protected=[str(clip)])
    with pytest.raises(VideoIOError, match="same file as the input"):
        open_sink(clip, fps=30, width=W, height=H, overwrite=True, audio_from=clip)
    assert clip.read_bytes() == before


def test_existing_output_refused_without_overwrite(tmp_path, clip):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    mtime = out.stat().st_mtime_ns
    with pytest.raises(VideoIOError, match="--overwrite"):
        open_sink(out, fps=30, width=W, height=H)
    assert out.read_bytes() == b"precious" and out.stat().st_mtime_ns == mtime
    copy_through(clip, out, overwrite=True)
    assert probe(out)[0] == 30

    folder = tmp_path / "pngs"
    copy_through(clip, folder)
    with pytest.raises(VideoIOError, match="--overwrite"):
        open_sink(folder, fps=30, width=W, height=H)


def test_avi_counting_time_base_ticks_is_read_whole_at_its_frame_rate(tmp_path):
    """A stream with a fine time base (1/90000) copied into AVI: the header then counts ticks (the muxer's 1/600:
    400 'frames' for 20, 30 fps read as 600). It used to be called truncated (exit 2) and timed at 600 fps."""
    path = tmp_path / "fine.avi"
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mjpeg", rate=30)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuvj420p"
        vs.time_base = Fraction(1, 90000)
        for i in range(20):
            f = av.VideoFrame.from_ndarray(pattern(i), format="rgb24")
            f.pts, f.time_base = i * 3000, Fraction(1, 90000)
            c.mux(vs.encode(f))
        c.mux(vs.encode(None))
    with av.open(str(path)) as c:  # the file is what the test is about
        assert c.streams.video[0].frames > 100 and c.streams.video[0].average_rate > 100
    with open_source(path) as src:
        assert (src.rate, src.frame_count) == (30, None)
        frames = list(src)
        assert [level(f.rgb) for f in frames] == list(range(20))
        assert abs(frames[-1].timestamp - 19 / 30) < 1e-6 and abs(src.end - 20 / 30) < 1e-6


def test_two_runs_writing_one_output_at_once_keep_both(tmp_path, clip, caplog):
    """Two sinks open on one output path: each writes its own hidden file (they used to share one, and the second
    run's rename failed or replaced the first's result), and the one finished second does not replace the first's:
    it goes beside it as out.new.mp4, with a warning."""
    out = tmp_path / "out.mp4"
    a = open_sink(out, fps=30, width=W, height=H)
    b = open_sink(out, fps=30, width=W, height=H)
    assert sorted(p.name for p in tmp_path.glob(".out.*")) == [".out.partial-2.mp4", ".out.partial.mp4"]
    for i in range(5):
        a.write(pattern(i))
    for i in range(3):
        b.write(pattern(10 + i))
    b.close()
    a.close()
    assert (b.final_path, a.final_path) == (str(out), str(tmp_path / "out.new.mp4"))
    assert probe(out)[0] == 3 and probe(tmp_path / "out.new.mp4")[0] == 5
    assert "appeared while this run was writing it" in caplog.text
    assert not list(tmp_path.glob(".out.*"))
    # a hidden file left by a killed run (no lock on it) is taken over, not skipped
    (tmp_path / ".again.partial.mp4").write_bytes(b"left by a killed run")
    copy_through(clip, tmp_path / "again.mp4")
    assert probe(tmp_path / "again.mp4")[0] == 30 and not list(tmp_path.glob(".again.*"))


def _levels(folder: Path) -> list[int]:
    """The frames of a PNG folder, by :func:`level` (PNG is lossless)."""
    return [level(cv2.imread(str(p))[:, :, ::-1]) for p in sorted(folder.glob("frame_*.png"))]


def test_two_runs_writing_one_png_folder_at_once_never_mix(tmp_path, caplog):
    """Two sinks open on one PNG folder without frames, writing in turns: the first writes straight into it, under
    a lock (its frames are in place as they come, however the run ends); the second finds it locked and stages its
    frames in a hidden folder of its own, and they go beside the first run's to frames.new, with a warning, even
    when it finishes first; the user's own files there are left alone."""
    out = tmp_path / "frames"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    a = open_sink(out, fps=30, width=W, height=H)
    b = open_sink(out, fps=30, width=W, height=H)
    assert sorted(p.name for p in out.iterdir()) == [".frames.partial", "notes.txt"]
    for i in range(5):
        a.write(pattern(i))
        if i < 3:
            b.write(pattern(10 + i))
    assert _levels(out) == [0, 1, 2, 3, 4]  # the first run's frames, in place while it runs
    b.close()
    a.close()
    assert (a.final_path, b.final_path) == (str(out), str(tmp_path / "frames.new"))
    assert _levels(out) == [0, 1, 2, 3, 4] and _levels(tmp_path / "frames.new") == [10, 11, 12]
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{i:06d}.png" for i in range(5)] + ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "frames.new"]
    assert "or another run is writing it" in caplog.text

    # over frames both were told to replace (overwrite): a complete run replaces them whole (the old frames 3 and 4
    # go too); an incomplete one, finishing last, goes beside them, and the complete run's frames stay
    with pytest.raises(VideoIOError, match="--overwrite"):
        open_sink(out, fps=30, width=W, height=H)
    for i in range(4):
        cv2.imwrite(str(out / f"frame_{i:06d}.png"), pattern(20 + i)[:, :, ::-1])
    c = open_sink(out, fps=30, width=W, height=H, overwrite=True)
    d = open_sink(out, fps=30, width=W, height=H, overwrite=True)
    for i in range(3):
        c.write(pattern(i))
        d.write(pattern(10 + i))
    assert _levels(out) == [20, 21, 22, 23, 4]  # untouched while they run
    d.close()
    c.close(partial=True)
    assert _levels(out) == [10, 11, 12] and _levels(tmp_path / "frames.partial") == [0, 1, 2]
    assert (d.final_path, c.final_path) == (str(out), str(tmp_path / "frames.partial"))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_an_overwrite_run_never_replaces_the_frames_of_a_run_under_way(tmp_path):
    """A run writing straight into a fresh folder; a second run, told to replace what is there, starts while the
    first's frames are coming in: they are not old frames but a live run's, so even when the first finishes first
    they are kept, and the second's go to frames.new."""
    out = tmp_path / "frames"
    a = open_sink(out, fps=30, width=W, height=H)
    for i in range(3):
        a.write(pattern(i))
    b = open_sink(out, fps=30, width=W, height=H, overwrite=True)
    a.write(pattern(3))
    b.write(pattern(10))
    a.close()
    b.close()
    assert (a.final_path, b.final_path) == (str(out), str(tmp_path / "frames.new"))
    assert _levels(out) == [0, 1, 2, 3] and _levels(tmp_path / "frames.new") == [10]


def test_png_frames_that_cannot_be_moved_into_place_are_kept_where_no_run_clears_them(tmp_path, monkeypatch):
    """A staged run whose move into place fails leaves its frames out of the reserved staging names (the next run
    to stage would take such a folder over and empty it): beside the output as frames.partial, as the error says."""
    from streamssm.io import video as V

    out = tmp_path / "frames"
    out.mkdir()
    cv2.imwrite(str(out / "frame_000000.png"), pattern(20)[:, :, ::-1])
    sink = open_sink(out, fps=30, width=W, height=H, overwrite=True)
    for i in range(3):
        sink.write(pattern(i))

    def fail(self, partial, taken):
        raise OSError(5, "simulated I/O error")

    monkeypatch.setattr(V._PngFolderSink, "_place", fail)
    with pytest.raises(VideoIOError, match=r"cannot move the 3 frames into place .*they are in .*frames\.partial"):
        sink.close()
    monkeypatch.undo()
    kept = tmp_path / "frames.partial"
    assert _levels(kept) == [0, 1, 2] and _levels(out) == [20]
    again = open_sink(out, fps=30, width=W, height=H, overwrite=True)
    again.write(pattern(5))
    again.close()
    assert _levels(out) == [5] and _levels(kept) == [0, 1, 2]


def test_png_staging_left_by_a_killed_run_is_emptied_and_reused(tmp_path, clip):
    """A killed run's hidden staging folder (no lock on it): a run writing straight into the folder leaves it be; a
    run that stages (here: replacing frames, --overwrite) takes it over and empties it first, so its stale frames
    do not turn up among the new ones."""
    out = tmp_path / "frames"
    stale = out / ".frames.partial"
    stale.mkdir(parents=True)
    for i in (0, 40):
        cv2.imwrite(str(stale / f"frame_{i:06d}.png"), pattern(30)[:, :, ::-1])
    (stale / ".frame_000041.partial.png").write_bytes(b"half a frame")
    copy_through(clip, out)
    assert _levels(out) == list(range(30))
    assert sorted(p.name for p in stale.iterdir()) == [".frame_000041.partial.png", "frame_000000.png",
                                                       "frame_000040.png"]
    copy_through(clip, out, overwrite=True)
    assert _levels(out) == list(range(30))
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{i:06d}.png" for i in range(30)]


def test_a_temp_file_renamed_away_under_the_lock_is_not_taken(tmp_path, monkeypatch):
    """The race of two runs on one output: run B opens the hidden name while run A, finishing, renames its file
    into place and lets go of its lock; B's lock then succeeds -- on A's finished output. B must see that the file
    is no longer the name's (its inode) and leave it whole, not empty it as one left by a killed run."""
    fcntl = pytest.importorskip("fcntl", reason="flock: POSIX only (Windows claims the name with O_EXCL)")
    from streamssm.io import video as V

    out = tmp_path / "out.mp4"
    tmp_a, fd_a = V._claim_temp(out)
    os.write(fd_a, b"A's finished video" * 100)
    real_flock, done = fcntl.flock, []

    def flock(fd, op):  # B's flock, at the worst moment: A renames its file into place and unlocks first
        if not done:
            done.append(V._move_into_place(tmp_a, out, replace=False))
            os.close(fd_a)
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    tmp_b, fd_b = V._claim_temp(out)
    try:
        assert done == [out] and out.stat().st_size == len(b"A's finished video") * 100  # A's output whole
        assert os.fstat(fd_b).st_ino != out.stat().st_ino and tmp_b.exists()
    finally:
        os.close(fd_b)


def _tracks_clip(path: Path, tracks, n: int = 30) -> Path:
    """``n`` pattern frames at 30 fps under one tone a track: ``tracks`` holds (codec, language, Hz, seconds) each,
    the first with a handler name (a track's title in MP4)."""
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        out = []
        for k, (codec, lang, hz, seconds) in enumerate(tracks):
            a = c.add_stream(codec, rate=44100, layout="mono")
            a.metadata["language"] = lang
            if k == 0:
                a.metadata["handler_name"] = "Director's commentary"
            out.append((a, hz, seconds))
        for i in range(n):
            f = av.VideoFrame.from_ndarray(pattern(i), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 30)
            c.mux(vs.encode(f))
        c.mux(vs.encode(None))
        for a, hz, seconds in out:
            fs = a.codec_context.frame_size or 1152
            rs = av.AudioResampler(format=a.codec_context.format.name, layout="mono", rate=44100)
            tone = (0.3 * np.sin(2 * np.pi * hz * np.arange(int(44100 * seconds)) / 44100)).astype(np.float32)
            for s in range(0, len(tone), fs):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[None, s : s + fs]), format="fltp",
                                                layout="mono")
                af.sample_rate, af.pts, af.time_base = 44100, s, Fraction(1, 44100)
                for q in rs.resample(af):
                    c.mux(a.encode(q))
            c.mux(a.encode(None))
    return path


def _tracks(path) -> list[dict]:
    """Each audio track of a file: codec, language, handler name, where its sound ends (s: its last packet's end on
    the file's clock, the picture starting at 0) and its loudest frequency (Hz), straight from PyAV."""
    got = {}
    with av.open(str(path)) as c:
        v0 = float(c.streams.video[0].start_time * c.streams.video[0].time_base)
        for a in c.streams.audio:
            got[a.index] = dict(codec=a.codec_context.name, lang=a.metadata.get("language"),
                                handler=a.metadata.get("handler_name"), rate=a.codec_context.sample_rate, ends=[],
                                samples=[])
        for p in c.demux(*c.streams.audio):
            if p.size:
                t = got[p.stream.index]
                t["ends"].append(float((p.pts + p.duration) * p.stream.time_base) - v0)
                t["samples"] += [f.to_ndarray()[0] for f in p.decode()]
    for t in got.values():
        x = np.concatenate(t.pop("samples"))
        t["end"] = max(t.pop("ends"))
        t["hz"] = np.argmax(np.abs(np.fft.rfft(x))) * t["rate"] / len(x)
    return list(got.values())


def _cut_within_a_packet(end: float, picture_end: float) -> bool:
    """The sound ends with the last AAC packet (1024 samples at 44.1 kHz) that starts before the picture's end."""
    return picture_end <= end < picture_end + 1024 / 44100 + 1e-3


@pytest.mark.parametrize("ext,codecs", [(".mp4", ("aac", "mp3float")), (".webm", ("opus", "opus"))])
def test_every_audio_track_is_kept_in_order_with_its_language(tmp_path, ext, codecs, caplog):
    """Two audio tracks (AAC in English, MP3 in French): the output has both, in order, each with its language (and
    title), its own sound and its whole length; copied into MP4, re-encoded to Opus in WebM. Only the first was kept
    (with a warning about the others)."""
    src = _tracks_clip(tmp_path / "two.mp4", [("aac", "eng", 440, 1.0), ("mp3", "fra", 1000, 1.0)])
    with open_source(src) as source, open_sink(tmp_path / f"out{ext}", fps=30, width=W, height=H,
                                               audio_from=src) as sink:
        for fr in source:
            sink.write(fr.rgb)
        sink.hold_last_until(source.end)
    before, after = _tracks(src), _tracks(tmp_path / f"out{ext}")
    assert [t["codec"] for t in before] == ["aac", "mp3float"] and [t["codec"] for t in after] == list(codecs)
    assert [t["lang"] for t in after] == ["eng", "fra"]
    assert [t["hz"] for t in before] == pytest.approx([440, 1000], abs=5)
    assert [t["hz"] for t in after] == pytest.approx([440, 1000], abs=5)  # each track's own sound
    for b, a in zip(before, after):
        assert abs(a["end"] - b["end"]) < 0.03, (b, a)  # the whole track, to its packet
    if ext == ".mp4":
        assert after[0]["handler"] == "Director's commentary"
        with av.open(str(src)) as a, av.open(str(tmp_path / "out.mp4")) as b:  # copied: the very same packets
            assert [bytes(p) for p in a.demux(audio=1) if p.size] == [bytes(p) for p in b.demux(audio=1) if p.size]
    assert "only the first" not in caplog.text


def test_sound_past_the_picture_is_kept_by_a_whole_run_and_cut_otherwise(tmp_path, caplog):
    """Sound running 1 s past the last frame, in two tracks: a run that wrote the whole source keeps it, as the
    source has it (it was cut, with a warning), and the output still reads back whole (its video stream's own
    length, not the sound's, is what it is checked against); a run that wrote the first frames only, or was
    interrupted, cuts every track where the picture ends, within a packet."""
    src = _tracks_clip(tmp_path / "long.mkv", [("aac", "eng", 440, 2.0), ("aac", "fra", 1000, 2.0)])
    out = tmp_path / "out.mp4"
    with caplog.at_level("INFO", logger="streamssm"):
        with open_source(src) as source, open_sink(out, fps=30, width=W, height=H, audio_from=src) as sink:
            for fr in source:
                sink.write(fr.rgb)
            sink.hold_last_until(source.end)  # the whole source was written
    assert [t["end"] for t in _tracks(out)] == pytest.approx([t["end"] for t in _tracks(src)], abs=0.01) == [2.02] * 2
    assert "runs 1.0" in caplog.text and "past the last frame" in caplog.text
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    with av.open(str(out)) as c:
        assert c.duration / 1e6 == pytest.approx(2.0, abs=0.05)  # the sound's, as the source's
    with open_source(out) as back:  # not called truncated: 30 frames of 1 s
        assert back.duration == pytest.approx(1.0, abs=0.01) and len(list(back)) == 30

    caplog.clear()
    first = tmp_path / "first.mp4"
    with open_source(src) as source, open_sink(first, fps=30, width=W, height=H, audio_from=src) as sink:
        for fr in itertools.islice(source, 10):  # the first frames only, as --max-frames 10: the cut is asked for
            sink.write(fr.rgb)
    assert [_cut_within_a_packet(t["end"], 10 / 30) for t in _tracks(first)] == [True, True]
    assert [t["lang"] for t in _tracks(first)] == ["eng", "fra"]
    assert "past the last frame" not in caplog.text
    with pytest.raises(KeyboardInterrupt):  # interrupted, even after hold_last_until: cut too
        with open_source(src) as source, open_sink(tmp_path / "stop.mkv", fps=30, width=W, height=H,
                                                   audio_from=src) as sink:
            for fr in source:
                sink.write(fr.rgb)
            sink.hold_last_until(source.end)
            raise KeyboardInterrupt
    assert [_cut_within_a_packet(t["end"], 1.0) for t in _tracks(tmp_path / "stop.mkv")] == [True, True]


def test_a_cut_run_does_not_read_the_rest_of_a_long_sound_track(tmp_path, monkeypatch):
    """A run cut short (Ctrl-C, --max-frames) reads the source's audio on only until every track is past the cut, or
    one is well past it: a track that ended before the cut used to have the whole rest of the file read."""
    from streamssm.io import video as V

    src = _tracks_clip(tmp_path / "long.mkv", [("aac", "eng", 440, 30.0), ("aac", "fra", 1000, 0.3)], n=30)
    read = []
    real = V._AudioCarrier._next
    monkeypatch.setattr(V._AudioCarrier, "_next", lambda self: read.append(1) or real(self))
    with open_source(src) as source, open_sink(tmp_path / "cut.mp4", fps=30, width=W, height=H,
                                               audio_from=src) as sink:
        for fr in itertools.islice(source, 15):  # 0.5 s of a 30 s sound track
            sink.write(fr.rgb)
    total = sum(1 for _ in av.open(str(src)).demux(audio=0))  # the long track's packets alone
    assert len(read) < total / 5, (len(read), total)
    assert [_cut_within_a_packet(t["end"], 0.5) for t in _tracks(tmp_path / "cut.mp4")][:1] == [True]


def test_sound_past_the_picture_through_the_cli(tmp_path):
    """The CLI keeps the sound past the last frame of a whole run, and cuts it with --max-frames."""
    from tests._media import run_cli

    src = _tracks_clip(tmp_path / "long.mp4", [("aac", "eng", 440, 2.0), ("aac", "fra", 1000, 2.0)])
    for args in ((), ("--max-frames", 10)):
        out = tmp_path / f"out{len(args)}.mp4"
        r = run_cli("video", src, "-o", out, "--device", "cpu", "--no-progress", *args)
        assert r.returncode == 0, r.stderr
        ends = [t["end"] for t in _tracks(out)]
        if args:
            assert [_cut_within_a_packet(e, 10 / 30) for e in ends] == [True, True], ends
        else:
            assert ends == pytest.approx([t["end"] for t in _tracks(src)], abs=0.01) and min(ends) > 1.99


def test_unwritable_output_refused_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(VideoIOError, match="file, not a directory"):
        open_sink(blocker / "out.mp4", fps=30, width=W, height=H)
    with pytest.raises(VideoIOError, match="does not exist"):
        open_sink(tmp_path / "missing" / "out.mp4", fps=30, width=W, height=H)
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            with pytest.raises(VideoIOError, match="cannot create"):
                open_sink(ro / "out.mp4", fps=30, width=W, height=H)
        finally:
            ro.chmod(0o755)


def _bad_inputs(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is a text file renamed to .mp4\n" * 50)
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    empty_file = tmp_path / "empty.mp4"
    empty_file.write_bytes(b"")
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    dir_as_file = tmp_path / "folder.mp4"
    dir_as_file.mkdir()
    (tmp_path / "nothing.mkv").touch()
    with av.open(str(tmp_path / "zero.mkv"), "w") as c:  # a valid container with 0 frames
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        c.start_encoding()
    return {
        "missing": (tmp_path / "missing.mp4", "no such file"),
        "text": (text, "text file"),
        "noise": (noise, "not a readable video"),
        "empty_file": (empty_file, "empty"),
        "empty_dir": (empty_dir, "no images"),
        "dir_as_file": (dir_as_file, "is a directory"),
        "live_dir": (f"live:{empty_dir}", "is a directory"),
        "zero_frames": (tmp_path / "zero.mkv", "no video data"),
        "fifo": (_fifo(tmp_path / "pipe.mp4"), "not a regular file"),  # used to read as "empty (0 bytes)"
        "stdin": ("-", "standard input is not supported"),  # used to read as "no such directory"
        "live_nothing": ("live:", "expected a video file after live:"),  # used to read as ": is a directory"
    }


def _fifo(path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this platform (os.mkfifo)")
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    "case", ["missing", "text", "noise", "empty_file", "empty_dir", "dir_as_file", "live_dir", "zero_frames", "fifo",
             "stdin", "live_nothing"]
)
def test_bad_input_names_the_path(tmp_path, case):
    spec, expected = _bad_inputs(tmp_path)[case]
    with pytest.raises(VideoIOError, match=expected) as e:
        with open_source(spec) as src:
            list(src)
    assert str(spec).replace("live:", "") in str(e.value)
    assert isinstance(e.value, ValueError)


def test_camera_that_cannot_open(tmp_path):
    with pytest.raises(VideoIOError, match="camera"):
        open_source(97, timeout=1.0)


def test_truncated_mp4_without_index_is_refused(tmp_path, clip):
    data = clip.read_bytes()  # moov at the end: cutting the file loses the index
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoIOError, match="truncated") as e:
        open_source(cut)
    assert str(cut) in str(e.value)


@pytest.mark.parametrize("name,options", [("fast.mp4", {"movflags": "faststart"}), ("cut.mkv", None)])
def test_truncated_file_yields_good_frames_then_raises(tmp_path, name, options):
    path = make_clip(tmp_path / name, options=options)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    got: list[Frame] = []
    with pytest.raises(VideoIOError, match="truncated") as e:
        with open_source(path) as src:
            got.extend(src)
    assert str(path) in str(e.value)
    assert 5 <= len(got) < 30
    assert [level(f.rgb) for f in got] == list(range(len(got)))


def test_limits_checked_before_decoding(tmp_path, clip):
    with pytest.raises(VideoIOError, match="max_resolution"):
        open_source(clip, max_resolution=(32, 32))
    with pytest.raises(VideoIOError, match="max_frames"):
        open_source(clip, max_frames=10)
    with pytest.raises(VideoIOError, match="max_duration"):
        open_source(clip, max_duration=0.5)
    with open_source(clip, max_frames=10, on_limit="stop") as src:
        assert len(list(src)) == 10
    with open_source(clip, max_duration=0.5, on_limit="stop") as src:
        assert len(list(src)) == 16  # t = 0 .. 15/30


def test_http_url_source(tmp_path, clip):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/in.mp4"
        with open_source(url) as src:
            assert src.live and len(list(src)) == 30
        with pytest.raises(VideoIOError, match="missing.mp4"):
            open_source(url.replace("in.mp4", "missing.mp4"))
    finally:
        server.shutdown()


# ---------------------------------------------------------------------------------------------
# Sink: odd sizes, interruption, disk full
# ---------------------------------------------------------------------------------------------


def test_odd_size_keeps_exact_size_as_yuv444(tmp_path, caplog):
    w, h = 65, 49
    out = tmp_path / "odd.mp4"
    with open_sink(out, fps=30, width=w, height=h) as sink:
        for i in range(5):
            sink.write(pattern(i, w, h))
    assert "yuv444p" in caplog.text
    n, size, _, pix_fmt, _ = probe(out)
    assert (n, size, pix_fmt) == (5, (w, h), "yuv444p")
    with open_source(out) as src:
        assert [level(f.rgb) for f in src] == list(range(5))
    copy_through(out, tmp_path / "odd_pngs/")
    assert cv2.imread(str(tmp_path / "odd_pngs" / "frame_000004.png")).shape == (h, w, 3)


def test_wrong_frame_shape_refused(tmp_path):
    with open_sink(tmp_path / "o.mp4", fps=30, width=W, height=H) as sink:
        with pytest.raises(VideoIOError, match="expected uint8"):
            sink.write(np.zeros((H, W + 2, 3), np.uint8))
        with pytest.raises(VideoIOError, match="expected uint8"):
            sink.write(np.zeros((H, W, 3), np.float32))


@pytest.mark.parametrize("threaded", [False, True])
def test_keyboard_interrupt_leaves_playable_file(tmp_path, threaded):
    src_path = make_clip(tmp_path / "tone.mp4", audio=True)
    out = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        sink = open_sink(out, fps=30, width=W, height=H, audio_from=src_path)
        with ThreadedSink(sink) if threaded else sink as s:
            for i in range(10):
                s.write(pattern(i))
            raise KeyboardInterrupt
    assert out.exists() and not list(tmp_path.glob(".*partial*"))
    n, size, rate, _, audio = probe(out)
    assert (n, size, rate) == (10, (W, H), 30)
    assert audio["duration"] < 10 / 30 + 0.05  # audio trimmed to the picture, not the whole tone
    with open_source(out) as src:
        assert [level(f.rgb) for f in src] == list(range(10))


def test_zero_frames_written_leaves_nothing(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with open_sink(out, fps=30, width=W, height=H):
            raise RuntimeError("failed before the first frame")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["sigterm", "sighup"])
def test_signal_becomes_exception_and_output_is_finalised(tmp_path, sig, code):
    """SIGTERM, and SIGHUP (a closed terminal), finalise the output and exit with 128 + the signal's number."""
    previous = signal.signal(sig, signal.SIG_DFL)  # a test run under nohup ignores SIGHUP
    try:
        out = tmp_path / "out.mp4"
        with pytest.raises(SystemExit) as e:
            with sigterm_as_exception(), open_sink(out, fps=30, width=W, height=H) as sink:
                for i in range(6):
                    sink.write(pattern(i))
                os.kill(os.getpid(), sig)
                for _ in range(1000):  # the handler runs at the next bytecode boundary
                    pass
                sink.write(pattern(99))  # pragma: no cover - must not be reached
        assert e.value.code == code and signal.getsignal(sig) is signal.SIG_DFL
        assert probe(out)[0] == 6
    finally:
        signal.signal(sig, previous)


def test_an_ignored_sighup_stays_ignored():
    """Under ``nohup`` (SIGHUP ignored) the run must outlive its terminal: the handler is not installed."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with sigterm_as_exception():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)  # ignored: nothing happens
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_disk_full_gives_clear_error(tmp_path):
    # RLIMIT_FSIZE makes writes fail with EFBIG (like ENOSPC) once the file is 40 kB; run it in a
    # child so the limit does not leak into the test process.
    script = textwrap.dedent(
        f"""
        import resource, signal, numpy as np
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))
        from streamssm.io import open_sink, VideoIOError
        rng = np.random.default_rng(0)
        try:
            with open_sink({str(tmp_path / 'big.mp4')!r}, fps=30, width=160, height=120, crf=0) as s:
                for i in range(200):
                    s.write(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
        except VideoIOError as e:
            print("VIDEOIOERROR", e)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert "VIDEOIOERROR" in r.stdout, r.stdout + r.stderr
    assert "disk full" in r.stdout and "big.mp4" in r.stdout
    assert not (tmp_path / "big.mp4").exists() or probe(tmp_path / "big.mp4")[0] > 0


def test_preview_is_a_noop_without_display(monkeypatch):
    from streamssm.io import Preview, has_display

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        assert has_display() is False
    with Preview() as view:
        assert view.show(pattern(0), pattern(1)) is True
    with Preview(enabled=True) as view:  # asked for, but nothing to show it on
        assert view.enabled is has_display()


@pytest.mark.parametrize("then", ["fail", "block"])
def test_camera_that_stops_ends_with_warning(monkeypatch, caplog, then):
    monkeypatch.setattr(cv2, "VideoCapture", lambda index: FakeCapture(pattern, 6, then))
    import time

    t = time.monotonic()
    with open_source(0, timeout=0.5) as cam:
        assert cam.live and cam.frame_count is None and (cam.width, cam.height, cam.rate) == (W, H, 30)
        frames = list(cam)
    assert time.monotonic() - t < 3
    # The reader keeps only the newest frames (a camera does not queue), so early ones may be dropped.
    assert 1 <= len(frames) <= 6 and frames[-1].index == len(frames) - 1
    assert "ending the stream" in caplog.text


# ------------------------------------------------------------------------- colour, timing, aspect (session 17)
def _yuv_clip(path: Path, yuv: tuple[int, int, int], size=(1280, 720), tags: dict | None = None, n=3) -> Path:
    """A lossless (qp 0) H.264 clip of one flat Y, U, V colour written from planes, with the colour tags given
    (none: untagged, as OpenCV's VideoWriter and many tools leave their output)."""
    w, h = size
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=30, options={"qp": "0"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        for k, v in (tags or {}).items():
            setattr(vs.codec_context, k, v)
        for i in range(n):
            f = av.VideoFrame(w, h, "yuv420p")
            for plane, value in zip(f.planes, yuv):
                plane.update(np.full(plane.buffer_size, value, np.uint8).tobytes())
            f.pts = i
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
    return path


def _rgb_from_yuv(yuv, kr: float, kb: float) -> np.ndarray:
    y, u, v = (yuv[0] - 16) / 219, (yuv[1] - 128) / 224, (yuv[2] - 128) / 224
    r, b = y + 2 * (1 - kr) * v, y + 2 * (1 - kb) * u
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.array([r, g, b]) * 255, 0, 255)


@pytest.mark.parametrize("size,tags,matrix", [
    ((1280, 720), None, "601"),  # untagged: BT.601 at any size (OpenCV's VideoWriter writes so), and kept untagged
    ((1280, 720), {"colorspace": 5}, "601"),  # tagged: the tag
    ((640, 480), {"colorspace": 1}, "709"),
], ids=["untagged-hd", "tagged-601-hd", "tagged-709-sd"])
def test_decoded_colour_is_exact_and_an_untagged_clip_stays_untagged(tmp_path, size, tags, matrix):
    """Flat colours decode to the exact RGB of their matrix, within rounding (swscale's fast path was about one level
    dark in every channel). An untagged clip's output is untagged BT.601 again, so any player shows it as it shows
    the input (it was tagged BT.709 at 720p: players that guess BT.709 for untagged HD showed the two differently)."""
    kr, kb = {"709": (0.2126, 0.0722), "601": (0.299, 0.114)}[matrix]
    for yuv in [(150, 90, 180), (60, 170, 110), (200, 128, 128)]:
        path = _yuv_clip(tmp_path / f"c{yuv[0]}.mp4", yuv, size, tags)
        with open_source(path) as src:
            assert src.untagged is (tags is None)
            got = np.stack([f.rgb for f in src]).reshape(-1, 3).astype(np.float64)
            out = copy_through(path, tmp_path / f"o{yuv[0]}.mp4", untagged=src.untagged)
        np.testing.assert_allclose(got.mean(0), _rgb_from_yuv(yuv, kr, kb), atol=0.6)
        with av.open(str(out)) as c:
            cc = c.streams.video[0].codec_context
            yuv_out = [np.frombuffer(p, np.uint8).mean() for p in next(c.decode(video=0)).planes]
        assert (int(cc.colorspace) == 2) is (tags is None)  # 2: unspecified
        if tags is None:
            np.testing.assert_allclose(yuv_out, yuv, atol=1.0)  # the same numbers, as untagged as they came


def _mkv(path: Path, pts_ms: list[int], last_ms: int = 33, start_audio: bool = False) -> Path:
    """An MKV with frames at ``pts_ms`` (ms) whose last frame lasts ``last_ms``; with ``start_audio``, an AAC track
    from 0 (so a video starting later is a late start, not a truncation)."""
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=30, options={"bf": "0"})
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.codec_context.time_base = Fraction(1, 1000)
        if start_audio:
            a = c.add_stream("aac", rate=48000, layout="mono")
            fs = 1024  # AAC's frame
            for s in range(0, int(48000 * (pts_ms[-1] + last_ms) / 1000), fs):
                af = av.AudioFrame.from_ndarray(np.zeros((1, fs), np.float32), format="fltp", layout="mono")
                af.sample_rate, af.pts = 48000, s
                for p in a.encode(af):
                    c.mux(p)
            for p in a.encode(None):
                c.mux(p)
        for i, t in enumerate(pts_ms):
            f = av.VideoFrame.from_ndarray(pattern(i), format="rgb24")
            f.pts, f.time_base = t, Fraction(1, 1000)
            for p in vs.encode(f):
                if p.pts == pts_ms[-1]:
                    p.duration = last_ms
                c.mux(p)
        for p in vs.encode(None):
            if p.pts == pts_ms[-1]:
                p.duration = last_ms
            c.mux(p)
    return path


@pytest.mark.parametrize("case", ["late-start", "held-last-frame"])
def test_complete_mkv_is_not_called_truncated(tmp_path, case):
    """Matroska has no frame count, so a clip is checked against its DURATION tag, which counts from the container's
    zero and includes the last frame's own length: a video starting 0.3 s after its audio, or a screen recording
    whose last frame is held 2 s, read whole (both were refused as truncated)."""
    if case == "late-start":
        path = _mkv(tmp_path / "a.mkv", [300 + round(1000 * i / 30) for i in range(30)], start_audio=True)
    else:
        path = _mkv(tmp_path / "a.mkv", [round(1000 * i / 30) for i in range(30)], last_ms=2000)
    with open_source(path) as src:
        frames = list(src)
    assert len(frames) == 30 and [level(f.rgb) for f in frames] == list(range(30))


def test_anamorphic_pixels_keep_their_aspect(tmp_path):
    """A 720x480 clip with 32:27 pixels (16:9 on screen) comes back tagged 32:27 (it played squashed at 3:2)."""
    path = tmp_path / "dvd.mp4"
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = 720, 480, "yuv420p"
        vs.codec_context.sample_aspect_ratio = Fraction(32, 27)
        for i in range(3):
            f = av.VideoFrame.from_ndarray(np.full((480, 720, 3), 40 * i, np.uint8), format="rgb24")
            f.pts = i
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
    with open_source(path) as src:
        assert src.sample_aspect == Fraction(32, 27)
    for ext in (".mp4", ".mkv"):
        out = tmp_path / f"out{ext}"
        with open_source(path) as src, open_sink(out, fps=src.rate, width=src.width, height=src.height,
                                                 sample_aspect=src.sample_aspect) as sink:
            for f in src:
                sink.write(f.rgb, f.timestamp)
        with av.open(str(out)) as c:
            assert c.streams.video[0].sample_aspect_ratio == Fraction(32, 27), ext
    with open_source(make_clip(tmp_path / "square.mp4")) as src:
        assert src.sample_aspect is None


def _flash_and_beep(path: Path) -> tuple[float, float]:
    """When the picture flashes white and when the sound first goes loud (s)."""
    with av.open(str(path)) as c:
        flash = next(float(f.pts * f.time_base) for f in c.decode(video=0) if f.to_ndarray(format="gray").mean() > 150)
    with av.open(str(path)) as c:
        for f in c.decode(audio=0):  # the first channel: planar row 0, or every n-th sample of a packed row
            a = f.to_ndarray()
            a = np.abs(a[0] if f.format.is_planar else a.reshape(-1)[:: len(f.layout.channels)])
            hit = np.flatnonzero(a > 0.2)
            if hit.size:
                return flash, float(f.pts * f.time_base) + hit[0] / f.sample_rate
    raise AssertionError("no beep")


@pytest.mark.parametrize("video_start,audio_start", [(0.3, 0.0), (0.0, 0.4)], ids=["audio-first", "picture-first"])
def test_reencoded_audio_stays_in_sync(tmp_path, video_start, audio_start):
    """WebM re-encodes AAC to Opus: the re-encoded track starts at the output's zero, so audio from before the
    picture is cut and audio starting after it is preceded by silence (it came out 0.3 s late)."""
    path = tmp_path / "in.mp4"
    rate, sr, beep = 30, 48000, 1.0
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=rate, options={"bf": "0"})
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        a = c.add_stream("aac", rate=sr, layout="mono")
        for i in range(60):
            t = video_start + i / rate
            f = av.VideoFrame.from_ndarray(np.full((H, W, 3), 255 if abs(t - beep) < 0.5 / rate else 40, np.uint8),
                                           format="rgb24")
            f.pts = round(t * rate)
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
        t = audio_start + np.arange(int(sr * 2.2)) / sr
        sig = np.where((t >= beep) & (t < beep + 0.05), 0.8 * np.sin(2 * np.pi * 1000 * t), 0).astype(np.float32)
        fs = 1024  # AAC's frame
        for s in range(0, len(sig) - fs, fs):
            af = av.AudioFrame.from_ndarray(sig[None, s:s + fs], format="fltp", layout="mono")
            af.sample_rate, af.pts = sr, s + round(audio_start * sr)
            for p in a.encode(af):
                c.mux(p)
        for p in a.encode(None):
            c.mux(p)
    out = copy_through(path, tmp_path / "out.webm", audio_from=path)
    flash, heard = _flash_and_beep(out)
    assert abs(heard - flash) < 0.025, (flash, heard)  # Opus's 6.5 ms pre-skip and a packet's rounding


def test_a_held_last_frame_keeps_its_length_and_its_sound(tmp_path):
    """A last frame shown for 2 s (a screen recording's) is shown for 2 s in the output too, with the sound under it:
    the output ended a frame after the last frame's start, and the audio with it."""
    from tests._media import run_cli

    path = _mkv(tmp_path / "rec.mkv", [round(1000 * i / 30) for i in range(30)], last_ms=2000, start_audio=True)
    with open_source(path) as src:
        list(src)
        assert src.end == pytest.approx(29 / 30 + 2.0, abs=0.01)
    out = tmp_path / "out.mp4"
    r = run_cli("video", path, "-o", out, "--device", "cpu", "--no-progress")
    assert r.returncode == 0 and "30 frames" in r.stdout, r.stderr
    with av.open(str(out)) as c:
        frames = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    with av.open(str(out)) as c:
        a = list(c.decode(audio=0))
    assert frames[-1] == pytest.approx(29 / 30 + 2.0 - 1 / 30, abs=0.01) and len(frames) == 31  # shown again
    assert float(a[-1].pts * a[-1].time_base) + a[-1].samples / a[-1].sample_rate > 2.9
    for n in (10, 25):  # not the whole clip: no hold (at 25 the reader, 8 frames ahead, has reached the end)
        cut = tmp_path / f"cut{n}.mp4"
        r = run_cli("video", path, "-o", cut, "--device", "cpu", "--no-progress", "--max-frames", n)
        assert r.returncode == 0
        with av.open(str(cut)) as c:
            assert len(list(c.decode(video=0))) == n


def test_deep_or_transparent_input_is_said_to_lose_it(tmp_path, caplog):
    """16-bit or RGBA images (and 10-bit video) go through the 8-bit RGB pipeline: a warning names the input and what
    it loses (this happened silently)."""
    for name, img in (("deep", np.full((H, W, 3), 40000, np.uint16)), ("alpha", np.full((H, W, 4), 90, np.uint8)),
                      ("plain", np.full((H, W, 3), 90, np.uint8))):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(2):
            cv2.imwrite(str(folder / f"{i}.png"), img)
        caplog.clear()
        with caplog.at_level("WARNING", logger="streamssm"), open_source(folder, fps=24) as src:
            assert next(iter(src)).rgb.dtype == np.uint8
        said = {"deep": "16-bit images", "alpha": "without their alpha", "plain": None}[name]
        assert (said in caplog.text) if said else "8-bit RGB" not in caplog.text, caplog.text


def test_an_output_that_is_a_pipe_or_a_link_to_one_is_never_replaced(tmp_path):
    """The sink renames its finished file onto the output: over a named pipe (or a device: /dev/null) or a link to
    one (/dev/stdout) that would leave a regular file in its place. Refused before any work, even with overwrite."""
    import stat

    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    link = tmp_path / "link.mp4"
    link.symlink_to(fifo)
    for out, kind in ((fifo, "a named pipe"), (link, "a link to a named pipe")):
        with pytest.raises(VideoIOError, match=f"{out.name}: is {kind} \\(FIFO\\), not a regular file"):
            open_sink(out, fps=30, width=W, height=H, overwrite=True)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.mp4", "pipe.mp4"]
