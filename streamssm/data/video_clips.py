"""Training clips from real footage: synthetic camera motion, scene cuts and flickering operators.

Pipeline for one clip (:meth:`VideoClipSampler.sample_clip`):

1. pick a cached video (uint8 RGB, short side ~256 px) and either one still frame (``synthetic``
   mode: all motion is the synthetic camera, so the flow is known exactly) or consecutive frames at
   stride 1-2 (``real`` mode: the footage's own motion plus the synthetic camera; flow unknown, or with
   ``real_flow`` estimated by DIS between the originals with a forward-backward occlusion check);
2. a smooth random camera path: per frame a homography ``H_t`` mapping output pixels to source
   pixels (pan with smoothly varying velocity and hand shake, zoom, roll, slight perspective), kept
   inside the source frame; ``original_t = warpPerspective(src_t, H_t)``;
3. optionally a scene cut: from a random frame on, the clip continues with a second, independent
   segment (``cut_mask[t]`` is True on the first frame of the new shot);
4. optionally (``p_fade``) a brightness change of the originals: a fade in or out, of the whole frame or of
   one half (a light switched on or off), log-linear over a few frames (:func:`fade_envelope`), so the
   target changes brightness with them and a filter learns to let a lasting change through;
5. one operator from :mod:`streamssm.video.operators`: ``processed_t = op.apply(original_t, t)`` and
   ``target_t = op.apply_consistent(original_t, t)``, with ``op.fit`` on the first frame of each shot.

Flow convention (same as :mod:`streamssm.metrics`): ``flow[t]`` is the forward flow from frame ``t``
to ``t + 1``, ``original_t(x) ~ original_{t+1}(x + flow[t](x))``, in pixels, channels ``(dx, dy)``.
In synthetic mode ``flow[t](x) = pi(H_{t+1}^{-1} H_t x) - x``; ``flow_valid[t]`` marks pixels whose
target lies inside frame ``t + 1``; across a cut the flow is zero and invalid. In real mode with
``real_flow`` it is :func:`streamssm.metrics.compute_flows` (DIS) and its non-occlusion mask.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import mmap
import os
import time
from concurrent.futures import ThreadPoolExecutor
from glob import escape as glob_escape
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from streamssm.metrics import compute_flows
from streamssm.video.operators import OPERATORS, TRAIN_OPERATORS, make_operator

log = logging.getLogger("streamssm")

__all__ = ["load_videos", "build_cache", "load_cache", "VideoClipSampler", "ClipBatchSampler",
           "camera_path", "homography_flow"]


# --------------------------------------------------------------------------------------------------
# loading and caching
# --------------------------------------------------------------------------------------------------
def _frames_of(path: str | Path, short_side: int, max_frames: int | None, stride: int) -> Iterator[np.ndarray]:
    """Decoded RGB frames of ``path``, every ``stride``-th, downscaled (INTER_AREA) to ``short_side``; OSError naming
    the file if it does not open, or if its frame size changes mid-video."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise OSError(f"cannot open video {path}")
    n, i, first = 0, 0, None
    try:
        while max_frames is None or n < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            if i % stride == 0:
                h, w = bgr.shape[:2]
                if first is None:
                    first = (w, h)
                elif (w, h) != first:
                    raise OSError(f"{path}: its frame size changes mid-video (frame {i}: {w}x{h}, first "
                                  f"{first[0]}x{first[1]}); expected one size throughout")
                s = short_side / min(h, w)
                if s != 1.0:
                    bgr = cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
                n += 1
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            i += 1
    finally:
        cap.release()


def _read_video(path: str | Path, short_side: int, max_frames: int | None, stride: int) -> np.ndarray:
    frames = list(_frames_of(path, short_side, max_frames, stride))
    if not frames:
        raise OSError(f"no frames decoded from {path}")
    return np.stack(frames)


