"""Classical causal deflicker baselines (numpy + OpenCV) to compare the learned filter against.

- :func:`ema`: plain exponential moving average ``O_t = a P_t + (1 - a) O_{t-1}`` (ghosts on motion).
- Motion-compensated EMA (:func:`mc_ema_step`, :class:`MCEMAFilter`, :func:`mc_ema`)::

      O_t = a P_t + (1 - a) W(O_{t-1})   where the flow I_t -> I_{t-1} is consistent,
      O_t = P_t                         where it is occluded / leaves the frame,

  ``W(O_{t-1})(x) = O_{t-1}(x + F_{t->t-1}(x))``, DIS flow on the *originals* ``I`` (the processed
  frames flicker, so their flow would be unreliable), the occlusion mask is the forward-backward check
  of :func:`streamssm.metrics.consistency_mask` (Ruder et al. 2016). This is the causal recurrence at
  the heart of Lai et al. 2018's temporal loss, without the network. Note that scoring it with
  :func:`streamssm.metrics.warp_error` using the *same* DIS flow flatters it; score with
  ``flow="farneback"`` as well. ``occlusion=False`` drops the mask (blends wherever the flow lands inside
  the frame) and saves the forward flow: on the benchmark's real-flicker cases that trades better, see
  ``benchmarks/video_quality.py``.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import cv2
import numpy as np

from streamssm.metrics import consistency_mask, inside_mask, warp

__all__ = ["ema", "MCEMAState", "mc_ema_step", "MCEMAFilter", "mc_ema"]


def _f32(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) * (1.0 / 255.0) if x.dtype == np.uint8 else x.astype(np.float32)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def ema(processed: Sequence[np.ndarray], alpha: float = 0.3) -> list[np.ndarray]:
    """Plain causal EMA of uint8 RGB frames (no motion compensation)."""
    out, state = [], None
    for p in processed:
        p = _f32(p)
        state = p if state is None else alpha * p + (1.0 - alpha) * state
        out.append(_u8(state))
    return out


class MCEMAState(NamedTuple):
    """Everything the next step needs: the previous original (grey uint8) and output (float [0, 1])."""

    prev_gray: np.ndarray  # (h, w) uint8
    prev_out: np.ndarray  # (h, w, 3) float32


def _dis(preset: int):
    return cv2.DISOpticalFlow_create(preset)


def mc_ema_step(processed: np.ndarray, original: np.ndarray, state: MCEMAState | None,
                alpha: float = 0.3, dis=None, occlusion: bool = True) -> tuple[np.ndarray, MCEMAState]:
    """One causal step: ``out, state = mc_ema_step(P_t, I_t, state)``; ``state=None`` starts a stream.

    ``dis`` is a reusable ``cv2.DISOpticalFlow`` (created with the MEDIUM preset when None).
    Returns the uint8 RGB output frame and the new state; the input state is not modified.
    """
    p = _f32(processed)
    gray = cv2.cvtColor(original, cv2.COLOR_RGB2GRAY)
    if state is None:
        return _u8(p), MCEMAState(gray, p)
    dis = dis if dis is not None else _dis(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    bw = dis.calc(gray, state.prev_gray, None)  # I_t(x) ~ I_{t-1}(x + bw(x))
    if occlusion:
        valid = consistency_mask(bw, dis.calc(state.prev_gray, gray, None))[..., None]
    else:  # only where x + bw(x) lies inside the previous frame
        valid = inside_mask(bw)[..., None]
    prev = warp(state.prev_out, bw)
    # blend only where the history is trustworthy: out = p + valid * (1 - alpha) * (prev - p)
    prev -= p
    prev *= (1.0 - alpha) * valid.astype(np.float32)
    out = p + prev
    return _u8(out), MCEMAState(gray, out)


class MCEMAFilter:
    """Stateful convenience wrapper around :func:`mc_ema_step`.

    >>> import numpy as np
    >>> f = MCEMAFilter(alpha=0.3)
    >>> frame = np.full((32, 32, 3), 100, np.uint8)
    >>> f.step(frame, frame).shape
    (32, 32, 3)
    >>> f.reset()
    """

    def __init__(self, alpha: float = 0.3, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, occlusion: bool = True):
        self.alpha = alpha
        self.occlusion = occlusion
        self._dis = _dis(preset)
        self.state: MCEMAState | None = None

    def reset(self) -> None:
        self.state = None

    def step(self, processed: np.ndarray, original: np.ndarray) -> np.ndarray:
        out, self.state = mc_ema_step(processed, original, self.state, self.alpha, self._dis, self.occlusion)
        return out


def mc_ema(processed: Sequence[np.ndarray], originals: Sequence[np.ndarray], alpha: float = 0.3,
           preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, occlusion: bool = True) -> list[np.ndarray]:
    """Motion-compensated EMA over a whole clip (frame by frame, causal)."""
    f = MCEMAFilter(alpha, preset, occlusion)
    return [f.step(p, i) for p, i in zip(processed, originals, strict=True)]
