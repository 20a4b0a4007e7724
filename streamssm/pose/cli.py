"""``streamssm pose INPUT -o OUTPUT``: filter a pose file (or, with MediaPipe, a video) with :class:`PoseFilter`.

Pose files (``.npz``/``.csv``/``.json``, see :mod:`streamssm.io.pose_files`) are filtered whole with
:meth:`PoseFilter.filter` (the parallel scan; the same result as stepping frame by frame) and written in
the input's layout (``like=`` the input), so a MediaPipe ``.npz`` comes back with every key unchanged
plus ``landmarks_filtered``. Choices, and why:

* **Confidence.** A file's explicit confidence (``confidence`` column/key) is passed to the filter.
  MediaPipe's visibility is *not* (a MediaPipe ``.npz``'s 4th column, and what this command writes from it when
  converting: a ``.csv`` ``visibility`` column, a ``.json`` marked ``"confidence_kind": "visibility"``): it is
  the estimator's guess that a landmark is in view, not a measurement weight, and occluded-but-tracked landmarks
  are still worth smoothing; NaN coordinates mark what is missing.
* **MediaPipe image landmarks** (an ``.npz``'s ``landmarks_*``: x, y normalised by the image's width and height, z a
  noisy relative depth) are filtered as MediaPipe's own output is measured in the README: x, y as 2-D points in
  pixels (the file's ``width``/``height``), z from a second pass (:func:`_filter_image_landmarks`), and written back
  normalised; so are such landmarks converted to ``.csv``/``.json`` (they carry the image size). World landmarks
  (``--key world_landmarks_raw``, metres) are filtered as 3-D points.
* **Gaps stay gaps.** What the input marks missing (NaN/inf coordinates, or a confidence of 0 where the confidence
  is a weight; MediaPipe's visibility is not, see above) comes back in every format as the input had it, coordinates
  and confidence (NaN stays NaN, a csv's ``0,0,0`` stays ``0,0,0``; a missing confidence, read as 0, is written as
  0), so the file never claims a detection
  the estimator did not make (the filter itself holds its estimate through the gap, which is what a live caller of
  :meth:`PoseFilter.step` wants).
* **Dropped frames.** Frame numbers are not assumed regular: a ``.csv``'s ``frame`` column, a
  ``.json``'s per-frame ``"frame"`` numbers, a plain ``.npz``'s ``frames`` or an ``.npz``'s ``timestamps`` array
  (seconds) place each
  frame in time; holes are stepped over as missing frames and a gap over 1 s starts the filter over
  (:class:`~streamssm.pose.filter.PoseFilter` ``timestamps=``). Frame numbers must increase.
* **The frame rate.** ``--fps`` is the filter's rate, in place of the file's: frame numbers count frames at it, and
  timestamps (seconds: an ``.npz``'s ``timestamps``, a video's) place frames on its grid where the recording runs at
  that rate (within 10%); at another rate the frames are taken as ``--fps`` ones, by their frame numbers or one
  after another (the user says what the frames are: a slowed-down clip, a wrong header), with a warning. Without
  ``--fps``, the timestamps of a file without an ``fps`` set the rate (where it is 1-1000 fps); where they run at
  another rate than the file's ``fps``, a warning says so. An ``.npz`` written gets the rate used as its ``fps``, as
  ``.csv``/``.json`` outputs do, unless its timestamps, kept, run at another; converted to ``.csv``/``.json`` its
  timestamps become frame numbers, so the frames dropped stay dropped.
* **Bounded memory.** :meth:`PoseFilter.filter <streamssm.pose.filter.PoseFilter.filter>` scans in chunks
  with the state carried (the same result as one pass), so an hour-long file does not need an hour of scan
  intermediates.
* **The summary** is one line on stdout: frames, keypoints, dims, fps (and where it came from), time,
  and the mean acceleration magnitude ``|x[t+1] - 2 x[t] + x[t-1]|`` before -> after, in % of the body
  size (the median over valid frames of the bounding-box diagonal of the valid keypoints) per frame^2,
  measured on the same valid samples for both.

Errors are ``ValueError``/``FileExistsError`` naming the file; :func:`streamssm.cli.main` prints them
and exits with status 2.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from streamssm.io.pose_files import (SUPPORTED_EXTENSIONS, PoseData, rates_agree, read_pose, timestamp_rate,
                                     write_pose)
from streamssm.io.video import VIDEO_EXTENSIONS  # PyAV itself is imported only to read a video

__all__ = ["run_pose", "mean_acceleration", "image_size"]

log = logging.getLogger("streamssm")

DEFAULT_FPS = 30.0


# --------------------------------------------------------------------------------------- metrics

def _valid(points: np.ndarray, confidence: np.ndarray | None) -> np.ndarray:
    """(t, k) True where a sample is usable: finite coordinates and confidence > 0 (when given)."""
    ok = np.isfinite(points).all(-1)
    if confidence is not None:
        ok &= np.nan_to_num(confidence, nan=0.0) > 0
    return ok


def _body_size(points: np.ndarray, valid: np.ndarray) -> float:
    """Median over frames of the bounding-box diagonal of the valid keypoints (NaN if none), i.e.
    :func:`streamssm.pose.data.body_size` restricted to the valid samples."""
    from streamssm.pose.data import body_size

    size = float(body_size(np.where(valid[..., None], points, np.nan)))
    return size if size > 0 else float("nan")


def mean_acceleration(points: np.ndarray, valid: np.ndarray) -> float:
    """Mean of ``|x[t+1] - 2 x[t] + x[t-1]|`` (t k d -> scalar) over samples valid at all three frames."""
    if points.shape[0] < 3:
        return float("nan")
    acc = np.linalg.norm(points[2:] - 2 * points[1:-1] + points[:-2], axis=-1)
    ok = valid[2:] & valid[1:-1] & valid[:-2] & np.isfinite(acc)
    return float(acc[ok].mean()) if ok.any() else float("nan")


def _accel_text(raw: np.ndarray, out: np.ndarray, valid: np.ndarray) -> str:
    size = _body_size(raw, valid)
    before, after = mean_acceleration(raw, valid), mean_acceleration(out, valid)
    if not (np.isfinite(size) and np.isfinite(before) and np.isfinite(after)):
        return "mean acceleration n/a (too few valid frames)"
    b, a = 100 * before / size, 100 * after / size
    change = f" ({100 * (after - before) / before:+.0f}%)" if before > 0 else ""
    return f"mean acceleration {b:.3g}% -> {a:.3g}% of body size per frame^2{change}"


# ------------------------------------------------------------------------------------ path checks

def _same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` are one file: same resolved path, symlink or hard link."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _check_output(inp: Path, out: Path, overwrite: bool, allowed: tuple[str, ...]) -> None:
    # OpenPose folder in: any name not ending in a file extension is an OpenPose folder out ('out_v1.2' too)
    folder = inp.is_dir() and out.suffix.lower() not in allowed
    if out.suffix.lower() not in allowed and not folder:
        raise ValueError(f"{out}: unknown output extension {out.suffix!r}, expected one of {'/'.join(allowed)}")
    if _same_file(inp, out):
        raise ValueError(f"{out}: output is the input file {inp}; refusing to overwrite it, choose another output path")
    if out.is_dir() and not folder:
        raise ValueError(f"{out}: is a directory, expected an output file path")
    if folder and out.exists() and not out.is_dir():
        raise ValueError(f"{out}: is a file; an OpenPose output is a folder")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:  # write_pose creates missing folders ...
        parent = parent.parent
    if not parent.is_dir():  # ... but not through a file
        raise ValueError(f"{out}: {parent} is a file, not a folder; expected an output path inside a folder")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists; pass --overwrite to replace it")


def _fps(args, file_fps: float | None, inp: Path | None = None, bad: str | None = None) -> tuple[float, str]:
    if args.fps is not None:
        return float(args.fps), "--fps"
    if bad is not None:
        raise ValueError(f"{inp}: its fps ({bad}) is not a positive number of frames per second; pass --fps")
    if file_fps is not None and np.isfinite(file_fps) and file_fps > 0:
        return float(file_fps), "from file"
    return DEFAULT_FPS, "default, file has none"


def _timestamp_rate(data: PoseData) -> float | None:
    """The frame rate an ``.npz``'s ``timestamps`` run at (:func:`~streamssm.io.pose_files.timestamp_rate`), or None."""
    if not data.meta.get("format", "").startswith("npz"):
        return None
    return timestamp_rate(data.meta.get("arrays", {}))