# --- the frame cache: decoded frames kept on disk, one .npy a video, read through a memory map
CACHE_VERSION = 1
_NPY_HEADER = 128  # bytes; a multiple of 64 as the .npy format asks, room for any (t, h, w, 3) shape


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A version-1.0 .npy header for a C-ordered uint8 array of ``shape``, padded to exactly :data:`_NPY_HEADER`
    bytes, so that it can be written last, over a placeholder, once the frame count is known."""
    d = ("{'descr': '|u1', 'fortran_order': False, 'shape': %r, }" % (tuple(shape),)).encode("latin1")
    n = _NPY_HEADER - 10
    return b"\x93NUMPY\x01\x00" + n.to_bytes(2, "little") + d + b" " * (n - len(d) - 1) + b"\n"


class CachedFrames(np.memmap):
    """A video's frames in the frame cache: a read-only memory map, which pickles as its file name (a data-loader
    worker started by spawn or forkserver reopens the file instead of receiving a copy of every frame)."""

    def __reduce__(self):
        if isinstance(self.base, mmap.mmap) and self.filename is not None:  # the whole file, not a view of it
            return (_open_cached, (self.filename,))
        return np.asarray(self).__reduce__()


def _open_cached(path: str | Path) -> CachedFrames:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        offset = f.tell()
    if len(shape) != 4 or shape[-1] != 3 or dtype != np.uint8 or fortran or shape[0] < 1:
        raise OSError(f"{path}: not a frame-cache file ((t, h, w, 3) uint8 expected, got {shape} {dtype})")
    if os.path.getsize(path) != offset + math.prod(shape):
        raise OSError(f"{path}: {os.path.getsize(path)} bytes, not the {offset + math.prod(shape)} its header says")
    return CachedFrames(path, dtype=np.uint8, mode="r", offset=offset, shape=shape)


def cache_file(path: str | Path, cache_dir: str | Path, short_side: int, max_frames: int | None, stride: int) -> Path:
    """Where :func:`load_videos` keeps ``path``'s decoded frames in ``cache_dir``: its name carries a hash of the
    file (resolved path, size, modification time) and of the decoding settings, so an edited video or other
    settings decode anew."""
    p = Path(path)
    st = p.stat()
    ident = json.dumps([CACHE_VERSION, str(p.resolve()), st.st_size, st.st_mtime_ns, short_side, max_frames, stride])
    return Path(cache_dir) / f"{p.stem[:80]}-{hashlib.sha1(ident.encode()).hexdigest()[:16]}.npy"


class FrameCacheError(OSError):
    """The frame cache cannot be written or read (a full disk, a read-only folder): unlike a video that does not
    decode, which training leaves out with a warning, this stops it (a run must not quietly lose videos)."""


@contextlib.contextmanager
def _cache_writes(folder: Path, path: Path):
    """An OSError of the file system inside (a full disk, a read-only folder) as a :class:`FrameCacheError` naming
    the cache ``folder`` and the video ``path``."""
    try:
        yield
    except OSError as e:
        raise FrameCacheError(f"{folder}: cannot write the frame cache ({e.strerror or e}) for {path}; free space "
                              "there or choose another --frame-cache") from e


def _decode_to_cache(path: Path, dest: Path, short_side: int, max_frames: int | None, stride: int) -> None:
    """Decode ``path`` into ``dest`` one frame at a time (memory holds a frame, not the video); written under a
    temporary name and renamed when complete, so an interrupted decode leaves no cache file behind (one killed
    outright leaves its ``.part``, removed by the next decode of the same file: :func:`_cached_video`). The
    decoder's errors (a video that does not decode) stay OSError; the file system's are FrameCacheError."""
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    shape, n = None, 0
    try:
        with _cache_writes(dest.parent, path):
            f = open(tmp, "wb")
            f.write(b"\0" * _NPY_HEADER)  # the header is written last, when the frame count is known
        with f:
            for fr in _frames_of(path, short_side, max_frames, stride):
                shape = fr.shape
                with _cache_writes(dest.parent, path):
                    f.write(np.ascontiguousarray(fr).data)
                n += 1
            if n == 0:
                raise OSError(f"no frames decoded from {path}")
            with _cache_writes(dest.parent, path):
                f.seek(0)
                f.write(_npy_header((n, *shape)))
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename makes it the cache file
                f.close()  # a network file system may report a full disk only here
        with _cache_writes(dest.parent, path):
            os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def _locked(lock: Path):
    """An exclusive lock on ``lock`` where the OS offers one (POSIX): processes that build the same cache file at
    once (DDP ranks) wait for the first instead of each decoding it."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the rename keeps each file whole either way
        yield
        return
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _cached_video(path: Path, cache_dir: Path, short_side: int, max_frames: int | None, stride: int) -> CachedFrames:
    dest = cache_file(path, cache_dir, short_side, max_frames, stride)
    if dest.exists():  # complete (renamed into place whole): read without the lock, so a read-only cache serves
        with contextlib.suppress(OSError, ValueError):
            return _open_cached(dest)
    with contextlib.ExitStack() as held:
        with _cache_writes(cache_dir, path):
            held.enter_context(_locked(dest.with_name(dest.name + ".lock")))
        if dest.exists():  # another process built it while this one waited
            try:
                return _open_cached(dest)
            except (OSError, ValueError) as e:  # damaged outside this code (a rename is atomic): decode it again
                log.warning("frame cache: %s is unreadable (%s); decoding %s again", dest, e, path)
        for orphan in dest.parent.glob(glob_escape(dest.name) + ".*.part"):  # of a decode killed outright: unwritten
            with contextlib.suppress(OSError):  # for 10 minutes (a decode under way writes all the time)
                if time.time() - orphan.stat().st_mtime > 600:
                    orphan.unlink()
        t0 = time.monotonic()
        _decode_to_cache(path, dest, short_side, max_frames, stride)
        a = _open_cached(dest)
        log.info("frame cache: decoded %s to %s (%d frames, %.0f MB, %.0f s)", path, dest, len(a), a.nbytes / 1e6,
                 time.monotonic() - t0)
        return a


