"""Frame sources and sinks: video files, image folders, cameras, capture URLs.

One small interface for everything the filter reads or writes:

- :func:`open_source` returns a :class:`FrameSource`, an iterator of :class:`Frame`
  ``(rgb, timestamp, index)`` where ``rgb`` is ``h w 3`` ``uint8`` (RGB order, C-contiguous),
  ``timestamp`` is in seconds from the start of the stream and ``index`` counts yielded frames.
- :func:`open_sink` returns a :class:`FrameSink` with ``write(rgb)``; it writes a video file
  (PyAV, H.264 by default) or a folder of PNG frames.
- :func:`prefetch` and :class:`ThreadedSink` move decoding and encoding onto background threads
  so decode, filter and encode overlap; :func:`paired` walks two equally long sources together.

Design notes (why the code looks the way it does):

- **Timestamps are real.** File and URL sources report each frame's presentation time
  (``pts * time_base``) relative to the stream start, so a dropped frame or a variable frame rate
  shows up as a gap instead of being hidden behind ``index / fps``. Image folders use
  ``index / fps``; cameras and ``live:`` sources use the wall clock at capture.
- **Limits before work.** ``max_resolution``, ``max_frames`` and ``max_duration`` are checked
  against container metadata when the source is opened and again while iterating (metadata can
  lie). Exceeding one raises :class:`VideoIOError` (``on_limit="error"``) or ends the stream
  (``on_limit="stop"``, handy for "first N frames" or a bounded camera session).
- **Odd frame sizes.** H.264 4:2:0 cannot represent an odd width or height (chroma is subsampled
  by two and the SPS crop is in 2-pixel units), so even sizes are written as ``yuv420p`` (plays
  everywhere) and odd sizes as ``yuv444p`` (High 4:4:4 profile). That keeps the exact size, so a
  filtered clip stays pixel-aligned with its input, at the cost of playback in browsers and
  hardware decoders; FFmpeg, VLC and mpv play it. A warning says so. Pad/crop yourself if you need
  4:2:0 everywhere.
- **Colour.** Output is tagged BT.709 (height >= 720) or BT.601 (smaller), limited range, and the
  RGB->YUV conversion uses the same matrix, so players that honour the tags and players that guess
  from the resolution both show the right colours. Decoding honours the input's own tags and rounds
  exactly; an untagged input is read as BT.601 (OpenCV's convention) and, with ``open_sink(untagged=True)``
  (the CLI passes the source's ``untagged``), its output is written untagged BT.601 again, so a player shows
  the two alike whatever it guesses.
- **Audio is carried over untouched.** With ``audio_from=...`` every audio stream's packets are
  remuxed without re-encoding, in order and with their language (and title), interleaved with the video as it
  is written (ffmpeg keeps one audio stream unless told ``-map 0``). A run that wrote the whole source
  (:meth:`FrameSink.hold_last_until` was called) keeps the sound that runs on past the last frame, as the source
  has it (as ffmpeg does); any other run (interrupted, or the
  first frames only) has it cut where the picture ends (so an interrupted run does not leave ten seconds of
  sound under one second of picture). A track whose codec the output container cannot hold (AAC in WebM, say)
  is re-encoded to AAC (Opus for WebM) and a log line says so.
- **Atomic, playable-on-interruption output, and nothing of the user's lost.** Video is written to
  ``.<stem>.partial<ext>`` in the output directory; :meth:`FrameSink.close` (also run by ``__exit__``
  on any exception, including ``KeyboardInterrupt`` and, with :func:`sigterm_as_exception`,
  ``SIGTERM`` and ``SIGHUP``) flushes the encoder, writes the trailer and ``os.replace``-s it into place, so the
  result is always a playable file holding every frame written so far. Where it goes:

  * a complete run (``close()``) -> the output path, atomically replacing an existing file only
    when ``overwrite=True``;
  * an interrupted or failed run (``close(partial=True)``, or ``__exit__`` with an exception) ->
    the output path if nothing was there before; if a file *was* there (``overwrite=True``) it is
    kept untouched and the partial output goes to ``<stem>.partial<ext>`` beside it
    (``<stem>.partial-2<ext>``, ... if that exists): an incomplete run never replaces a complete one;
  * zero frames written, or an output that cannot be finalised (disk full) -> nothing is left
    behind and the error says so. :attr:`FrameSink.final_path` says where the frames ended up.
  * two runs writing the same output at once -> each writes its own hidden file (the second
    ``.<stem>.partial-2<ext>``; each is locked while its run lasts), and a complete run whose output path was
    taken while it ran (the other run finished first) goes beside it as ``<stem>.new<ext>``, with a warning --
    unless both were told to replace an existing output (``overwrite=True``): then the last to finish does.

  PNG frames are written each to a temporary name renamed when whole. A run into a folder without frames writes
  straight into it, holding a lock on the folder while it runs, so what it wrote is in place however it ends. A run
  that would replace frames (``overwrite=True``), or that finds the folder locked by a run under way, writes into a
  hidden staging folder of its own inside the output folder (``.frames.partial/``, ``.frames.partial-2/``, ...;
  each locked while its run lasts; one left by a killed run is emptied by the next run that stages), moved into
  place when the sink is closed: old frames are replaced only by a complete run (an interrupted one's go to
  ``<name>.partial/`` beside them), and frames of another run (one under way, or one that finished while this one
  was writing) are never replaced, this run's going to ``<name>.new/`` with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import queue
import re
import shutil
import signal
import stat
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "VIDEO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "VideoIOError",
    "Frame",
    "FrameSource",
    "FrameSink",
    "ThreadedSink",
    "open_source",
    "open_sink",
    "prefetch",
    "paired",
    "sigterm_as_exception",
    "SIGNAL_EXIT",
    "to_rate",
]

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".ts")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_URL_RE = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp|srt)://", re.IGNORECASE)
_LIVE_PREFIX = "live:"
_DEV_VIDEO_RE = re.compile(r"/dev/video(\d+)")  # a Linux camera device: OpenCV's camera index N
TICKS_PER_FRAME = 16  # output time base: 1/16 of a nominal frame (a VFR frame keeps its time to that; AVI: 1)


class VideoIOError(ValueError):
    """Bad input or output for a frame source/sink. The message names the path and what was expected."""


class Frame(NamedTuple):
    """One decoded frame: ``rgb`` is ``h w 3`` uint8 RGB, ``timestamp`` seconds, ``index`` 0-based."""

    rgb: np.ndarray
    timestamp: float
    index: int


MAX_RATE = 100_000  # frames per second a sink writes: its time base, 1/(rate * 16), must fit a 32-bit fraction


def to_rate(fps: float | int | str | Fraction) -> Fraction:
    """Exact frame rate from a float/int/str/Fraction; snaps NTSC rates (29.97 -> 30000/1001).

    >>> to_rate(29.97), to_rate(30000 / 1001), to_rate("24000/1001"), to_rate(25)
    (Fraction(30000, 1001), Fraction(30000, 1001), Fraction(24000, 1001), Fraction(25, 1))
    """
    if isinstance(fps, Fraction):
        rate = fps
    elif isinstance(fps, str):
        rate = Fraction(fps.strip())
    else:
        f = float(fps)
        if not np.isfinite(f) or f <= 0:
            raise VideoIOError(f"frame rate must be a positive number, got {fps!r}")
        ntsc = Fraction(round(f * 1.001) * 1000, 1001)
        # 29.97 / 59.94 / 23.976 are what people type for the 1000/1001 rates.
        if abs(float(ntsc) - f) < 1e-4 * f and round(f) != f:
            rate = ntsc
        else:
            rate = Fraction(f).limit_denominator(1001)
    if rate <= 0:
        raise VideoIOError(f"frame rate must be positive, got {fps!r}")
    return rate


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _sniff_text(path: Path) -> bool:
    """True when the first bytes look like text: FFmpeg's ``tty`` demuxer would 'decode' them."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    if not head:
        return False
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        # A multi-byte character cut at the 4096 boundary is still text.
        if e.start < len(head) - 4:
            return False
    return True


def _stream_duration(vs) -> float | None:
    if vs.duration is not None and vs.time_base is not None:
        return float(vs.duration * vs.time_base)
    tag = (vs.metadata or {}).get("DURATION")  # Matroska/WebM muxers store it as a tag
    m = re.match(r"^(\d+):(\d+):(\d+(?:\.\d+)?)$", tag or "")
    if m:
        return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    return None


def _warn_depth(spec: str, pix_fmt: str | None) -> None:
    """Log what the 8-bit RGB pipeline drops from a deeper or transparent input (a 10-bit ProRes master, RGBA)."""
    import av

    try:
        comps = av.VideoFormat(pix_fmt).components if pix_fmt else ()
    except (ValueError, TypeError):  # pragma: no cover - a format this FFmpeg does not name
        return
    bits = max((c.bits for c in comps), default=8)
    alpha = len(comps) == 4 or (pix_fmt or "").startswith(("yuva", "gbrap"))
    if bits > 8 or alpha:
        log.warning("%s: %s input (%s); it is filtered in 8-bit RGB and written as 8-bit video%s", spec,
                    f"{bits}-bit" if bits > 8 else "8-bit", pix_fmt, ", without its alpha" if alpha else "")


def _rgb24(frame) -> np.ndarray:
    """One decoded frame as (H, W, 3) uint8 RGB with exact rounding, honouring its matrix and range tags (an untagged
    matrix is BT.601, swscale's and OpenCV's convention; :func:`open_sink` writes such a source's output untagged and
    with BT.601 again, so it looks in any player as its input does). swscale's fast 4:2:0 path came out about one
    level dark in every channel: 0.5 ms against ~2.5 ms for a 720p frame on one core."""
    from av.video.reformatter import Interpolation as I

    return frame.reformat(format="rgb24", interpolation=I.BILINEAR | I.ACCURATE_RND | I.FULL_CHR_H_INT,
                          src_color_range=getattr(frame, "color_range", None) or None).to_ndarray()


def _nominal_rate(vs) -> Fraction:
    """The frame rate a filter should assume: r_frame_rate unless the timestamps say otherwise.

    ``average_rate`` (frames / duration) drops below nominal when frames are missing (30 fps with
    two dropped frames reads 28.1); ``guessed_rate`` (FFmpeg's r_frame_rate) stays at 30 but turns
    into the timestamp resolution (e.g. 600) for true VFR. Prefer the guess when it is close, or when
    it is a plausible frame rate (<= 240) above the average: a long gap (a camera that stalled, a cut)
    drags the average far down (30 fps with a 3 s hole in 4 s reads 9.2), and a sink on that slow
    grid would stretch every regular frame before the gap.
    """
    avg, guess = vs.average_rate, vs.guessed_rate or vs.base_rate
    if guess and avg and 0.99 * avg <= guess and (guess <= 1.5 * avg or guess <= 240):
        return Fraction(guess)
    if avg:
        return Fraction(avg)
    return Fraction(guess) if guess and guess < 1000 else Fraction(30)


