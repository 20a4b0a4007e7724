"""What the demo's tabs compute, without Gradio: checked inputs in, files, figures and numbers out.

Every job takes paths the web layer received, checks them **by content** (a video must decode, a pose
file must parse; the extension is not trusted) against the caps in :class:`Limits`, works inside a
per-request folder of :class:`TempSpace`, and raises :class:`DemoError` with a message meant for the
person at the browser: it names the file by its own name (never the server's temporary path) and says
what was expected. Anything else escaping a job is a bug, which the web layer reports as such.

Shapes: ``t`` frames, ``h w`` pixels, ``k`` keypoints, ``d`` coordinates (as in :mod:`streamssm.ssm`).
Frames are ``h w 3`` uint8 RGB.

Choices, and why:

* **Small working size.** Uploads are filtered at most ``Limits.work_px`` pixels on the long side
  (320 by default) and at most ``Limits.max_frames`` frames: the demo answers in seconds on a laptop
  CPU, which is what a first look needs; ``streamssm video`` is the full-size path.
* **E_warp from the original.** The flow that scores both the processed and the filtered clip is
  computed on the original frames (Lai et al. 2018; :mod:`streamssm.metrics`), the same for both, so
  "before -> after" compares like with like. PSNR(filtered, processed) says how much of the
  operator's look the filter kept; with a demo operator, PSNR against the operator with its
  parameters held fixed (``apply_consistent``) says how close the filter came to a flicker-free target.
* **One Euro on body-size units.** The pose baseline runs on coordinates divided by the body size,
  with the parameters tuned in ``benchmarks/pose_quality.py`` (``min_cutoff`` 8, ``beta`` 100), so the
  same defaults fit pixels, normalised coordinates and metres.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

log = logging.getLogger("streamssm")

__all__ = [
    "DemoError", "Limits", "TempSpace", "SAMPLE_VIDEO", "SAMPLE_POSE", "DEMO_OPERATOR_NAMES",
    "check_upload", "read_clip", "run_video_job", "VideoJobResult", "run_pose_job", "PoseJobResult",
    "sniff_pose_format", "WebcamSession", "luminance_figure", "trajectory_figure",
]

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SAMPLE_VIDEO = ASSETS / "sample.mp4"
SAMPLE_POSE = ASSETS / "sample_pose.npz"
DEMO_OPERATOR_NAMES = ("gamma_jitter", "autocontrast", "clahe", "autowb", "detail", "stylize")
ONE_EURO_DEFAULTS = {"min_cutoff": 8.0, "beta": 100.0}  # tuned in benchmarks/pose_quality.py
# frame rates a pose file may give: the filter takes any positive rate, but a skeleton video at 1e9 fps cannot be
# written and one at 1e-9 fps cannot be played; no pose estimator runs outside this range
POSE_FPS = (1.0, 1000.0)


class DemoError(ValueError):
    """A problem with the user's input, worded for the page (the web layer shows it as is)."""


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may ask for; every one is checked before the expensive work.

    ``max_upload_mb`` is enforced twice: by Gradio's upload route (``launch(max_file_size=...)``, so an
    oversized file never lands on disk) and again here, for callers that bypass that route.
    """

    max_upload_mb: float = 50.0
    max_seconds: float = 120.0  # an uploaded video's duration (container metadata)
    max_resolution: tuple[int, int] = (3840, 2160)  # an uploaded video's frame size (either orientation)
    max_frames: int = 120  # frames one video request filters (the frames slider's maximum)
    work_px: int = 320  # long side the video is filtered at
    max_pose_frames: int = 20_000
    max_keypoints: int = 256
    max_anim_frames: int = 300  # frames of the skeleton animation
    anim_panel_px: int = 320  # long side of one panel of the skeleton animation
    webcam_seconds: int = 120  # one webcam stream is cut after this long

    @property
    def max_upload_bytes(self) -> int:  # MB as Gradio's own message counts them (1024 x 1024 bytes)
        return int(self.max_upload_mb * 2**20)


# ------------------------------------------------------------------------------------------------
# temporary files
# ------------------------------------------------------------------------------------------------
class TempSpace:
    """One temporary root for the app, one sub-folder per request.

    ``with space.request() as work:`` creates ``root/req-XXXX`` and deletes it when the block ends,
    whatever happens. The root is removed when the space is closed, garbage-collected or the process
    exits. Request folders older than ``stale_s`` (a client that went away before its answer was
    collected) are swept at the start of every request.
    """

    def __init__(self, root: str | os.PathLike | None = None, stale_s: float = 3600.0):
        if root is None:
            self.root = Path(tempfile.mkdtemp(prefix="streamssm-demo-")).resolve()
            owned = True
        else:
            self.root = Path(root).resolve()
            self.root.mkdir(parents=True, exist_ok=True)
            owned = False
        self.stale_s = stale_s
        # weakref.finalize also runs at interpreter exit (no atexit hook: its strong reference would keep the
        # space, and its folder, alive until then)
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.root), True) if owned else None

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()

    def _sweep(self) -> None:
        cutoff = time.time() - self.stale_s
        for d in self.root.glob("req-*"):
            with contextlib.suppress(OSError):
                if d.stat().st_mtime < cutoff:
                    shutil.rmtree(d, ignore_errors=True)

    @contextlib.contextmanager
    def request(self) -> Iterator[Path]:
        self._sweep()
        work = Path(tempfile.mkdtemp(prefix="req-", dir=self.root))
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def requests_in_flight(self) -> list[Path]:
        return sorted(self.root.glob("req-*"))


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    for r in roots:
        try:
            path.relative_to(Path(r).resolve())
            return True
        except ValueError:
            continue
    return False


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def check_upload(path: str | os.PathLike, *, what: str, limits: Limits, roots: Sequence[Path]) -> tuple[Path, str]:
    """The checked, resolved upload and the name to call it by (its own file name).

    Refuses a path outside ``roots`` (Gradio's upload folder, the app's temporary root, the bundled
    assets): a client may send any string as a path, and only files the server received or ships
    may be read. Refuses missing, empty and oversized files.
    """
    raw = Path(os.fspath(path))
    label = raw.name or what
    try:
        p = raw.resolve(strict=True)
    except (OSError, RuntimeError):
        raise DemoError(f"{label}: the uploaded {what} is gone from the server (upload it again)") from None
    if not _inside(p, roots):
        raise DemoError(f"{label}: refused, the {what} is not a file uploaded to this app")
    if not p.is_file():
        raise DemoError(f"{label}: not a file; expected a {what}")
    size = p.stat().st_size
    if size == 0:
        raise DemoError(f"{label}: the file is empty (0 bytes); expected a {what}")
    if size > limits.max_upload_bytes:
        raise DemoError(f"{label}: the file is {_mb(size)}; this demo accepts uploads up to "
                        f"{_mb(limits.max_upload_bytes)} (use `streamssm video` / `streamssm pose` for big files)")
    return p, label


def _unpath(message: str, work: Path) -> str:
    """The message with the request folder's path taken out of the names of the files written there."""
    for s in {str(work), os.path.realpath(work)}:
        message = message.replace(s + os.sep, "").replace(s, "the server's folder")
    return message