def _memory_estimate(paths: Sequence[Path], short_side: int, max_frames: int | None,
                     stride: int) -> tuple[float, float]:
    """(bytes the decoded videos would take in memory, from their containers' frame counts; bytes of memory
    available, 0 where the OS does not say)."""
    need = 0.0
    for p in paths:
        cap = cv2.VideoCapture(str(p))
        if cap.isOpened():
            w, h = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
            n = max(0.0, cap.get(cv2.CAP_PROP_FRAME_COUNT)) / stride
            if max_frames is not None:
                n = min(n, max_frames)
            if w > 0 and h > 0:
                s = short_side / min(w, h)
                need += n * round(w * s) * round(h * s) * 3
        cap.release()
    return need, _available_memory()


def _available_memory() -> float:
    """Bytes of memory available to a new process (Linux's MemAvailable, which counts the page cache it can reclaim;
    else the free pages; 0 where the OS says neither)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return 0.0


def load_videos(video_paths: Sequence[str | Path], short_side: int = 256, max_frames: int | None = None,
                stride: int = 1, cache_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """Decode videos to ``{stem: (t, h, w, 3) uint8 RGB}``, downscaled (INTER_AREA) to ``short_side`` (two files of
    one stem, ``clip.mp4`` and ``clip.mov``, are keyed by their whole names). A file that does not decode is left
    out with a warning naming it; OSError naming them all if none decodes.

    ``cache_dir``: keep the decoded frames on disk there instead of in memory (:class:`CachedFrames`, one ``.npy`` a
    video, decoded once and reused by later runs with the same settings; the OS caches the pages that fit in
    memory, and processes reading one cache share them). Without it every frame is held in memory: a warning says
    so when that would take more than half of the memory available."""
    paths = [Path(p) for p in video_paths]
    stems, names = [p.stem for p in paths], [p.name for p in paths]
    if cache_dir is not None:
        cache_dir = Path(cache_dir).expanduser()
        if cache_dir.exists() and not cache_dir.is_dir():
            raise OSError(f"{cache_dir}: not a folder; expected a folder for the frame cache")
        cache_dir.mkdir(parents=True, exist_ok=True)
    else:
        need, avail = _memory_estimate(paths, short_side, max_frames, stride)
        if avail and need > avail / 2:
            log.warning("decoding the %d training videos holds ~%.1f GB of frames in memory, in each process (%.1f GB "
                        "available): "
                        "--frame-cache DIR keeps them on disk instead, --max-frames N caps the frames a video",
                        len(paths), need / 1e9, avail / 1e9)
    out, bad = {}, []
    for p in paths:
        key = p.stem if stems.count(p.stem) == 1 else p.name if names.count(p.name) == 1 else str(p)
        try:
            out[key] = (_read_video(p, short_side, max_frames, stride) if cache_dir is None else
                        _cached_video(p, cache_dir, short_side, max_frames, stride))
        except FrameCacheError:
            raise
        except OSError as e:
            bad.append(str(e))
    if bad and not out:
        raise OSError(f"no training video decodes: {'; '.join(bad[:5])}")
    for why in bad:
        log.warning("training without it: %s", why)
    return out


def build_cache(video_paths: Sequence[str | Path], out_path: str | Path, short_side: int = 256,
                max_frames: int | None = None, stride: int = 1) -> Path:
    """Decode once and save an uncompressed ``.npz`` (one array per video) to carry to a GPU machine."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out_path, **load_videos(video_paths, short_side, max_frames, stride))
    return out_path


