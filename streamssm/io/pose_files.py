"""Read and write pose sequences: ``.npz``, ``.csv``, ``.json`` and OpenPose output folders.

Shapes: ``t`` frames, ``k`` keypoints, ``d`` coordinates (2 or 3). Missing values are NaN.

Formats
-------
``.npz``, MediaPipe layout (as written by the shared ``mp_edgetam_*.npz`` files): ``landmarks_raw``
    (t, 33, 4) = x, y (normalised to the image), z, visibility; other keys (``fps``, ``width``,
    ``world_landmarks_raw``, ``landmarks_smoothed``, ...) are kept. :func:`read_pose` takes
    ``points`` = the first 3 columns of ``key`` (default ``landmarks_raw``, or pass e.g.
    ``key="world_landmarks_raw"``) and ``confidence`` = visibility (NaN -> 0).
    :func:`write_pose` writes **every key of the input file unchanged** (but ``fps``, set to the data's
    when that is another rate: the one the points were filtered at) plus ``<stem>_filtered``
    (``landmarks_raw`` -> ``landmarks_filtered``, ``world_landmarks_raw`` -> ``world_landmarks_filtered``):
    a (t, 33, 4) float32 copy of the input key whose first ``d`` columns are replaced by the new points
    and whose 4th column is the new confidence (or the input visibility when ``confidence`` is None),
    and ``filtered_from`` = the input key name. Read the result back with ``key="landmarks_filtered"``.
    A (t, k, 5) ``key`` (MediaPipe Tasks: x, y, z, visibility, presence) reads the same way; its 5th column is kept.
``.npz``, plain layout: ``points`` (t, k, d), optional ``confidence`` (t, k), optional ``fps``, optional
    ``frames`` (t,) frame numbers, ``joint_names`` (k,) and ``confidence_kind`` ("visibility": see below).
    Written back with the new values; other input keys are copied. ``key`` may name another (t, k, 2 or 3) array
    (a 3-D lifter's ``keypoints``, say), read and written back under its own name; 3 columns are x, y, z (keep
    x, y, confidence triples as ``points`` and ``confidence``).
``.csv``, long format: optional first line ``# fps=<float>`` (``# FPS: 25`` reads too), then the header
    ``frame,joint,x,y[,z][,confidence]`` and one row per (frame, joint). ``joint`` is an integer ID (sorted; IDs
    other than 0, 1, 2, ... are kept as the joint names "0", "5", ..., so a conversion keeps them and they come back
    to csv as numbers) or a name (names are kept in order of first appearance), ``frame`` a number. Every frame must
    list the same joints.
    Empty or ``nan`` cells are missing. Written in the same layout, with the input's frame numbers. The last
    column may be ``visibility`` instead (MediaPipe's, read as ``confidence`` but marked, see below).
``.json``::

    {"fps": 30.0,                  # optional
     "dims": 2,                    # optional; required when keypoints have 3 numbers
     "joints": ["nose", ...],      # optional joint names
     "frames": [{"frame": 0,       # optional; other per-frame keys are preserved
                 "keypoints": [[x, y], ...]}, ...]}

    Each keypoint is ``[x, y]``, ``[x, y, c]`` (dims 2), ``[x, y, z]`` (dims 3) or ``[x, y, z, c]``;
    ``null`` marks a missing value. Other top-level keys are preserved. ``"confidence_kind": "visibility"``
    marks ``c`` as MediaPipe's visibility.

An OpenPose output folder (per-frame ``*_keypoints.json`` files) reads as one person's (t, k, 2) points with
OpenPose's confidence, and writes back as such a folder (an output path not ending in .npz/.csv/.json, such as
``out`` or ``out_v1.2``): see :mod:`streamssm.io.openpose`.

**Image landmarks.** MediaPipe's image landmarks are x, y normalised by the image's width and height (not the same
unit across and down). A MediaPipe ``.npz`` (keys other than ``*world*``) gives ``meta["image_size"]`` = its
``width``, ``height`` ((1, 1) when it has none); the other formats carry it when converted: a ``.csv``'s first line
``# fps=24 width=1280 height=720``, a ``.json``'s ``"image_size": [1280, 720]``, a plain ``.npz``'s ``image_size``.
The pose CLI filters such points in pixels (:func:`streamssm.pose.cli.image_size`): a file that gives the image size
is taken to hold x, y normalised by it.

Converting between formats keeps the frame numbers, the joint names (a csv's joint IDs), the image size, and whether
the confidence is MediaPipe's visibility (``meta["visibility"]``: the pose CLI does not weigh by it, whichever file it
comes from).
A file's ``fps`` that is not a positive number reads as None, with ``meta["bad_fps"]`` saying what it was.

An ``.npz``'s other arrays are read when asked for (``meta["arrays"]``, see :class:`_NpzArrays`), not with the points:
writing the result back reads them from the input file then.

Errors (empty file, no frame or no keypoint, missing keys or columns, inconsistent joint counts, frame numbers or
joint names that do not fit the points, JSON nested too deeply, unknown extension) raise ``ValueError`` naming the
file and what was expected. Writers write a temporary file in the target
folder and ``os.replace`` it into place, and refuse to overwrite the file the data was read from.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamssm.io.video import _disk_error, special_file

__all__ = ["PoseData", "PoseLimitError", "read_pose", "write_pose", "SUPPORTED_EXTENSIONS"]

SUPPORTED_EXTENSIONS = (".npz", ".csv", ".json")


@dataclass
class PoseData:
    """A pose sequence.

    Attributes:
        points: (t, k, d) float32, NaN where missing.
        confidence: (t, k) float32 in [0, 1] or None.
        fps: frames per second or None.
        meta: what the writer needs to reproduce the input's layout (``format``, ``source``, extra keys).

    >>> d = PoseData(np.zeros((3, 2, 2), np.float32))
    >>> d.num_frames, d.num_keypoints, d.dims
    (3, 2, 2)
    """

    points: np.ndarray
    confidence: np.ndarray | None = None
    fps: float | None = None
    meta: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_keypoints(self) -> int:
        return int(self.points.shape[1])

    @property
    def dims(self) -> int:
        return int(self.points.shape[2])


def _err(path, what: str) -> ValueError:
    return ValueError(f"{path}: {what}")


def _file_fps(path: Path, value, meta: dict) -> float | None:
    """A file's frame rate: a positive finite number, or None. Anything else (0, negative, inf, a list, true) is
    None with ``meta["bad_fps"]`` set to what the file holds, so a caller with no rate of its own can refuse it
    naming the file (the pose CLI: pass --fps) instead of running at a default the file contradicts."""
    if value is None:
        return None
    try:
        ok = not isinstance(value, (bool, np.bool_, list, tuple, dict)) and np.size(value) == 1  # "30" is fine
        fps = float(np.asarray(value, dtype=np.float64).reshape(-1)[0]) if ok else math.nan
    except (TypeError, ValueError):
        fps = math.nan
    if math.isfinite(fps) and fps > 0:
        return fps
    meta["bad_fps"] = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return None


def _ext(path: Path) -> str:
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise _err(path, f"unknown pose file extension {ext!r}, expected one of {SUPPORTED_EXTENSIONS}")
    return ext


def read_pose(path: str | os.PathLike, key: str | None = None, limit: tuple[int, int] | None = None) -> PoseData:
    """Read a pose file (format from the extension; see the module docstring).

    ``limit``: (frames, keypoints) at most, else :class:`PoseLimitError` (a ``ValueError``); an ``.npz``'s points are
    measured by their header, before their data is read (a server taking uploads: a compressed array of zeros
    is small on disk and not in memory). None: no limit.
    """
    path = Path(path)
    if path.is_dir():
        from streamssm.io.openpose import is_openpose_folder, read_openpose

        if not is_openpose_folder(path):
            raise _err(path, f"is a directory without OpenPose '*_keypoints.json' files; expected a pose file "
                             f"({'/'.join(SUPPORTED_EXTENSIONS)}) or an OpenPose output folder")
        data = read_openpose(path, key)
        data.meta["source"] = str(path.resolve())
        return data
    ext = _ext(path)
    if not path.exists():
        raise _err(path, "no such file")
    if path.stat().st_size == 0:
        raise _err(path, f"empty file, expected {ext} pose data")
    try:
        if ext == ".npz":
            data = _read_npz(path, key, limit)
        elif ext == ".csv":
            data = _read_csv(path)
        else:
            data = _read_json(path)
    except UnicodeDecodeError:
        raise _err(path, f"is not UTF-8 text (a binary file?), expected {ext} pose data") from None
    except OSError as e:
        raise _err(path, f"cannot read ({e.strerror or e})") from None
    _check_not_empty(path, data)
    _check_limit(path, data.num_frames, data.num_keypoints, limit)
    data.meta["source"] = str(path.resolve())
    return data


def _check_not_empty(path: Path, data: PoseData) -> None:
    """ValueError naming the file when it holds no frame or no keypoint (an npz's (0, k, d) or (t, 0, d) array):
    the filter would refuse it without saying which file."""
    if data.num_frames == 0 or data.num_keypoints == 0:
        key = data.meta.get("key")
        what = (f"{key!r} has shape {data.points.shape}" if key else
                f"{data.num_frames} frames x {data.num_keypoints} keypoints")
        raise _err(path, f"no pose data: {what}, expected at least one frame and one keypoint")


# ---------------------------------------------------------------------------------------------- npz

class _NpzArrays(Mapping):
    """The arrays of an ``.npz``, each read from the file when first asked for (and kept): ``meta["arrays"]``.

    A pose file may hold other arrays beside its points; reading them all to filter the points let a small
    compressed file take ~1000x its size in memory (a 391 kB archive of zeros held 400 MB, an audit of the demo).
    The reader reads the points and the small arrays they use; the others are read by whoever asks for them (the
    writer, which copies every key of the input; the pose CLI's ``timestamps``), from the file, so it must still be
    there. Shape and dtype come from each ``.npy`` header (:meth:`header`) without reading the data. Nothing is ever
    unpickled.
    """

    def __init__(self, path: Path):
        import zipfile

        self._path = path.resolve()  # a later chdir must not point it at another file
        with _npz_errors(path), zipfile.ZipFile(path) as zf:
            members = zf.namelist()
        self._stamp = _stamp(self._path)
        # np.load's keys: a member's name without its .npy
        self._members = {m[: -len(".npy")] if m.endswith(".npy") else m: m for m in members}
        self._loaded: dict[str, np.ndarray] = {}

    def __iter__(self):
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, key) -> bool:
        return key in self._members

    @contextlib.contextmanager
    def _member(self, key: str):
        import zipfile

        if _stamp(self._path) != self._stamp:  # its other arrays would not go with the points read
            raise _err(self._path, f"changed or went away since it was read (reading its {key!r}); expected the "
                                   "same file until the result is written")
        with _npz_errors(self._path), zipfile.ZipFile(self._path) as zf, zf.open(self._members[key]) as f:
            yield f

    def header(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        """``key``'s shape and dtype, from its ``.npy`` header: no data read."""
        from numpy.lib import format as npy

        with self._member(key) as f:
            try:
                version = npy.read_magic(f)
            except ValueError:
                raise _err(self._path, f"{key!r} is not a numpy array; expected arrays of numbers") from None
            # 3.0 differs from 2.0 only in allowing utf-8 field names
            shape, _, dtype = (npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0)(f)
        return tuple(shape), dtype

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._members:
            raise KeyError(key)
        if key not in self._loaded:
            from numpy.lib import format as npy

            if self.header(key)[1].hasobject:
                raise _err(self._path, f"cannot read {key!r} as .npz (it holds object arrays, which are never "
                                       "unpickled); expected arrays of numbers")
            with self._member(key) as f:
                self._loaded[key] = npy.read_array(f, allow_pickle=False)
        return self._loaded[key]

    def small(self, key: str):
        """``key``'s array when it is small (a few numbers or a short text: fps, width, ...), else a description of
        it: an array of a million frame rates is not read to be refused."""
        shape, dtype = self.header(key)
        if math.prod(shape) > 16 or dtype.itemsize > 1024 or dtype.hasobject:
            return f"<{dtype} array of shape {shape}>"
        return self[key]


def _stamp(path: Path) -> tuple | None:
    """``path``'s identity and version (device, inode, size, modification time), None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@contextlib.contextmanager
def _npz_errors(path: Path):
    """zipfile / format errors (a damaged member, a zip that is not an npz) as a ValueError naming the file."""
    import zipfile
    import zlib

    try:
        yield
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as e:
        if isinstance(e, ValueError) and str(e).startswith(f"{path}: "):
            raise  # ours
        raise _err(path, f"cannot read as .npz ({e})") from None


class PoseLimitError(ValueError):
    """A pose file holds more frames or keypoints than the caller's ``limit`` (:func:`read_pose`)."""

    def __init__(self, path, frames: int, keypoints: int, limit: tuple[int, int]):
        self.frames, self.keypoints, self.limit = frames, keypoints, limit
        super().__init__(f"{path}: {frames} frames x {keypoints} keypoints, more than the {limit[0]} frames and "
                         f"{limit[1]} keypoints read here")


def _check_limit(path: Path, t: int, k: int, limit: tuple[int, int] | None) -> None:
    if limit is not None and (t > limit[0] or k > limit[1]):
        raise PoseLimitError(path, t, k, limit)


def _read_npz(path: Path, key: str | None, limit: tuple[int, int] | None = None) -> PoseData:
    import zipfile

    # an .npz is a zip of .npy files; np.load takes anything else for a pickle, and its message then suggests
    # loading it unsafely: never for a file of unknown origin
    with open(path, "rb") as f:  # opened here: an unreadable file is a read error, not "not a zip"
        is_zip = zipfile.is_zipfile(f)
    if not is_zip:
        raise _err(path, "is not a valid .npz (zip) file, expected numpy.savez output with a 'points' or "
                         "'landmarks_raw' array")
    arrays = _NpzArrays(path)
    if key is not None and key not in arrays:
        raise _err(path, f"key {key!r} (--key) is not in the file; it has {sorted(arrays)}")
    if key is None:
        key = "landmarks_raw" if "landmarks_raw" in arrays else "points" if "points" in arrays else None
    if key is None:
        raise _err(path, f"expected key 'landmarks_raw' (MediaPipe layout) or 'points' (plain layout), found "
                         f"{sorted(arrays)} (--key names another array)")
    # shape, dtype and size from the header: an array refused (or over the caller's limit) is never read
    shape, dtype = arrays.header(key)
    if dtype.hasobject:
        raise _err(path, "cannot read as .npz (it holds object arrays, which are never unpickled); expected arrays "
                         "of numbers")
    mediapipe = key != "points" and not (len(shape) == 3 and shape[-1] in (2, 3))
    if mediapipe and (len(shape) != 3 or shape[-1] not in (4, 5)):
        raise _err(path, f"expected {key!r} of shape (t, k, 2 or 3) = points, or (t, k, 4 or 5) = x, y, z, "
                         f"visibility[, presence] (MediaPipe), got {shape}")
    if not mediapipe and (len(shape) != 3 or shape[-1] not in (2, 3)):
        raise _err(path, f"expected 'points' of shape (t, k, 2 or 3), got {shape}")
    if not np.issubdtype(dtype, np.number):
        raise _err(path, f"expected numbers in {key!r}, got dtype {dtype}")
    _check_limit(path, shape[0], shape[1], limit)
    arr = np.asarray(arrays[key])
    if mediapipe:
        conf = np.nan_to_num(arr[..., 3].astype(np.float32), nan=0.0)
        meta = {"format": "npz-mediapipe", "key": key, "arrays": arrays, "visibility": True}
        # image landmarks, x and y normalised by the image's width and height; world ones (world_landmarks_raw,
        # MediaPipe Tasks' pose_world_landmarks) are metres
        if "world" not in key:
            meta["image_size"] = _image_size(arrays)
        fps = _file_fps(path, arrays.small("fps") if "fps" in arrays else None, meta)
        return PoseData(arr[..., :3].astype(np.float32), conf, fps, meta)
    conf = None
    if "confidence" in arrays:
        cshape, cdtype = arrays.header("confidence")
        if cshape != arr.shape[:2]:
            raise _err(path, f"expected 'confidence' of shape {arr.shape[:2]}, got {cshape}")
        if not (np.issubdtype(cdtype, np.number) or cdtype == bool):
            raise _err(path, f"expected numbers in 'confidence', got dtype {cdtype}")
        conf = arrays["confidence"]
    kind = arrays.small("confidence_kind") if "confidence_kind" in arrays else ""
    meta = {"format": "npz-plain", "key": key, "arrays": arrays, "visibility": str(kind) == "visibility"}
    # frame numbers and joint names that do not fit the points are refused, not dropped: a frame short means the
    # file is not what its writer meant, and frames placed by the wrong numbers are filtered at the wrong times
    if "frames" in arrays:
        fshape, fdtype = arrays.header("frames")
        if fshape != arr.shape[:1] or not np.issubdtype(fdtype, np.number):
            raise _err(path, f"'frames' has shape {fshape} ({fdtype}) for the {arr.shape[0]} frames of "
                             f"{key!r}, expected one frame number per frame")
        meta["frame_numbers"] = arrays["frames"].tolist()
    if "joint_names" in arrays:
        nshape, ndtype = arrays.header("joint_names")
        if nshape != arr.shape[1:2] or ndtype.kind != "U" or ndtype.itemsize > 4 * 1024:
            raise _err(path, f"'joint_names' has shape {nshape} ({ndtype}) for the {arr.shape[1]} keypoints "
                             f"of {key!r}, expected one name (text, up to 1024 characters) per keypoint")
        meta["joint_names"] = arrays["joint_names"].tolist()
    if "image_size" in arrays:
        given = arrays.small("image_size")
        size = np.zeros(0)
        if isinstance(given, np.ndarray) and np.issubdtype(given.dtype, np.number):
            size = np.asarray(given, np.float64).reshape(-1)
        if size.shape != (2,) or not (np.isfinite(size).all() and (size > 0).all()):
            raise _err(path, f"expected 'image_size' as (width, height) in pixels, got {given!r}")
        meta["image_size"] = (float(size[0]), float(size[1]))
    fps = _file_fps(path, arrays.small("fps") if "fps" in arrays else None, meta)
    return PoseData(arr.astype(np.float32), None if conf is None else conf.astype(np.float32), fps, meta)


def _image_size(arrays: _NpzArrays) -> tuple[float, float]:
    """An npz's ``width``, ``height`` (pixels) when both are positive numbers, else (1, 1): normalised units."""
    try:
        w, h = float(arrays.small("width")), float(arrays.small("height"))
    except (KeyError, TypeError, ValueError):
        return (1.0, 1.0)
    return (w, h) if math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0 else (1.0, 1.0)


def timestamp_rate(arrays: Mapping) -> float | None:
    """The frame rate an ``.npz``'s ``timestamps`` (seconds) run at: one over their median step; None without them,
    or where that is not a positive number (the pose CLI's checks then say what is wrong with them)."""
    if "timestamps" not in arrays:
        return None
    try:
        steps = np.diff(np.asarray(arrays["timestamps"], np.float64).reshape(-1))
    except (TypeError, ValueError):
        return None
    med = float(np.median(steps)) if steps.size else 0.0
    return 1.0 / med if math.isfinite(med) and med > 0 else None


def rates_agree(rate: float, fps: float) -> bool:
    """Whether a recording's frame rate is ``fps`` (within 10%): its timestamps can then place frames on that grid."""
    return abs(rate / fps - 1.0) <= 0.1


def _timestamps_at(arrays: Mapping, fps: float) -> bool:
    """Whether an ``.npz``'s ``timestamps``, if it has them, run at ``fps``. Where they run at another rate the file's
    ``fps`` stays as it was: a new one would contradict them (the pose CLI leaves such timestamps out when ``--fps``
    says otherwise, and the output keeps them, as the input's)."""
    if "timestamps" not in arrays:
        return True
    rate = timestamp_rate(arrays)
    return rate is not None and rates_agree(rate, fps)


def _frames_from_timestamps(arrays: Mapping, fps: float) -> list[int] | None:
    """An ``.npz``'s ``timestamps`` (seconds) as frame numbers at ``fps``, for a format that has only frame numbers
    (.csv, .json: a conversion kept none, and the frames dropped went with them); None where there are none, where
    they run at another rate, or where two would share a number."""
    if "timestamps" not in arrays or not _timestamps_at(arrays, fps):
        return None
    nums = np.round(np.asarray(arrays["timestamps"], np.float64).reshape(-1) * fps)
    return [int(n) for n in nums] if nums.size and (np.diff(nums) > 0).all() else None


def _write_npz(f, path: Path, data: PoseData, meta: dict) -> None:
    arrays = dict(meta.get("arrays", {}))
    if meta.get("format") == "npz-mediapipe":
        key = meta["key"]
        base = np.array(arrays[key], dtype=np.float32, copy=True)
        if base.shape[:2] != data.points.shape[:2]:
            raise _err(path, f"expected {base.shape[:2]} frames x keypoints like the input, got {data.points.shape[:2]}")
        base[..., : data.dims] = data.points
        if data.confidence is not None:
            base[..., 3] = data.confidence
        if data.fps is not None and _file_fps(path, arrays.get("fps"), {}) != data.fps \
                and _timestamps_at(arrays, data.fps):
            arrays["fps"] = np.float64(data.fps)  # the rate used, as .csv/.json write it; the same rate keeps the key
        stem = key[: -len("_raw")] if key.endswith("_raw") else key
        arrays[f"{stem}_filtered"] = base
        arrays["filtered_from"] = np.array(key)
    else:
        arrays[meta.get("key", "points")] = data.points.astype(np.float32)
        if data.confidence is not None:
            arrays["confidence"] = data.confidence.astype(np.float32)
        else:
            arrays.pop("confidence", None)
        if data.fps is not None and _timestamps_at(arrays, data.fps):  # never one its timestamps contradict
            arrays["fps"] = np.float64(data.fps)
        frames = meta.get("frame_numbers")
        if frames is not None and len(frames) == data.num_frames:
            arrays["frames"] = np.asarray(frames)
        names = meta.get("joint_names")
        if names is not None and len(names) == data.num_keypoints:
            arrays["joint_names"] = np.asarray(names, dtype=str)
        if data.confidence is not None and meta.get("visibility"):
            arrays["confidence_kind"] = np.array("visibility")
        else:
            arrays.pop("confidence_kind", None)
        if meta.get("image_size") is not None:
            arrays["image_size"] = np.asarray(meta["image_size"], np.float64)
    np.savez(f, **arrays)


# ---------------------------------------------------------------------------------------------- csv

def _num(s: str) -> float:
    s = s.strip()
    return math.nan if s == "" or s.lower() == "nan" else float(s)


_TAG = r"(fps|width|height)\s*[=:]\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![^\s,;])"
_TAGS = r"#\s*(?:" + _TAG + r"\s*[,;]?\s*)+"


def _csv_tags(path: Path, line: str, meta: dict) -> float | None:
    """A csv's first line ``# fps=<number>[ width=<px> height=<px>]`` (``=`` or ``:``, any case): the fps, and
    ``meta["image_size"]`` when both width and height are there."""
    want = "'# fps=<number>' (optionally followed by width=<px> height=<px>)"
    if not re.fullmatch(_TAGS, line, re.IGNORECASE):
        raise _err(path, f"expected {want} on the first line, got {line!r}")
    tags = {k.lower(): v for k, v in re.findall(_TAG, line, re.IGNORECASE)}
    try:
        vals = {k: float(v) for k, v in tags.items()}
    except ValueError:
        raise _err(path, f"expected {want} on the first line, got {line!r}") from None
    if ("width" in vals) != ("height" in vals) or not all(math.isfinite(vals.get(k, 1)) and vals.get(k, 1) > 0
                                                          for k in ("width", "height")):
        raise _err(path, f"expected both width and height, positive, on the first line, got {line!r}")
    if "width" in vals:
        meta["image_size"] = (vals["width"], vals["height"])
    return _file_fps(path, vals["fps"], meta) if "fps" in vals else None


def _read_csv(path: Path) -> PoseData:
    text = path.read_text(encoding="utf-8-sig")  # -sig: a spreadsheet's byte-order mark is not part of the header
    lines = text.splitlines()
    fps = None
    meta: dict = {}
    if lines and lines[0].startswith("#"):
        # '# fps=30', '# FPS: 30 width=1280 height=720'; another comment ('# height: 1.8 m') is only a comment
        if re.match(r"#\s*fps\s*[=:]", lines[0], re.IGNORECASE) or re.fullmatch(_TAGS, lines[0], re.IGNORECASE):
            fps = _csv_tags(path, lines[0], meta)
        lines = lines[1:]
    rows = list(csv.reader(lines))
    if not rows or not any(rows):
        raise _err(path, "empty file, expected header 'frame,joint,x,y[,z][,confidence]'")
    header = [h.strip().lower() for h in rows[0]]
    visibility = bool(header) and header[-1] == "visibility"  # MediaPipe's: kept, but not a weight (pose CLI)
    if visibility:
        header = header[:-1] + ["confidence"]
    valid_headers = (["frame", "joint", "x", "y"], ["frame", "joint", "x", "y", "z"],
                     ["frame", "joint", "x", "y", "confidence"], ["frame", "joint", "x", "y", "z", "confidence"])
    if header not in [list(h) for h in valid_headers]:
        raise _err(path, f"expected header 'frame,joint,x,y[,z][,confidence or visibility]', got {','.join(header)!r}")
    dims = 3 if "z" in header else 2
    has_conf = "confidence" in header
    body = [r for r in rows[1:] if r]
    if not body:
        raise _err(path, "no data rows after the header")
    frames: dict[int, dict] = {}
    joint_ids: dict[str, int] = {}
    for n, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise _err(path, f"line {n}: expected {len(header)} columns ({','.join(header)}), got {len(r)}")
        try:
            fr = float(r[0])
            vals = [_num(v) for v in r[2:]]
        except ValueError:
            raise _err(path, f"line {n}: expected a frame number and numeric values, got {r}") from None
        if not math.isfinite(fr):
            raise _err(path, f"line {n}: expected a finite frame number, got {r[0]!r}")
        fr = int(fr) if fr.is_integer() else fr
        joint_ids.setdefault(r[1].strip(), len(joint_ids))
        row = frames.setdefault(fr, {})
        if r[1].strip() in row:
            raise _err(path, f"line {n}: frame {fr} joint {r[1].strip()!r} appears twice, expected one row per (frame, joint)")
        row[r[1].strip()] = vals
    names = list(joint_ids)
    counts = {len(v) for v in frames.values()}
    if len(counts) != 1:
        raise _err(path, f"inconsistent joint counts per frame {sorted(counts)}, expected every frame to list "
                         f"the same {len(names)} joints")
    numeric = all(j.lstrip("-").isdigit() for j in names)
    order = sorted(names, key=int) if numeric else names
    # IDs other than 0..k-1 (COCO's 0, 5, 11, 12 picked out) are the joints' names: the other formats number joints
    # 0..k-1, so a conversion would renumber them otherwise
    named = not numeric or order != [str(i) for i in range(len(order))]
    frame_ids = sorted(frames)
    arr = np.full((len(frame_ids), len(order), dims + has_conf), np.nan, np.float32)
    for i, fr in enumerate(frame_ids):
        f = frames[fr]
        if set(f) != set(order):
            raise _err(path, f"frame {fr}: inconsistent joints, expected the same joints as the first frame")
        arr[i] = [f[j] for j in order]
    conf = np.nan_to_num(arr[..., dims], nan=0.0) if has_conf else None
    meta.update({"format": "csv", "frame_numbers": frame_ids, "joints": order,
                 "joint_names": order if named else None, "visibility": visibility})
    return PoseData(arr[..., :dims], conf, fps, meta)


def _frame_text(v) -> str:
    """A frame number as the csv holds it: whole numbers without a decimal point (a json's 2.0 -> "2")."""
    v = float(v)
    return str(int(v)) if v.is_integer() else repr(v)


def _fmt(v: float) -> str:
    return "" if not np.isfinite(v) else repr(float(v))


def _write_csv(f, path: Path, data: PoseData, meta: dict) -> None:
    t, k, d = data.points.shape
    frames = meta.get("frame_numbers")
    if frames is None or len(frames) != t:
        frames = list(range(t))
    joints = meta.get("joints") if meta.get("format") == "csv" else meta.get("joint_names")
    if joints is None or len(joints) != k:
        joints = [str(i) for i in range(k)]
    buf = io.StringIO()
    size = meta.get("image_size")
    tags = ([f"fps={data.fps!r}"] if data.fps is not None else []) + \
        ([f"width={size[0]:g} height={size[1]:g}"] if size is not None else [])
    if tags:
        buf.write(f"# {' '.join(tags)}\n")
    w = csv.writer(buf, lineterminator="\n")
    conf_col = "visibility" if meta.get("visibility") else "confidence"
    w.writerow(["frame", "joint", "x", "y"] + (["z"] if d == 3 else [])
               + ([conf_col] if data.confidence is not None else []))
    for i in range(t):
        for j in range(k):
            row = [_frame_text(frames[i]), joints[j]] + [_fmt(v) for v in data.points[i, j]]
            if data.confidence is not None:
                row.append(_fmt(data.confidence[i, j]))
            w.writerow(row)
    f.write(buf.getvalue().encode("utf-8"))


# --------------------------------------------------------------------------------------------- json

def _read_json(path: Path) -> PoseData:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:  # '[[[[...' thousands deep: Python's parser gives up
        raise _err(path, "JSON nested too deeply, expected {'frames': [{'keypoints': [[x, y, ...], ...]}]}") from None
    except json.JSONDecodeError as e:
        raise _err(path, f"invalid JSON ({e}), expected {{'frames': [{{'keypoints': [[x, y, ...], ...]}}]}}") from None
    if isinstance(doc, dict) and isinstance(doc.get("people"), list) and "frames" not in doc:
        raise _err(path, "is one frame of OpenPose output ('people'): pass the folder of its '*_keypoints.json' "
                         "files, one a frame")
    if not isinstance(doc, dict) or not isinstance(doc.get("frames"), list):
        raise _err(path, "expected a JSON object with a 'frames' list")
    frames = doc["frames"]
    if not frames:
        raise _err(path, "empty 'frames' list, expected at least one frame")
    kps = []
    for i, fr in enumerate(frames):
        if not isinstance(fr, dict) or not isinstance(fr.get("keypoints"), list):
            raise _err(path, f"frame {i}: expected an object with a 'keypoints' list")
        kps.append(fr["keypoints"])
    counts = {len(k) for k in kps}
    if len(counts) != 1:
        raise _err(path, f"inconsistent joint counts per frame {sorted(counts)}, expected the same number in every frame")
    widths = {len(p) if isinstance(p, list) else -1 for k in kps for p in k}
    if len(widths) != 1 or widths.pop() not in (2, 3, 4):
        raise _err(path, "expected every keypoint to be a list of 2, 3 or 4 numbers of the same length")
    width = len(kps[0][0]) if kps[0] else 2
    dims = doc.get("dims")
    if width == 3 and dims not in (2, 3):
        raise _err(path, "keypoints have 3 numbers: expected top-level 'dims' (2 = x,y,c or 3 = x,y,z)")
    if dims is not None and (dims not in (2, 3) or isinstance(dims, bool) or (width, dims) in ((2, 3), (4, 2))):
        raise _err(path, f"'dims' is {dims!r} but keypoints have {width} numbers: expected dims 2 with [x, y] or "
                         "[x, y, c], 3 with [x, y, z] or [x, y, z, c]")
    dims = 2 if width == 2 else 3 if width == 4 else int(dims)
    has_conf = width > dims
    try:
        arr = np.array([[[math.nan if v is None else float(v) for v in p] for p in k] for k in kps], np.float32)
    except (TypeError, ValueError):
        raise _err(path, "expected numbers or null in 'keypoints'") from None
    arr = arr.reshape(len(kps), -1, width)
    conf = np.nan_to_num(arr[..., dims], nan=0.0) if has_conf else None
    top = {k: v for k, v in doc.items() if k not in ("frames", "fps", "dims", "confidence_kind", "image_size")}
    per_frame = [{k: v for k, v in fr.items() if k != "keypoints"} for fr in frames]
    meta = {"format": "json", "top": top, "per_frame": per_frame,
            "visibility": has_conf and doc.get("confidence_kind") == "visibility"}
    nums = [f.get("frame") for f in per_frame]
    if all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in nums):
        meta["frame_numbers"] = nums
    names = doc.get("joints")
    if names is not None:
        if not (isinstance(names, list) and len(names) == arr.shape[1] and all(isinstance(n, str) for n in names)):
            got = f"{len(names)} entries" if isinstance(names, list) else type(names).__name__
            raise _err(path, f"'joints' has {got} for {arr.shape[1]} keypoints, expected a list of one name (text) "
                             "per keypoint")
        meta["joint_names"] = names
    size = doc.get("image_size")
    if size is not None:
        ok = isinstance(size, list) and len(size) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in size)
        if not ok:
            raise _err(path, f"expected 'image_size' as [width, height] in pixels, got {size!r}")
        meta["image_size"] = (float(size[0]), float(size[1]))
    return PoseData(arr[..., :dims], conf, _file_fps(path, doc.get("fps"), meta), meta)


