"""PoseFilter: the user-facing streaming pose smoother (state held for you)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from streamssm.pose.model import PoseSSM, PoseSSMConfig
from streamssm._device import resolve_device
from streamssm.stream import reset_state
from streamssm.weights import PACKAGE_WEIGHTS, load_into, read_weights

DEFAULT_WEIGHTS = PACKAGE_WEIGHTS / "pose.safetensors"


def load_pose_model(weights: str | Path | None = None, device: torch.device | str = "cpu", backend: str = "auto") -> PoseSSM:
    """Build a :class:`PoseSSM` from a safetensors file (default: the weights shipped in the package)."""
    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    config, tensors, _ = read_weights(path, "pose")
    config = {**config, "backend": backend}
    try:
        model = PoseSSM(PoseSSMConfig(**config))
    except TypeError as e:
        raise ValueError(f"{path}: config does not describe a pose model ({e})") from None
    load_into(model, tensors, path)
    return model.to(device).eval()


class PoseFilter:
    """Causal jitter removal for keypoint streams, one frame at a time or a whole sequence at once.

    Args:
        weights: a ``.safetensors`` file from ``streamssm train pose``; default: shipped weights.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``.
        strength: 0 returns the input, 1 the full learned correction (values up to 2 are accepted).
        fps: frame rate of the stream (the filter adapts its time constants to it).

    Points are (K, D) for one stream or (B, K, D) for B independent streams, D = 2 or 3, in any units
    (pixels, normalised, metres, millimetres). NaN/inf coordinates or confidence 0 mark a keypoint
    missing for that frame. numpy in, numpy out; torch in, torch out.

    >>> import numpy as np
    >>> f = PoseFilter()
    >>> pts = np.random.default_rng(0).normal(size=(33, 2)).astype(np.float32)
    >>> f.step(pts).shape
    (33, 2)
    >>> f.reset()
    >>> f.filter(np.repeat(pts[None], 5, 0)).shape
    (5, 33, 2)
    """

    def __init__(self, weights: str | Path | None = None, device: str = "auto", strength: float = 1.0, fps: float = 30.0,
                 backend: str = "auto"):
        if not (0.0 <= float(strength) <= 2.0):
            raise ValueError(f"strength must be in [0, 2], got {strength}")
        if not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps}")
        self.device = resolve_device(device)
        self.model = load_pose_model(weights, self.device, backend)
        self.strength = float(strength)
        self.fps = float(fps)
        self.state: tuple[Tensor, ...] | None = None
        self._shape: tuple[int, int] | None = None  # (B, K) of the running stream

    # --------------------------------------------------------------------------------- helpers
    def _to_tensor(self, points: Any, confidence: Any, lead: int) -> tuple[Tensor, Tensor | None, bool, Any]:
        is_torch = isinstance(points, Tensor)
        if not is_torch:
            try:
                points = np.asarray(points)
            except Exception as e:
                raise ValueError(f"points must be an array of shape (K, D) or (B, K, D), got {type(points).__name__}") from e
            if points.dtype == object or not np.issubdtype(points.dtype, np.number):
                raise ValueError(f"points must be numeric, got dtype {points.dtype}")
        dtype = points.dtype
        p = points if is_torch else torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
        if p.dim() not in (lead + 2, lead + 3):
            want = "(K, D) or (B, K, D)" if lead == 0 else "(T, K, D) or (T, B, K, D)"
            raise ValueError(f"points must have shape {want}, got {tuple(p.shape)}")
        if p.shape[-1] not in (2, 3):
            raise ValueError(f"points must have D = 2 or 3 coordinates in the last axis, got shape {tuple(p.shape)}")
        if p.shape[-2] < 1:
            raise ValueError(f"points must have at least one keypoint, got shape {tuple(p.shape)}")
        c = None
        if confidence is not None:
            c = confidence if isinstance(confidence, Tensor) else torch.from_numpy(np.ascontiguousarray(confidence, dtype=np.float32))
            if tuple(c.shape) != tuple(p.shape[:-1]):
                raise ValueError(f"confidence must have shape {tuple(p.shape[:-1])} (points without D), got {tuple(c.shape)}")
            c = c.to(self.device, torch.float32)
        return p.to(self.device, torch.float32), c, is_torch, dtype

    def _check_stream(self, b: int, k: int) -> None:
        if self._shape is not None and self._shape != (b, k) and self.state is not None:
            raise ValueError(
                f"this stream has {self._shape[0]} stream(s) of {self._shape[1]} keypoints; got {b} x {k}. "
                "The keypoint count cannot change mid-stream: call reset() first"
            )
        self._shape = (b, k)

    @staticmethod
    def _out(y: Tensor, is_torch: bool, dtype, like: Any):
        if is_torch:
            return y.to(like.device, like.dtype if like.is_floating_point() else torch.float32)
        y = y.cpu().numpy()
        return y.astype(dtype) if np.issubdtype(dtype, np.floating) else y

    # ------------------------------------------------------------------------------------- API
    @torch.no_grad()
    def step(self, points: Any, confidence: Any = None):
        """Filter one frame: (K, D) or (B, K, D) -> same shape, same type."""
        p, c, is_torch, dtype = self._to_tensor(points, confidence, 0)
        single = p.dim() == 2
        if single:
            p = p[None]
            c = None if c is None else c[None]
        b, k, _ = p.shape
        self._check_stream(b, k)
        y, self.state = self.model.step(p, c, self.state, fps=self.fps, strength=self.strength)
        return self._out(y[0] if single else y, is_torch, dtype, points)

    @torch.no_grad()
    def filter(self, sequence: Any, confidence: Any = None):
        """Filter a whole sequence (T, K, D) or (T, B, K, D) with the parallel scan, continuing from
        (and advancing) the current state: the same result as calling :meth:`step` on every frame."""
        p, c, is_torch, dtype = self._to_tensor(sequence, confidence, 1)
        single = p.dim() == 3
        if single:
            p = p[:, None]
            c = None if c is None else c[:, None]
        t, b, k, _ = p.shape
        if t == 0:
            raise ValueError("sequence is empty (T = 0 frames)")
        self._check_stream(b, k)
        y, self.state = self.model(p.transpose(0, 1), None if c is None else c.transpose(0, 1), self.state,
                                   fps=self.fps, strength=self.strength)
        y = y.transpose(0, 1)
        return self._out(y[:, 0] if single else y, is_torch, dtype, sequence)

    def reset(self, mask: Any = None) -> None:
        """Start over: every stream (``mask=None``) or those where ``mask`` (B,) is True."""
        if mask is None or self.state is None:
            self.state, self._shape = None, None
            return
        b, k = self._shape
        mask = torch.as_tensor(np.asarray(mask), dtype=torch.bool)
        if mask.shape != (b,):
            raise ValueError(f"reset mask must have shape (B,)=({b},), got {tuple(mask.shape)}")
        fresh = self.model.init_state(b, k, self.device)
        self.state = reset_state(self.state, fresh, mask)

    def get_state(self):
        return None if self.state is None else tuple(s.clone() for s in self.state)

    def set_state(self, state) -> None:
        if state is None:
            self.reset()
            return
        b, k = state[0].shape[:2]
        self.model.check_state(state, b, k)
        self.state = tuple(s.to(self.device).clone() for s in state)
        self._shape = (b, k)
