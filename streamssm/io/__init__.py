"""Readers and writers: video files, image folders, cameras, capture URLs (see :mod:`streamssm.io.video`)."""

from .video import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Frame,
    FrameSink,
    FrameSource,
    ThreadedSink,
    VideoIOError,
    open_sink,
    open_source,
    paired,
    prefetch,
    sigterm_as_exception,
    to_rate,
)
from .webcam import Preview, has_display

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "Frame",
    "FrameSink",
    "FrameSource",
    "ThreadedSink",
    "VideoIOError",
    "Preview",
    "has_display",
    "open_sink",
    "open_source",
    "paired",
    "prefetch",
    "sigterm_as_exception",
    "to_rate",
]
