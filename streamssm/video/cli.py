"""``streamssm video``: deflicker a processed video, a live camera, or the bundled sample clip.

Three modes, one sub-command (:func:`add_video_parser` registers it, :func:`run_video` runs it):

- ``streamssm video PROCESSED [--original ORIGINAL] -o OUTPUT`` -- a video file or image folder in,
  a video file (same frame count, size and frame rate, audio carried over from PROCESSED, or from ORIGINAL when
  PROCESSED has none: then timed by ORIGINAL, so the sound stays in sync where the two rates differ) or a PNG
  folder out. With ``--original`` (the frames the per-frame operator saw) the filter is guided.
- ``streamssm video --webcam SPEC [--op NAME] [--record OUT.mp4]`` -- a camera index, capture URL or
  ``live:FILE``; an optional demo operator makes the flicker, a preview window shows it when a display
  exists, ``--record`` keeps it.
- ``streamssm video --sample -o out.mp4`` -- the README's first command: a demo operator on the clip
  shipped in ``streamssm/assets/``, filtered, written side by side [processed | filtered].

Why the pipeline looks like this: decoding runs on a thread (:func:`streamssm.io.prefetch`), the
filter on the caller's thread (it holds the device), encoding on another thread
(:class:`streamssm.io.ThreadedSink`), so on a GPU the three overlap. The sink owns the
"playable on interruption" promise: it is closed in every exit path (``ExitStack``), which flushes the
queued frames and renames the partial file (an incomplete run never replaces an existing output: it
then goes to ``<stem>.partial<ext>``, see :mod:`streamssm.io.video`); this module only has to report
where the frames were kept and choose the exit code.

Exit codes: 0 done (for ``--webcam``, Ctrl-C is the normal end); 1 the camera/stream stopped
delivering frames (the recording holds what came); 2 bad input or output, including a truncated or
corrupt input found mid-run and a full disk (the message names the file; frames filtered before a
mid-run input error are kept); 130 Ctrl-C; 143 SIGTERM, 129 SIGHUP (:func:`streamssm.io.sigterm_as_exception`).

Limits (refused before any work, from the container's metadata, and again while decoding in case it
lies): ``--max-resolution`` (default 7680x4320), ``--max-duration`` and ``--max-input-frames``.
``--max-frames N`` is not a limit but a request: filter the first N frames and stop.

Timestamps are the decoder's (``pts``), so dropped frames and variable frame rates show up as gaps:
the output keeps them (the sink writes each frame at its own time) and a gap longer than the
filter's ``max_gap`` (1 s, or 3 frames when the rate is under 3 fps: :func:`file_max_gap`) starts the filter over
(:class:`~streamssm.video.filter.VideoFilter`).

Heavy imports (torch, PyAV, OpenCV, tqdm) happen inside the functions, so ``streamssm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from streamssm._args import as_exposure_lock, as_ghost_res, as_positive, as_strength

log = logging.getLogger("streamssm")

__all__ = ["add_video_parser", "run_video", "filter_video", "run_webcam", "run_sample", "RunSummary", "WarpReport",
           "SAMPLE", "SAMPLE_OP"]

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample.mp4"
# The demo operator --sample applies. Measured on the sample (96 frames, flow from the original):
# E_warp of the processed clip vs the same operator with its parameters held fixed --
# gamma_jitter 0.0067 vs 0.0004 (mean-luma jumps of 3.6 % a frame), stylize 0.0031 vs 0.0013,
# detail 0.0019 vs 0.0017; autocontrast / clahe / autowb barely flicker on this static-camera shot
# (its histogram hardly changes), so the most visible flicker is gamma_jitter's.
SAMPLE_OP = "gamma_jitter"
REPORT_FRAMES = 300  # E_warp is computed on at most this many frames ...
REPORT_PX = 480  # ... downscaled so the long side is at most this (DIS flow on 2 cores: ~15 ms a pair)
DEFAULT_MAX_RESOLUTION = (7680, 4320)
EXIT_SOURCE_STOPPED = 1


# ------------------------------------------------------------------------------------------------
# argument parsing
# ------------------------------------------------------------------------------------------------
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


def _rate_arg(text: str) -> float:
    """``--fps``: frames per second as a number or a fraction (``30000/1001``), checked as the writer will."""
    from streamssm.io.video import MAX_RATE, VideoIOError, to_rate

    try:
        rate = float(to_rate(text if "/" in text else float(text)))
        if rate > MAX_RATE:
            raise ValueError(rate)
        return rate
    except (ValueError, ZeroDivisionError, VideoIOError):
        raise argparse.ArgumentTypeError(f"expected frames per second, a positive number up to {MAX_RATE} or a "
                                         f"fraction like 30000/1001, got {text!r}") from None


def add_video_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``video`` on an ``argparse`` sub-parsers object; returns the new parser."""
    s = subparsers.add_parser(
        "video",
        help="deflicker a processed video (file, image folder, camera, or the bundled sample)",
        description="Deflicker a per-frame processed video with the causal SSM filter. Modes: "
        "PROCESSED -o OUTPUT (file/folder -> file/folder); --webcam SPEC (camera index, URL or live:FILE); "
        "--sample -o OUT.mp4 (demo on the bundled clip).",
    )
    s.add_argument("processed", nargs="?", metavar="PROCESSED", help="processed video file or image folder")
    s.add_argument("--original", metavar="ORIGINAL", help="the unprocessed frames (video or folder): guides the filter")
    s.add_argument("-o", "--output", metavar="OUTPUT", help="video file (.mp4/.m4v/.mkv/.mov/.avi/.webm/.ts) or folder/ for PNG frames")
    s.add_argument("--strength", type=float, default=1.0,
                   help="0 = processed unchanged, 1 = the weights' correction and blend (the shipped ones: "
                        "calibrated), higher = steadier (max 2)")
    s.add_argument("--ghost-res", type=float, default=None, metavar="R",
                   help="ghost guard: cut the temporal blend where the flow misses (a thin or fast object leaves no "
                        "trail); 0.3 mild, 0.1 strong, 0 off (default: the weights', off)")
    s.add_argument("--exposure-lock", type=float, default=None, metavar="A",
                   help="for a global brightness flicker (timelapse, old film): hold each frame's overall brightness "
                        "near its running average; A is the weight of a new frame in it, smaller is steadier (0.05 "
                        "very strong, 0.3 strong, 0.5 mild; 0 or 1: off; default: the weights', off). Guided it lets "
                        "the original's fades through; processed-only it also slows a real fade or exposure change")
    s.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda[:N]")
    s.add_argument("--weights", default=None, help="video .safetensors (default: the weights shipped in the package)")
    s.add_argument("--side-by-side", action="store_true", help="write [processed | filtered] (double width)")
    s.add_argument("--report", action="store_true", help="print E_warp before -> after (flow from --original if given)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output (never an input)")
    s.add_argument("--crf", type=int, default=18, metavar="N",
                   help="video output quality: 0 lossless .. 51 smallest (x264/x265/VP9; default %(default)s)")
    s.add_argument("--preset", default="ultrafast", choices=X264_PRESETS,
                   help="x264/x265 speed against size: slower presets make smaller files (default %(default)s)")
    s.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    s.add_argument("--max-resolution", default=f"{DEFAULT_MAX_RESOLUTION[0]}x{DEFAULT_MAX_RESOLUTION[1]}",
                   metavar="WxH", help="refuse inputs larger than this, before any work (default %(default)s; "
                   "either orientation)")
    s.add_argument("--max-duration", type=float, default=None, metavar="SECONDS",
                   help="refuse inputs longer than this, before any work (checked again while decoding)")
    s.add_argument("--max-input-frames", type=int, default=None, metavar="N",
                   help="refuse inputs with more frames than this, before any work (checked again while decoding)")
    s.add_argument("--fps", type=_rate_arg, default=None,
                   help="frame rate of an image-folder input, a number or a fraction like 30000/1001 (default: the "
                   "original's, else 30)")
    s.add_argument("--webcam", metavar="SPEC", help="camera index (0), capture URL (rtsp://...) or live:FILE")
    s.add_argument("--op", metavar="NAME", default=None,
                   help="--webcam/--sample: demo operator applied before the filter (autocontrast, clahe, detail, "
                        f"stylize, autowb, gamma_jitter; --sample default {SAMPLE_OP})")
    s.add_argument("--record", metavar="OUT.mp4", help="--webcam: write the filtered stream to this file")
    s.add_argument("--sample", action="store_true", help="run a demo operator + the filter on the bundled sample clip")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=run_video)
    return s