def _write_json(f, path: Path, data: PoseData, meta: dict) -> None:
    t, k, d = data.points.shape
    doc = dict(meta.get("top", {})) if meta.get("format") == "json" else {}
    if data.fps is not None:
        doc["fps"] = float(data.fps)
    doc["dims"] = d
    names = meta.get("joint_names")
    if meta.get("format") != "json" and names is not None and len(names) == k:
        doc["joints"] = list(names)
    if data.confidence is not None and meta.get("visibility"):
        doc["confidence_kind"] = "visibility"
    if meta.get("image_size") is not None:
        doc["image_size"] = [float(v) for v in meta["image_size"]]
    per_frame = meta.get("per_frame") if meta.get("format") == "json" else None
    if per_frame is None or len(per_frame) != t:
        frames = meta.get("frame_numbers")
        frames = frames if frames is not None and len(frames) == t else range(t)
        per_frame = [{"frame": n} for n in frames]
    out = []
    for i in range(t):
        vals = data.points[i] if data.confidence is None else np.concatenate([data.points[i], data.confidence[i][:, None]], -1)
        kp = [[None if not np.isfinite(v) else float(v) for v in p] for p in vals]
        out.append({**per_frame[i], "keypoints": kp})
    doc["frames"] = out
    f.write(json.dumps(doc).encode("utf-8"))