def load_cache(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


# --------------------------------------------------------------------------------------------------
# synthetic camera motion
# --------------------------------------------------------------------------------------------------
def _translate(x: float, y: float) -> np.ndarray:
    return np.array([[1, 0, x], [0, 1, y], [0, 0, 1]], np.float64)


def camera_path(rng: np.random.Generator, T: int, out_hw: tuple[int, int], src_hw: tuple[int, int],
                motion: float = 1.0, tries: int = 6) -> np.ndarray:
    """Smooth random homographies ``(T, 3, 3)`` mapping output pixels to source pixels, whose output
    frames stay inside the source. ``motion`` scales speeds (0 = a fixed random crop)."""
    h, w = out_hw
    hs, ws = src_hw
    s_max = 0.8 * min(hs / h, ws / w)
    s0 = math.exp(rng.uniform(math.log(min(0.7, s_max)), math.log(s_max)))  # source px per output px
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], np.float64).T
    centre = _translate(-(w - 1) / 2, -(h - 1) / 2)
    # per-clip motion style, in output pixels / radians per frame
    speed = rng.uniform(0.0, 4.0) * motion
    ang = rng.uniform(0, 2 * math.pi)
    v0 = speed * np.array([math.cos(ang), math.sin(ang)])
    acc, shake = rng.uniform(0.0, 0.4) * motion, (rng.uniform(0, 0.8) if rng.random() < 0.3 else 0.0) * motion
    zoom_rate, rot_rate = rng.normal(0, 0.01) * motion, rng.normal(0, 0.004) * motion
    persp_rate = rng.normal(0, 2e-6, 2) * motion
    vel = v0 + np.cumsum(rng.normal(0, acc + 1e-9, (T, 2)), 0)
    vel[0] = 0.0
    pos = np.cumsum(vel, 0) + rng.normal(0, shake + 1e-9, (T, 2)) * (shake > 0)
    tt = np.arange(T)
    logz = zoom_rate * tt + np.cumsum(rng.normal(0, abs(zoom_rate) * 0.3 + 1e-9, T))
    theta = rot_rate * tt + np.cumsum(rng.normal(0, abs(rot_rate) * 0.3 + 1e-9, T))
    g = rng.normal(0, 5e-5, 2) * motion + persp_rate[None, :] * tt[:, None]
    for _ in range(tries):
        Hs = np.empty((T, 3, 3))
        for t in range(T):
            c, s = math.cos(theta[t]), math.sin(theta[t])
            z = s0 * math.exp(logz[t])
            A = np.array([[z * c, -z * s, pos[t, 0] * s0], [z * s, z * c, pos[t, 1] * s0], [0, 0, 1]])
            P = np.array([[1, 0, 0], [0, 1, 0], [g[t, 0], g[t, 1], 1]])
            Hs[t] = A @ P @ centre
        pts = np.einsum("tij,jk->tik", Hs, corners)
        pts = pts[:, :2] / pts[:, 2:]
        lo, hi = pts.min(axis=(0, 2)), pts.max(axis=(0, 2))
        room = np.array([ws - 1, hs - 1]) - (hi - lo)
        if (room >= 0).all():
            off = -lo + rng.uniform(0, 1, 2) * room
            return np.einsum("ij,tjk->tik", _translate(*off), Hs)
        # too much motion for the source frame: damp everything and retry
        pos, logz, theta, g = 0.6 * pos, 0.6 * logz, 0.6 * theta, 0.6 * g
        s0 = max(0.5, 0.85 * s0)
    Hs = np.broadcast_to(Hs[:1], Hs.shape).copy()  # fall back to a fixed crop
    pts = np.einsum("ij,jk->ik", Hs[0], corners)
    pts = pts[:2] / pts[2:]
    off = -pts.min(1) + rng.uniform(0, 1, 2) * np.maximum(np.array([ws - 1, hs - 1]) - np.ptp(pts, 1), 0)
    return np.einsum("ij,tjk->tik", _translate(*off), Hs)