def _clean(message: str, path: Path, label: str) -> str:
    """The message with the server-side path replaced by the file's own name."""
    for s in {str(path), os.path.realpath(path)}:
        message = message.replace(s, label)
    return message


# ------------------------------------------------------------------------------------------------
# video
# ------------------------------------------------------------------------------------------------
def work_size(w: int, h: int, long_side: int) -> tuple[int, int]:
    """(w, h) scaled so the long side is at most ``long_side``, both even (H.264 4:2:0 plays in browsers)."""
    s = min(1.0, long_side / max(w, h))
    return max(2, int(round(w * s / 2)) * 2), max(2, int(round(h * s / 2)) * 2)


def check_work_size(label: str, w: int, h: int, work: tuple[int, int], long_side: int) -> None:
    """DemoError naming the user's size when the working size falls under the filter's minimum (one statistics
    cell a side): a very narrow or tiny video, which the full-size CLI may still take."""
    from streamssm.video.model import VideoSSMConfig

    least = VideoSSMConfig().cell_px
    if min(work) < least:
        how = f"scaled to {work[0]}x{work[1]} here (long side at most {long_side} px), " if work != (w, h) else ""
        raise DemoError(f"{label}: the frames are {w}x{h}, {how}under the {least}x{least} the video filter needs"
                        + ("; `streamssm video` filters it at full size" if min(w, h) >= least else ""))


@dataclass
class Clip:
    frames: list[np.ndarray]  # t x (h w 3) uint8, at the working size
    rate: Fraction
    source_size: tuple[int, int]
    frame_count: int | None  # in the file, when its index says
    label: str
    audio: bool = False  # the file has sound (the demo's output has none)

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.frames[0].shape[:2]
        return w, h


ASPECT_TOLERANCE = 0.01  # pair mode: a processed video this close to its original's shape is resized to it


def _to_end(gen):
    """The value a generator returns, its yields dropped."""
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def read_clip(path: Path, label: str, limits: Limits, max_frames: int, size: tuple[int, int] | None = None) -> Clip:
    """Decode the first ``max_frames`` frames of a video, resized to the working size (or ``size``).

    Duration and resolution are checked from the container before decoding (:class:`DemoError`).
    """
    return _to_end(iter_clip(path, label, limits, max_frames, size))