def run_video(args: argparse.Namespace) -> int:
    """Entry point of ``streamssm video``: checks the mode's arguments, runs it, prints the summary."""
    modes = [name for name, on in (("PROCESSED", args.processed), ("--webcam", args.webcam), ("--sample", args.sample)) if on]
    if len(modes) != 1:
        raise ValueError("video: give exactly one of PROCESSED (file or folder), --webcam SPEC or --sample"
                         + (f" (got {' and '.join(modes)})" if modes else ""))
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames must be at least 1, got {args.max_frames}")
    as_strength(args.strength, "--strength")
    if args.fps is not None:
        as_positive(args.fps, "--fps", "frames per second")
    limits = _limits(args)
    if args.ghost_res is not None:
        as_ghost_res(args.ghost_res, "--ghost-res")
    if args.exposure_lock is not None:
        as_exposure_lock(args.exposure_lock, "--exposure-lock")
    if not 0 <= args.crf <= 51:
        raise ValueError(f"--crf must be from 0 (lossless) to 51 (smallest), got {args.crf}")
    common = dict(weights=args.weights, device=args.device, strength=args.strength, max_frames=args.max_frames,
                  progress=not args.no_progress, ghost_res=args.ghost_res, exposure_lock=args.exposure_lock,
                  crf=args.crf, preset=args.preset)

    if args.webcam:
        _refuse(args, original="--original does not apply to --webcam",
                output="--webcam writes with --record OUT.mp4, not -o", report="--report does not apply to --webcam",
                fps="--fps does not apply to --webcam (the camera sets the rate)")
        _refuse(args, max_duration="--max-duration does not apply to --webcam (use --max-frames)",
                max_input_frames="--max-input-frames does not apply to --webcam (use --max-frames)")
        summary = run_webcam(args.webcam, op=args.op, record=args.record, side_by_side=args.side_by_side,
                             overwrite=args.overwrite, max_resolution=limits["max_resolution"], **common)
        print(summary.line())
        if summary.fault:
            kept = f"; {summary.output} holds the {summary.frames} frames filtered" if summary.output and summary.frames else ""
            print(f"streamssm: error: {summary.fault}{kept}", file=sys.stderr)
            return EXIT_SOURCE_STOPPED
        return 0  # Ctrl-C is how a camera session ends: not an error

    for opt, value in (("-o", args.output), ("--record", args.record)):
        if value is not None and value.strip() == "-":  # a pipe is not a seekable container: no stdout output
            raise ValueError(f"{opt} -: writing to standard output is not supported; name a video file (.mp4, "
                             ".mkv, ...) or a folder/ for PNG frames")
    if args.sample:
        _refuse(args, original="--sample is guided by the sample itself; drop --original",
                record="--sample writes with -o, not --record", fps="--fps does not apply to --sample",
                max_duration="--max-duration does not apply to --sample (use --max-frames)",
                max_input_frames="--max-input-frames does not apply to --sample (use --max-frames)")
        if limits["max_resolution"] != DEFAULT_MAX_RESOLUTION:
            raise ValueError("--max-resolution does not apply to --sample (the bundled clip is 640x360)")
        if not args.output:
            raise ValueError("--sample needs -o OUTPUT.mp4")
        summary = run_sample(args.output, op=args.op or SAMPLE_OP, overwrite=args.overwrite, **common)
    else:
        _refuse(args, op="--op is for --webcam/--sample; apply your own operator before the filter",
                record="PROCESSED writes with -o, not --record")
        folders = [f for f in (args.processed, args.original) if f and os.path.isdir(f)]
        if args.fps is not None and not folders:
            raise ValueError(f"--fps sets the rate of an image-folder input; {args.processed}"
                             + (f" and {args.original} are video files" if args.original else " is a video file")
                             + " with a rate of their own")
        if not args.output:
            raise ValueError("video: -o OUTPUT is required (a video file, or a folder/ for PNG frames)")
        if (args.crf, args.preset) != (18, "ultrafast") and (args.output.endswith(("/", os.sep))
                                                             or not Path(args.output).suffix):
            log.warning("%s: --crf/--preset set a video encoder; PNG frames are lossless and take neither",
                        args.output)
        summary = filter_video(args.processed, args.output, original=args.original, side_by_side=args.side_by_side,
                               report=args.report, overwrite=args.overwrite, fps=args.fps, **limits, **common)
    print(summary.line())
    if summary.interrupted:
        print(f"streamssm: interrupted; {summary.output} holds the {summary.frames} frames filtered so far",
              file=sys.stderr)
        return 130
    return 0


