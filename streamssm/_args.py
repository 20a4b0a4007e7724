"""Argument checks shared by the filters (clear ValueErrors naming the argument)."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_number(value: Any, name: str) -> float:
    """``float(value)``, or ValueError naming ``name`` (bools, strings and None are refused)."""
    if isinstance(value, (bool, np.bool_, str, bytes)) or value is None:
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def as_timestamp(value: Any) -> float:
    """A frame timestamp in seconds: a finite number, or ValueError naming ``timestamp``."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"timestamp must be a number of seconds, got {value!r}") from None
    if not np.isfinite(t):
        raise ValueError(f"timestamp must be finite, got {t}")
    return t