def iter_clip(path: Path, label: str, limits: Limits, max_frames: int, size: tuple[int, int] | None = None,
              like: Clip | None = None) -> Iterator[str]:
    """:func:`read_clip` as a generator: yields a progress line after every decoded frame, returns the
    :class:`Clip`. ``like``: the original of a pair; this clip's frame shape must be its shape (aspect ratio within
    ``ASPECT_TOLERANCE``), checked before decoding."""
    import cv2

    from streamssm.io import VideoIOError, open_source

    try:
        with open_source(str(path), max_resolution=None, on_limit="stop") as src:
            w, h = src.width, src.height
            mw, mh = limits.max_resolution
            if max(w, h) > max(mw, mh) or min(w, h) > min(mw, mh):
                raise DemoError(f"{label}: frame size {w}x{h} is larger than this demo takes ({mw}x{mh}); "
                                "downscale it first")
            if src.duration is not None and src.duration > limits.max_seconds + 1e-6:
                raise DemoError(f"{label}: the video is {src.duration:.1f} s long; this demo takes videos up to "
                                f"{limits.max_seconds:g} s (trim it first, or use `streamssm video`)")
            if like is not None and (w, h) != like.source_size:
                (ow, oh) = like.source_size
                if abs((w / h) / (ow / oh) - 1) > ASPECT_TOLERANCE:
                    raise DemoError(f"{label} is {w}x{h} but {like.label} is {ow}x{oh}: the processed video and its "
                                    "original must have the same frame shape (one may be a resized copy of the "
                                    "other, but not cropped or padded)")
            out_w, out_h = size if size is not None else work_size(w, h, limits.work_px)
            check_work_size(label, w, h, (out_w, out_h), limits.work_px)
            frames = []
            for fr in src:
                rgb = fr.rgb
                if (rgb.shape[1], rgb.shape[0]) != (out_w, out_h):
                    rgb = cv2.resize(rgb, (out_w, out_h), interpolation=cv2.INTER_AREA)
                frames.append(rgb)
                if len(frames) >= max_frames:
                    break
                yield f"reading {label}: frame {len(frames)}"
            rate, count, audio = src.rate, src.frame_count, bool(getattr(src, "audio", False))
    except VideoIOError as e:  # the demo takes no folders of images: its message offers only what this app takes
        raise DemoError(_clean(str(e), path, label).replace(" or a folder of images", "")) from None
    if len(frames) < 2:
        raise DemoError(f"{label}: only {len(frames)} frame decoded; a flicker needs at least 2 frames")
    return Clip(frames, rate, (w, h), count, label, audio)


@dataclass
class VideoJobResult:
    """What the video tab shows: the side-by-side clip, the luminance curves, the numbers."""

    video: Path  # [processed | filtered], H.264 yuv420p mp4
    luma: dict[str, np.ndarray]  # curve name -> (t,) mean BT.601 luma in [0, 1]
    metrics: dict[str, float | int | str | None]
    summary: str  # Markdown, a few lines


def _operator(name: str):
    from streamssm.video.operators import DEMO_OPERATORS, make_demo_operator

    if name not in DEMO_OPERATORS:
        raise DemoError(f"unknown operator {name!r}; choose one of {', '.join(sorted(DEMO_OPERATORS))}")
    return make_demo_operator(name, seed=0)


def make_video_filter(device: str = "auto", strength: float = 1.0):
    from streamssm.video.filter import DEFAULT_WEIGHTS, VideoFilter

    if not DEFAULT_WEIGHTS.is_file():
        raise DemoError(f"no video weights shipped at {DEFAULT_WEIGHTS.name}; this installation is incomplete")
    return VideoFilter(device=device, strength=strength)


def _check_strength(strength: float) -> float:
    s = float(strength)
    if not (0.0 <= s <= 2.0):
        raise DemoError(f"strength must be between 0 and 2, got {strength}")
    return s


def _db(value: float) -> float | None:
    """A PSNR for the JSON: None when infinite (identical frames; JSON has no infinity)."""
    return float(value) if np.isfinite(value) else None


def _db_text(value: float | None) -> str:
    return "identical" if value is None else f"{value:.1f} dB"


def run_video_job(work: Path, **kw) -> VideoJobResult:
    """:func:`iter_video_job` run to its end: the result."""
    return _to_end(iter_video_job(work, **kw))