# -------------------------------------------------------------------------------------------- write

def write_pose(path: str | os.PathLike, data: PoseData, like: PoseData | str | os.PathLike | None = None) -> Path:
    """Write ``data`` to ``path`` in the format of its extension, reproducing the layout of ``like``
    (a :class:`PoseData` from :func:`read_pose` or a path to read; default ``data.meta``).

    Refuses (``ValueError``) to write onto the file the data (or ``like``) was read from. Writes a
    temporary file next to ``path`` and renames it into place, so a crash never leaves half a file.
    """
    path = Path(path)
    if like is not None and not isinstance(like, PoseData):
        like = read_pose(like)
    # from an OpenPose folder, any path not ending in a pose file extension is a folder ('out_v1.2' too)
    openpose = (like.meta if like is not None else data.meta).get("format") == "openpose"
    if openpose and path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        from streamssm.io.openpose import write_openpose

        src = (like.meta if like is not None else data.meta).get("source")
        if src is not None and os.path.realpath(src) == os.path.realpath(path):
            raise _err(path, "output path is the input folder; refusing to overwrite it, expected a different path")
        return write_openpose(path, data, like.meta if like is not None else data.meta)
    ext = _ext(path)
    sources = {like.meta.get("source") if like is not None else None, data.meta.get("source")} - {None}
    meta = dict(like.meta if like is not None else data.meta)
    pts = np.asarray(data.points, np.float32)
    if pts.ndim != 3 or pts.shape[-1] not in (2, 3):
        raise _err(path, f"expected points of shape (t, k, 2 or 3), got {pts.shape}")
    if data.confidence is not None and np.shape(data.confidence) != pts.shape[:2]:
        raise _err(path, f"expected confidence of shape {pts.shape[:2]}, got {np.shape(data.confidence)}")
    data = PoseData(pts, None if data.confidence is None else np.asarray(data.confidence, np.float32), data.fps, meta)
    if kind := special_file(path):
        raise _err(path, f"is {kind}, not a regular file; expected a pose file to write")
    target = os.path.realpath(path)
    for src in sources:
        if os.path.realpath(src) == target:
            raise _err(path, "output path is the input file; refusing to overwrite it, expected a different path")
    if (meta.get("format", "").startswith("npz") and ext != ".npz") or meta.get("format") == "openpose":
        # converting formats: the npz layout does not apply; frame numbers, joint names and what the confidence
        # means carry over
        numbers = meta.get("frame_numbers")
        if numbers is None and data.fps is not None:  # an npz timed by its timestamps: they become frame numbers
            numbers = _frames_from_timestamps(meta.get("arrays", {}), data.fps)
        meta = {k: meta[k] for k in ("joint_names", "visibility", "image_size") if k in meta}
        if numbers is not None:
            meta["frame_numbers"] = numbers
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _err(path, f"cannot create the output file in {path.parent} ({e.strerror or e})") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as f:
            if ext == ".npz":
                _write_npz(f, path, data, meta)
            elif ext == ".csv":
                _write_csv(f, path, data, meta)
            else:
                _write_json(f, path, data, meta)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):  # a full disk, a path that is a directory ...: name the output, not the temp file
            full = _disk_error(e)
            raise _err(path, f"{'disk full (or file size limit)' if full else 'cannot write'}; nothing written ({e.strerror or e})") from None
        raise
    return path