def _limits(args) -> dict:
    """``--max-resolution WxH``, ``--max-duration``, ``--max-input-frames`` -> open_source's limits."""
    res = getattr(args, "max_resolution", None) or "x".join(map(str, DEFAULT_MAX_RESOLUTION))
    max_duration, max_input_frames = getattr(args, "max_duration", None), getattr(args, "max_input_frames", None)
    text = str(res).lower().replace("×", "x")
    try:
        w, h = (int(v) for v in text.split("x"))
    except ValueError:
        raise ValueError(f"--max-resolution must be WIDTHxHEIGHT (e.g. 3840x2160), got {res!r}") from None
    if w < 1 or h < 1:
        raise ValueError(f"--max-resolution must be positive, got {res!r}")
    if max_duration is not None and not (np.isfinite(max_duration) and max_duration > 0):
        raise ValueError(f"--max-duration must be a positive number of seconds, got {max_duration}")
    if max_input_frames is not None and max_input_frames < 1:
        raise ValueError(f"--max-input-frames must be at least 1, got {max_input_frames}")
    return dict(max_resolution=(w, h), max_duration=max_duration, max_input_frames=max_input_frames)


def _refuse(args, **messages: str) -> None:
    """ValueError(message) for an option (by ``dest``) the mode does not use: ignoring it would surprise."""
    for dest, message in messages.items():
        if getattr(args, dest, None) not in (None, False):
            raise ValueError(message)


# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------
@dataclass
class RunSummary:
    """What a run did; :meth:`line` is the one-line summary the CLI prints."""

    frames: int
    seconds: float
    width: int
    height: int
    output: str | None
    ewarp: tuple[float, float] | None = None  # (before, after)
    report_note: str = ""
    latencies_ms: list[float] = field(default_factory=list)
    latency_of: str = "filter"
    dropped: int = 0
    interrupted: bool = False
    fault: str | None = None  # a live source that stopped delivering frames
    settings: str = ""  # the filter's settings that differ from the weights' defaults (:func:`settings_of`)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        s = f"streamssm: {self.frames} frames {self.width}x{self.height} in {self.seconds:.1f} s ({self.fps:.1f} fps)"
        if self.settings:
            s += f", {self.settings}"
        if self.latencies_ms:
            lat = np.asarray(self.latencies_ms)
            s += (f", latency median {np.median(lat):.1f} ms (p95 {np.percentile(lat, 95):.1f} ms) per frame"
                  f" ({self.latency_of})")
        if self.dropped:
            s += f", {self.dropped} frames dropped by the source (filter slower than real time)"
        if self.output:
            folder = os.path.isdir(self.output)  # a PNG folder, also when its name ends like a video file's
            s += f" -> {self.output.rstrip('/' + os.sep)}/ (PNG frames)" if folder else f" -> {self.output}"
        if self.ewarp is not None:
            s += f"; E_warp {self.ewarp[0]:.5f} -> {self.ewarp[1]:.5f} ({self.report_note})"
        elif self.report_note:
            s += f"; {self.report_note}"
        return s