def iter_video_job(
    work: Path,
    *,
    video: tuple[Path, str],
    processed: tuple[Path, str] | None = None,
    operator: str = "gamma_jitter",
    strength: float = 1.0,
    max_frames: int = 48,
    limits: Limits = Limits(),
    device: str = "auto",
    filter_factory: Callable | None = None,
) -> VideoJobResult:
    """Filter one clip and score it: a generator that yields a progress line after every frame of every step
    (decoding, the operator, the filter, the flow, writing) and returns the :class:`VideoJobResult`. Closing it (a
    request the user cancelled: Gradio stops iterating and closes the handler) stops the work within a frame, so a
    cancelled job does not run on beside the next one.

    ``video``: (path, name) of the original clip. ``processed``: (path, name) of its per-frame
    processed version (the "pair" mode: the filter is guided by ``video``); without it ``operator``
    (a demo operator) makes the processed clip from ``video``. Writes ``work/deflickered.mp4``.
    """
    from streamssm.metrics import Flows, compute_flows, mean_luminance, psnr, warp_error
    from streamssm.video.cli import _labeller
    from streamssm.io import VideoIOError, open_sink

    strength = _check_strength(strength)
    n = int(max_frames)
    if not (2 <= n <= limits.max_frames):
        raise DemoError(f"frames must be between 2 and {limits.max_frames}, got {max_frames}")
    yield f"reading {video[1]}"
    orig = yield from iter_clip(*video, limits, n)
    notes = []
    consistent = None
    if processed is not None:
        proc = yield from iter_clip(*processed, limits, n, size=orig.size, like=orig)
        if proc.source_size != orig.source_size:
            (pw, ph), (ow, oh) = proc.source_size, orig.source_size
            notes.append(f"{proc.label} is {pw}x{ph} and {orig.label} {ow}x{oh}: both resized to {orig.size[0]}x"
                         f"{orig.size[1]}")
        t = min(len(proc.frames), len(orig.frames))
        if len(proc.frames) != len(orig.frames):
            notes.append(f"the two videos differ in length; the first {t} frames of each are paired")
        P, I = proc.frames[:t], orig.frames[:t]
        left = "processed (uploaded)"
        sound = orig.audio or proc.audio
    else:
        op = _operator(operator)
        op.fit(orig.frames[0])  # the consistent target freezes the first frame's statistics
        I, P, consistent = orig.frames, [], []
        for i, f in enumerate(I):
            P.append(op.apply(f, i))
            consistent.append(op.apply_consistent(f, i))
            yield f"applying {operator}: frame {i + 1} of {len(I)}"
        if all(np.array_equal(a, b) for a, b in zip(P, consistent)):
            consistent = None  # clahe: nothing to hold fixed, its flicker is its own per-frame statistics
        left = f"processed ({operator})"
        sound = orig.audio
    t = len(P)
    filt = (filter_factory or make_video_filter)(device=device, strength=strength)
    O, seconds = [], 0.0
    for i in range(t):  # a frame at a time (a progress line each), the state carried
        t0 = time.perf_counter()
        O.append(filt.step(P[i], I[i]))
        seconds += time.perf_counter() - t0
        yield f"filtering frame {i + 1} of {t}"
    fwd, valid = [], []
    for i in range(t - 1):  # each pair's flow on its own: the same flows as one compute_flows(I)
        f = compute_flows(I[i:i + 2])
        fwd.append(f.forward[0])
        valid.append(f.valid[0])
        yield f"scoring (optical flow): frame {i + 2} of {t}"
    flows = Flows(np.stack(fwd), np.stack(valid), f.method)
    e_before, e_after = warp_error(P, flows=flows), warp_error(O, flows=flows)
    metrics: dict[str, float | int | str | None] = {
        "frames": t, "fps": round(float(orig.rate), 3), "width": orig.size[0], "height": orig.size[1],
        "mode": "pair" if processed is not None else f"operator:{operator}", "strength": strength,
        "ewarp_processed": e_before, "ewarp_filtered": e_after,
        "psnr_filtered_vs_processed_db": _db(psnr(O, P)), "filter_seconds": round(seconds, 3),
    }
    luma = {"processed": mean_luminance(P), "filtered": mean_luminance(O)}
    if consistent is not None:
        metrics["psnr_processed_vs_consistent_db"] = _db(psnr(P, consistent))
        metrics["psnr_filtered_vs_consistent_db"] = _db(psnr(O, consistent))
        luma["operator, parameters held fixed"] = mean_luminance(consistent)

    w, h = orig.size
    out = work / "deflickered.mp4"
    label = _labeller(left, "streamssm filtered", w)
    try:
        # faststart: the browser starts playing before the whole file has arrived
        with open_sink(out, fps=orig.rate, width=2 * w, height=h, crf=23, faststart=True) as sink:
            for i, (p, o) in enumerate(zip(P, O, strict=True)):
                frame = np.concatenate([p, o], axis=1)
                label(frame)
                sink.write(frame)
                yield f"writing the video: frame {i + 1} of {t}"
    except VideoIOError as e:  # disk full, say: not the user's fault, but worth saying plainly
        raise DemoError(f"could not write the result video: {_unpath(str(e), work)}") from None

    change = f" ({100 * (e_after - e_before) / e_before:+.0f}%)" if e_before > 0 else ""
    kept = metrics["psnr_filtered_vs_processed_db"]
    lines = [f"**E_warp** (flow from the original; lower = steadier): processed **{e_before:.5f}** → "
             f"filtered **{e_after:.5f}**{change}",
             f"**PSNR** filtered vs processed: {_db_text(kept)}"
             + (" (strength 0: the filter is off)" if kept is None and strength == 0 else
                " (how much of the operator's look is kept)")]
    if consistent is not None:
        lines.append(f"**PSNR** vs the operator with its parameters held fixed: processed "
                     f"{_db_text(metrics['psnr_processed_vs_consistent_db'])} → filtered "
                     f"{_db_text(metrics['psnr_filtered_vs_consistent_db'])}")
    elif processed is None:
        lines.append(f"({operator} has no parameters to hold fixed: no steadier version of it to compare with)")
    sw, sh = orig.source_size
    scaled = f" (downscaled from {sw}x{sh})" if (sw, sh) != (w, h) else ""
    of = f" of {orig.frame_count}" if orig.frame_count and orig.frame_count > t else ""
    if sound:
        notes.append("this clip has no sound (the demo writes the picture only); `streamssm video` keeps the "
                     "upload's sound")
    lines.append(f"{orig.label}: {t}{of} frames, {w}x{h}{scaled}, {float(orig.rate):.4g} fps; filter {seconds:.2f} s "
                 f"({1e3 * seconds / t:.0f} ms/frame)" + "".join(f"; {n_}" for n_ in notes))
    return VideoJobResult(out, luma, metrics, "  \n".join(lines))


