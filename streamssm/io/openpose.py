"""OpenPose's own output: a folder of per-frame ``*_keypoints.json`` files (``--write_json``).

Each file holds ``{"people": [{"pose_keypoints_2d": [x0, y0, c0, x1, ...], "face_keypoints_2d": [...],
"hand_left_keypoints_2d": [...], "hand_right_keypoints_2d": [...], ...}, ...]}``; an undetected keypoint is
``0, 0, 0``. Frames are ordered by the frame number in their names (``clip_000000000042_keypoints.json``).

**People.** OpenPose keeps no identities from frame to frame (``person_id`` is -1), so the reader follows everyone
(:func:`_tracks`): each frame, a person goes on the track whose last place (its joints unseen since kept where they
were) lies nearest, mean distance over the keypoints confident in both, if within half that track's body size and
the track was seen in the last ``MEMORY`` frames; anyone else starts a track, and a track whose person is not there
is missing (NaN) for that frame. The *main* person, whose points :class:`~streamssm.io.pose_files.PoseData` holds
(for a conversion to .npz/.csv/.json), is the track of the most confident person in the first frame with anyone, so
a second person walking in does not take over. :func:`everyone` gives all tracks as a batch of streams.

``key`` picks the array: ``pose_keypoints_2d`` (default; BODY_25 or COCO's 18 joints, named), ``face_keypoints_2d``,
``hand_left_keypoints_2d`` or ``hand_right_keypoints_2d``. Points are (x, y) in pixels, ``confidence`` OpenPose's
score (a weight: 0 = missing; such keypoints read as NaN).

Writing back (:func:`write_openpose`, an output path not ending in .npz/.csv/.json, such as ``out_v1.2``) gives a
folder of the same file names with every file as it was except the followed people's arrays (the main one's, or
everyone's with ``tracks``), whose x, y are the filtered ones (confidences kept; an undetected keypoint stays
``0, 0, 0``). The folder is written beside the target and renamed into place, so a crash never leaves half of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["is_openpose_folder", "read_openpose", "write_openpose", "everyone", "OPENPOSE_KEYS"]

OPENPOSE_KEYS = ("pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d")
SUFFIX = "_keypoints.json"
FOLLOW = 0.5  # a track goes on with the nearest person within this share of its body size (bounding-box diagonal)
MEMORY = 30  # frames a track waits for its person to be seen again
BODY_25 = ("Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip", "RHip", "RKnee",
           "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar", "LBigToe", "LSmallToe", "LHeel",
           "RBigToe", "RSmallToe", "RHeel")
COCO_18 = BODY_25[:8] + BODY_25[9:19]  # OpenPose's COCO model: BODY_25 without MidHip and the feet


def _err(path, what: str) -> ValueError:
    return ValueError(f"{path}: {what}")


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(SUFFIX) and p.is_file()]


def is_openpose_folder(path: str | os.PathLike) -> bool:
    """True for a folder holding OpenPose ``*_keypoints.json`` files."""
    p = Path(path)
    return p.is_dir() and any(n.endswith(SUFFIX) for n in os.listdir(p))


def _frame_number(name: str) -> int | None:
    m = re.search(r"(\d+)" + re.escape(SUFFIX) + "$", name)
    return int(m.group(1)) if m else None


def _person(arr, width: int, path: Path, key: str) -> np.ndarray:
    try:
        a = np.asarray([np.nan if v is None else v for v in arr], np.float64) if isinstance(arr, list) else None
    except (TypeError, ValueError, OverflowError):  # a nested list, a dict, a string, an int past float64
        raise _err(path, f"expected {key!r} as a flat list of numbers (x, y, confidence triples)") from None
    if a is not None and a.size == 0:  # [] : this person's array not estimated (a hand out of view, --hand off)
        return a.reshape(0, 3)
    if a is None or a.ndim != 1 or a.size % 3 or (width and a.size != width):
        raise _err(path, f"expected {key!r} as a flat list of x, y, confidence triples"
                         f"{f' ({width // 3} keypoints, as for the other people)' if width else ''}, got "
                         f"{'a list of ' + str(a.size) + ' numbers' if a is not None else type(arr).__name__}")
    return a.reshape(-1, 3)


def _seen(a: np.ndarray) -> np.ndarray:
    """(k,) keypoints detected: a positive confidence and finite x, y (a ``null`` coordinate is not seen)."""
    return (a[:, 2] > 0) & np.isfinite(a[:, :2]).all(1)


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    both = _seen(a) & _seen(b)
    return float(np.linalg.norm(a[both, :2] - b[both, :2], axis=-1).mean()) if both.any() else np.inf


def _size(a: np.ndarray) -> float:
    """Bounding-box diagonal of the confident keypoints (0 with fewer than two)."""
    seen = a[_seen(a), :2]
    return float(np.linalg.norm(seen.max(0) - seen.min(0))) if len(seen) > 1 else 0.0


def _tracks(people: list[list[np.ndarray]]) -> tuple[list[list[int]], int]:
    """Follow everyone: per track, the person's index in each frame (-1 where not seen), and which track is the main
    one (that of the most confident person in the first frame with anyone). Each frame, the closest (track, person)
    pairs are joined first, a person within ``FOLLOW`` of the track's body size of where it was last seen (its
    joints unseen since keep their last place) and at most ``MEMORY`` frames ago; anyone left starts a track."""
    tracks: list[list[int]] = []
    last: list[np.ndarray] = []
    seen: list[int] = []
    main = None
    for f, persons in enumerate(people):
        live = [t for t in range(len(tracks)) if f - seen[t] <= MEMORY]
        pairs = sorted(p for p in ((_distance(a, last[t]), j, t) for j, a in enumerate(persons) for t in live)
                       if np.isfinite(p[0]))
        taken_p, taken_t = set(), set()
        for d, j, t in pairs:
            if j in taken_p or t in taken_t or not d <= FOLLOW * max(_size(last[t]), 1e-9):
                continue
            taken_p.add(j)
            taken_t.add(t)
            tracks[t][f] = j
            last[t] = np.where(_seen(persons[j])[:, None], persons[j], last[t])
            seen[t] = f
        for j, a in enumerate(persons):
            if j not in taken_p and _seen(a).any():  # nobody to follow in a person with nothing detected
                tracks.append([-1] * len(people))
                tracks[-1][f] = j
                last.append(a.copy())
                seen.append(f)
        if main is None and any(_seen(a).any() for a in persons):
            best = int(np.argmax([np.where(_seen(a), a[:, 2], 0).sum() for a in persons]))
            main = next(t for t in range(len(tracks)) if tracks[t][f] == best)
    return tracks, main


def everyone(data) -> tuple[np.ndarray, np.ndarray]:
    """Every track of an OpenPose read (:func:`read_openpose`) as (t, B, k, 2) points (NaN where the person is not
    seen or a keypoint is undetected) and (t, B, k) confidences, B the number of tracks, in ``meta["tracks"]`` order."""
    meta = data.meta
    t, k = len(meta["files"]), data.points.shape[1]
    pts = np.full((t, len(meta["tracks"]), k, 3), np.nan, np.float32)
    for b, track in enumerate(meta["tracks"]):
        for f, j in enumerate(track):
            if j >= 0:
                pts[f, b] = meta["people"][f][j]
    conf = np.nan_to_num(pts[..., 2], nan=0.0)
    return np.where((conf > 0)[..., None], pts[..., :2], np.nan).astype(np.float32), conf


def read_openpose(folder: str | os.PathLike, key: str | None = None):
    """Read an OpenPose output folder as a :class:`~streamssm.io.pose_files.PoseData` (see the module docstring)."""
    from streamssm.io.pose_files import PoseData

    folder = Path(folder)
    key = key or "pose_keypoints_2d"
    if key not in OPENPOSE_KEYS:
        raise _err(folder, f"--key {key!r} is not an OpenPose keypoint array; expected one of "
                           f"{', '.join(OPENPOSE_KEYS)}")
    files = _files(folder)
    if not files:
        raise _err(folder, f"no OpenPose '*{SUFFIX}' files in this folder")
    numbers = [_frame_number(p.name) for p in files]
    if None in numbers:
        bad = files[numbers.index(None)].name
        raise _err(folder, f"{bad}: expected a frame number before '{SUFFIX}' in every file name (OpenPose's naming)")
    order = np.argsort(numbers, kind="stable")
    files, numbers = [files[i] for i in order], [numbers[i] for i in order]
    dup = [a for a, b in zip(numbers, numbers[1:]) if a == b]
    if dup:
        raise _err(folder, f"two files for frame {dup[0]}; expected one '*{SUFFIX}' file a frame (one video's output)")
    docs, people, follow = [], [], []
    width = 0
    for p in files:
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _err(p, f"not valid JSON ({e}), expected OpenPose's {{'people': [...]}}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("people"), list):
            raise _err(p, "expected OpenPose's JSON object with a 'people' list")
        persons, bodies = [], []
        for person in doc["people"]:
            if not isinstance(person, dict) or key not in person:
                raise _err(p, f"expected every person to have {key!r}")
            a = _person(person[key], width, p, key)
            width = width or a.size
            persons.append(a)
            body = person.get("pose_keypoints_2d") if key != "pose_keypoints_2d" else None
            bodies.append(_person(body, 0, p, "pose_keypoints_2d") if isinstance(body, list) else None)
        docs.append(doc)
        people.append(persons)
        follow.append(bodies)
    if not any(people):
        raise _err(folder, f"nobody is detected in any of the {len(files)} frames")
    if not width:
        raise _err(folder, f"nobody has {key!r} in any of the {len(files)} frames" +
                   ("" if key == "pose_keypoints_2d" else " (OpenPose was run without it? --face/--hand)"))
    k = width // 3
    people = [[a if a.size else np.zeros((k, 3)) for a in persons] for persons in people]  # []: nothing detected
    # people are followed by their body where every person has one and some of it is seen: a hand or a face alone
    # is often missed (one person's hands out of view would start a new track every frame)
    sizes = {b.shape for bodies in follow for b in bodies if b is not None and b.size}
    by_body = (len(sizes) == 1 and all(b is not None for bodies in follow for b in bodies)
               and any(_seen(b).any() for bodies in follow for b in bodies if b.size))
    n = next(iter(sizes))[0] if by_body else k
    tracks, main = _tracks([[b if b.size else np.zeros((n, 3)) for b in bodies] for bodies in follow] if by_body
                           else people)
    if main is None:
        raise _err(folder, f"nobody is detected in any of the {len(files)} frames")
    chosen = tracks[main]
    arr = np.full((len(files), k, 3), np.nan, np.float32)
    for f, (persons, i) in enumerate(zip(people, chosen)):
        if i >= 0:
            arr[f] = persons[i]
    conf = np.nan_to_num(arr[..., 2], nan=0.0)
    pts = np.where((conf > 0)[..., None], arr[..., :2], np.nan).astype(np.float32)
    names = list(BODY_25 if k == 25 else COCO_18 if k == 18 else []) if key == "pose_keypoints_2d" else []
    meta = {"format": "openpose", "key": key, "files": [p.name for p in files], "docs": docs, "chosen": chosen,
            "tracks": tracks, "main": main, "people": people,
            "frame_numbers": numbers, "visibility": False, **({"joint_names": names} if names else {})}
    return PoseData(pts, conf.astype(np.float32), None, meta)


def write_openpose(target: str | os.PathLike, data, meta: dict, overwrite: bool = True,
                   tracks: np.ndarray | None = None) -> Path:
    """Write an OpenPose folder at ``target``: ``data``'s points for the main person :func:`read_openpose` followed,
    or, with ``tracks`` ((t, B, k, 2), as :func:`everyone` gives them), for every person it followed."""
    target = Path(target)
    if meta.get("format") != "openpose":
        raise _err(target, "an output folder is OpenPose's layout, written only from an OpenPose folder; "
                           "name a .npz/.csv/.json file instead")
    maps = [meta["chosen"]] if tracks is None else meta["tracks"]
    pts = np.asarray(data.points if tracks is None else tracks, np.float32)
    pts = pts[:, None] if tracks is None else pts
    if pts.ndim != 4 or pts.shape[:2] != (len(meta["files"]), len(maps)) or pts.shape[3] != 2:
        raise _err(target, f"expected {len(meta['files'])} frames x {len(maps)} people of 2-D points like the input, "
                           f"got {pts.shape}")
    if target.exists() and not (target.is_dir() and overwrite):
        raise _err(target, "already exists; pass --overwrite to replace it" if target.is_dir() else
                   "is a file, expected a folder for OpenPose output")
    src = meta.get("source")
    if src is not None:
        s, t = Path(src).resolve(), target.resolve()
        if t == s or t in s.parents or s in t.parents:
            raise _err(target, f"is, holds or lies inside the input {src}; name an output folder elsewhere")
    if target.exists():  # replaced whole: only an earlier output of this clip (its file names), never anything else
        names = set(meta["files"])
        other = sorted(p.name for p in target.iterdir() if not (p.is_file() and p.name in names))
        if other:
            raise _err(target, f"holds files that are not this clip's OpenPose frames ({', '.join(other[:3])}"
                               f"{', ...' if len(other) > 3 else ''}); refusing to replace it, name another folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        key = meta["key"]
        for f, (name, doc) in enumerate(zip(meta["files"], meta["docs"])):
            doc = json.loads(json.dumps(doc))  # a copy: the caller's meta stays as read
            for b, track in enumerate(maps):
                i = track[f]
                if i < 0:
                    continue
                if not doc["people"][i][key]:  # [] as read: nothing there to filter
                    continue
                old = meta["people"][f][i]  # (k, 3) as read: null -> NaN
                new = np.where(np.isfinite(pts[f, b]) & (old[:, 2:] > 0), pts[f, b], old[:, :2])
                # x, y to 1/1000 px (float32's digits would make the file a quarter larger); confidences as read
                xy = [[round(float(v), 3) if np.isfinite(v) else None for v in row] for row in new]
                doc["people"][i][key] = [v for (x, y), c in zip(xy, old[:, 2].tolist())
                                         for v in (x, y, c if np.isfinite(c) else None)]
            (tmp / name).write_text(json.dumps(doc), encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; a folder the user made would not be
        old_dir = None
        if target.exists():
            old_dir = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old_dir)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old_dir is not None:
                os.replace(old_dir, target)  # the user's folder back where it was
            raise
        if old_dir is not None:
            shutil.rmtree(old_dir, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