def _counts_ticks(vs) -> bool:
    """An AVI stream (constant-rate: one slot a time-base tick) whose time base is finer than its frames, as when a
    stream with a 1/600 or 1/90000 time base is copied into AVI: its header counts the ticks (800 "frames" for 40
    real ones at 30 fps, empty slots between them) and its average rate is the tick rate (600). Then FFmpeg's
    guessed rate is the frame rate, and the frame count is unknown (the duration still checks that the file is
    whole)."""
    tb, avg, guess = vs.time_base, vs.average_rate, vs.guessed_rate
    return bool(tb and avg and guess and vs.frames and avg == 1 / tb and guess < 0.99 * avg)


def _probe(spec: str, frames: int) -> tuple[int, bool, bool]:
    """From a second, short-lived opening of a video file, its first ``frames`` decoded frames: (the counter-clockwise
    display rotation of the first, 0/90/180/270 degrees, and whether its picture is mirrored, from its display matrix
    (:func:`_orientation`; 0 and False when there is none); whether their timestamps strictly increase). The stream
    itself exposes neither. A file that cannot be probed reads as (0, False, True): the main opening reports its
    errors."""
    import av

    rotation, mirror, pts = 0, False, []
    try:
        with av.open(spec, "r") as c:
            for i, frame in enumerate(c.decode(video=0)):
                if i == 0:
                    rotation, mirror = _orientation(frame)
                pts.append(frame.pts)
                if i + 1 >= frames:
                    break
    except (av.FFmpegError, ValueError, OSError):
        pass
    known = [p for p in pts if p is not None]
    return rotation, mirror, all(b > a for a, b in zip(known, known[1:]))


def _orientation(frame) -> tuple[int, bool]:
    """A decoded frame's display matrix as (counter-clockwise rotation in degrees, 0/90/180/270; mirrored first).

    The matrix M maps stored to shown coordinates (row vectors: ``[x' y'] = [x y] M``). A phone's portrait clip holds
    a rotation; a front camera's or an editor's "flip" a mirror, M = F R with F = diag(-1, 1): the stored picture
    flipped left to right (x -> -x), then turned by R. FFmpeg's rotation angle (PyAV's ``VideoFrame.rotation``) of a
    mirrored M is not R's (a left-right flip reads as 180 degrees, which turns the picture upside down), so R's angle
    is taken here, as FFmpeg's ``av_display_rotation_get`` would give it for R. No matrix (or an unreadable one):
    PyAV's rotation, unmirrored."""
    rotation = int(round(float(getattr(frame, "rotation", 0) or 0) / 90.0)) % 4 * 90
    try:
        sd = next((x for x in frame.side_data if "DISPLAYMATRIX" in str(x.type)), None)
        m = None if sd is None else np.frombuffer(bytes(sd), np.int32)
    except (AttributeError, TypeError, ValueError):
        m = None
    if m is None or m.size != 9:
        return rotation, False
    a, b, c, d = (float(v) / 65536.0 for v in (m[0], m[1], m[3], m[4]))
    if a * d - b * c >= 0:
        return rotation, False
    a, b = -a, -b  # R = F M: the first row of M negated
    deg = -np.degrees(np.arctan2(b / (np.hypot(b, d) or 1.0), a / (np.hypot(a, c) or 1.0)))
    return int(round(deg / 90.0)) % 4 * 90, True


def _hdr_converter(spec: str, cc):
    """An HDR video (PQ or HLG transfer) gets a tone mapper to SDR BT.709 (:mod:`streamssm.io.hdr`), logged
    naming the file; None for SDR."""
    from .hdr import TRANSFERS, HDRToSDR

    trc = int(getattr(cc, "color_trc", 0) or 0)
    if trc not in TRANSFERS:
        return None
    primaries = int(getattr(cc, "color_primaries", 0) or 0)
    bt709 = primaries == 1  # AVCOL_PRI_BT709; BT.2020 (9) or untagged (2): HDR's own BT.2020
    log.warning("%s: HDR video (%s transfer, %s primaries): tone-mapped to SDR BT.709 as it is read (about 60 ms a "
                "1080p frame); the output is SDR", spec, TRANSFERS[trc],
                "BT.709" if bt709 else "BT.2020" if primaries == 9 else "untagged, taken for BT.2020")
    return HDRToSDR(trc, bt2020=not bt709)


def _check_resolution(path: str, w: int, h: int, max_resolution: Sequence[int] | None) -> None:
    if w <= 0 or h <= 0:
        raise VideoIOError(f"{path}: invalid frame size {w}x{h}")
    if max_resolution is None:
        return
    mw, mh = max_resolution
    # Orientation-agnostic: a portrait 2160x3840 clip fits a (3840, 2160) limit.
    if max(w, h) > max(mw, mh) or min(w, h) > min(mw, mh):
        raise VideoIOError(
            f"{path}: frame size {w}x{h} exceeds max_resolution {mw}x{mh}; "
            "downscale the input or raise the limit (--max-resolution on the command line)"
        )


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