def luminance_figure(luma: dict[str, np.ndarray], title: str = "Per-frame mean luminance"):
    """A matplotlib Figure (no pyplot: safe from worker threads) of the luminance curves."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3), dpi=100, layout="constrained")
    ax = fig.subplots()
    styles = {"processed": dict(color="#d62728", lw=1.5), "filtered": dict(color="#2ca02c", lw=2.0)}
    for name, y in luma.items():
        ax.plot(np.arange(len(y)), y, label=name, **styles.get(name, dict(color="0.4", lw=1.2, ls="--")))
    ax.set_xlabel("frame")
    ax.set_ylabel("mean luma (0-1)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


# ------------------------------------------------------------------------------------------------
# pose
# ------------------------------------------------------------------------------------------------
# MediaPipe Pose's drawing connections (mp.solutions.pose.POSE_CONNECTIONS; mediapipe is not a dependency).
MEDIAPIPE33_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13), (13, 15),
    (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18), (16, 20), (16, 22), (18, 20),
    (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28), (27, 29), (28, 30), (29, 31),
    (30, 32), (27, 31), (28, 32),
)


def sniff_pose_format(path: Path, label: str) -> str:
    """``.npz``, ``.json`` or ``.csv`` from the first bytes (a zip archive, a JSON object, text)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"PK\x03\x04"):
        return ".npz"
    if b"\x00" in head:
        raise DemoError(f"{label}: not a pose file (binary data that is not an .npz archive); expected "
                        ".npz (MediaPipe or points layout), .csv or .json")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # a character cut at the 4096-byte boundary is still text
            raise DemoError(f"{label}: not a pose file (not UTF-8 text and not an .npz archive); expected "
                            ".npz, .csv or .json") from None
        text = head[: e.start].decode("utf-8")
    return ".json" if text.lstrip("\ufeff \t\r\n").startswith(("{", "[")) else ".csv"


def _joint_names(data, k: int) -> list[str]:
    from streamssm.pose.bvh import BODY17, MEDIAPIPE33_NAMES

    names = data.meta.get("joint_names") or (data.meta.get("top", {}) or {}).get("joints")
    if isinstance(names, list) and len(names) == k:
        return [str(n) for n in names]
    if k == 33:
        return list(MEDIAPIPE33_NAMES)
    if k == 17:
        return list(BODY17)
    return [str(i) for i in range(k)]


def _edges(k: int) -> list[tuple[int, int]]:
    from streamssm.pose.bvh import BODY17_PARENTS

    if k == 33:
        return list(MEDIAPIPE33_EDGES)
    if k == 17:
        return [(i, p) for i, p in enumerate(BODY17_PARENTS) if p >= 0]
    return []


@dataclass
class PoseJobResult:
    """What the pose tab shows: trajectories of one joint, the skeleton animation, the numbers."""

    video: Path  # [raw | One Euro | streamssm] skeleton animation, H.264 mp4
    joint: str
    joint_names: list[str]
    curves: dict[str, np.ndarray]  # method -> (t, 2) x, y of the chosen joint (NaN where missing)
    units: str
    fps: float
    metrics: dict[str, float | int | str]
    summary: str


