"""Live preview for the webcam path: ``cv2.imshow`` only when a display exists.

The camera itself is opened with :func:`streamssm.io.open_source` (``open_source(0)``, or
``open_source("live:clip.mp4")`` to rehearse without a camera); this module only shows frames.
On a headless machine (no ``$DISPLAY``/``$WAYLAND_DISPLAY``, or an OpenCV build without GUI such
as ``opencv-python-headless``) :class:`Preview` is a no-op, so the same loop runs in CI and on a
laptop.
"""

from __future__ import annotations

import functools
import logging
import os
import sys

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["has_display", "Preview"]


@functools.lru_cache(maxsize=1)
def _opencv_has_gui() -> bool:
    try:
        import cv2
    except ImportError:
        return False
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() not in ("", "NONE")
    return False


def has_display() -> bool:
    """True when a window can be shown: a display is reachable and OpenCV was built with a GUI backend.

    >>> isinstance(has_display(), bool)
    True
    """
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            return False
    return _opencv_has_gui()


class Preview:
    """Shows RGB frames side by side in one window; a no-op without a display.

    ``show(*frames)`` returns ``False`` once the user pressed ``q``/``Esc`` or closed the window,
    so a capture loop can stop on it. ``enabled=None`` means "if :func:`has_display`".

    >>> with Preview(enabled=False) as view:
    ...     view.show(np.zeros((48, 64, 3), np.uint8), np.zeros((48, 64, 3), np.uint8))
    True
    """

    def __init__(self, title: str = "streamssm", enabled: bool | None = None, max_width: int = 1920):
        self.title = title
        self.enabled = has_display() if enabled is None else bool(enabled)
        self.max_width = max_width
        self._opened = False
        if enabled and not has_display():
            log.warning("no display available; preview disabled")
            self.enabled = False

    def show(self, *frames: np.ndarray) -> bool:
        if not self.enabled:
            return True
        import cv2

        h = max(f.shape[0] for f in frames)
        tiles = [f if f.shape[0] == h else cv2.resize(f, (round(f.shape[1] * h / f.shape[0]), h)) for f in frames]
        img = np.concatenate(tiles, axis=1)[:, :, ::-1]  # RGB -> BGR for OpenCV
        if img.shape[1] > self.max_width:
            s = self.max_width / img.shape[1]
            img = cv2.resize(img, (self.max_width, round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
        cv2.imshow(self.title, np.ascontiguousarray(img))
        self._opened = True
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        # The window was closed with the mouse.
        return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        if self._opened:
            import cv2

            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
            self._opened = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
