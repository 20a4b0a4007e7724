"""streamssm: a causal, streaming temporal-consistency filter built on a selective state-space model.

``import streamssm`` needs only torch and numpy. The filters are imported on first use::

    >>> import streamssm
    >>> streamssm.__version__
    '0.1.0'
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "PoseFilter": "streamssm.pose.filter",
    "VideoFilter": "streamssm.video.filter",
    "Stream": "streamssm.stream",
    "FilterState": "streamssm.stream",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'streamssm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