def homography_flow(Hs: np.ndarray, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Exact forward flow between consecutive frames of a camera path: ``(T-1, 2, h, w)`` float32 and
    the valid mask ``(T-1, h, w)`` (target inside the next frame)."""
    h, w = out_hw
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    grid = np.stack([gx.ravel(), gy.ravel(), np.ones(h * w)])  # (3, h*w)
    M = np.linalg.inv(Hs[1:]) @ Hs[:-1]  # frame t pixel -> frame t+1 pixel
    y = M @ grid  # (T-1, 3, h*w)
    y = y[:, :2] / y[:, 2:]
    flow = (y - grid[None, :2]).reshape(-1, 2, h, w).astype(np.float32)
    valid = ((y[:, 0] >= 0) & (y[:, 0] <= w - 1) & (y[:, 1] >= 0) & (y[:, 1] <= h - 1)).reshape(-1, h, w)
    return flow, valid


# --------------------------------------------------------------------------------------------------
# clip sampler
# --------------------------------------------------------------------------------------------------
def fade_envelope(rng: np.random.Generator, T: int, hw: tuple[int, int]) -> np.ndarray:
    """(T, h, w, 1) float32 brightness factors of a random fade: from a level in [0.05, 0.9] (log-uniform) to 1
    (a fade in) or from 1 to it (a fade out), log-linear over 2..T-1 frames starting at a random frame, of the
    whole frame or (30%) of one half of it (left, right, top or bottom: a light switched on or off)."""
    lo = float(np.exp(rng.uniform(np.log(0.05), np.log(0.9))))
    k = int(rng.integers(2, max(3, T)))
    s = int(rng.integers(0, max(1, T - k)))
    x = np.clip((np.arange(T) - s) / k, 0.0, 1.0)
    level = np.exp(np.log(lo) * (1.0 - x if rng.random() < 0.5 else x)).astype(np.float32)
    env = np.ones((T, *hw, 1), np.float32)
    if rng.random() < 0.3:
        h, w = hw
        region = [np.s_[:, :, : w // 2], np.s_[:, :, w // 2 :], np.s_[:, : h // 2], np.s_[:, h // 2 :]][rng.integers(4)]
        env[region] = level[:, None, None, None]
    else:
        env *= level[:, None, None, None]
    return env


def _chw(frames: list[np.ndarray]) -> np.ndarray:
    # transpose while still uint8 (a strided float copy is ~10x slower), then scale in place
    x = np.ascontiguousarray(np.stack(frames).transpose(0, 3, 1, 2)).astype(np.float32)
    x *= 1.0 / 255.0
    return x


class VideoClipSampler:
    """Random training clips from cached videos (see the module docstring).

    ``videos``: ``{name: (t, h, w, 3) uint8 RGB}`` (from :func:`load_videos` / :func:`load_cache`) or
    a path to a cache ``.npz``. ``p_real``: probability of real temporal order (flow then None);
    ``p_cut``: probability of one scene cut; ``p_static``: probability of no camera motion; ``p_fade``:
    probability of a fade or a light switched on or off (:func:`fade_envelope`; such a clip gets an operator
    without a content statistic).

    >>> import numpy as np
    >>> vids = {"v": np.random.default_rng(0).integers(0, 255, (4, 64, 96, 3), dtype=np.uint8)}
    >>> clip = VideoClipSampler(vids).sample_clip(np.random.default_rng(0), 5, 32)
    >>> clip["processed"].shape, clip["cut_mask"].shape
    ((5, 3, 32, 32), (5,))
    """

    def __init__(self, videos: dict[str, np.ndarray] | str | Path, operators: Sequence[str] = TRAIN_OPERATORS,
                 p_real: float = 0.5, p_cut: float = 0.15, p_static: float = 0.1, max_real_stride: int = 2,
                 real_flow: bool = False, p_fade: float = 0.0):
        self.videos = load_cache(videos) if isinstance(videos, (str, Path)) else dict(videos)
        if not self.videos:
            raise ValueError("no videos")
        self.names = sorted(self.videos)
        self.operators = list(operators)
        self.p_real, self.p_cut, self.p_static = p_real, p_cut, p_static
        self.max_real_stride = max_real_stride
        self.real_flow = real_flow
        self.p_fade = p_fade

    def _segment(self, rng: np.random.Generator, n: int, hw: tuple[int, int], real: bool):
        """``n`` original frames of one shot, and the camera homographies."""
        vid = self.videos[self.names[rng.integers(len(self.names))]]
        if real:
            stride = int(rng.integers(1, self.max_real_stride + 1))
            stride = min(stride, max(1, (len(vid) - 1) // max(n - 1, 1)))
            start = int(rng.integers(0, max(1, len(vid) - (n - 1) * stride)))
            idx = np.minimum(start + stride * np.arange(n), len(vid) - 1)
            if rng.random() < 0.5:
                idx = idx[::-1]  # footage played backwards is just as natural for a deflicker filter
        else:
            idx = np.full(n, rng.integers(len(vid)))
        motion = 0.0 if rng.random() < self.p_static else float(rng.uniform(0.3, 1.0))
        Hs = camera_path(rng, n, hw, vid.shape[1:3], motion)
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # Hs map output -> source pixels
        frames = [cv2.warpPerspective(vid[i], H, (hw[1], hw[0]), flags=flags, borderMode=cv2.BORDER_REFLECT)
                  for i, H in zip(idx, Hs)]
        return frames, Hs

    def sample_clip(self, rng: np.random.Generator, T: int, size: int | tuple[int, int]) -> dict:
        """One clip: ``processed``/``original``/``target`` ``(T, 3, h, w)`` float32 in [0, 1],
        ``flow`` ``(T-1, 2, h, w)`` and ``flow_valid`` ``(T-1, h, w)`` (None in real mode without ``real_flow``),
        ``cut_mask`` ``(T,)`` bool, ``operator`` name, ``faded``: whether the originals fade (``p_fade``)."""
        hw = (size, size) if isinstance(size, int) else tuple(size)
        real = rng.random() < self.p_real
        with_flow = not real or self.real_flow
        cut = int(rng.integers(2, T - 1)) if (T >= 4 and rng.random() < self.p_cut) else T
        seg_lens = [cut] + ([T - cut] if cut < T else [])
        originals, flows, valids = [], [], []
        for k, n in enumerate(seg_lens):
            frames, Hs = self._segment(rng, n, hw, real)
            originals += frames
            if with_flow:
                if k > 0:  # the pair that straddles the cut
                    flows.append(np.zeros((1, 2, *hw), np.float32))
                    valids.append(np.zeros((1, *hw), bool))
                if not real:
                    f, v = homography_flow(Hs, hw)
                elif n > 1:  # the footage's own motion: DIS flow between the originals, occlusions masked
                    est = compute_flows(frames, "dis")
                    f, v = est.forward.transpose(0, 3, 1, 2).copy(), est.valid
                else:
                    continue
                flows.append(f)
                valids.append(v)
        cut_mask = np.zeros(T, bool)
        cut_mask[cut:cut + 1] = cut < T
        names = self.operators
        faded = self.p_fade > 0 and rng.random() < self.p_fade
        if faded:  # a fade or a light: the target changes brightness too
            env = fade_envelope(rng, T, hw)
            originals = [np.clip(f * e + 0.5, 0, 255).astype(np.uint8) for f, e in zip(originals, env)]
            # not a content-adaptive operator: it renormalises each processed frame's brightness while its target
            # keeps the shot start's statistic, so P would hide a fade its target shows
            names = [n for n in self.operators if OPERATORS[n].stats is None] or self.operators
        name = names[rng.integers(len(names))]
        op = make_operator(name, rng)
        processed, target = [], []
        for t, frame in enumerate(originals):
            if t == 0 or cut_mask[t]:
                op.fit(frame)  # content-adaptive ops: the target keeps the statistic of the shot start
            processed.append(op.apply(frame, t))
            target.append(op.apply_consistent(frame, t))
        return {
            "processed": _chw(processed),
            "original": _chw(originals),
            "target": _chw(target),
            "flow": np.concatenate(flows) if with_flow else None,
            "flow_valid": np.concatenate(valids) if with_flow else None,
            "cut_mask": cut_mask,
            "operator": name,
            "faded": faded,
        }


class ClipBatchSampler:
    """Endless iterator of torch batches ``(b, t, 3, h, w)`` from a :class:`VideoClipSampler`.

    Clip ``i`` of batch ``k`` uses the seed ``(seed, k, i)``, so batches are identical whatever
    ``num_threads`` is. With ``num_threads > 0`` clips are built in a thread pool (OpenCV releases
    the GIL) and the next batch is prefetched. Unknown flows (real mode) come back as zeros with
    ``flow_valid`` all False.

    >>> import numpy as np
    >>> vids = {"v": np.random.default_rng(0).integers(0, 255, (4, 64, 96, 3), dtype=np.uint8)}
    >>> batch = next(iter(ClipBatchSampler(VideoClipSampler(vids), batch_size=2, T=4, size=32)))
    >>> tuple(batch["processed"].shape), tuple(batch["flow"].shape)
    ((2, 4, 3, 32, 32), (2, 3, 2, 32, 32))
    """

    def __init__(self, sampler: VideoClipSampler, batch_size: int, T: int, size: int | tuple[int, int],
                 seed: int = 0, num_threads: int = 0):
        self.sampler, self.batch_size, self.T, self.seed = sampler, batch_size, T, seed
        self.hw = (size, size) if isinstance(size, int) else tuple(size)
        self.num_threads = num_threads

    def _clip(self, k: int, i: int) -> dict:
        return self.sampler.sample_clip(np.random.default_rng([self.seed, k, i]), self.T, self.hw)

    def _collate(self, clips: list[dict]) -> dict:
        import torch

        T, (h, w) = self.T, self.hw
        flow = np.zeros((len(clips), T - 1, 2, h, w), np.float32)
        valid = np.zeros((len(clips), T - 1, h, w), bool)
        for j, c in enumerate(clips):
            if c["flow"] is not None:
                flow[j], valid[j] = c["flow"], c["flow_valid"]
        out = {k: torch.from_numpy(np.stack([c[k] for c in clips])) for k in ("processed", "original", "target",
                                                                             "cut_mask")}
        out["flow"], out["flow_valid"] = torch.from_numpy(flow), torch.from_numpy(valid)
        out["operator"] = [c["operator"] for c in clips]
        return out

    def batch(self, k: int) -> dict:
        return self._collate([self._clip(k, i) for i in range(self.batch_size)])

    def __iter__(self) -> Iterator[dict]:
        if self.num_threads <= 0:
            k = 0
            while True:
                yield self.batch(k)
                k += 1
        with ThreadPoolExecutor(self.num_threads) as pool:
            def submit(k):
                return [pool.submit(self._clip, k, i) for i in range(self.batch_size)]

            k, pending = 0, submit(0)
            while True:
                nxt = submit(k + 1)  # prefetch
                yield self._collate([f.result() for f in pending])
                k, pending = k + 1, nxt