NO_EWARP = "no E_warp: it needs two consecutive frames with unoccluded flow between them"


def settings_of(filt) -> str:
    """The settings of a :class:`~streamssm.video.filter.VideoFilter` a run summary names, those that are on: a
    strength other than 1, the exposure lock, the ghost guard ("" when none is)."""
    strength = getattr(filt, "strength", 1.0)  # a caller's own filter object may hold none of these
    cfg = getattr(getattr(filt, "model", None), "config", None)
    lock, ghost = getattr(cfg, "exposure_lock", 0.0), getattr(cfg, "ghost_res", 0.0)
    parts = [f"strength {strength:g}"] if strength != 1.0 else []
    parts += [f"exposure lock {lock:g}"] if 0 < lock < 1 else []
    parts += [f"ghost guard {ghost:g}"] if ghost > 0 else []
    return ", ".join(parts)


class WarpReport:
    """Collects what :func:`streamssm.metrics.warp_error` needs, cheaply, while frames stream past.

    The metric needs optical flow, which at full resolution on a long clip costs more than the filter,
    so it is computed on at most ``max_frames`` frames downscaled to ``max_px`` on the long side: a clip
    of up to ``max_frames`` frames is scored whole; a longer one (when its length is known) on
    ``max_frames // 2`` consecutive pairs spread evenly over it (E_warp is a mean over consecutive
    pairs, so pairs, not every k-th frame, keep its meaning); a longer one of unknown length on its
    first ``max_frames`` frames. The flow comes from ``guide`` (the originals when known) and is
    computed once, then used for both ``before`` and ``after``.
    """

    def __init__(self, total: int | None, max_frames: int = REPORT_FRAMES, max_px: int = REPORT_PX):
        self.total, self.max_frames, self.max_px = total, max_frames, max_px
        if total is not None and total > max_frames:
            starts = np.unique(np.linspace(0, total - 2, max_frames // 2).round().astype(int))
            self._segments: dict[int, list] = {int(s): [] for s in starts}
        else:
            self._segments = {0: []}
        self._pairs = total is not None and total > max_frames
        self.seen = 0
        self.size: tuple[int, int] | None = None
        self.scaled = False

    def _small(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        h, w = rgb.shape[:2]
        s = self.max_px / max(h, w)
        if s >= 1:
            return rgb.copy()
        self.scaled = True
        return cv2.resize(rgb, (max(2, round(w * s)), max(2, round(h * s))), interpolation=cv2.INTER_AREA)

    def add(self, index: int, guide: np.ndarray | None, before: np.ndarray, after: np.ndarray) -> None:
        """``guide=None``: flow from ``before`` (no originals)."""
        self.seen = max(self.seen, index + 1)
        if self._pairs:
            targets = [s for s in (index, index - 1) if s in self._segments and len(self._segments[s]) < 2]
        else:
            targets = [0] if index < self.max_frames else []
        if not targets:
            return
        b, a = self._small(before), self._small(after)
        g = b if guide is None else self._small(guide)
        self.size = (b.shape[1], b.shape[0])
        for s in targets:
            self._segments[s].append((g, b, a))

    def result(self, guided: bool) -> tuple[tuple[float, float], str] | None:
        """((E_warp before, E_warp after), a note saying what was measured), or None under 2 frames."""
        from streamssm.metrics import compute_flows, warp_errors

        before, after, pairs = [], [], 0
        for seg in self._segments.values():
            if len(seg) < 2:
                continue
            flows = compute_flows([g for g, _, _ in seg])  # once, for both scores
            before.append(warp_errors([b for _, b, _ in seg], flows))
            after.append(warp_errors([a for _, _, a in seg], flows))
            pairs += len(seg) - 1
        if not pairs:
            return None
        eb, ea = np.concatenate(before), np.concatenate(after)
        ok = np.isfinite(eb) & np.isfinite(ea)
        if not ok.any():
            return None
        src = "flow from originals" if guided else "flow from the processed frames"
        if self._pairs:
            what = f"{pairs} frame pairs spread over {self.seen} frames"
        elif self.seen > self.max_frames:
            what = f"first {self.max_frames} of {self.seen} frames"
        else:
            what = f"all {self.seen} frames"
        w, h = self.size
        at = f"downscaled to {w}x{h}" if self.scaled else f"at {w}x{h}"
        return (float(eb[ok].mean()), float(ea[ok].mean())), f"{src}, {what} {at}"


# ------------------------------------------------------------------------------------------------
# the pipeline
# ------------------------------------------------------------------------------------------------
def _make_filter(weights, device: str, strength: float, max_gap: float = 1.0, ghost_res: float | None = None,
                 exposure_lock: float | None = None):
    from streamssm.video.filter import DEFAULT_WEIGHTS, VideoFilter

    if weights is None and not DEFAULT_WEIGHTS.is_file():
        raise ValueError(f"no video weights shipped at {DEFAULT_WEIGHTS}; pass --weights FILE.safetensors "
                         "(from `streamssm train video`)")
    return VideoFilter(weights=weights, device=device, strength=strength, max_gap=max_gap, ghost_res=ghost_res,
                       exposure_lock=exposure_lock)


def file_max_gap(rate) -> float:
    """The filter's ``max_gap`` for a file at ``rate`` fps: 1 s, or 3 frame periods when that is longer, so a
    time-lapse or slideshow (0.5 fps: 2 s a frame) is filtered instead of starting over at every frame."""
    return max(1.0, 3.0 / float(rate))


def _output_clock(P, I, sound_of_original: bool, folder_fps: bool):
    """Which source times the output frames (its rate and timestamps): the processed one, except where the sound is
    the original's and the two rates differ (a per-frame tool that wrote 30 fps for a 29.97 fps original, or 25 for
    30): there the original's, which the sound and the frames, paired one by one, follow, so the sound stays in sync.
    None when the user set the processed folder's rate (``folder_fps``) to another one than the original's: then the
    output keeps that rate, and the caller leaves the sound out (it would drift). Warns when the rates differ (by
    more than 1e-4: two spellings of one rate, 30000/1001 and 2997/100, drift 36 ms an hour, and are taken as one)."""
    if I is None or abs(float(P.rate) - float(I.rate)) <= 1e-4 * float(I.rate):
        return P
    rates = f"{P.path} (processed) is {float(P.rate):.6g} fps, {I.path} (original) {float(I.rate):.6g} fps"
    if sound_of_original and folder_fps:
        log.warning("frame rates differ: %s; the output keeps the --fps rate and leaves out the original's sound, "
                    "which would drift against it", rates)
        return None
    if sound_of_original:
        log.warning("frame rates differ: %s; the frames are paired one by one and the output takes the original's "
                    "timing, as its sound does", rates)
        return I
    if abs(float(P.rate) - float(I.rate)) > 0.01 * float(I.rate):
        log.warning("frame rates differ: %s; the frames are paired one by one and the output keeps the processed "
                    "video's rate", rates)
    return P


def _progress(total: int | None, desc: str, enabled: bool):
    from tqdm import tqdm

    # disable=None is tqdm's "auto": no bar when stderr is not a terminal (logs, CI, pipes).
    return tqdm(total=total, desc=desc, unit="frame", dynamic_ncols=True, disable=None if enabled else True,
                smoothing=0.1)


def _total(src, max_frames: int | None) -> int | None:
    n = src.frame_count
    if max_frames is not None:
        n = max_frames if n is None else min(n, max_frames)
    return n


class _OwnedFrames:
    """Hands the encoder thread frames nobody will write to again.

    ``VideoFilter.step`` returns a fresh array per call today; a filter that reuses its output buffer
    (a pinned host buffer on CUDA, say) would otherwise overwrite a frame still queued for encoding.
    Reuse shows up as an array that does not own its memory or shares it with the previous output.
    """

    def __init__(self):
        self._prev: np.ndarray | None = None

    def __call__(self, out: np.ndarray) -> np.ndarray:
        if not out.flags.owndata or (self._prev is not None and np.shares_memory(out, self._prev)):
            out = out.copy()
        self._prev = out
        return out


def _filter_loop(pairs: Iterable, filt, sink, bar, *, side_by_side: bool, report: WarpReport | None,
                 label=None, pipelined: bool = False) -> None:
    """pairs yields (processed Frame, original rgb or None); writes filtered (or side-by-side) frames.
    The frame's timestamp goes to the filter (a long gap starts it over) and to the sink (gaps kept).
    ``pipelined``: through ``filt.push``/``flush`` (one frame in flight; the same output frames)."""
    owned = _OwnedFrames()

    def emit(p, orig, out):
        if report is not None:
            report.add(p.index, orig, p.rgb, out)
        if side_by_side:
            frame = np.concatenate([p.rgb, out], axis=1)
            if label is not None:
                label(frame)
        else:
            frame = owned(out)
        sink.write(frame, p.timestamp)
        bar.update(1)

    if not pipelined:
        for p, orig in pairs:
            emit(p, orig, filt.step(p.rgb, orig, timestamp=p.timestamp))
        return
    pending = None  # the (frame, original) whose output is in flight
    ok = False
    try:
        for p, orig in pairs:
            out = filt.push(p.rgb, orig, timestamp=p.timestamp)
            prev, pending = pending, (p, orig)  # before emit: flush() below then pairs with the right frame
            if out is not None:
                emit(*prev, out)
        ok = True
    finally:
        # the frame in flight is finished and written, also when the run stops early (Ctrl-C, a bad frame)
        try:
            out = filt.flush()
            if out is not None and pending is not None:
                emit(*pending, out)
        except Exception:
            if ok:
                raise
            # the run is already failing (a full disk, a bad frame): that error is the one to report
            log.debug("the frame in flight could not be finished", exc_info=True)


def _cpu_pipeline(filt, stack: contextlib.ExitStack) -> bool:
    """Whether to pipeline the CPU fast step over three threads (``VideoFilter.push``): with two cores or more.
    If so, torch and OpenCV run on one thread per stage for the rest of ``stack``."""
    if getattr(filt, "_cpu", None) is None or (os.cpu_count() or 1) < 2:
        return False
    stack.enter_context(_one_thread_per_stage())
    return True


@contextlib.contextmanager
def _one_thread_per_stage():
    """torch and OpenCV on one thread each while the pipelined CPU filter runs its stages on three threads
    (three stages x two intra-op threads would oversubscribe a 2-core machine); restored afterwards."""
    import cv2
    import torch

    t, c = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        torch.set_num_threads(t)
        cv2.setNumThreads(c)


@contextlib.contextmanager
def _note_kept_frames(get_sink, output: str | None):
    """Wraps the ExitStack that owns the sink: when an error (or SIGTERM) escapes, the sink has been
    finalised by the time we get here, so we can say where the frames are and how many."""
    try:
        yield
    except BaseException as e:
        from streamssm.io.video import SIGNAL_EXIT

        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone: the output is kept regardless
            if isinstance(e, SystemExit) and e.code in SIGNAL_EXIT:
                print(f"streamssm: terminated ({SIGNAL_EXIT[e.code]})", file=sys.stderr)
            sink = get_sink()
            n = getattr(sink, "frames_written", 0) if sink is not None else 0
            kept = getattr(sink, "final_path", None) if sink is not None else None
            if n and kept:
                print(f"streamssm: {kept} holds the {n} frames filtered before the run stopped", file=sys.stderr)
            elif n:
                print(f"streamssm: no output kept: {output} could not be finalised", file=sys.stderr)
        raise


def filter_video(
    processed: str,
    output: str,
    *,
    original: str | None = None,
    weights: str | None = None,
    device: str = "auto",
    strength: float = 1.0,
    side_by_side: bool = False,
    report: bool = False,
    overwrite: bool = False,
    max_frames: int | None = None,
    fps: float | None = None,
    progress: bool = True,
    filt=None,
    max_resolution: tuple[int, int] | None = DEFAULT_MAX_RESOLUTION,
    max_duration: float | None = None,
    max_input_frames: int | None = None,
    ghost_res: float | None = None,
    exposure_lock: float | None = None,
    crf: int = 18,
    preset: str = "ultrafast",
) -> RunSummary:
    """Filter PROCESSED (video file or image folder) into OUTPUT (video file or PNG folder).

    Inputs are validated (paths, frame-count and size mismatch, output == input, existing output,
    the limits ``max_resolution``/``max_duration``/``max_input_frames``) before the model is loaded.
    ``max_frames``: filter only the first N frames. ``filt``: an existing
    :class:`~streamssm.video.filter.VideoFilter` (reset first) instead of building one from
    ``weights``/``device``/``strength``/``ghost_res``/``exposure_lock`` (:class:`~streamssm.video.filter.VideoFilter`).
    ``crf``/``preset``: the encoder's quality and speed (:func:`~streamssm.io.open_sink`).
    Ctrl-C returns a summary with ``interrupted=True``; any other error propagates after the output
    has been finalised with the frames written so far (``summary.output``/the message say where: see
    the module docstring).
    """
    import itertools

    from streamssm.io import VideoIOError, open_sink, open_source, paired, prefetch, sigterm_as_exception
    from streamssm.video.model import check_frame_size

    limits = dict(max_resolution=max_resolution, max_duration=max_duration, max_frames=max_input_frames,
                  on_limit="error")
    sink = None
    interrupted = False
    with _note_kept_frames(lambda: sink, output), contextlib.ExitStack() as stack:
        stack.enter_context(sigterm_as_exception())
        I = stack.enter_context(open_source(original, fps=fps, **limits)) if original else None
        # An image folder has no rate of its own: take the original video's, so the output matches it.
        p_fps = fps if fps is not None else (I.rate if I is not None and not os.path.isdir(original) else None)
        P = stack.enter_context(open_source(processed, fps=p_fps, **limits))
        if I is not None:
            counts = (P.frame_count, I.frame_count)
            if None not in counts and counts[0] != counts[1] and (max_frames is None or min(counts) < max_frames):
                raise VideoIOError(f"frame counts differ: {P.path} (processed) has {P.frame_count} frames, "
                                   f"{I.path} (original) has {I.frame_count}; they must pair up frame by frame (if "
                                   f"the first {min(counts)} do, --max-frames {min(counts)} filters those)")
            if (P.width, P.height) != (I.width, I.height):
                raise VideoIOError(f"frame sizes differ: {P.path} (processed) is {P.width}x{P.height}, "
                                   f"{I.path} (original) is {I.width}x{I.height}; the original guides the filter "
                                   f"pixel for pixel: scale it to {P.width}x{P.height} (an upscaler's input, say), or "
                                   "leave out --original (processed-only)")
        # the sound of PROCESSED; a per-frame tool often drops it, and then the original's, which the frames pair with
        audio = processed if P.audio else original if I is not None and I.audio else None
        folder_fps = fps is not None and os.path.isdir(processed)
        clock = _output_clock(P, I, audio is not None and audio == original, folder_fps)
        if clock is None:  # the user's --fps for the folder against the original's rate: its sound would drift
            audio, clock = None, P
        if filt is None:
            filt = _make_filter(weights, device, strength, max_gap=file_max_gap(clock.rate), ghost_res=ghost_res,
                                exposure_lock=exposure_lock)
        try:
            check_frame_size(P.height, P.width, filt.model.config)
        except ValueError as e:
            raise VideoIOError(f"{P.path}: {e}") from None
        filt.reset()
        width = P.width * (2 if side_by_side else 1)
        from streamssm.io import ThreadedSink

        sink = stack.enter_context(ThreadedSink(open_sink(output, fps=clock.rate, width=width, height=P.height,
                                                          audio_from=audio, overwrite=overwrite,
                                                          protected=[processed] + ([original] if original else []),
                                                          sample_aspect=P.sample_aspect, untagged=P.untagged,
                                                          crf=crf, preset=preset)))
        total = _total(P, max_frames)
        bar = stack.enter_context(_progress(total, Path(processed).name, progress))
        rep = WarpReport(total) if report else None
        src = stack.enter_context(prefetch(P))
        if I is not None:
            pairs: Iterator = ((p if clock is P else p._replace(timestamp=i.timestamp), i.rgb)
                               for p, i in paired(src, stack.enter_context(prefetch(I)), max_frames))
        else:
            pairs = ((p, None) for p in src)
        if max_frames is not None:
            pairs = itertools.islice(pairs, max_frames)
        fed = itertools.count()  # frames taken from the source(s): next(fed) after the loop says how many
        pairs = (pair for pair, _ in zip(pairs, fed))
        pipelined = _cpu_pipeline(filt, stack)
        t0 = time.perf_counter()
        try:
            _filter_loop(pairs, filt, sink, bar, side_by_side=side_by_side, report=rep, pipelined=pipelined)
            if max_frames is None or next(fed) < max_frames:  # the whole clip (prefetch may have reached its end
                sink.hold_last_until(clock.end)  # when cut short): a last frame held longer keeps its length
        except KeyboardInterrupt:
            interrupted = True
            sink.close(partial=True)  # finalised here as incomplete; the ExitStack's close is then a no-op
    seconds = time.perf_counter() - t0
    summary = RunSummary(sink.frames_written, seconds, width, P.height, sink.final_path or output,
                         interrupted=interrupted, settings=settings_of(filt))
    if rep is not None and not interrupted:
        res = rep.result(guided=I is not None)
        summary.ewarp, summary.report_note = res if res is not None else (None, NO_EWARP)
    return summary


def run_webcam(
    spec: str,
    *,
    op: str | None = None,
    record: str | None = None,
    side_by_side: bool = False,
    weights: str | None = None,
    device: str = "auto",
    strength: float = 1.0,
    max_frames: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    preview: bool | None = None,
    max_resolution: tuple[int, int] | None = DEFAULT_MAX_RESOLUTION,
    ghost_res: float | None = None,
    exposure_lock: float | None = None,
    crf: int = 18,
    preset: str = "ultrafast",
) -> RunSummary:
    """Filter a camera / capture URL / ``live:FILE`` stream frame by frame.

    No prefetch here: queued frames are frames of latency, and a live source drops what the filter is
    too slow for. ``op``: a demo operator makes the flicker; the filter is then guided by the camera
    frame (the frame the operator saw), as in ``--sample``; without ``op`` the stream itself is the
    processed video and the filter runs unguided. ``preview=None``: a window when
    :func:`streamssm.io.has_display`. Latency is the time from receiving a frame to its filtered output
    (operator + filter), per frame. ``record`` (+ ``side_by_side``: [processed | filtered]) keeps it.
    Ctrl-C, ``q``/``Esc`` in the window, the source ending or ``max_frames`` end the session normally;
    a camera or stream that stops delivering frames ends it with ``summary.fault`` set (the recording,
    finalised as an incomplete run, holds every frame filtered before).
    """
    from streamssm.io import Preview, ThreadedSink, has_display, open_sink, open_source, sigterm_as_exception
    from streamssm.io.video import is_live_spec

    if not is_live_spec(spec):
        raise ValueError(f"--webcam {spec}: expected a camera index (0, 1, ...), /dev/videoN, a capture URL "
                         "(rtsp://..., http://...) or live:FILE")
    show = has_display() if preview is None else preview
    if not show and not record:
        raise ValueError(f"--webcam {spec}: no display to preview on (headless machine or OpenCV without GUI) "
                         "and no --record OUT.mp4 given: the filtered stream would go nowhere")
    operator = _demo_operator(op) if op else None
    latencies: list[float] = []
    sink = None
    with _note_kept_frames(lambda: sink, record), contextlib.ExitStack() as stack:
        stack.enter_context(sigterm_as_exception())
        # --max-frames counts the frames filtered (below), not the source's, which include those it dropped
        src = stack.enter_context(open_source(spec, on_limit="stop", max_resolution=max_resolution))
        filt = _make_filter(weights, device, strength, ghost_res=ghost_res, exposure_lock=exposure_lock)
        if record:
            width = src.width * (2 if side_by_side else 1)
            sink = stack.enter_context(ThreadedSink(open_sink(record, fps=src.rate, width=width, height=src.height,
                                                              overwrite=overwrite, protected=[spec], crf=crf,
                                                              preset=preset)))
        view = stack.enter_context(Preview(f"streamssm: {spec}", enabled=show))
        bar = stack.enter_context(_progress(max_frames, str(spec), progress))
        owned = _OwnedFrames()
        t0 = time.perf_counter()
        try:
            for fr in src:
                t = time.perf_counter()
                if operator is not None:
                    p = operator.apply(fr.rgb, fr.index)
                    out = filt.step(p, fr.rgb, timestamp=fr.timestamp)
                else:
                    p, out = fr.rgb, filt.step(fr.rgb, timestamp=fr.timestamp)
                latencies.append((time.perf_counter() - t) * 1e3)
                if sink is not None:
                    sink.write(np.concatenate([p, out], axis=1) if side_by_side else owned(out), fr.timestamp)
                bar.update(1)
                if not view.show(p, out) or (max_frames is not None and len(latencies) >= max_frames):
                    break
        except KeyboardInterrupt:
            pass  # how a camera session ends
        if sink is not None and src.fault:
            sink.close(partial=True)  # cut short by the camera: never replaces an existing recording
    seconds = time.perf_counter() - t0
    kept = (sink.final_path if sink is not None else None) or record
    return RunSummary(len(latencies), seconds, src.width, src.height, kept, latencies_ms=latencies,
                      latency_of="operator + filter" if operator is not None else "filter",
                      dropped=getattr(src, "dropped", 0), fault=src.fault, settings=settings_of(filt))


def _demo_operator(name: str):
    from streamssm.video.operators import DEMO_OPERATORS, make_demo_operator

    if name not in DEMO_OPERATORS:
        raise ValueError(f"--op {name}: unknown demo operator; choose from {', '.join(sorted(DEMO_OPERATORS))}")
    return make_demo_operator(name, seed=0)


def _fit_label(text: str, room: int, scale: float) -> tuple[str, float, int, int]:
    """(text, font scale, thickness, padding) of a panel title at most ``room`` px wide with its padding: the font
    made smaller, down to 0.35 (still legible), then the text cut with "..." (Hershey fonts have no ellipsis)."""
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX

    def width(t: str, fs: float) -> tuple[int, int, int]:
        thick = max(1, round(2 * fs))
        (tw, th), _ = cv2.getTextSize(t, font, fs, thick)
        return tw + 2 * max(4, th // 2), thick, max(4, th // 2)

    w = width(text, scale)[0]
    if w > room:
        scale = max(0.35, scale * room / w)
    cut = text
    for n in range(len(text), 0, -1):
        cut = text if n == len(text) else text[:n].rstrip() + "..."
        if width(cut, scale)[0] <= room:
            break
    _, thick, pad = width(cut, scale)
    return cut, scale, thick, pad


def _labeller(left: str, right: str, width: int):
    """Draws the two panel titles onto a side-by-side frame (in place), each kept within its ``width`` px panel."""
    import cv2

    fs = max(0.5, 0.9 * width / 1280)  # font scale: readable on a 640 px panel, not huge at 1080p
    font = cv2.FONT_HERSHEY_SIMPLEX
    labels = []
    for text, x in ((left, 0), (right, width)):  # measured once, not every frame
        text, scale, thick, pad = _fit_label(text, width, fs)
        labels.append((text, scale, thick, pad, x, *cv2.getTextSize(text, font, scale, thick)))

    def draw(frame: np.ndarray) -> None:
        for text, scale, thick, pad, x, (tw, th), base in labels:
            box = frame[: th + base + 2 * pad, x : x + tw + 2 * pad]
            box[:] = box // 3  # darkened backdrop: readable on any content, no outline artefacts
            cv2.putText(frame, text, (x + pad, th + pad), font, scale, (255, 255, 255), thick, cv2.LINE_AA)

    return draw


def run_sample(
    output: str,
    *,
    op: str = SAMPLE_OP,
    weights: str | None = None,
    device: str = "auto",
    strength: float = 1.0,
    max_frames: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    ghost_res: float | None = None,
    exposure_lock: float | None = None,
    crf: int = 18,
    preset: str = "ultrafast",
) -> RunSummary:
    """The demo: ``op`` applied per frame to the bundled sample, filtered (guided by the sample),
    written as [processed | filtered], scored with E_warp (flow from the sample)."""
    from streamssm.io import Frame, ThreadedSink, open_sink, open_source, prefetch, sigterm_as_exception

    if not SAMPLE.is_file():
        raise FileNotFoundError(f"{SAMPLE}: the sample clip is missing from this installation "
                                "(regenerate it with demo/make_sample.py)")
    operator = _demo_operator(op)
    sink = None
    interrupted = False
    with _note_kept_frames(lambda: sink, output), contextlib.ExitStack() as stack:
        stack.enter_context(sigterm_as_exception())
        src = stack.enter_context(open_source(str(SAMPLE), max_frames=max_frames, on_limit="stop"))
        filt = _make_filter(weights, device, strength, ghost_res=ghost_res, exposure_lock=exposure_lock)
        sink = stack.enter_context(ThreadedSink(open_sink(output, fps=src.rate, width=2 * src.width, height=src.height,
                                                          overwrite=overwrite, protected=[str(SAMPLE)], crf=crf,
                                                          preset=preset)))
        total = _total(src, max_frames)
        bar = stack.enter_context(_progress(total, f"sample + {op}", progress))
        rep = WarpReport(total)
        frames = stack.enter_context(prefetch(src))
        pairs = ((Frame(operator.apply(f.rgb, f.index), f.timestamp, f.index), f.rgb) for f in frames)
        pipelined = _cpu_pipeline(filt, stack)
        t0 = time.perf_counter()
        try:
            _filter_loop(pairs, filt, sink, bar, side_by_side=True, report=rep, pipelined=pipelined,
                         label=_labeller(f"processed ({op})", "streamssm filtered", src.width))
        except KeyboardInterrupt:
            interrupted = True
            sink.close(partial=True)
    seconds = time.perf_counter() - t0
    summary = RunSummary(sink.frames_written, seconds, 2 * src.width, src.height, sink.final_path or output,
                         interrupted=interrupted, settings=settings_of(filt))
    if not interrupted:
        res = rep.result(guided=True)
        summary.ewarp, summary.report_note = res if res is not None else (None, NO_EWARP)
    return summary
