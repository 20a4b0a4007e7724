"""Small media helpers shared by the tests (test_faults, test_bad_inputs, io and video tests)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
W, H = 64, 48


def frame(i: int, w: int = W, h: int = H) -> np.ndarray:
    """A drifting gradient with a brightness wobble, uint8 RGB."""
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = 0.5 + 0.3 * np.sin(6 * x + 4 * y + 0.3 * i + np.array([0, 1, 2], np.float32)) + 0.08 * (-1) ** i
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def make_clip(path: Path, n: int = 30, size=(W, H), rate: int = 30, pts=None, options=None, noise: bool = False) -> Path:
    """``n`` frames as H.264 with raw PyAV (not our sink); ``pts`` in 1/rate units makes gaps; ``noise``
    adds a noise strip (big packets: the output fills up quickly)."""
    import av

    w, h = size
    with av.open(str(path), "w", options=options or {}) as c:
        vs = c.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "ultrafast"}
        for i in range(n):
            img = frame(i, w, h)
            if noise:
                img[:, : w // 2] = np.random.default_rng(i).integers(0, 256, (h, w // 2, 3), dtype=np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = (i if pts is None else pts[i]), Fraction(1, rate)
            c.mux(vs.encode(f))
        c.mux(vs.encode(None))
    return Path(path)


def frames_in(path: Path) -> int:
    """Frames a file decodes to, straight from PyAV (raises if it is not playable)."""
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


def timestamps_in(path: Path) -> list[float]:
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        return [float(f.pts * f.time_base) for f in c.decode(vs)]


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def env() -> dict:
    """Headless, the checkout first on the path (so the subprocess runs this tree)."""
    e = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return e


def cli_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "streamssm", *map(str, args)]


def run_cli(*args, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cli_cmd(*args), capture_output=True, text=True, timeout=timeout, env=env(), **kw)


class FakeCapture:
    """Stands in for ``cv2.VideoCapture``: ``good`` frames made by ``make(i)`` (RGB, handed out as BGR, ``delay``
    seconds apart), then every read fails (``then="fail"``: unplugged) or blocks until ``release()``
    (``then="block"``: a driver that never returns)."""

    def __init__(self, make, good: int, then: str = "fail", delay: float = 0.0):
        self.make, self.good, self.then, self.delay, self.i = make, good, then, delay, 0
        self.released = threading.Event()

    def isOpened(self):
        return True

    def get(self, prop):
        return 30.0

    def read(self):
        if self.i < self.good:
            self.i += 1
            time.sleep(self.delay)
            return True, self.make(self.i)[:, :, ::-1].copy()
        if self.then == "block":
            self.released.wait(10)
        return False, None

    def release(self):
        self.released.set()