def _timestamps(data: PoseData, inp: Path, fps: float, forced: bool = False) -> tuple[np.ndarray | None, str]:
    """Seconds of each frame and what gave them ("frame numbers" or "timestamps"), or (None, "") when the file has
    neither. Frame numbers count frames, so they become seconds at ``fps`` (the file's or ``--fps``). An npz's
    ``timestamps`` are seconds of the recording: used on the grid of ``fps`` frames a second where the recording
    runs at that rate; ``forced`` (``--fps`` given) and a recording at another rate (a slowed-down clip, a wrong
    header: the user says the frames are ``fps`` ones) would read as dropped or doubled frames there, so the frames
    are then timed by their frame numbers where the file has them, else one after another, with a warning."""
    fmt = data.meta.get("format", "")
    raw, scale, what, source = None, 1.0 / fps, "frame numbers", "frame numbers"
    if data.meta.get("frame_numbers") is not None:  # csv, json, a plain npz's 'frames', OpenPose's file names
        raw = np.asarray(data.meta["frame_numbers"], np.float64)
    numbers = raw
    if fmt.startswith("npz") and "timestamps" in data.meta.get("arrays", {}):
        raw, scale = np.asarray(data.meta["arrays"]["timestamps"], np.float64).reshape(-1), 1.0
        what, source = "'timestamps'", "timestamps"
        if raw.shape != (data.num_frames,):
            raise ValueError(f"{inp}: 'timestamps' has {raw.size} values for {data.num_frames} frames, "
                             "expected one per frame (seconds)")
        rate = _timestamp_rate(data)
        if forced and rate is not None and not rates_agree(rate, fps):
            log.warning("%s: its 'timestamps' run at %.4g fps, not --fps %g: its frames are taken as --fps ones, "
                        "%s, and the timestamps are left out", inp, rate, fps,
                        "by their frame numbers" if numbers is not None else "one after another")
            raw, scale, what, source = numbers, 1.0 / fps, "frame numbers", "frame numbers"
    if raw is None:
        return None, ""
    if not np.isfinite(raw).all():
        raise ValueError(f"{inp}: {what} must be finite numbers")
    bad = np.flatnonzero(np.diff(raw) <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        raise ValueError(f"{inp}: {what} must increase from frame to frame: {raw[i]:g} comes after {raw[i - 1]:g}")
    return raw * scale, source


def _periods(ts: np.ndarray, fps: float, max_gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Frame periods between successive frames (1: no frame dropped) and where the gap restarts the filter:
    :class:`~streamssm.pose.filter.PoseFilter`'s rule, a gap (missing frames) longer than ``max_gap``."""
    periods = np.maximum(1, np.round(np.diff(ts) * fps)).astype(np.int64)
    return periods, (periods > 1) & (periods > max_gap * fps)


def _gap_text(ts: np.ndarray | None, fps: float, max_gap: float, source: str) -> str:
    if ts is None or ts.size < 2:
        return ""
    periods, restart = _periods(ts, fps, max_gap)
    gaps = periods > 1
    if not gaps.any():
        return ""
    restarts = int(restart.sum())
    dropped = int((periods[gaps & ~restart] - 1).sum())
    text = f"; {int(gaps.sum())} gap(s) in the {source} ({dropped} dropped frames stepped over"
    return text + (f", {restarts} gap(s) over {max_gap:g} s restarted the filter)" if restarts else ")")


@contextlib.contextmanager
def _frame_number_hint(inp: Path, ts: np.ndarray | None, fps: float, max_gap: float, source: str):
    """While filtering by frame numbers that make nearly every step a gap over ``max_gap``: say so in terms of frame
    numbers, in place of the filter's warning, whose "timestamps are seconds (milliseconds? divide by 1000)" does
    not fit them (a csv's frame column holding milliseconds needs its values turned into frame numbers; dividing by
    1000 would not do). The condition is the filter's own (over half the steps restart it); its record is recognised
    by its "milliseconds?"."""
    if source != "frame numbers" or ts is None or ts.size < 3:
        yield
        return
    _, restart = _periods(ts, fps, max_gap)
    if 2 * int(restart.sum()) <= ts.size - 1:
        yield
        return
    steps = np.diff(np.round(ts * fps, 6))  # back to frame numbers
    log.warning("%s: %d of the %d steps between frames are gaps over max_gap (%g s), so the filter starts over at "
                "nearly every frame and smooths nothing: frame numbers count frames (median step %g frames at %g "
                "fps); times in milliseconds? turn them into frame numbers (ms * %g / 1000)",
                inp, int(restart.sum()), ts.size - 1, max_gap, float(np.median(steps)), fps, fps)

    def not_the_filters(record: logging.LogRecord) -> bool:
        return "milliseconds?" not in str(record.msg)

    log.addFilter(not_the_filters)
    try:
        yield
    finally:
        log.removeFilter(not_the_filters)


def _read(inp: Path, key: str | None) -> PoseData:
    """read_pose, with every failure turned into a ValueError that names the file."""
    try:
        return read_pose(inp, key=key)
    except (ValueError, OSError) as e:  # UnicodeDecodeError is a ValueError that does not name the file
        msg = str(e) if str(inp) in str(e) else f"{inp}: cannot read pose file ({e})"
        raise ValueError(msg) from e


# ------------------------------------------------------------------------------------------ run

def run_pose(args) -> int:
    """Filter ``args.input`` into ``args.output``; returns the exit status (errors raise, see module doc).

    ``args``: ``input``, ``output``, ``fps``, ``strength``, ``weights``, ``device``, ``key``, ``overwrite``
    (as declared by ``streamssm.cli``). SIGTERM exits with status 143 as Ctrl-C does with 130: what was being
    written is removed (the writers' temporary file) or, for a video, finalised.
    """
    from streamssm.io.video import sigterm_as_exception

    with sigterm_as_exception():
        try:
            return _run_pose(args)
        except SystemExit as e:
            from streamssm.io.video import SIGNAL_EXIT

            if e.code in SIGNAL_EXIT:
                with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
                    print(f"streamssm: terminated ({SIGNAL_EXIT[e.code]})", file=sys.stderr)
            raise


def _run_pose(args) -> int:
    inp, out = Path(args.input), Path(args.output)
    from streamssm._args import as_positive, as_strength

    if args.fps is not None:
        as_positive(args.fps, "--fps", "frames per second")  # the filter's own messages would not name the flags
    as_strength(args.strength, "--strength")
    if inp.suffix.lower() in VIDEO_EXTENSIONS:
        return _run_video(args, inp, out)
    if args.key is not None and inp.suffix.lower() != ".npz" and not inp.is_dir():
        raise ValueError(f"{inp}: --key selects an array in an .npz file or an OpenPose folder; it does not apply to "
                         f"{inp.suffix} files")
    if not inp.exists():
        raise FileNotFoundError(f"{inp}: no such file, expected a pose file ({'/'.join(SUPPORTED_EXTENSIONS)}), an "
                                f"OpenPose output folder or a video ({'/'.join(VIDEO_EXTENSIONS)})")
    _check_output(inp, out, args.overwrite, SUPPORTED_EXTENSIONS)
    data = _read(inp, args.key)
    fps, fps_from = _fps(args, data.fps, inp, data.meta.get("bad_fps"))
    rate = _timestamp_rate(data)
    if args.fps is None and rate is not None and not rates_agree(rate, fps):
        if fps_from == "from file":  # one of the two is wrong (milliseconds taken for seconds?): said, not guessed
            log.warning("%s: its 'timestamps' run at %.4g fps, but its fps says %g: filtered at %g fps (--fps "
                        "chooses)", inp, rate, fps, fps)
        elif 1.0 <= rate <= 1000.0:  # no rate in the file: on the default's grid every step read as dropped frames
            fps, fps_from = rate, "from its timestamps"

    from streamssm.pose.filter import PoseFilter, check_magnitude

    check_magnitude(data.points, str(inp))
    filt = PoseFilter(weights=args.weights, device=args.device, strength=args.strength, fps=fps)
    mediapipe = data.meta.get("format") == "npz-mediapipe"
    conf = None if data.meta.get("visibility") else data.confidence  # visibility is not a weight (module docstring)
    ts, source = _timestamps(data, inp, fps, forced=args.fps is not None)
    image = image_size(data)
    if image is not None and np.nanmax(np.abs(np.where(np.isfinite(data.points[..., :2]), data.points[..., :2],
                                                       np.nan)), initial=0.0) > 4:
        log.warning("%s: gives an image size (%gx%g) but its x, y reach past 4: taken as pixels, not as x, y "
                    "normalised by that size", inp, *image)
        image = None
        data.meta.pop("image_size")  # nor does the output claim it
    openpose_out = data.meta.get("format") == "openpose" and out.suffix.lower() not in SUPPORTED_EXTENSIONS
    t0 = time.perf_counter()
    with _frame_number_hint(inp, ts, fps, filt.max_gap, source):
        if image is not None:
            y = _filter_image_landmarks(filt, data.points, conf, ts, image)
        elif openpose_out:  # OpenPose folder to folder: everyone it followed, as a batch of streams
            from streamssm.io.openpose import everyone

            pts_all, conf_all = everyone(data)
            y_all = filt.filter(pts_all, confidence=conf_all, timestamps=ts)
            y_all = np.where(np.isfinite(pts_all).all(-1, keepdims=True), y_all, np.nan).astype(np.float32)
            y = y_all[:, data.meta["main"]]
        else:
            y = filt.filter(data.points, confidence=conf, timestamps=ts)
    seconds = time.perf_counter() - t0
    # what the input marks missing goes out as the input had it (module docstring: gaps stay gaps); a csv's 0,0 with
    # confidence 0 came back as the filter's estimate with confidence 0. Visibility (conf None here) marks nothing.
    valid = _valid(data.points, conf)
    y = np.where(valid[..., None], y, data.points).astype(np.float32)

    if openpose_out:
        from streamssm.io.openpose import write_openpose

        write_openpose(out, data, data.meta, tracks=y_all)
    else:
        # MediaPipe npz -> npz: confidence None keeps the input's visibility column untouched.
        out_conf = None if (mediapipe and out.suffix.lower() == ".npz") else data.confidence
        out_fps = data.fps if args.fps is None and fps_from != "from its timestamps" else fps
        write_pose(out, PoseData(y, out_conf, out_fps, {}), like=data)

    t, k, d = data.points.shape
    raw, what = data.points, f"{d}-D"
    if image is not None:  # measured as filtered: x, y in pixels (in file units when the size is not known)
        px = np.asarray(image, np.float32)
        raw, y = raw[..., :2] * px, y[..., :2] * px
        what = ("x, y in pixels" if image != (1.0, 1.0) else "x, y") + (" (z filtered apart)" if d == 3 else "")
    people = len(data.meta["tracks"]) if data.meta.get("format") == "openpose" else 1
    folk = f"{people} {'person' if people == 1 else 'people'} followed"
    seen = int(np.isfinite(data.points).all(-1).any(-1).sum())
    who = (f"{folk}, figures for the main one; " if openpose_out else
           f"the main one of {folk}, seen in {seen} of {t} frames; " if people > 1 else "")
    print(f"{inp.name} -> {out}: {t} frames, {k} keypoints, {what}, {fps:g} fps ({fps_from}), "
          f"filtered in {seconds:.2f} s ({1e3 * seconds / t:.2f} ms/frame); {who}{_accel_text(raw, y, valid)}"
          f"{_gap_text(ts, fps, filt.max_gap, source)}")
    return 0


def image_size(data: PoseData) -> tuple[float, float] | None:
    """(width, height) for image landmarks (MediaPipe's x, y normalised by the image's width and height; z, if any,
    a noisy relative depth on x's scale): a MediaPipe ``.npz``'s ``landmarks_*``, or a file converted from one (its
    ``meta["image_size"]``, see :mod:`streamssm.io.pose_files`); (1, 1) when the size is not known. None for
    anything else (world landmarks in metres, plain points)."""
    size = data.meta.get("image_size")
    return None if size is None else (float(size[0]), float(size[1]))


def _filter_image_landmarks(filt, points: np.ndarray, conf, ts, image: tuple[float, float]) -> np.ndarray:
    """Image landmarks: x, y filtered as 2-D in pixels (isotropic, as the filter was trained and as
    ``benchmarks/pose_quality.py`` measures real MediaPipe output), z (when there is one) from a second, 3-D pass
    (x's scale) whose x, y are dropped: filtered together, z's depth noise made x, y rougher (with the weights of
    session 5: mean acceleration 0.64 against 0.42 % of body size on mp_edgetam_cloth_magic)."""
    w, h = image
    xy = points[..., :2] * np.float32([w, h])
    out_xy = filt.filter(xy, confidence=conf, timestamps=ts)
    if points.shape[-1] == 2:
        return out_xy / np.float32([w, h])
    filt.reset()
    xyz = np.concatenate([xy, points[..., 2:3] * np.float32(w)], -1)
    out_z = filt.filter(xyz, confidence=conf, timestamps=ts)[..., 2:3]
    return np.concatenate([out_xy / np.float32([w, h]), out_z / np.float32(w)], -1)


def _run_video(args, inp: Path, out: Path) -> int:
    """Video in: MediaPipe Pose per frame, :meth:`PoseFilter.step` live, overlay video out (raw red,
    filtered green).

    Tested by ``tests/pose/test_cli.py::test_video_overlay_with_mediapipe`` where the mediapipe extra is
    installed (CI does not install it; there the "mediapipe missing" error is tested). Uses the legacy ``mp.solutions.pose``
    API (``model_complexity=1``, ``smooth_landmarks=False`` so that MediaPipe's own smoother does not
    hide the jitter we filter). Landmarks are filtered in pixels (x*w, y*h), i.e. isotropic units.
    """
    if not inp.exists():
        raise FileNotFoundError(f"{inp}: no such file, expected a video ({'/'.join(VIDEO_EXTENSIONS)})")
    try:
        import mediapipe as mp
    except ImportError:
        raise ValueError(f"{inp}: filtering a video needs MediaPipe Pose, which is not installed; "
                         "pip install 'streamssm[mediapipe]' (or run MediaPipe yourself and pass the .npz)") from None
    if args.key is not None:
        raise ValueError(f"{inp}: --key applies to .npz files and OpenPose folders, not to videos")
    _check_output(inp, out, args.overwrite, VIDEO_EXTENSIONS)
    import cv2

    from streamssm.io.video import open_sink, open_source
    from streamssm.pose.filter import PoseFilter

    edges = [tuple(e) for e in mp.solutions.pose.POSE_CONNECTIONS]
    raw_all, out_all = [], []
    seconds = 0.0
    with open_source(inp) as src:
        fps, fps_from = (float(args.fps), "--fps") if args.fps is not None else (src.fps, "from video")
        filt = PoseFilter(weights=args.weights, device=args.device, strength=args.strength, fps=fps)
        timed = args.fps is None or rates_agree(src.fps, fps)
        if not timed:
            log.warning("%s: the video runs at %.4g fps, not --fps %g: its frames are taken as --fps ones, one after "
                        "another, and its timestamps are left out", inp, src.fps, fps)
        w, h = src.width, src.height
        with mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1, smooth_landmarks=False) as pose, \
                open_sink(out, fps=src.rate, width=w, height=h, overwrite=args.overwrite, protected=[inp],
                          audio_from=inp if src.audio else None) as sink:
            for frame in src:
                res = pose.process(frame.rgb)
                raw = np.full((33, 2), np.nan, np.float32)  # no detection: all missing, the filter holds
                if res.pose_landmarks is not None:
                    raw = np.array([[lm.x * w, lm.y * h] for lm in res.pose_landmarks.landmark], np.float32)
                t0 = time.perf_counter()
                # the video's timestamps place its frames on the filter's grid where they run at its rate (see
                # _timestamps); a forced --fps of another rate takes the frames one after another
                y = filt.step(raw, timestamp=frame.timestamp if timed else None)
                seconds += time.perf_counter() - t0
                raw_all.append(raw)
                out_all.append(y)
                img = frame.rgb.copy()  # drawn on; the decoder may reuse its buffer
                for pts, colour in ((raw, (255, 0, 0)), (y, (0, 255, 0))):  # RGB: raw red, filtered green
                    for a, b in edges:
                        if np.isfinite(pts[[a, b]]).all():
                            cv2.line(img, tuple(int(v) for v in pts[a]), tuple(int(v) for v in pts[b]), colour, 2,
                                     cv2.LINE_AA)
                sink.write(img, frame.timestamp)
            sink.hold_last_until(src.end)  # the whole video was read: its sound is kept whole, as is its last frame
    if not raw_all:
        raise ValueError(f"{inp}: no frames decoded")
    raw_all, out_all = np.stack(raw_all), np.stack(out_all)
    t = len(raw_all)
    print(f"{inp.name} -> {out}: {t} frames, 33 keypoints, 2-D, {fps:g} fps ({fps_from}), "
          f"filtered in {seconds:.2f} s ({1e3 * seconds / t:.2f} ms/frame); "
          f"{_accel_text(raw_all, out_all, _valid(raw_all, None))}")
    return 0
