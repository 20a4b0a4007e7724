"""Argument checks shared by the filters (clear ValueErrors naming the argument)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def as_number(value: Any, name: str, unit: str = "") -> float:
    """``float(value)``, or ValueError naming ``name`` (and ``unit``; bools, strings and None are refused)."""
    if not isinstance(value, (bool, np.bool_, str, bytes)) and value is not None:
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise ValueError(f"{name} must be a number{' of ' + unit if unit else ''}, got {value!r}")


def as_timestamp(value: Any) -> float:
    """A frame timestamp in seconds: a finite number, or ValueError naming ``timestamp``."""
    t = as_number(value, "timestamp", "seconds")
    if not math.isfinite(t):
        raise ValueError(f"timestamp must be finite, got {t}")
    return t


def as_strength(value: Any, name: str = "strength") -> float:
    """A filter's ``strength``: a number in [0, 2], or ValueError naming ``name``."""
    s = as_number(value, name)
    if not (0.0 <= s <= 2.0):  # also NaN
        raise ValueError(f"{name} must be in [0, 2], got {s}")
    return s


def as_ghost_res(value: Any, name: str = "ghost_res") -> float:
    """The video filter's ghost guard: 0 (off) or a positive flow residual, or ValueError naming ``name``."""
    g = as_number(value, name)
    if not (math.isfinite(g) and g >= 0):
        raise ValueError(f"{name} must be 0 (off) or a positive flow residual such as 0.3, got {g}")
    return g


def as_exposure_lock(value: Any, name: str = "exposure_lock") -> float:
    """The video filter's exposure lock: 0 (off) or the weight of a frame in its average, up to 1, or ValueError."""
    a = as_number(value, name)
    if not (0.0 <= a <= 1.0):  # also NaN
        raise ValueError(f"{name} must be 0 (off) or a weight up to 1 such as 0.3 (lower: steadier), got {a}")
    return a


def as_positive(value: Any, name: str, unit: str) -> float:
    """A positive finite number (``fps``, ``max_gap``), or ValueError naming ``name``."""
    v = as_number(value, name, unit)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive number of {unit}, got {v}")
    return v


class Checked:
    """A public attribute checked whenever it is set, ``check(value) -> value`` raising ValueError (the filters'
    ``strength``, ``fps``): set in ``__init__`` like any attribute, and a later ``f.strength = nan`` is refused
    there, naming it, instead of failing inside the next step. Stored on the instance as ``_<name>``."""

    def __init__(self, check, doc: str = ""):
        self.check, self.__doc__ = check, doc

    def __set_name__(self, owner, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, obj, owner=None):
        return self if obj is None else getattr(obj, self.slot)

    def __set__(self, obj, value) -> None:
        setattr(obj, self.slot, self.check(value))
