"""Clean pose sequences for training and validation, built from the CMU motion-capture BVH files.

Shapes: ``b`` streams, ``t`` frames, ``k`` keypoints, ``d`` coordinates (2 or 3).

Pipeline (:class:`PoseDataset`):

1. Every ``cmu/*.bvh.gz`` is parsed (:mod:`streamssm.pose.bvh`), run through forward kinematics and
   reduced to a body-keypoint layout (default ``body17``; see :func:`streamssm.pose.bvh.select_keypoints`).
   Positions are converted to metres, Y up: the iClone ``CC_Base`` files are in centimetres; other
   skeletons (CMU ASF units) are rescaled so that the mean leg length (hip-knee-ankle) is 0.9 m.
   Results are cached as ``.npz`` under ``~/.cache/streamssm/pose`` (or ``cache_dir``), keyed by file
   name, size, mtime and layout. Parsing all 49 files takes a few seconds on 2 cores.
2. Subject-level split: subjects ``006`` (14 clips) and ``131`` (1 clip, a different skeleton and
   source) are held out for validation (:data:`VAL_SUBJECTS`); ``002``, ``003``, ``005`` are training.
   No subject appears in both, so validation measures generalisation to unseen people and rigs.
3. :meth:`PoseDataset.sample_batch` cuts random windows, resamples from the file rate (60 fps for the
   iClone files, whose ``Frame Time`` says 1/60 s, 120 fps for ``131_01``) to a target rate in 24-60 fps
   by linear interpolation with a random speed factor, and augments: rotation about the vertical axis,
   body scale, left/right mirroring (x -> -x plus left/right keypoint swap), then either a random
   pinhole camera projection to 2-D (pixels or image-normalised [0, 1] coordinates, as MediaPipe emits)
   or 3-D (metres or millimetres, world or hip-centred like MediaPipe world landmarks).

Windows longer than a clip are extended by playing the clip back and forth (ping-pong); this only
happens when ``length`` / fps exceeds the clip's duration and is rare for ``length`` <= 256 at 30 fps.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamssm.pose.bvh import (
    forward_kinematics, joint_table, keypoint_names, keypoint_parents, load_bvh, mirror_permutation,
    select_keypoints,
)

__all__ = [
    "VAL_SUBJECTS",
    "UNITS_2D",
    "UNITS_3D",
    "Clip",
    "PoseBatch",
    "PoseDataset",
    "default_data_dir",
    "load_clips",
    "bvh_dir",
    "subjects_in",
    "resample",
    "body_size",
    "sample_batch",
]

VAL_SUBJECTS = ("006", "131")
UNITS_2D = ("px", "norm")
UNITS_3D = ("m", "mm")
_IMAGE_SIZES = ((1280, 720), (1920, 1080), (640, 480), (720, 1280), (1080, 1920), (960, 540))
_CACHE_VERSION = "v1"


@dataclass
class Clip:
    """One mocap clip reduced to keypoints: ``positions`` (t, k, 3) float32 metres, Y up."""

    name: str
    subject: str
    fps: float
    positions: np.ndarray
    names: tuple[str, ...]

    @property
    def duration(self) -> float:
        return (self.positions.shape[0] - 1) / self.fps


@dataclass
class PoseBatch:
    """A batch of clean sequences.

    Attributes:
        clean: (b, t, k, d) float32.
        fps: (b,) float32 frame rate of each stream.
        units: per stream, one of ``px``, ``norm`` (2-D) or ``m``, ``mm`` (3-D).
        body_size: (b,) float32 bounding-box diagonal (median over time) in the stream's units.
        image_size: (b, 2) float32 (width, height) in pixels for 2-D streams, zeros for 3-D.
        names: the k keypoint names.
    """

    clean: np.ndarray
    fps: np.ndarray
    units: list[str]
    body_size: np.ndarray
    image_size: np.ndarray
    names: tuple[str, ...]


def default_data_dir() -> Path:
    """``$STREAMSSM_DATA`` or ``<repo>/../shared/data``."""
    env = os.environ.get("STREAMSSM_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def bvh_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder of BVH clips under ``data_dir`` (default :func:`default_data_dir`): its ``pose/cmu``, its ``cmu``,
    or the folder itself, the first that holds ``*.bvh``/``*.bvh.gz`` files. ValueError naming ``data_dir`` if none
    does."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    for d in (data_dir / "pose" / "cmu", data_dir / "cmu", data_dir):
        if d.is_dir() and any(d.glob("*.bvh*")):
            return d
    raise ValueError(f"{data_dir}: no BVH files found in it, in its cmu/ or in its pose/cmu/ (expected *.bvh or "
                     "*.bvh.gz motion-capture clips, named SUBJECT_CLIP.bvh.gz as CMU's are)")


def subjects_in(data_dir: str | os.PathLike | None = None) -> list[str]:
    """The subjects of the BVH clips under ``data_dir`` (:func:`bvh_dir`): each file name's part before the first
    ``_`` (CMU's ``006_01.bvh.gz`` -> ``006``), sorted."""
    return sorted({f.name.split("_")[0] for f in bvh_dir(data_dir).glob("*.bvh*")})


def body_size(points: np.ndarray) -> np.ndarray:
    """Median over time of the keypoint bounding-box diagonal; (..., t, k, d) -> (...). NaN-aware."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-missing frames are legitimate input
        lo = np.nanmin(points, axis=-2)
        hi = np.nanmax(points, axis=-2)
        return np.nanmedian(np.linalg.norm(hi - lo, axis=-1), axis=-1)


def _to_metres(pos: np.ndarray, joint_names: list[str], kp_names: tuple[str, ...]) -> np.ndarray:
    if any(n.startswith("CC_Base") for n in joint_names):
        return pos * 0.01  # iClone exports are in centimetres
    idx = {n: i for i, n in enumerate(kp_names)}
    leg = 0.0
    for s in ("left", "right"):
        h, k, a = (pos[:, idx[f"{s}_{p}"]] for p in ("hip", "knee", "ankle"))
        leg += np.linalg.norm(h - k, axis=-1).mean() + np.linalg.norm(k - a, axis=-1).mean()
    return pos * (0.9 / (leg / 2))


def _cache_path(cache_dir: Path, path: Path, layout: str) -> Path:
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}|{layout}".encode()).hexdigest()[:10]
    return cache_dir / f"{path.name.split('.')[0]}-{layout}-{_CACHE_VERSION}-{key}.npz"


def load_clips(
    data_dir: str | os.PathLike | None = None,
    layout: str = "body17",
    cache_dir: str | os.PathLike | None = None,
    subjects: tuple[str, ...] | None = None,
    exclude: tuple[str, ...] = (),
) -> list[Clip]:
    """Load (and cache) ``pose/cmu/*.bvh.gz`` under ``data_dir`` as keypoint clips, optionally only
    the given ``subjects`` (file-name prefixes such as ``"006"``) and without ``exclude``."""
    files = sorted(bvh_dir(data_dir).glob("*.bvh*"))
    cache = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "streamssm" / "pose"
    cache.mkdir(parents=True, exist_ok=True)
    clips = []
    for f in files:
        subject = f.name.split("_")[0]
        if (subjects is not None and subject not in subjects) or subject in exclude:
            continue
        cp = _cache_path(cache, f, layout)
        if cp.exists():
            with np.load(cp) as z:
                pos, fps = z["positions"], float(z["fps"])
        else:
            bvh = load_bvh(f)
            full = forward_kinematics(bvh)
            jnames, _ = joint_table(bvh)
            pos, kp = select_keypoints(full, jnames, layout)
            pos = _to_metres(pos, jnames, kp).astype(np.float32)
            fps = bvh.fps
            tmp = cp.with_name(cp.name + f".{os.getpid()}.tmp.npz")
            np.savez(tmp, positions=pos, fps=np.float64(fps))
            os.replace(tmp, cp)
        clips.append(Clip(f.name.split(".")[0], subject, fps, pos, keypoint_names(layout)))
    return clips


def resample(x: np.ndarray, fps_in: float, fps_out: float, speed: float = 1.0, start: float = 0.0,
             length: int | None = None) -> np.ndarray:
    """Linear interpolation of ``x`` (t, ...) sampled at ``fps_in`` onto a ``fps_out`` grid.

    Output frame ``i`` is the source at time ``start + i * speed / fps_out`` seconds. Times past the
    end are reflected (ping-pong), so any ``length`` can be produced.
    """
    n = x.shape[0]
    if length is None:
        length = int(np.floor(((n - 1) / fps_in - start) * fps_out / speed)) + 1
    pos = (start + np.arange(length) * (speed / fps_out)) * fps_in
    if n > 1:
        period = 2 * (n - 1)
        pos = np.mod(pos, period)
        pos = np.where(pos > n - 1, period - pos, pos)
    else:
        pos = np.zeros_like(pos)
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (pos - i0).reshape((-1,) + (1,) * (x.ndim - 1))
    return (1 - w) * x[i0] + w * x[i1]


def _rot_y(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _project(p: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """Random pinhole camera looking at the subject; p (t, k, 3) metres Y up -> (t, k, 2) pixels."""
    w, h = _IMAGE_SIZES[rng.integers(len(_IMAGE_SIZES))]
    centre = np.nanmean(p.reshape(-1, 3), axis=0)
    extent = np.max(np.linalg.norm(p[:, :, [0, 2]] - centre[[0, 2]], axis=-1))
    dist = max(rng.uniform(2.5, 8.0), extent + 1.5)
    yaw = rng.uniform(-np.pi, np.pi)
    cam = centre + np.array([dist * np.sin(yaw), rng.uniform(-0.6, 1.0), dist * np.cos(yaw)])
    target = centre + np.array([0.0, rng.uniform(-0.3, 0.3), 0.0])
    fwd = target - cam
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    rot = np.stack([right, down, fwd])
    pc = (p - cam) @ rot.T
    # Focal length so that a 1.8 m person at the camera distance fills 25-90 % of the image height.
    f = rng.uniform(0.25, 0.9) * h * dist / 1.8
    cx = w / 2 + rng.uniform(-0.2, 0.2) * w
    cy = h / 2 + rng.uniform(-0.15, 0.15) * h
    z = np.maximum(pc[..., 2:3], 0.1)
    uv = f * pc[..., :2] / z + np.array([cx, cy])
    return uv, (w, h)


class PoseDataset:
    """Windows of augmented clean pose from a list of :class:`Clip`.

    >>> ds = PoseDataset.from_dir(split="train")  # doctest: +SKIP
    >>> batch = ds.sample_batch(np.random.default_rng(0), batch=4, length=64)  # doctest: +SKIP
    >>> batch.clean.shape[:3]  # doctest: +SKIP
    (4, 64, 17)
    """

    def __init__(self, clips: list[Clip]):
        if not clips:
            raise ValueError("PoseDataset needs at least one clip")
        self.clips = clips
        self.names = clips[0].names
        self.parents = None
        self._mirror = mirror_permutation(self.names)

    @classmethod
    def from_dir(cls, data_dir=None, split: str = "train", layout: str = "body17", cache_dir=None,
                 val_subjects: tuple[str, ...] = VAL_SUBJECTS) -> "PoseDataset":
        """``split`` in ``{'train', 'val', 'all'}``; see :data:`VAL_SUBJECTS`."""
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
        subjects = tuple(val_subjects) if split == "val" else None
        exclude = tuple(val_subjects) if split == "train" else ()
        ds = cls(load_clips(data_dir, layout=layout, cache_dir=cache_dir, subjects=subjects, exclude=exclude))
        ds.parents = keypoint_parents(layout)
        return ds

    def sample_window(self, rng: np.random.Generator, length: int, fps: float, speed: float) -> np.ndarray:
        """(length, k, 3) metres, un-augmented, at ``fps`` with playback ``speed``."""
        need = (length - 1) * speed / fps
        dur = np.array([c.duration for c in self.clips])
        slack = dur - need
        weights = np.clip(slack, 0, None) if (slack > 0).any() else dur
        clip = self.clips[rng.choice(len(self.clips), p=weights / weights.sum())]
        start = rng.uniform(0, max(clip.duration - need, 0.0))
        return resample(clip.positions.astype(np.float64), clip.fps, fps, speed, start, length)

    def sample_batch(
        self,
        rng: np.random.Generator,
        batch: int,
        length: int,
        dim: int | None = None,
        fps_range: tuple[float, float] = (24.0, 60.0),
        speed_range: tuple[float, float] = (0.8, 1.25),
        scale_range: tuple[float, float] = (0.85, 1.15),
        p_mirror: float = 0.5,
        units: str | None = None,
        p_flip: float = 0.0,
    ) -> PoseBatch:
        """Random augmented clean windows; one ``dim`` (2 or 3, random if None) for the whole batch,
        units drawn per stream (from :data:`UNITS_2D` / :data:`UNITS_3D`) unless ``units`` is given.
        ``p_flip``: the share of streams in another axis convention than image y down (2-D) and Y up (3-D): y up in
        the image; Y down (MediaPipe's world landmarks) or Z up, half each."""
        if dim is None:
            dim = int(rng.choice([2, 3], p=[0.6, 0.4]))
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {dim}")
        k = len(self.names)
        out = np.empty((batch, length, k, dim), np.float32)
        fps_out = np.empty(batch, np.float32)
        sizes = np.zeros((batch, 2), np.float32)
        unit_list = []
        for i in range(batch):
            fps = float(rng.uniform(*fps_range))
            speed = float(np.exp(rng.uniform(np.log(speed_range[0]), np.log(speed_range[1]))))  # log-uniform
            p = self.sample_window(rng, length, fps, speed)
            root = p[0].mean(axis=0) * np.array([1.0, 0.0, 1.0])  # centre the first frame on the floor
            p = (p - root) @ _rot_y(rng.uniform(-np.pi, np.pi)).T * rng.uniform(*scale_range)
            if rng.random() < p_mirror:
                p = p[:, self._mirror] * np.array([-1.0, 1.0, 1.0])
            u = units or str(rng.choice(UNITS_2D if dim == 2 else UNITS_3D))
            if dim == 2:
                uv, (w, h) = _project(p, rng)
                sizes[i] = (w, h)
                if p_flip and rng.random() < p_flip:  # (no draw at 0: the same streams as before p_flip)
                    uv = uv * np.array([1.0, -1.0]) + np.array([0.0, h])
                if u == "norm":
                    uv = uv / np.array([w, h])
                elif u != "px":
                    raise ValueError(f"2-D units must be one of {UNITS_2D}, got {u!r}")
                out[i] = uv
            else:
                if rng.random() < 0.5:  # hip-centred per frame, like MediaPipe world landmarks
                    hips = [self.names.index("left_hip"), self.names.index("right_hip")] \
                        if "left_hip" in self.names else [0]
                    p = p - p[:, hips].mean(axis=1, keepdims=True)
                else:
                    p = p + np.array([rng.uniform(-3, 3), 0.0, rng.uniform(-3, 3)])
                if p_flip and rng.random() < p_flip:  # Y down, or Z up: (x, y, z) -> (x, -z, y)
                    p = (p if rng.random() < 0.5 else p[..., [0, 2, 1]]) * np.array([1.0, -1.0, 1.0])
                if u == "mm":
                    p = p * 1000.0
                elif u != "m":
                    raise ValueError(f"3-D units must be one of {UNITS_3D}, got {u!r}")
                out[i] = p
            fps_out[i] = fps
            unit_list.append(u)
        return PoseBatch(out, fps_out, unit_list, body_size(out).astype(np.float32), sizes, self.names)


_DEFAULT: dict[tuple, PoseDataset] = {}


def sample_batch(rng: np.random.Generator, batch: int, length: int, split: str = "train",
                 dataset: PoseDataset | None = None, **kwargs) -> PoseBatch:
    """Module-level convenience: :meth:`PoseDataset.sample_batch` on a cached default dataset."""
    if dataset is None:
        key = (split, str(default_data_dir()))
        if key not in _DEFAULT:
            _DEFAULT[key] = PoseDataset.from_dir(split=split)
        dataset = _DEFAULT[key]
    return dataset.sample_batch(rng, batch, length, **kwargs)