class FrameSource:
    """Iterator of :class:`Frame` with stream metadata; a context manager. Create with :func:`open_source`.

    Properties: ``path`` (str), ``fps`` (float), ``rate`` (exact ``Fraction``), ``width``,
    ``height``, ``frame_count`` (``None`` if not known exactly), ``audio`` (has an audio stream),
    ``live`` (camera/stream/``live:``: no seeking, wall-clock or network pacing).

    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> with open_sink(os.path.join(d, "a.mp4"), fps=30, width=64, height=48) as sink:
    ...     for i in range(3):
    ...         sink.write(np.full((48, 64, 3), 40 * i, np.uint8))
    >>> with open_source(os.path.join(d, "a.mp4")) as src:
    ...     [(f.index, round(f.timestamp, 3), f.rgb.shape) for f in src]
    [(0, 0.0, (48, 64, 3)), (1, 0.033, (48, 64, 3)), (2, 0.067, (48, 64, 3))]
    """

    path: str
    rate: Fraction
    width: int
    height: int
    frame_count: int | None
    audio: bool = False
    live: bool = False
    # Pixel aspect ratio (an anamorphic DVD's 32:27), None for square pixels or unknown; the sink keeps it.
    sample_aspect: Fraction | None = None
    # No colour-matrix tag: decoded as BT.601; the sink writes such a source's output the same way (open_sink).
    untagged: bool = False
    # When the last frame stops showing (s, the frames' clock), once a file has been read to its end; None before,
    # or where the source does not know (FrameSink.hold_last_until takes it).
    end: float | None = None
    # Why a live source ended early (camera stopped delivering, stream dropped); None if it did not.
    fault: str | None = None

    def __init__(self, *, max_resolution, max_frames, max_duration, on_limit):
        if on_limit not in ("error", "stop"):
            raise ValueError(f"on_limit must be 'error' or 'stop', got {on_limit!r}")
        self._max_resolution = max_resolution
        self._max_frames = max_frames
        self._max_duration = max_duration
        self._on_limit = on_limit
        self._iter: Iterator[Frame] | None = None
        self._closed = False

    @property
    def fps(self) -> float:
        return float(self.rate)

    @property
    def duration(self) -> float | None:
        """Seconds, from metadata; ``None`` if unknown."""
        return getattr(self, "_duration", None)

    # -- limits ---------------------------------------------------------------------------------
    def _check_metadata_limits(self, duration: float | None) -> None:
        _check_resolution(self.path, self.width, self.height, self._max_resolution)
        if self._on_limit != "error":
            return
        if self._max_frames is not None and self.frame_count is not None and self.frame_count > self._max_frames:
            raise VideoIOError(
                f"{self.path}: {self.frame_count} frames exceeds max_frames={self._max_frames} "
                "(--max-input-frames on the command line; in Python, on_limit='stop' reads only the first frames)"
            )
        if self._max_duration is not None and duration is not None and duration > self._max_duration + 1e-6:
            raise VideoIOError(
                f"{self.path}: duration {duration:.2f}s exceeds max_duration={self._max_duration}s "
                "(--max-duration on the command line; in Python, on_limit='stop' reads only the beginning)"
            )

    def _limited(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        for fr in frames:
            over = None
            if self._max_frames is not None and fr.index >= self._max_frames:
                over = f"more than max_frames={self._max_frames} frames"
            elif self._max_duration is not None and fr.timestamp > self._max_duration + 1e-6:
                over = f"longer than max_duration={self._max_duration}s"
            elif fr.rgb.shape[0] != self.height or fr.rgb.shape[1] != self.width:
                # Resolution change mid-stream: downstream state (and the sink) assume one size.
                raise VideoIOError(
                    f"{self.path}: frame {fr.index} is {fr.rgb.shape[1]}x{fr.rgb.shape[0]}, "
                    f"expected {self.width}x{self.height} (resolution changed mid-stream)"
                )
            if over is not None:
                if self._on_limit == "stop":
                    log.info("%s: stopping at frame %d: %s", self.path, fr.index, over)
                    return
                flag = "--max-input-frames" if over.startswith("more") else "--max-duration"
                raise VideoIOError(f"{self.path}: stream is {over} (metadata did not say so; {flag} on the command "
                                   "line)")
            yield fr

    # -- iterator protocol ----------------------------------------------------------------------
    def _frames(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> "FrameSource":
        return self

    def __next__(self) -> Frame:
        if self._closed:
            raise StopIteration
        if self._iter is None:
            self._iter = self._limited(self._frames())
        return next(self._iter)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._iter is not None:
            self._iter.close()  # runs the generators' finally blocks
        self._release()

    def _release(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path!r}, {self.width}x{self.height}, fps={self.rate}, "
            f"frames={self.frame_count}, audio={self.audio})"
        )


class _AVSource(FrameSource):
    """Video file or capture URL decoded with PyAV (threaded decoding, PTS timestamps)."""

    def __init__(self, spec: str, *, is_url: bool, timeout: float, **limits):
        super().__init__(**limits)
        import av

        self.path = spec
        self.live = is_url
        self._container = None
        if not is_url:
            p = Path(spec)
            if not p.exists():
                raise VideoIOError(f"{spec}: no such file; expected a video file ({'/'.join(VIDEO_EXTENSIONS)})")
            if p.is_dir():
                raise VideoIOError(f"{spec}: is a directory; expected a video file")
            if not p.is_file():  # a device (/dev/zero), a named pipe: no size to check, and no seeking
                raise VideoIOError(f"{spec}: is not a regular file (a device or a pipe?); expected a video file")
            if p.stat().st_size == 0:
                raise VideoIOError(f"{spec}: file is empty (0 bytes); expected a video file")
            if _sniff_text(p):
                raise VideoIOError(f"{spec}: looks like a text file, not a video; expected a video file")
        try:
            opts = {"rtsp_transport": "tcp"} if spec.lower().startswith("rtsp") else {}
            self._container = av.open(spec, "r", options=opts, timeout=(timeout, timeout) if is_url else None)
        except av.FFmpegError as e:
            if is_url:
                what = "cannot open stream"
            elif isinstance(e, EOFError):
                what = "file ends before any video data (no video data: empty or truncated)"
            else:
                what = "not a readable video (corrupt, truncated or unsupported format)"
            raise VideoIOError(f"{spec}: {what}: {e}") from e
        c = self._container
        if not c.streams.video:
            c.close()
            raise VideoIOError(f"{spec}: has no video stream; expected a video file")
        vs = c.streams.video[0]
        if vs.codec_context is None or vs.codec_context.name in ("ansi", "tty", "bintext", "xbin", "idf"):
            c.close()
            raise VideoIOError(f"{spec}: is not a video (format {c.format.name!r}); expected a video file")
        if not is_url and (c.format.name.endswith("_pipe") or c.format.name == "image2"):
            # judged by content: a PNG/JPEG renamed .mp4 would otherwise "play" as a one-frame video
            c.close()
            raise VideoIOError(f"{spec}: is a single image ({c.format.name.replace('_pipe', '')}), not a video, whatever "
                               "its extension; expected a video file or a folder of images")
        # Frame threads decode several frames at once (throughput, but each adds a frame of
        # delay); a live stream keeps latency low with slice threads only.
        vs.thread_type = "SLICE" if is_url else "AUTO"
        self._vs = vs
        self.width = vs.codec_context.width
        self.height = vs.codec_context.height
        self.rate = _nominal_rate(vs)
        self.audio = bool(c.streams.audio)
        # stream.frames comes from the index (mp4 stts) and is exact; 0 means "unknown" (mkv, webm, ts).
        self.frame_count = int(vs.frames) if vs.frames else None
        if c.format.name == "avi" and _counts_ticks(vs):
            self.rate, self.frame_count = Fraction(vs.guessed_rate), None
        # Stream-level duration first: the container's may include a longer audio track.
        self._stream_duration = _stream_duration(vs)
        self._duration = self._stream_duration
        if self._duration is None and c.duration is not None:
            self._duration = c.duration / 1e6
        self._start = float(vs.start_time * vs.time_base) if vs.start_time is not None and vs.time_base else None
        avi = c.format.name == "avi"
        try:
            self._check_metadata_limits(self._duration)  # orientation-agnostic: before any frame is decoded
            # A phone's portrait clip is stored landscape with a display rotation: frames are turned upright as
            # they are decoded (as FFmpeg's players do), so the output plays the way the input does. AVI stores no
            # presentation times: with B-frames FFmpeg's guesses come out of order (6, 8, 7, ...), and such a file is
            # timed by frame index at its nominal rate (AVI is constant-rate by design); one whose guesses increase
            # keeps them (a capture's dropped frames show as gaps).
            self.rotation, self.mirror, in_order = (0, False, True) if is_url else _probe(spec, 48 if avi else 1)
        except BaseException:
            c.close()
            raise
        self._by_index = avi and not in_order
        if avi:  # its guessed times start a frame late with B-frames (decoder delay): time from the first frame
            self._start = None
        sar = vs.codec_context.sample_aspect_ratio or getattr(vs, "sample_aspect_ratio", None)
        if sar and sar.numerator > 0 and sar.denominator > 0 and sar != 1:
            self.sample_aspect = Fraction(sar.numerator, sar.denominator)
        if self.rotation % 180:
            self.width, self.height = self.height, self.width
            self.sample_aspect = None if self.sample_aspect is None else 1 / self.sample_aspect
        if self.rotation or self.mirror:
            log.info("%s: display %srotation %d degrees: frames turned as shown (%dx%d)", spec,
                     "mirror and " if self.mirror else "", self.rotation, self.width, self.height)
        self._hdr = _hdr_converter(spec, vs.codec_context)
        if self._hdr is None:
            _warn_depth(spec, vs.codec_context.pix_fmt)
        # no matrix tag (OpenCV's VideoWriter, many tools): decoded as BT.601, and its output written so (open_sink)
        self.untagged = int(vs.codec_context.colorspace or 2) in (2, 3)  # AVCOL_SPC_UNSPECIFIED / _RESERVED

    def _frames(self) -> Iterator[Frame]:
        import av

        vs = self._vs
        n = 0
        prev_t = None
        t0 = self._start
        errors: list[str] = []
        consecutive = 0
        period = 1.0 / float(self.rate)
        base = 0.0 if self._by_index else None  # frames timed by index: t = base + n * period

        last_len = period  # how long the last frame shows: its own duration where the container stores one

        def emit(frame) -> Frame:
            nonlocal n, prev_t, t0, base, last_len
            if base is not None:
                t = base + n * period
            elif frame.pts is not None and frame.time_base is not None:
                t = float(frame.pts * frame.time_base)
                if t0 is None:
                    t0 = t
                t -= t0
                if prev_t is not None and t <= prev_t:  # broken timestamps: the nominal rate from here on
                    log.warning("%s: frame %d's timestamp %.4f s does not come after the previous frame's %.4f s; "
                                "timing it and the rest at the nominal %.4g fps", self.path, n, t, prev_t,
                                float(self.rate))
                    base = prev_t + period - n * period
                    t = prev_t + period
            else:
                t = 0.0 if prev_t is None else prev_t + period
            prev_t = t
            dur = getattr(frame, "duration", None)
            dur = float(dur * frame.time_base) if dur and frame.time_base is not None else 0.0
            last_len = max(period, dur) if base is None else period
            if self._hdr is None:
                rgb = _rgb24(frame)
            else:  # 16-bit code values: the transfer's curves need more than 8 bits
                rgb = self._hdr(frame.to_ndarray(format="rgb48le"))
            if self.mirror:
                rgb = rgb[:, ::-1]
            rgb = np.ascontiguousarray(np.rot90(rgb, self.rotation // 90) if self.rotation else rgb)
            fr = Frame(rgb, t, n)
            n += 1
            return fr

        try:
            packets = self._container.demux(vs)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.FFmpegError as e:  # demux error: truncated file, network drop
                    errors.append(f"read error: {e}")
                    break
                try:
                    decoded = vs.decode(packet)
                    consecutive = 0
                except av.FFmpegError as e:  # corrupt packet: skip it, keep what decodes
                    errors.append(f"decode error at packet pts={packet.pts}: {e}")
                    consecutive += 1
                    if consecutive >= 50:
                        break
                    continue
                for frame in decoded:
                    yield emit(frame)
            if errors:
                # Drain frames the decoder still holds (B-frame reordering) before reporting.
                with contextlib.suppress(av.FFmpegError):
                    for frame in vs.decode(None):
                        yield emit(frame)
        except av.FFmpegError as e:
            errors.append(str(e))
        if errors:
            if self.live:
                log.warning("%s: stream stopped after %d frames (%s); ending", self.path, n, errors[-1])
                self.fault = f"{self.path}: stream stopped after {n} frames ({errors[-1]})"
                return
            raise VideoIOError(
                f"{self.path}: truncated or corrupt video: {len(errors)} error(s) after {n} decodable "
                f"frames" + (f" of {self.frame_count}" if self.frame_count else "") + f"; first: {errors[0]}"
            )
        if n == 0:
            raise VideoIOError(f"{self.path}: contains no decodable video frames; expected a non-empty video")
        if self.live:
            return
        # A file cut after its index (mp4 'faststart', mkv) just ends early with no demux error:
        # compare with the index / duration metadata. Two frames of slack for edit lists.
        missing = None
        # frames that reach the announced end are the whole clip, however many the index counts: a constant-rate
        # container (AVI) counts a variable-rate clip's gaps as frame slots
        # (the last frame's time from the first one's, or from the stream's zero: AVI's guessed times start late)
        # The stream's duration counts from the container's zero, so a video that starts late (after its audio)
        # ends at its start plus its length; a last frame held longer (a screen recording) ends at its own end.
        end = None if prev_t is None else prev_t + max(t0 or 0.0, 0.0) + last_len
        self.end = None if prev_t is None else prev_t + last_len
        reached_end = (self._stream_duration is not None and end is not None
                       and end >= self._stream_duration - 3 * period)
        if self.frame_count is not None and n < self.frame_count - 2 and not reached_end:
            missing = f"{n} of {self.frame_count} frames"
        elif self.frame_count is None and self._stream_duration is not None and end is not None:
            if not reached_end:
                missing = f"{end:.2f}s of {self._stream_duration:.2f}s"
        if missing is not None:
            raise VideoIOError(
                f"{self.path}: truncated video: decoded only {missing} announced by its metadata"
            )

    def _release(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None


class _ImageFolderSource(FrameSource):
    """A folder of images, natural name order (``2.png`` before ``10.png``), timestamps ``index / fps``."""

    def __init__(self, folder: Path, *, fps, **limits):
        super().__init__(**limits)
        self.path = str(folder)
        files = [
            f
            for f in folder.iterdir()
            if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".") and f.is_file()
        ]
        if not files:
            raise VideoIOError(
                f"{folder}: directory contains no images; expected {'/'.join(IMAGE_EXTENSIONS)} files "
                "(or pass a video file)"
            )
        self._files = sorted(files, key=lambda f: _natural_key(f.name))
        self.rate = to_rate(fps if fps is not None else 30)
        self.frame_count = len(self._files)
        self._duration = self.frame_count / float(self.rate)
        first = self._read(self._files[0])
        self.height, self.width = first.shape[:2]
        import cv2

        deep = cv2.imdecode(np.fromfile(self._files[0], dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if deep is not None and (deep.dtype != np.uint8 or (deep.ndim == 3 and deep.shape[2] == 4)):
            log.warning("%s: %s images (%s); they are filtered in 8-bit RGB and written as 8-bit frames%s", folder,
                        f"{8 * deep.itemsize}-bit" if deep.dtype != np.uint8 else "8-bit", self._files[0].name,
                        ", without their alpha" if deep.ndim == 3 and deep.shape[2] == 4 else "")
        self._first = first
        self._check_metadata_limits(self._duration)

    @staticmethod
    def _read(f: Path) -> np.ndarray:
        import cv2

        try:
            buf = np.fromfile(f, dtype=np.uint8)  # np.fromfile+imdecode copes with non-ASCII paths
        except OSError as e:
            raise VideoIOError(f"{f}: cannot read image: {e}") from e
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
        if img is None:
            raise VideoIOError(f"{f}: not a readable image (corrupt or unsupported)")
        return np.ascontiguousarray(img[:, :, ::-1])  # BGR -> RGB

    def _frames(self) -> Iterator[Frame]:
        period = 1.0 / float(self.rate)
        for i, f in enumerate(self._files):
            rgb = self._first if i == 0 else self._read(f)
            self._first = None
            if rgb.shape[:2] != (self.height, self.width):
                raise VideoIOError(
                    f"{f}: image is {rgb.shape[1]}x{rgb.shape[0]}, expected {self.width}x{self.height} "
                    "like the first image in the folder"
                )
            yield Frame(rgb, i * period, i)


class _CaptureSource(FrameSource):
    """Camera index via cv2.VideoCapture; a reader thread keeps the newest frames, wall-clock timestamps.

    A camera that stops delivering (``max_failures`` failed reads in a row, or nothing for
    ``timeout`` seconds) ends the iteration with a warning instead of hanging.
    """

    def __init__(self, index: int, *, timeout: float, max_failures: int = 30, **limits):
        super().__init__(**limits)
        import cv2

        self.path = f"camera:{index}"
        self.live = True
        self.frame_count = None
        self._timeout = timeout
        self._max_failures = max_failures
        self._cap = cv2.VideoCapture(index)
        if not self._cap.isOpened():
            self._cap.release()
            raise VideoIOError(f"{self.path}: cannot open camera {index} (not connected, busy or no permission)")
        # A camera has no container metadata; its first frame is the metadata.
        ok, bgr = self._read_once()
        if not ok:
            self._cap.release()
            raise VideoIOError(f"{self.path}: camera opened but delivered no frame within {timeout}s")
        self.height, self.width = bgr.shape[:2]
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.rate = to_rate(fps) if fps and 0 < fps < 1000 else Fraction(30)
        self._check_metadata_limits(None)
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        self._dropped = 0
        self._t0 = time.monotonic()
        self._put((bgr, 0.0))
        self._thread = threading.Thread(target=self._reader, name=f"streamssm-{self.path}", daemon=True)
        self._thread.start()

    def _read_once(self):
        result: list = []
        t = threading.Thread(target=lambda: result.append(self._cap.read()), daemon=True)
        t.start()
        t.join(self._timeout)
        return result[0] if result else (False, None)

    def _put(self, item) -> None:
        # A camera does not queue: when the consumer is slow, the oldest frame is dropped.
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
                    self._dropped += 1

    def _reader(self) -> None:
        failures = 0
        while not self._stop.is_set():
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                failures += 1
                if failures >= self._max_failures:
                    self._put((None, f"{failures} consecutive read failures"))
                    return
                time.sleep(0.01)
                continue
            failures = 0
            self._put((bgr, time.monotonic() - self._t0))

    def _frames(self) -> Iterator[Frame]:
        n = 0
        while True:
            try:
                bgr, t = self._queue.get(timeout=self._timeout)
            except queue.Empty:
                log.warning("%s: no frame for %.1fs; ending the stream after %d frames", self.path, self._timeout, n)
                self.fault = f"{self.path}: camera delivered no frame for {self._timeout:g} s after {n} frames"
                return
            if bgr is None:
                log.warning("%s: %s; ending the stream after %d frames", self.path, t, n)
                self.fault = f"{self.path}: camera stopped delivering frames after {n} frames ({t})"
                return
            yield Frame(np.ascontiguousarray(bgr[:, :, ::-1]), t, n)
            n += 1

    def _release(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._timeout)
        self._cap.release()
        if self._dropped:
            log.info("%s: dropped %d frames the consumer was too slow for", self.path, self._dropped)


class _LiveFileSource(FrameSource):
    """``live:FILE``: a file played in real time, like a camera (wall-clock timestamps, late frames dropped).

    Frames are released at their presentation time; a frame the consumer asks for more than one
    frame period late is dropped, as a camera that does not queue would, so the webcam path can be
    tested (latency, drops) without a camera.
    """

    def __init__(self, spec: str, *, drop_late: bool = True, **limits):
        super().__init__(**limits)
        self._inner = _AVSource(spec, is_url=False, timeout=10.0, **limits)
        self.path = _LIVE_PREFIX + spec
        self.live = True
        self.width, self.height, self.rate = self._inner.width, self._inner.height, self._inner.rate
        inner = self._inner
        self.audio, self.sample_aspect, self.untagged = inner.audio, inner.sample_aspect, inner.untagged
        self.frame_count = None  # like a camera: unknown (drops change it)
        self._duration = self._inner.duration
        self._drop_late = drop_late
        self.dropped = 0

    def _frames(self) -> Iterator[Frame]:
        period = 1.0 / float(self.rate)
        t_start = None
        n = 0
        for fr in self._inner:
            now = time.monotonic()
            if t_start is None:
                t_start = now - fr.timestamp
            due = t_start + fr.timestamp
            if now < due:
                time.sleep(due - now)
            elif self._drop_late and now - due > period and n > 0:
                self.dropped += 1
                continue
            yield Frame(fr.rgb, time.monotonic() - t_start, n)
            n += 1

    def _release(self) -> None:
        self._inner.close()


def is_live_spec(spec) -> bool:
    """Whether :func:`open_source` reads ``spec`` as a live source: a camera index, ``/dev/videoN``, a capture URL or
    ``live:FILE`` (what ``streamssm video --webcam`` takes), not a file or folder."""
    if isinstance(spec, bool):
        return False
    if isinstance(spec, int):
        return True
    s = os.fspath(spec).strip()
    return s.isdigit() or s.startswith(_LIVE_PREFIX) or bool(_URL_RE.match(s) or _DEV_VIDEO_RE.fullmatch(s))


def open_source(
    spec: str | os.PathLike | int,
    *,
    max_resolution: tuple[int, int] | None = (7680, 4320),
    max_frames: int | None = None,
    max_duration: float | None = None,
    on_limit: str = "error",
    fps: float | Fraction | None = None,
    timeout: float = 5.0,
) -> FrameSource:
    """Open a video file, image folder, camera index, capture URL or ``live:FILE`` as a :class:`FrameSource`.

    ``spec`` forms: ``"clip.mp4"`` (mp4/m4v/avi/mov/mkv/webm/ts, recognised by content, not extension),
    ``"frames/"`` (png/jpg/jpeg/bmp/tif in natural order, timestamps from ``fps``, default 30),
    ``0`` or ``"0"`` (camera index; ``"/dev/video0"`` too), ``"rtsp://..."``/``"http://..."`` (PyAV with ``timeout``),
    ``"live:clip.mp4"`` (the file paced in real time like a camera).

    Limits are checked from metadata before any decoding and again while iterating;
    ``on_limit="error"`` raises :class:`VideoIOError`, ``"stop"`` ends the stream at the limit.
    ``timeout`` (s) bounds how long a camera/URL may deliver nothing before iteration ends with a warning.

    >>> open_source("/nonexistent.mp4")
    Traceback (most recent call last):
    ...
    streamssm.io.video.VideoIOError: /nonexistent.mp4: no such file; expected a video file (.mp4/.m4v/.avi/.mov/.mkv/.webm/.ts)
    """
    limits = dict(max_resolution=max_resolution, max_frames=max_frames, max_duration=max_duration, on_limit=on_limit)
    if isinstance(spec, bool):
        raise VideoIOError(f"{spec!r}: expected a path, URL or camera index")
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        return _CaptureSource(int(spec), timeout=timeout, **limits)
    s = os.fspath(spec)
    dev = _DEV_VIDEO_RE.fullmatch(s.strip())
    if dev:  # a Linux camera device: OpenCV's index N is /dev/videoN
        return _CaptureSource(int(dev.group(1)), timeout=timeout, **limits)
    if s.startswith(_LIVE_PREFIX):
        target = s[len(_LIVE_PREFIX) :]
        if not target.strip():
            raise VideoIOError(f"'{s}': expected a video file after live: (as in live:clip.mp4)")
        if os.path.isdir(target):
            raise VideoIOError(f"{s}: {target} is a directory; live: expects a video file")
        return _LiveFileSource(target, **limits)
    if _URL_RE.match(s):
        return _AVSource(s, is_url=True, timeout=timeout, **limits)
    if s.strip() == "-":
        raise VideoIOError("-: reading a video from standard input is not supported; give a file, folder, URL or "
                           "camera")
    p = Path(s).expanduser()
    if p.is_dir():
        if p.suffix.lower() in VIDEO_EXTENSIONS:
            raise VideoIOError(f"{s}: is a directory; expected a video file")
        return _ImageFolderSource(p, fps=fps, **limits)
    if not p.exists():
        if s.endswith(("/", os.sep)) or not p.suffix:
            raise VideoIOError(f"{s}: no such directory; expected a folder of images or a video file")
        raise VideoIOError(f"{s}: no such file; expected a video file ({'/'.join(VIDEO_EXTENSIONS)})")
    if p.suffix.lower() in IMAGE_EXTENSIONS:
        raise VideoIOError(f"{s}: is a single image; expected a video file or a folder of images")
    return _AVSource(str(p), is_url=False, timeout=timeout, **limits)


# --------------------------------------------------------------------------------------------
# Sinks
# --------------------------------------------------------------------------------------------

_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", -1)}


def _disk_error(e: BaseException) -> bool:
    return getattr(e, "errno", None) in _DISK_ERRNOS


def _same_file(a: str, b: str) -> bool:
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)  # catches hard links and symlinks
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


class FrameSink:
    """Writes RGB frames; a context manager that finalises the output even on an exception.

    Create with :func:`open_sink`. ``write(rgb, timestamp=None)`` takes ``h w 3`` uint8 RGB.
    ``frames_written`` counts frames; ``path`` is the final path.

    >>> import numpy as np, tempfile, os
    >>> out = os.path.join(tempfile.mkdtemp(), "out.mp4")
    >>> with open_sink(out, fps=30000 / 1001, width=64, height=48) as sink:
    ...     sink.write(np.zeros((48, 64, 3), np.uint8))
    >>> open_source(out).rate
    Fraction(30000, 1001)
    """

    path: str
    width: int
    height: int
    rate: Fraction
    frames_written: int = 0
    final_path: str | None = None  # where the frames are once closed (None: nothing kept)

    def write(self, rgb: np.ndarray, timestamp: float | None = None) -> None:  # pragma: no cover
        raise NotImplementedError

    def hold_last_until(self, end: float | None) -> None:
        """Show the last frame until ``end`` (s, on the frames' clock) when the output is closed complete: the
        source's last frame was held longer than a frame period (a screen recording's). Called once the whole source
        was written (not after ``--max-frames``): a video sink then also keeps the sound that runs on past the picture
        (cut at the picture's end otherwise). Default: nothing."""

    def close(self, partial: bool = False) -> None:  # pragma: no cover
        """Finalise. ``partial=True``: the run did not complete (see the module docstring)."""
        raise NotImplementedError

    def _check_frame(self, rgb: np.ndarray) -> np.ndarray:
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.shape != (self.height, self.width, 3):
            raise VideoIOError(
                f"{self.path}: frame {self.frames_written} is {rgb.dtype} {rgb.shape}, "
                f"expected uint8 ({self.height}, {self.width}, 3)"
            )
        return rgb

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and exc_type is not VideoIOError:
            log.warning("%s: stopped (%s); keeping the %d frames written", self.path, _stop_reason(exc_type),
                        self.frames_written)
        self.close(partial=exc_type is not None)
        return False


def _stop_reason(exc_type) -> str:
    """What stopped a run, in a user's words, for the sink's "stopped (...)" line (the error itself is reported by the
    caller)."""
    if issubclass(exc_type, KeyboardInterrupt):
        return "Ctrl-C"
    if issubclass(exc_type, SystemExit):
        return "a signal (SIGTERM or SIGHUP)"
    if issubclass(exc_type, VideoIOError):
        return "an input or output error"
    return f"an error: {exc_type.__name__}"


def _beside(path: Path, tag: str, hidden: bool = False) -> Iterator[Path]:
    """The names ``[.]<stem>.<tag><ext>``, ``[.]<stem>.<tag>-2<ext>``, ... beside ``path``, in turn (999 of them)."""
    for i in range(1, 1000):
        yield path.with_name(f"{'.' if hidden else ''}{path.stem}.{tag}{'' if i == 1 else f'-{i}'}{path.suffix}")


def _partial_name(path: Path, tag: str = "partial") -> Path:
    """``<stem>.partial<ext>`` beside ``path`` (``.partial-2``, ... when taken): where an incomplete run
    goes when the output path holds a file that must not be replaced by it (``tag``: another word than partial)."""
    for cand in _beside(path, tag):
        if not cand.exists():
            return cand
    raise VideoIOError(f"{path}: too many {tag} outputs beside it; remove some")


_SPECIAL_FILES = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                  (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"))


def special_file(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it is a device, a named pipe or a socket, or a symbolic link to one, else None. Every
    output is written under a hidden name and renamed into place, which would replace such a file (or the link to
    it) with a regular one (``--overwrite`` once made ``/dev/null`` a regular file): the writers refuse it, even
    with ``overwrite``."""
    for look in (os.lstat, os.stat):  # the name itself, then what a link there points to (/dev/stdout)
        try:
            mode = look(path).st_mode
        except (OSError, ValueError):
            return None
        kind = next((kind for test, kind in _SPECIAL_FILES if test(mode)), None)
        if kind is not None:
            return kind if look is os.lstat else f"a link to {kind}"
    return None


def _claim_temp(path: Path) -> tuple[Path, int | None]:
    """The hidden file a video sink writes before its rename, ``.<stem>.partial<ext>`` beside ``path``, created and
    held under an exclusive lock (``flock``) while the run lasts, with the open descriptor: a second run writing to
    the same output at once takes ``.<stem>.partial-2<ext>`` instead of writing into the first one's file. One left
    by a killed run holds no lock, and is reused. Where there is no ``flock`` (Windows) or the file system refuses
    it (some network shares): the first name not there, created and closed again (None: no lock; Windows cannot
    rename a file held open)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None
    if fcntl is None:
        return _new_beside(path), None
    for tmp in _beside(path, "partial", hidden=True):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another run's, under way
            os.close(fd)
            continue
        except OSError:  # a file system without flock (ENOLCK, EOPNOTSUPP): the name, unlocked
            os.close(fd)
            with open(tmp, "wb"):  # emptied: one left by a killed run
                pass
            return tmp, None
        if _still_ours(tmp, fd, lambda: os.ftruncate(fd, 0)):  # emptied: one left by a killed run
            return tmp, fd
    raise VideoIOError(f"{path}: too many runs writing it at once")


def _new_beside(path: Path) -> Path:
    """The first hidden ``.<stem>.partial[-N]<ext>`` beside ``path`` that is not there, created empty (``O_EXCL``:
    never a file already there, a user's or another run's, nor a killed run's). OSError when the folder takes no
    new file."""
    for tmp in _beside(path, "partial", hidden=True):
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise VideoIOError(f"{path}: 999 hidden .{path.stem}.partial* files are beside it; remove them")


def _still_ours(tmp: Path, fd: int, clear) -> bool:
    """After a run's ``flock`` on ``fd`` (opened on ``tmp``) succeeds: whether ``fd`` is still ``tmp``'s (a finishing
    run may have renamed it away between the open and the lock, and let go of it); then ``clear()`` empties one
    left by a killed run (it may raise FileNotFoundError too: not one to take). Otherwise ``fd`` is closed."""
    try:
        own, now = os.fstat(fd), os.stat(tmp)
        if (own.st_ino, own.st_dev) != (now.st_ino, now.st_dev):
            raise FileNotFoundError(tmp)
        clear()
    except FileNotFoundError:
        os.close(fd)
        return False
    except BaseException:
        os.close(fd)
        raise
    return True


def _move_into_place(tmp: Path, target: Path, replace: bool) -> Path:
    """Rename the finished ``tmp`` onto ``target``; unless ``replace``, never over a file that appeared there while
    the run was writing (another run's output, finished first): then beside it as ``<stem>.new<ext>``, with a
    warning. Returns where the file went."""
    if replace:
        os.replace(tmp, target)
        return target
    try:
        os.link(tmp, target)  # atomic, and refuses an existing target
        os.unlink(tmp)
        return target
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links (FAT, some network shares): not atomic
        if not target.exists():
            os.replace(tmp, target)
            return target
    keep = _partial_name(target, "new")
    os.replace(tmp, keep)
    log.warning("%s appeared while this run was writing it (another run?); it is kept, and this run's output goes "
                "to %s", target, keep)
    return keep


class _VideoSink(FrameSink):
    def __init__(self, path: Path, *, rate: Fraction, width: int, height: int, audio_from, codec, crf, preset,
                 sample_aspect: Fraction | None = None, untagged: bool = False, faststart: bool = False):
        import av

        self.path = str(path)
        self.width, self.height, self.rate = width, height, rate
        self.frames_written = 0
        self._closed = False
        # pts unit: a fraction of a frame, so VFR timing survives; AVI's muxer is constant-rate (a tick is a frame
        # there: finer ticks would be stored as empty frames), and MPEG-TS players take the frame rate from the
        # H.264 stream's timing, which is the time base (16 ticks a frame read as 16 times the rate), so their
        # frames are rounded to the frame grid
        self._avi = path.suffix.lower() == ".avi"
        self._sub = 1 if self._avi or path.suffix.lower() == ".ts" else TICKS_PER_FRAME
        self._tick = 1 / (rate * self._sub)
        self._last_pts = -self._sub
        self._rgb_frame = None
        self._last_frame = None  # the last encoded frame, shown again by hold_last_until
        self._hold_until: float | None = None
        self._whole = False  # hold_last_until was called: the whole source was written
        self._sample_aspect = sample_aspect
        self._untagged = untagged
        self._existed = path.exists()  # an incomplete run must not replace it (module docstring)
        ext = path.suffix.lower()
        if ext == ".webm" and codec in ("libx264", "h264"):
            log.info("%s: WebM cannot hold H.264; encoding VP9 instead", path)
            codec = "libvpx-vp9"
        try:
            # PyAV opens the file lazily (at the first packet); create it now so an unwritable
            # directory fails here, before any decoding work.
            self._tmp, self._lock = _claim_temp(path)  # the lock is let go after the rename (or on _abort)
            # faststart: the muxer moves the index (moov) before the data when it writes the trailer, re-reading the
            # temporary file (a second pass over it), so a browser plays the file before it has all of it
            opts = {"movflags": "+faststart"} if faststart and ext in (".mp4", ".m4v", ".mov") else {}
            self._out = av.open(str(self._tmp), "w", container_options=opts)
        except (av.FFmpegError, OSError) as e:
            if getattr(self, "_lock", None) is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self._tmp)
                os.close(self._lock)
            raise VideoIOError(f"{path}: cannot create output file in {path.parent}: {e}") from e
        try:
            self._setup_video(codec, crf, preset)
            self._audio = _AudioCarrier(audio_from, self._out, self.path) if audio_from is not None else None
        except BaseException:
            self._abort()
            raise

    def _setup_video(self, codec: str, crf: int, preset: str) -> None:
        import av

        try:
            vs = self._out.add_stream(codec, rate=self.rate)
        except (av.FFmpegError, ValueError) as e:
            raise VideoIOError(f"{self.path}: cannot encode with codec {codec!r}: {e}") from e
        formats = {f.name for f in (vs.codec_context.codec.video_formats or [])}
        even = self.width % 2 == 0 and self.height % 2 == 0
        if even and (not formats or "yuv420p" in formats):
            pix_fmt = "yuv420p"
        elif "yuv444p" in formats:
            pix_fmt = "yuv444p"
            log.warning(
                "%s: odd frame size %dx%d cannot be stored as 4:2:0; writing yuv444p (exact size, "
                "plays in FFmpeg/VLC/mpv but not in most browsers)", self.path, self.width, self.height,
            )
        else:
            raise VideoIOError(
                f"{self.path}: codec {codec!r} cannot encode odd size {self.width}x{self.height}; "
                "crop or pad to even dimensions"
            )
        vs.width, vs.height, vs.pix_fmt = self.width, self.height, pix_fmt
        # Exact rational time base, TICKS_PER_FRAME ticks a frame (AVI: 1): 30000/1001 stays exact (no float
        # drift), and frames that come faster than the nominal rate (variable frame rate) keep their own times.
        vs.time_base = self._tick
        vs.codec_context.time_base = self._tick
        hd = self.height >= 720
        from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc

        cc = vs.codec_context
        if self._untagged:  # as the untagged source was read: BT.601 numbers, no tags (players guess alike for both)
            self._cs = Colorspace.ITU601
        else:
            self._cs = Colorspace.ITU709 if hd else Colorspace.ITU601
            cc.colorspace = 1 if hd else 6  # AVCOL_SPC_BT709 / AVCOL_SPC_SMPTE170M
            cc.color_primaries = ColorPrimaries.BT709 if hd else ColorPrimaries.SMPTE170M
            cc.color_trc = ColorTrc.BT709 if hd else ColorTrc.SMPTE170M
        cc.color_range = ColorRange.MPEG
        self._range = ColorRange.MPEG
        if self._sample_aspect is not None:  # the codec's field (H.264 VUI) and the stream's (Matroska/WebM)
            cc.sample_aspect_ratio = vs.sample_aspect_ratio = Fraction(self._sample_aspect).limit_denominator(65535)
            if codec.startswith("libvpx") and self._sample_aspect != 1:
                # VP8/VP9 streams have no aspect field, and PyAV does not set the container's (display size)
                log.warning("%s: the pixel aspect ratio %s is not kept with %s (the output plays with square "
                            "pixels); write .mp4 or .mkv to keep it", self.path, self._sample_aspect, codec)
        if codec in ("libx264", "libx264rgb", "libx265"):
            # AVI has no presentation times, so no B-frames there: its readers would have to guess their order
            vs.options = {"crf": str(crf), "preset": preset, **({"bf": "0"} if self._avi else {})}
        elif codec.startswith("libvpx"):
            vs.options = {"crf": str(crf), "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
        cc.thread_count = 0
        if codec in ("libx264", "libx264rgb", "libx265"):
            # PyAV's default thread type (SLICE) puts x264 in sliced-threads mode, which trades throughput for
            # latency; frame threads encode ~2x more frames per second on many cores (a file has no latency).
            cc.thread_type = "FRAME"
        self._vs = vs
        self._pix_fmt = pix_fmt

    def write(self, rgb: np.ndarray, timestamp: float | None = None) -> None:
        """Encode one frame. With ``timestamp`` (s) the frame keeps its time (gaps preserved, to 1/16 frame; AVI:
        to the frame grid)."""
        self.encode(self.prepare(rgb), timestamp)

    def prepare(self, rgb: np.ndarray):
        """The colour conversion half of :meth:`write`: RGB -> the encoder's pixel format (a new ``av.VideoFrame``).

        :class:`ThreadedSink` runs it on its own thread, so the conversion of frame t overlaps the encoding of
        frame t-1; only one thread may call it (the RGB staging frame is reused)."""
        import av

        if self._closed:
            raise VideoIOError(f"{self.path}: write() after close()")
        rgb = self._check_frame(rgb)
        if self._rgb_frame is None:
            # One RGB frame reused for every write: a fresh 6 MB buffer per 1080p frame costs
            # ~4 ms of page faults, more than the RGB->YUV conversion itself.
            self._rgb_frame = av.VideoFrame(self.width, self.height, "rgb24")
            plane = self._rgb_frame.planes[0]
            rows = np.frombuffer(plane, np.uint8).reshape(self.height, plane.line_size)
            self._rgb_view = rows[:, : self.width * 3].reshape(self.height, self.width, 3)
        np.copyto(self._rgb_view, rgb)
        # reformat() returns a new frame (the encoder may keep it for lookahead), tagged with
        # the matrix/range it was converted with.
        return self._rgb_frame.reformat(format=self._pix_fmt, dst_colorspace=self._cs, dst_color_range=self._range)

    def encode(self, frame, timestamp: float | None = None) -> None:
        """The encoding half of :meth:`write`: a frame from :meth:`prepare` into the file, in call order."""
        if self._closed:
            raise VideoIOError(f"{self.path}: write() after close()")
        if timestamp is None:
            pts = self._last_pts + self._sub
        else:
            pts = max(self._last_pts + 1, int(round(timestamp / self._tick)))
        self._encode_at(frame, pts)
        self.frames_written += 1

    def _encode_at(self, frame, pts: int) -> None:
        import av

        frame.pts = pts
        # Not self._vs.time_base: the muxer rewrites the stream's time base when the header is
        # written (mp4: 1/30000), possibly before this frame (audio muxed first).
        frame.time_base = self._tick
        try:
            for packet in self._vs.encode(frame):
                self._out.mux(packet)
            self._last_pts = pts
            self._last_frame = frame
            if self._audio is not None:
                self._audio.pump(self._video_end())
        except (av.FFmpegError, OSError) as e:
            raise self._write_error(e) from e

    def hold_last_until(self, end: float | None) -> None:
        self._hold_until, self._whole = end, True

    def _hold_last(self) -> None:
        """The last frame again, a frame period before the hold's end, so the file (and the audio carried up to
        the video's end) lasts as long as the source: encoded once more, not counted in ``frames_written``."""
        if self._hold_until is None or self._last_frame is None:
            return
        pts = int(round(self._hold_until / self._tick)) - self._sub
        if pts >= self._last_pts + self._sub + self._sub // 2:  # held over 1.5 frame periods
            self._encode_at(self._last_frame, pts)

    def _video_end(self) -> float:
        return float((self._last_pts + self._sub) * self._tick)

    def _write_error(self, e: BaseException) -> VideoIOError:
        if _disk_error(e):
            return VideoIOError(
                f"{self.path}: disk full (or file size limit) after {self.frames_written} frames: {e}"
            )
        return VideoIOError(f"{self.path}: cannot write frame {self.frames_written}: {e}")

    def close(self, partial: bool = False) -> None:
        """Flush the encoder, write the trailer and move the file into place (idempotent): onto the
        output path, or, for a ``partial`` run over an existing file, beside it (module docstring)."""
        import av

        if self._closed:
            return
        self._closed = True
        if self.frames_written == 0:
            self._abort()
            log.warning("%s: no frames written; no output file created", self.path)
            return
        try:
            if not partial:
                self._hold_last()
            for packet in self._vs.encode(None):
                self._out.mux(packet)
            if self._audio is not None:
                self._audio.finish(self._video_end(), complete=self._whole and not partial)
            self._out.close()
        except (av.FFmpegError, OSError) as e:
            self._abort()
            msg = "disk full (or file size limit)" if _disk_error(e) else "cannot finalise"
            raise VideoIOError(f"{self.path}: {msg} after {self.frames_written} frames; partial output removed: {e}") from e
        except BaseException:  # a second Ctrl-C in the flush, ...: no trailer, so nothing playable to keep
            self._abort()
            raise
        finally:
            if self._audio is not None:
                self._audio.close()
        try:
            target = Path(self.path)
            if partial and self._existed:
                target = _partial_name(target)
                log.warning("%s: run incomplete; the existing file is kept and the %d frames written go to %s",
                            self.path, self.frames_written, target)
            self.final_path = str(_move_into_place(self._tmp, target, replace=self._existed))
        finally:
            self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock)
            self._lock = None

    def _abort(self) -> None:
        with contextlib.suppress(Exception):
            self._out.close()
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)
        self._unlock()
        if getattr(self, "_audio", None) is not None:
            self._audio.close()


_INTERLEAVE_S = 2.0  # how far apart in time a container's tracks may be interleaved (muxers keep it under ~1 s)


class _AudioTrack:
    """One audio stream of the source in the output: its packets copied where the output container holds its codec,
    else decoded and re-encoded (AAC; Opus in WebM), on the output's clock (the source's picture starts at zero)."""

    def __init__(self, ia, out, v0: Fraction, out_path: str):
        import av

        self.ia, self._out = ia, out
        self.shift = int(round(v0 / ia.time_base)) if ia.time_base else 0
        self.end: float | None = None  # where the sound muxed so far ends (s, the output's clock)
        self._placed = False  # re-encoding: the first samples are placed against the picture (_aligned)
        fmt = out.format.name
        try:
            self._probe(fmt, ia)
            self.copy = True
        except (ValueError, av.FFmpegError):
            self.copy = False
        if self.copy:
            self.stream = out.add_stream_from_template(ia)
        else:
            codec = "libopus" if fmt == "webm" else "aac"
            rate = ia.codec_context.sample_rate
            if codec == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
                rate = 48000
            layout = ia.codec_context.layout.name if ia.codec_context.layout else "stereo"
            self.stream = out.add_stream(codec, rate=rate, layout=layout)
            self._resampler = av.AudioResampler(
                format=self.stream.codec_context.codec.audio_formats[0].name,
                layout=layout,
                rate=rate,
                frame_size=self.stream.codec_context.frame_size or None,
            )
            log.warning("%s: %s cannot hold %s audio; re-encoding it to %s", out_path, fmt, ia.codec_context.name,
                        codec)
        for key in ("language", "title", "handler_name"):  # as ffmpeg keeps them (a player's track menu shows them)
            if ia.metadata.get(key):
                self.stream.metadata[key] = ia.metadata[key]
        with contextlib.suppress(AttributeError, TypeError, ValueError):  # the default track stays the default
            self.stream.disposition = ia.disposition

    @staticmethod
    def _probe(fmt: str, ia) -> None:
        # add_stream_from_template checks avformat_query_codec; writing a header into memory
        # catches the muxers that only refuse at header time.
        import av

        with av.open(io.BytesIO(), "w", format=fmt) as probe:
            probe.add_stream_from_template(ia)
            probe.start_encoding()

    def start(self, p) -> Fraction:
        """Where packet ``p`` starts on the output's clock (s)."""
        return ((p.pts if p.pts is not None else p.dts) - self.shift) * self.ia.time_base

    def mux(self, p, start) -> None:
        """Packet ``p`` (starting at ``start``) into the output: copied, or decoded and re-encoded."""
        stop = start + (p.duration or 0) * self.ia.time_base
        self.end = stop if self.end is None else max(self.end, stop)
        if self.copy:
            if p.pts is not None:
                p.pts -= self.shift
            if p.dts is not None:
                p.dts -= self.shift
            p.stream = self.stream
            self._out.mux(p)
            return
        for frame in p.decode():
            for piece in self._aligned(frame, start):
                for rf in self._resampler.resample(piece):
                    self._out.mux(self.stream.encode(rf))

    def _aligned(self, frame, start) -> list:
        """A decoded frame to re-encode, re-timed contiguously (pts None) but placed against the picture first:
        the re-encoded track starts at the output's zero, so samples from before the picture's start are cut
        off, and a track that starts after the picture gets silence in front (with ``pts = None`` alone, audio
        that began 0.3 s before the picture came out 0.3 s late)."""
        import av

        frame.pts = None  # the resampler/encoder re-time contiguously
        if self._placed:
            return [frame]
        rate, n = frame.sample_rate, frame.samples
        first = int(round(float(start) * rate))  # this frame's first sample on the output's clock
        if first + n <= 0:
            return []  # wholly before the picture
        self._placed = True
        if first == 0:
            return [frame]
        a = frame.to_ndarray()
        per = 1 if frame.format.is_planar else len(frame.layout.channels)  # packed: samples interleaved in a row
        if first < 0:
            a = a[:, -first * per:]
            pieces = []
        else:
            silence = np.zeros((a.shape[0], first * per), a.dtype)
            pieces = [silence]
        pieces.append(a)
        out = []
        for arr in pieces:
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=frame.format.name,
                                           layout=frame.layout.name)
            f.sample_rate = rate
            out.append(f)
        return out

    def flush(self) -> None:
        """The re-encoder's last samples into the output."""
        if not self.copy:
            for rf in self._resampler.resample(None):
                self._out.mux(self.stream.encode(rf))
            self._out.mux(self.stream.encode(None))


class _AudioCarrier:
    """Copies every audio stream of ``src`` into ``out``, in order, interleaved with the video as it is written.

    One demux over all the audio streams: each packet goes to its track (:class:`_AudioTrack`), up to the picture
    written so far (a packet starting later waits, pending). :meth:`finish` keeps the sound that runs on past the
    last frame when the whole source was written, as the source has it (as ffmpeg does), and cuts it where the
    picture ends otherwise (an interrupted run, or the first frames only)."""

    def __init__(self, src, out, out_path: str):
        import av

        self._in = None
        self._pending = None
        self._tracks: dict[int, _AudioTrack] = {}
        src = os.fspath(src)
        if src.startswith(_LIVE_PREFIX):
            src = src[len(_LIVE_PREFIX) :]
        if not os.path.isfile(src):
            log.info("%s: audio_from=%s is not a file; writing video only", out_path, src)
            return
        try:
            self._in = av.open(src)
        except av.FFmpegError as e:
            raise VideoIOError(f"{src}: cannot read audio for {out_path}: {e}") from e
        if not self._in.streams.audio:
            log.info("%s: %s has no audio stream; writing video only", out_path, src)
            self._in.close()
            self._in = None
            return
        # Our output video starts at t=0 where the input's video started; shift audio the same way.
        vids = self._in.streams.video
        v0 = Fraction(vids[0].start_time * vids[0].time_base) if vids and vids[0].start_time is not None else 0
        for ia in self._in.streams.audio:
            try:
                self._tracks[ia.index] = _AudioTrack(ia, out, v0, out_path)
            except (ValueError, av.FFmpegError) as e:  # one odd track does not cost the others (or the run)
                log.warning("%s: audio track %d of %s can be neither copied nor re-encoded (%s); left out", out_path,
                            ia.index, src, e)
        self._src, self._out_path = src, out_path
        if not self._tracks:
            self.close()
            return
        self._packets = self._in.demux(*(t.ia for t in self._tracks.values()))

    def _next(self):
        if self._pending is not None:
            p, self._pending = self._pending, None
            return p
        for p in self._packets:
            if p.dts is None and p.pts is None:
                continue  # flush packet
            return p
        return None

    def pump(self, until: float) -> None:
        """Mux audio up to ``until`` seconds (a packet that starts before it is kept whole).

        Packets before t=0 (AAC encoder priming, audio that starts before the picture) are kept
        with negative timestamps; the muxer turns them into an edit list.
        """
        if self._in is None:
            return
        while (p := self._next()) is not None:
            track = self._tracks[p.stream.index]
            start = track.start(p)
            if start >= until:
                self._pending = p
                return
            track.mux(p, start)

    def finish(self, until: float, complete: bool = True) -> None:
        """Mux the rest and flush. ``complete``: the whole source was written, so every track is kept to its end,
        past the picture's end (``until``, s) where the source's sound runs on; else (an interrupted run, or the
        first frames only) each track is cut where the picture ends."""
        if self._in is None:
            return
        if complete:
            self.pump(float("inf"))
            end = max((t.end for t in self._tracks.values() if t.end is not None), default=until)
            if end - until > 0.1:
                log.info("%s: the sound runs %.2f s past the last frame (%.2f s), as in %s", self._out_path,
                         float(end - until), until, self._src)
        else:
            self.pump(until)
            # the other tracks' packets from before the cut that come after the pending one in the file: read on
            # until every track is past the cut, or one is well past it (a track that ended before the cut, or that
            # starts long after it, would otherwise have the rest of the file read)
            passed = set()
            while len(passed) < len(self._tracks) and (p := self._next()) is not None:
                track = self._tracks[p.stream.index]
                start = track.start(p)
                if start >= until + _INTERLEAVE_S:
                    break
                if start >= until:
                    passed.add(p.stream.index)
                else:
                    track.mux(p, start)
        self._pending = None
        for track in self._tracks.values():
            track.flush()

    def close(self) -> None:
        if self._in is not None:
            with contextlib.suppress(Exception):
                self._in.close()
            self._in = None


def _claim_staging(folder: Path) -> tuple[Path, int | None]:
    """The hidden folder a PNG sink writes its frames into before they are moved into ``folder``,
    ``.frames.partial`` inside it, created and held under an exclusive lock (``flock`` on the folder) while the run
    lasts, with the open descriptor: a second run writing the same folder at once takes ``.frames.partial-2``, as
    :func:`_claim_temp` does for a file. One left by a killed run holds no lock: it is emptied and reused. Inside
    the output folder, not beside it, so a folder that is writable in a parent that is not still takes frames. Where
    there is no ``flock`` (Windows, some network shares) only a folder this run created is taken (None: no lock),
    so two runs never share one; a killed run's is then left."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None
    for tmp in _beside(folder / "frames", "partial", hidden=True):
        try:
            tmp.mkdir()
            made = True
        except FileExistsError:
            made = False
        if fcntl is None:
            if made:
                return tmp, None
            continue
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:  # a finishing run moved it away meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another run's, under way
            os.close(fd)
            continue
        except OSError:  # a file system without flock (ENOLCK, EOPNOTSUPP): only a folder this run made is its own
            os.close(fd)
            if made:
                return tmp, None
            continue
        def clear(tmp=tmp, fd=fd, made=made):
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                raise FileNotFoundError(tmp)  # not a folder
            if not made:  # one left by a killed run
                for f in tmp.glob("*.png"):
                    f.unlink()

        if _still_ours(tmp, fd, clear):
            return tmp, fd
    raise VideoIOError(f"{folder}: too many runs writing it at once")


def _lock_folder(folder: Path, wait: float = 0.0) -> tuple[bool, int | None]:
    """An exclusive ``flock`` on ``folder``, tried for up to ``wait`` seconds: (taken, descriptor to close). (True,
    None) where there is no ``flock`` (Windows, some network shares) or the folder cannot be opened: unlocked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return True, None
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a folder this user may write but not list: unlocked
        return True, None
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True, fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return False, None
            time.sleep(0.05)
        except OSError:  # a file system without flock (ENOLCK, EOPNOTSUPP): unlocked
            os.close(fd)
            return True, None


class _PngFolderSink(FrameSink):
    """``frame_000000.png``, ... in a folder, each file under a temporary name renamed when whole. A run into a
    folder without frames writes straight into it, holding a lock on it (``flock``) while it runs, so what it wrote
    is in place however it ends. A run that would replace frames (``overwrite``), or that finds the folder locked by
    another run under way, writes into a hidden staging folder of its own (:func:`_claim_staging`), which
    :meth:`close` moves into place: two runs writing one folder at once never mix their frames."""

    def __init__(self, folder: Path, *, rate, width, height, overwrite: bool):
        self.path = str(folder)
        self.width, self.height, self.rate = width, height, rate
        self.frames_written = 0
        self._closed = False
        self._lock = None
        if folder.exists() and not folder.is_dir():
            raise VideoIOError(f"{folder}: exists and is not a directory; expected an output folder")
        existing = sorted(folder.glob("frame_*.png")) if folder.is_dir() else []
        if existing and not overwrite:
            raise VideoIOError(
                f"{folder}: already holds {len(existing)} frame_*.png files; pass --overwrite "
                "(in Python: overwrite=True) to replace them"
            )
        if not folder.parent.is_dir():
            raise VideoIOError(f"{folder}: parent directory {folder.parent} does not exist")
        self._target = folder
        self._existed = bool(existing)  # old frames: replaced only by a complete run
        try:
            folder.mkdir(exist_ok=True)
            probe = folder / ".streamssm_write_test"
            probe.write_bytes(b"")
            probe.unlink(missing_ok=True)  # another run's probe, at the same moment
            self._direct = False
            if not existing:
                taken, fd = _lock_folder(folder)
                if taken and any(folder.glob("frame_*.png")):  # a staged run put frames there meanwhile
                    if fd is not None:
                        os.close(fd)
                    taken = False
                    self._existed = overwrite
                    if not overwrite:
                        raise VideoIOError(f"{folder}: another run has just written frames into it; pass "
                                           "--overwrite (in Python: overwrite=True) to replace them")
                if taken:  # ours alone: the frames go straight in (the lock is let go by close())
                    self._folder, self._lock, self._direct = folder, fd, True
            else:
                free, fd = _lock_folder(folder)
                if fd is not None:
                    os.close(fd)
                if not free:  # the frames there are a run's under way, not old ones: never replaced (-> .new)
                    self._existed = False
            if not self._direct:
                self._folder, self._lock = _claim_staging(folder)  # the lock is let go once the frames are in place
        except OSError as e:
            raise VideoIOError(f"{folder}: output folder is not writable: {e}") from e

    def write(self, rgb: np.ndarray, timestamp: float | None = None) -> None:
        import cv2

        if self._closed:
            raise VideoIOError(f"{self.path}: write() after close()")
        rgb = self._check_frame(rgb)
        final = self._folder / f"frame_{self.frames_written:06d}.png"
        tmp = self._folder / f".frame_{self.frames_written:06d}.partial.png"
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise VideoIOError(f"{final}: PNG encoding failed")
        try:
            with open(tmp, "wb") as f:
                f.write(buf.tobytes())
            os.replace(tmp, final)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            what = "disk full (or file size limit)" if _disk_error(e) else "cannot write"
            raise VideoIOError(f"{final}: {what} after {self.frames_written} frames: {e}") from e
        self.frames_written += 1

    def close(self, partial: bool = False) -> None:
        """Move the frames into the folder (idempotent). Frames that were there when the run began
        (``overwrite``) are replaced only by a complete run: an incomplete one's go beside them to
        ``<name>.partial``. Frames another run put there while this one wrote (it finished first) are never
        replaced: this run's go beside them to ``<name>.new``, with a warning."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._direct:
                self.final_path = self.path if self.frames_written else None
                return
            if not self.frames_written:
                shutil.rmtree(self._folder, ignore_errors=True)
                return
            self.final_path = str(self._folder)  # should the move fail
            try:
                self._target.mkdir(exist_ok=True)  # removed meanwhile?
                self._place_or_keep(partial)
            except OSError as e:
                raise VideoIOError(f"{self.path}: cannot move the {self.frames_written} frames into place ({e}); "
                                   f"they are in {self.final_path}") from e
        finally:
            if self._lock is not None:
                with contextlib.suppress(OSError):
                    os.close(self._lock)
                self._lock = None

    def _place_or_keep(self, partial: bool) -> None:
        """:meth:`_place` under the folder's lock. Should it fail, the frames leave the staging folder's reserved
        name (a later run would take that folder over and empty it) for ``<name>.partial/`` beside the output, where
        the error says they are."""
        try:
            # Runs finishing at once take turns (the move is brief); a run writing straight into the folder holds
            # it for its whole run: then this one's frames go beside it.
            free, fd = _lock_folder(self._target, wait=2.0)
            try:
                self.final_path = str(self._place(partial, taken=not free))
            finally:
                if fd is not None:
                    os.close(fd)
        except OSError:
            if self._folder.is_dir():
                with contextlib.suppress(OSError):
                    keep = _partial_name(self._target, "partial")
                    os.rename(self._folder, keep)
                    self.final_path = str(keep)
            raise

    def _place(self, partial: bool, taken: bool) -> Path:
        """The staged frames into place, under the folder's lock (:meth:`close`; ``taken``: another run holds the
        folder); where they went."""
        target = self._target
        taken = taken or (not self._existed and any(target.glob("frame_*.png")))  # another run's, finished first
        if taken or (partial and self._existed):
            keep = _partial_name(target, "new" if taken else "partial")
            os.rename(self._folder, keep)
            if taken:
                log.warning("%s gained frames while this run was writing it, or another run is writing it; they are "
                            "kept, and this run's %d frames go to %s", self.path, self.frames_written, keep)
            else:
                log.warning("%s: run incomplete; the existing frames are kept and the %d new ones go to %s",
                            self.path, self.frames_written, keep)
            return keep
        for f in target.glob("frame_*.png"):  # the earlier run's frames (overwrite)
            f.unlink()
        for f in sorted(self._folder.glob("frame_*.png")):
            os.replace(f, target / f.name)
        shutil.rmtree(self._folder, ignore_errors=True)
        return target


def open_sink(
    path: str | os.PathLike,
    *,
    fps: float | Fraction | str,
    width: int,
    height: int,
    audio_from: str | os.PathLike | None = None,
    codec: str = "libx264",
    crf: int = 18,
    preset: str = "ultrafast",
    overwrite: bool = False,
    protected: Iterable[str | os.PathLike] = (),
    sample_aspect: Fraction | None = None,
    untagged: bool = False,
    faststart: bool = False,
) -> FrameSink:
    """Open a video file (mp4/m4v/avi/mov/mkv/webm/ts) or PNG folder for writing; see the module docstring.

    ``sample_aspect``: the pixel aspect ratio to tag (a source's ``sample_aspect``: an anamorphic clip plays at its
    display shape); PNG frames hold none. ``untagged``: the source had no colour-matrix tag (a source's
    ``untagged``): write BT.601 YUV, untagged, as it was read, so the output looks in any player as the input does
    (by default the output is tagged BT.709 from 720 lines up and BT.601 below, as players guess untagged video).
    ``faststart``: an mp4/m4v/mov gets its index (``moov``) before its data, as a web page needs to play it while it
    downloads (ffmpeg's ``-movflags +faststart``: a second pass over the file when it is closed); other containers
    ignore it. Off by default, as in ffmpeg.

    A path ending in ``/``, without an extension, or naming an existing directory is a PNG folder.
    Refuses (:class:`VideoIOError`, before any work) an output that is the same file as any
    ``protected`` path or ``audio_from``, an existing output without ``overwrite=True``, and an
    output directory that is missing or not writable.
    ``preset``: libx264 speed/size trade-off. Measured on 2 CPU cores at 1080p, crf 18: ``ultrafast``
    ~60 fps (~19 Mbit/s), ``superfast`` ~42 fps (~9 Mbit/s), ``veryfast`` ~30 fps (~5 Mbit/s).
    """
    s = os.fspath(path)
    p = Path(s).expanduser()
    rate = to_rate(fps)
    if rate > MAX_RATE:  # 1e9 fps overflowed the container's time base (a traceback)
        raise VideoIOError(f"{s}: frame rate {float(rate):g} fps is more than a video file holds here ({MAX_RATE})")
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise VideoIOError(f"{s}: invalid output size {width}x{height}")
    guarded = [os.fspath(x) for x in protected if x is not None]
    if audio_from is not None:
        guarded.append(os.fspath(audio_from))
    for g in guarded:
        if g.startswith(_LIVE_PREFIX):
            g = g[len(_LIVE_PREFIX) :]
        if _URL_RE.match(g) or g.isdigit():
            continue
        if _same_file(str(p), g):
            raise VideoIOError(f"{s}: output is the same file as the input {g}; choose another output path")
        if p.is_dir() and Path(g).exists() and Path(os.path.realpath(g)).parent == Path(os.path.realpath(p)):
            raise VideoIOError(f"{s}: output folder holds the input {g}; choose another output path")
    is_folder = s.endswith(("/", os.sep)) or p.is_dir() or not p.suffix
    if is_folder:
        return _PngFolderSink(p, rate=rate, width=width, height=height, overwrite=overwrite)
    ext = p.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        raise VideoIOError(f"{s}: a single image cannot hold a video; use a folder (e.g. {p.with_suffix('')}/) or .mp4")
    if ext not in VIDEO_EXTENSIONS:
        raise VideoIOError(f"{s}: unknown output extension {ext!r}; expected one of {'/'.join(VIDEO_EXTENSIONS)} or a folder")
    if kind := special_file(p):
        raise VideoIOError(f"{s}: is {kind}, not a regular file; expected a video file to write (--overwrite "
                           "replaces only a regular file)")
    if p.exists() and not overwrite:
        raise VideoIOError(f"{s}: output already exists; pass --overwrite (in Python: overwrite=True) to replace it")
    if not p.parent.is_dir():
        what = "is a file, not a directory" if p.parent.exists() else "does not exist"
        raise VideoIOError(f"{s}: output directory {p.parent} {what}")
    return _VideoSink(p, rate=rate, width=width, height=height, audio_from=audio_from, codec=codec, crf=crf,
                      preset=preset, sample_aspect=sample_aspect, untagged=untagged, faststart=faststart)


SIGNAL_EXIT = {143: "SIGTERM", 129: "SIGHUP"}  # exit status -> the signal it stands for (128 + its number)


@contextlib.contextmanager
def sigterm_as_exception(code: int = 143):
    """Within the block, SIGTERM raises ``SystemExit(code)``, and SIGHUP (the terminal or SSH session closed)
    ``SystemExit(129)``, so ``with open_sink(...)`` finalises the output (:data:`SIGNAL_EXIT` names them). A SIGHUP
    already ignored (``nohup``) stays ignored.

    Only the main thread can install signal handlers; elsewhere this is a no-op.

    >>> with sigterm_as_exception():
    ...     pass
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(129 if signum == getattr(signal, "SIGHUP", None) else code)

    # an ignored SIGHUP (nohup) stays ignored: the run must outlive its terminal
    hup = getattr(signal, "SIGHUP", None)
    sigs = [signal.SIGTERM] + ([hup] if hup is not None and signal.getsignal(hup) is not signal.SIG_IGN else [])
    previous = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# --------------------------------------------------------------------------------------------
# Threaded pipeline
# --------------------------------------------------------------------------------------------

_END = object()


class _Prefetch:
    """Iterator over ``source`` decoded on a background thread; forwards the source's properties."""

    def __init__(self, source: FrameSource, depth: int):
        self._source = source
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name="streamssm-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for fr in self._source:
                if not self._put(fr):
                    return
            self._put(_END)
        except BaseException as e:  # handed to the consumer, re-raised there
            self._put(e)

    def __iter__(self):
        return self

    def __next__(self) -> Frame:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    def __getattr__(self, name):
        if name == "_source":  # not set yet (or being unpickled): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self._source, name)

    def close(self) -> None:
        self._stop.set()
        self._done = True
        self._thread.join()
        self._source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def prefetch(source: FrameSource, depth: int = 8) -> _Prefetch:
    """Decode ``source`` on a background thread into a bounded queue of ``depth`` frames.

    Exceptions raised while decoding are re-raised in the consumer at the point they occurred.
    ``close()`` (or the ``with`` block) stops the thread and closes the source. Don't prefetch a
    camera if latency matters: queued frames are frames of delay.

    >>> import tempfile, os, numpy as np
    >>> out = os.path.join(tempfile.mkdtemp(), "p.mp4")
    >>> with open_sink(out, fps=30, width=64, height=48) as s:
    ...     for _ in range(5): s.write(np.zeros((48, 64, 3), np.uint8))
    >>> with prefetch(open_source(out)) as src:
    ...     sum(1 for _ in src), src.width
    (5, 64)
    """
    return _Prefetch(source, depth)


class ThreadedSink:
    """Encodes on background threads so the caller can filter the next frame meanwhile.

    ``write`` queues the frame (a copy is the caller's business: don't mutate it afterwards) and
    re-raises an error from the worker threads; ``close`` drains the queue, then closes ``sink``,
    so an interrupted run still keeps every queued frame. A sink with ``prepare``/``encode`` halves
    (the video sink: RGB -> YUV conversion, then encoding) gets one thread for each, so the conversion
    of frame t overlaps the encoding of frame t-1; both release the GIL.

    >>> import tempfile, os, numpy as np
    >>> out = os.path.join(tempfile.mkdtemp(), "t.mp4")
    >>> with ThreadedSink(open_sink(out, fps=30, width=64, height=48)) as s:
    ...     for _ in range(4): s.write(np.zeros((48, 64, 3), np.uint8))
    >>> open_source(out).frame_count
    4
    """

    def __init__(self, sink: FrameSink, depth: int = 8):
        self.sink = sink
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._closed = False
        split = callable(getattr(sink, "prepare", None)) and callable(getattr(sink, "encode", None))
        self._threads = []
        if split:
            self._encode_queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
            self._threads.append(threading.Thread(target=self._run_prepare, name="streamssm-convert", daemon=True))
            self._threads.append(threading.Thread(target=self._run_encode, name="streamssm-encode", daemon=True))
        else:
            self._threads.append(threading.Thread(target=self._run, name="streamssm-encode", daemon=True))
        for t in self._threads:
            t.start()

    def __getattr__(self, name):
        if name == "sink":
            raise AttributeError(name)
        return getattr(self.sink, name)

    def _work(self, q: queue.Queue, fn, forward: queue.Queue | None = None) -> None:
        """Take items off ``q`` until _END, apply ``fn``; after an error, keep draining (the producer never
        blocks) but do nothing more. ``forward``: where ``fn``'s results (and _END) go next."""
        while True:
            item = q.get()
            if item is _END:
                if forward is not None:
                    forward.put(_END)
                return
            if self._error is not None:
                continue
            try:
                res = fn(*item)
                if forward is not None:
                    forward.put((res, item[1]))
            except BaseException as e:
                self._error = e

    def _run(self) -> None:
        self._work(self._queue, self.sink.write)

    def _run_prepare(self) -> None:
        self._work(self._queue, lambda rgb, _ts: self.sink.prepare(rgb), self._encode_queue)

    def _run_encode(self) -> None:
        self._work(self._encode_queue, self.sink.encode)

    def write(self, rgb: np.ndarray, timestamp: float | None = None) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise VideoIOError(f"{self.sink.path}: write() after close()")
        while True:
            try:
                self._queue.put((rgb, timestamp), timeout=0.1)
                return
            except queue.Full:
                if not all(t.is_alive() for t in self._threads) or self._error is not None:
                    raise self._error or VideoIOError(f"{self.sink.path}: encoder thread died")

    def close(self, partial: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(_END)
        for t in self._threads:
            t.join()
        try:
            self.sink.close(partial=partial or self._error is not None)
        finally:
            if self._error is not None:
                raise self._error

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            log.warning("%s: stopped (%s); finishing the queued frames", self.sink.path, _stop_reason(exc_type))
        try:
            self.close(partial=exc_type is not None)
        except Exception:
            if exc_type is None:
                raise
        return False


def paired(source_a: FrameSource, source_b: FrameSource, limit: int | None = None) -> Iterator[tuple[Frame, Frame]]:
    """Yield ``(frame_a, frame_b)``; raise :class:`VideoIOError` naming both paths if the lengths differ.

    Checked up front when both frame counts are known, and again when one source ends early. With ``limit``, only
    the first ``limit`` pairs are read and must exist (the rest of either source may differ).
    """
    ca, cb = source_a.frame_count, source_b.frame_count
    if ca is not None and cb is not None and ca != cb and (limit is None or min(ca, cb) < limit):
        raise VideoIOError(f"frame counts differ: {source_a.path} has {ca} frames, {source_b.path} has {cb}")
    ia, ib = iter(source_a), iter(source_b)
    n = 0
    while limit is None or n < limit:
        fa = next(ia, None)
        fb = next(ib, None)
        if fa is None and fb is None:
            return
        if fa is None or fb is None:
            short, other = (source_a, source_b) if fa is None else (source_b, source_a)
            raise VideoIOError(
                f"frame counts differ: {short.path} ended after {n} frames while {other.path} has more"
            )
        yield fa, fb
        n += 1