def run_pose_job(
    work: Path,
    *,
    pose: tuple[Path, str],
    joint: str | None = None,
    strength: float = 1.0,
    min_cutoff: float = ONE_EURO_DEFAULTS["min_cutoff"],
    beta: float = ONE_EURO_DEFAULTS["beta"],
    limits: Limits = Limits(),
    device: str = "auto",
    background: Path | None = None,
) -> PoseJobResult:
    """Smooth a pose file with One Euro and with streamssm; render a plot's data and a skeleton clip.

    ``joint``: a name or index; default (or unknown) -- the joint whose raw track jitters most.
    ``background``: a video whose frames the skeletons are drawn on (the bundled sample clip, which
    the bundled pose file was estimated from), in the pose file's image coordinates.
    """
    from streamssm.baselines import one_euro
    from streamssm.io import VideoIOError
    from streamssm.io.pose_files import PoseLimitError, read_pose
    from streamssm.pose.cli import _valid, mean_acceleration, image_size
    from streamssm.pose.data import body_size
    from streamssm.pose.filter import PoseFilter

    strength = _check_strength(strength)
    if not (min_cutoff > 0 and beta >= 0):
        raise DemoError(f"One Euro needs min_cutoff > 0 and beta >= 0, got {min_cutoff}, {beta}")
    path, label = pose
    ext = sniff_pose_format(path, label)
    local = work / f"pose{ext}"  # the reader picks the format from the extension: give it the sniffed one
    shutil.copyfile(path, local)
    try:  # the caps go to the reader: an .npz's points are measured by their header, before they are read
        data = read_pose(local, limit=(limits.max_pose_frames, limits.max_keypoints))
    except PoseLimitError as e:
        raise DemoError(f"{label}: {e.frames} frames x {e.keypoints} keypoints; this demo takes up to "
                        f"{limits.max_pose_frames} frames and {limits.max_keypoints} keypoints (use `streamssm pose` "
                        "for big files)") from None
    except (ValueError, OSError) as e:  # UnicodeDecodeError is a ValueError
        msg = _clean(str(e), local, label)
        raise DemoError(msg if label in msg else f"{label}: cannot read pose file ({msg})") from None
    t, k, d = data.points.shape
    if t < 3:
        raise DemoError(f"{label}: {t} frames; smoothing needs at least 3")
    if data.fps is not None and not POSE_FPS[0] <= data.fps <= POSE_FPS[1]:
        raise DemoError(f"{label}: the file's frame rate is {data.fps:g} fps; this demo takes {POSE_FPS[0]:g} to "
                        f"{POSE_FPS[1]:g} fps (is it frames per second?)")
    fps = 30.0 if data.fps is None else float(data.fps)
    bad = data.meta.get("bad_fps")
    said = [] if data.fps is not None else [f"the file's frame rate {bad} is not a positive number: 30 fps assumed"
                                            if bad else "the file gives no frame rate: 30 fps assumed"]
    numbers = data.meta.get("frame_numbers")
    if numbers is not None and len(numbers) == t:
        steps = np.diff(np.asarray(numbers, np.float64))
        if (steps > 1).any():
            said.append(f"{int((steps > 1).sum())} gap(s) in the file's frame numbers: shown here as consecutive "
                        "frames (`streamssm pose` steps over them)")
    image = image_size(data)
    if image not in (None, (1.0, 1.0)):
        # MediaPipe's x, y are normalised separately by width and height: pixels make them isotropic
        pts, units = data.points[..., :2] * np.float32(image), "px"
    else:
        pts, units, image = data.points, "file units", None
    conf = None if data.meta.get("visibility") else data.confidence  # as `streamssm pose`: visibility is no weight
    valid = _valid(pts, conf)
    if not valid.any():
        raise DemoError(f"{label}: every keypoint is missing (NaN or confidence 0) in every frame")

    filt = PoseFilter(device=device, strength=strength, fps=fps)
    t0 = time.perf_counter()
    ours = filt.filter(pts, confidence=conf)
    seconds = time.perf_counter() - t0
    size = float(body_size(np.where(valid[..., None], pts, np.nan)))
    size = size if np.isfinite(size) and size > 0 else 1.0
    oe = one_euro(pts / size, fps=fps, min_cutoff=float(min_cutoff), beta=float(beta)) * size
    gap = ~valid[..., None]  # gaps stay gaps in what we show (the filters hold through them)
    ours = np.where(gap, np.nan, ours).astype(np.float32)
    oe = np.where(gap, np.nan, oe).astype(np.float32)

    names = _joint_names(data, k)
    j = None
    if joint not in (None, ""):
        js = str(joint)
        j = names.index(js) if js in names else int(js) if js.isdigit() and int(js) < k else None
        if j is None:
            raise DemoError(f"joint {js!r}: not one of this file's joints ({', '.join(names[:12])}"
                            f"{', ...' if k > 12 else ''}) nor an index below {k}")
    if j is None:  # the joint whose raw track jitters most: where the difference is easiest to see
        acc = np.linalg.norm(pts[2:] - 2 * pts[1:-1] + pts[:-2], axis=-1)
        j = int(np.nanargmax(np.where(np.isfinite(acc), acc, 0).mean(0)))
    methods = {"raw": pts, "One Euro": oe, "streamssm": ours}
    curves = {m: v[:, j, :2] for m, v in methods.items()}
    d = pts.shape[-1]
    metrics: dict[str, float | int | str] = {"frames": t, "keypoints": k, "dims": d, "fps": fps,
                                             "joint": names[j], "filter_seconds": round(seconds, 3)}
    parts = []
    for m, v in methods.items():
        a = mean_acceleration(v, valid)
        metrics[f"accel_{m.replace(' ', '_').lower()}_pct_body"] = 100 * a / size
        parts.append(f"{m} **{100 * a / size:.3g}**")
    summary = ("**Mean acceleration** (jitter; % of body size per frame²): " + " · ".join(parts) + "  \n"
               f"{t} frames, {k} keypoints, {d}-D, {fps:g} fps; joint plotted: {names[j]}; "
               f"streamssm {1e3 * seconds / t:.2f} ms/frame; One Euro min_cutoff {min_cutoff:g}, beta {beta:g}")
    video = work / "skeleton.mp4"
    try:
        notes = _render_skeletons(video, methods, j, _edges(k), fps, limits, image, background)
    except VideoIOError as e:  # disk full, say: not the user's fault, but worth saying plainly
        raise DemoError(f"could not write the skeleton video: {_unpath(str(e), work)}") from None
    for note in [*said, *([notes] if notes else [])]:
        summary += "  \n" + note
    return PoseJobResult(video, names[j], names, curves, units, fps, metrics, summary)


def _render_skeletons(out: Path, methods: dict[str, np.ndarray], joint: int, edges, fps: float, limits: Limits,
                      image: tuple[float, float] | None, background: Path | None) -> str:
    """[raw | One Euro | streamssm] panels, the chosen joint's recent track drawn as a trail."""
    import cv2

    from streamssm.io import open_sink, open_source

    raw = methods["raw"]
    t = min(len(raw), limits.max_anim_frames)
    xy = raw[:t, :, :2]
    # the view: the body's extent over the clip (robust percentiles) plus a margin, same for all panels
    fin = xy[np.isfinite(xy).all(-1)]
    if not fin.size:  # nothing detected in the animated frames: frame the view on the whole clip
        fin = raw[..., :2][np.isfinite(raw[..., :2]).all(-1)]
    use_bg = image is not None and background is not None
    x0, y0, x1, y1 = _view(fin, image if use_bg else None)
    # the panel's long side is anim_panel_px whatever the units (pixels, 0..1, metres): scaled up or down to it
    ex, ey = x1 - x0, y1 - y0
    fit = limits.anim_panel_px / max(ex, ey)
    pw, ph = (max(64, int(round(v * fit / 2)) * 2) for v in (ex, ey))
    sx, sy = pw / ex, ph / ey
    s = min(sx, sy)  # same scale on both axes: the body keeps its proportions
    ox, oy = (pw - s * (x1 - x0)) / 2, (ph - s * (y1 - y0)) / 2

    bg_frames = None
    if use_bg:
        with open_source(str(background), on_limit="stop", max_frames=t) as src:
            fx, fy = src.width / image[0], src.height / image[1]  # pose pixels -> this video's pixels
            box = (slice(int(y0 * fy), max(int(np.ceil(y1 * fy)), int(y0 * fy) + 1)),
                   slice(int(x0 * fx), max(int(np.ceil(x1 * fx)), int(x0 * fx) + 1)))
            bg_frames = [cv2.resize(f.rgb[box], (pw, ph), interpolation=cv2.INTER_AREA) // 2 for f in src]
    colours = {"raw": (230, 70, 60), "One Euro": (70, 140, 240), "streamssm": (60, 220, 90)}

    def to_px(p):
        return int(round(ox + (p[0] - x0) * s)), int(round(oy + (p[1] - y0) * s))

    trail = 12
    with open_sink(out, fps=fps, width=3 * pw, height=ph, crf=23, faststart=True) as sink:
        for i in range(t):
            panels = []
            for name, v in methods.items():
                img = (bg_frames[i].copy() if bg_frames is not None and i < len(bg_frames)
                       else np.full((ph, pw, 3), 24, np.uint8))
                c = colours[name]
                pts = v[i, :, :2]
                for a, b in edges:
                    if np.isfinite(pts[[a, b]]).all():
                        cv2.line(img, to_px(pts[a]), to_px(pts[b]), c, 2, cv2.LINE_AA)
                for p in pts:
                    if np.isfinite(p).all():
                        cv2.circle(img, to_px(p), 2, (255, 255, 255), -1, cv2.LINE_AA)
                track = [to_px(q) for q in v[max(0, i - trail): i + 1, joint, :2] if np.isfinite(q).all()]
                for q0, q1 in zip(track, track[1:]):
                    cv2.line(img, q0, q1, (255, 230, 80), 1, cv2.LINE_AA)
                if track:
                    cv2.circle(img, track[-1], 4, (255, 230, 80), -1, cv2.LINE_AA)
                (tw, th), _ = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
                img[: th + 10, : tw + 10] //= 3  # dark backdrop: the title reads on any background
                cv2.putText(img, name, (5, th + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, c, 1, cv2.LINE_AA)
                panels.append(img)
            sink.write(np.concatenate(panels, axis=1))
    return f"animation shows the first {t} of {len(raw)} frames" if t < len(raw) else ""


def _view(xy: np.ndarray, image: tuple[float, float] | None) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1): what the skeleton panels show of points ``xy`` (n x 2): their extent (1st to 99th
    percentile) plus a margin, at least a third as wide as it is tall and the other way round (a body seen edge-on
    is not drawn in a sliver), a square around them when they do not move; within ``image`` when given."""
    (x0, y0), (x1, y1) = np.percentile(xy, 1, axis=0), np.percentile(xy, 99, axis=0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    span = max(x1 - x0, y1 - y0)
    if not span > 1e-6 * max(1.0, abs(cx), abs(cy)):  # constant points: a square of a fifth of their magnitude
        span = 0.2 * max(1.0, abs(cx), abs(cy)) if image is None else 0.2 * max(image)
    w, h = max(x1 - x0, span / 3) + 0.3 * span, max(y1 - y0, span / 3) + 0.3 * span
    x0, x1, y0, y1 = cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2
    if image is not None:  # the same view cut out of the video the pose was estimated on
        x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, image[0]), min(y1, image[1])
        if not (x1 - x0 > 0 and y1 - y0 > 0):  # the points lie outside the picture: show all of it
            x0, y0, x1, y1 = 0.0, 0.0, float(image[0]), float(image[1])
    return float(x0), float(y0), float(x1), float(y1)


def trajectory_figure(res: PoseJobResult):
    """x and y of the chosen joint over time: raw vs One Euro vs streamssm (a matplotlib Figure)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=100, layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    styles = {"raw": dict(color="0.55", lw=1.0), "One Euro": dict(color="#1f77b4", lw=1.4),
              "streamssm": dict(color="#2ca02c", lw=2.0)}
    for c, ax in enumerate(axes):
        for name, v in res.curves.items():
            ax.plot(np.arange(len(v)) / res.fps, v[:, c], label=name, **styles[name])
        ax.set_ylabel(f"{'xy'[c]} ({res.units})")
        ax.grid(alpha=0.3)
    axes[0].set_title(f"{res.joint}: raw vs One Euro vs streamssm")
    axes[0].legend(loc="best", fontsize=8)
    axes[1].set_xlabel("time (s)")
    return fig


# ------------------------------------------------------------------------------------------------
# webcam
# ------------------------------------------------------------------------------------------------
@dataclass
class WebcamSession:
    """One browser's live stream: its own filter state, operator and frame counter.

    Held in ``gr.State`` (one per browser session); the filter starts over when the operator or the
    frame size changes. ``step`` returns [processed | filtered] side by side.
    """

    device: str = "auto"
    filter_factory: Callable | None = None
    filt: object = None
    op: object = None
    op_name: str | None = None
    key: tuple | None = None
    t: int = 0
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def step(self, frame: np.ndarray, op_name: str, strength: float, limits: Limits) -> np.ndarray:
        import cv2

        if frame is None:
            raise DemoError("no camera frame received")
        frame = np.asarray(frame)
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=2)
        if frame.ndim != 3 or frame.shape[2] not in (3, 4) or frame.dtype != np.uint8:
            raise DemoError(f"expected an RGB camera frame, got {frame.dtype} {frame.shape}")
        frame = np.ascontiguousarray(frame[..., :3])
        h, w = frame.shape[:2]
        ww, wh = work_size(w, h, limits.work_px)
        check_work_size("camera frame", w, h, (ww, wh), limits.work_px)
        if (ww, wh) != (w, h):
            frame = cv2.resize(frame, (ww, wh), interpolation=cv2.INTER_AREA)
        strength = _check_strength(strength)
        with self.lock:  # one frame at a time per session: the state is a chain
            key = (op_name, ww, wh)
            if self.filt is None:
                self.filt = (self.filter_factory or make_video_filter)(device=self.device, strength=strength)
            if key != self.key:
                self.filt.reset()
                self.op = None if op_name in (None, "", "none") else _operator(op_name)
                self.key, self.t = key, 0
            self.filt.strength = strength
            if self.op is not None:
                p = self.op.apply(frame, self.t)
                out = self.filt.step(p, frame)
            else:
                p, out = frame, self.filt.step(frame)
            self.t += 1
        return np.concatenate([p, out], axis=1)
