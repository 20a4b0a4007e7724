"""VideoFilter: the user-facing streaming deflicker (state held for you)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from streamssm._device import resolve_device
from streamssm.video.model import VideoSSM, VideoSSMConfig, grid_shape
from streamssm.weights import PACKAGE_WEIGHTS, load_into, read_weights

log = logging.getLogger("streamssm")
DEFAULT_WEIGHTS = PACKAGE_WEIGHTS / "video.safetensors"


def load_video_model(weights: str | Path | None = None, device: torch.device | str = "cpu", backend: str = "auto") -> VideoSSM:
    """Build a :class:`VideoSSM` from a safetensors file (default: the weights shipped in the package)."""
    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    config, tensors, _ = read_weights(path, "video")
    try:
        model = VideoSSM(VideoSSMConfig(**{**config, "backend": backend}))
    except TypeError as e:
        raise ValueError(f"{path}: config does not describe a video model ({e})") from None
    load_into(model, tensors, path)
    return model.to(device).eval()


def frame_to_float(frame: Any, name: str = "frame") -> tuple[np.ndarray, np.dtype]:
    """H x W x {1,3,4} or H x W, uint8 / uint16 / float in [0, 1] -> (H x W x 3 float32 RGB, input dtype)."""
    if not isinstance(frame, np.ndarray):
        try:
            frame = np.asarray(frame)
        except Exception as e:
            raise ValueError(f"{name} must be an H x W x 3 array, got {type(frame).__name__}") from e
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4) or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"{name} must be H x W x 3 (RGB), H x W x 4 (RGBA) or H x W (gray), got shape {frame.shape}")
    dtype = frame.dtype
    if dtype == np.uint8:
        x = frame.astype(np.float32) * (1.0 / 255.0)
    elif dtype == np.uint16:
        x = frame.astype(np.float32) * (1.0 / 65535.0)
    elif np.issubdtype(dtype, np.floating):
        x = frame.astype(np.float32)
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or inf")
    else:
        raise ValueError(f"{name} must be uint8, uint16 or float in [0, 1], got dtype {dtype}")
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    elif x.shape[2] == 4:
        x = x[..., :3]  # alpha is dropped: the filter works on colour
    return np.clip(x, 0.0, 1.0), dtype


def float_to_frame(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype == np.uint8:
        return (x * 255.0 + 0.5).astype(np.uint8)
    if dtype == np.uint16:
        return (x * 65535.0 + 0.5).astype(np.uint16)
    return x.astype(dtype)


class VideoFilter:
    """Causal deflicker for processed video, one frame at a time or a whole clip at once.

    Args:
        weights: ``.safetensors`` from ``streamssm train video``; default: the shipped weights.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``.
        strength: 0 returns the processed frame, 1 the full learned correction (up to 2).
        half: run the network in float16 on CUDA (default True there).

    ``step(frame, original=None)``: numpy H x W x 3 uint8 RGB in and out (gray, RGBA, 16-bit and float
    frames are converted; the output has the input's dtype), or torch (B, 3, H, W) float tensors in
    [0, 1], in and out, on the filter's device (B independent streams). With ``original`` (the frame the
    operator saw) the filter is guided; without it, it works on the processed frame alone.

    >>> import numpy as np
    >>> f = VideoFilter(device="cpu")
    >>> frame = np.zeros((72, 128, 3), np.uint8)
    >>> f.step(frame).shape
    (72, 128, 3)
    """

    def __init__(self, weights: str | Path | None = None, device: str = "auto", strength: float = 1.0,
                 half: bool | None = None, backend: str = "auto"):
        if not (0.0 <= float(strength) <= 2.0):
            raise ValueError(f"strength must be in [0, 2], got {strength}")
        self.device = resolve_device(device)
        self.model = load_video_model(weights, self.device, backend)
        self.strength = float(strength)
        self.half = (self.device.type == "cuda") if half is None else bool(half)
        self.state: tuple[Tensor, ...] | None = None
        self._key: tuple | None = None  # (B, H, W, guided) of the running stream
        self.frames_seen = 0

    # ------------------------------------------------------------------------------- plumbing
    def _stream_key(self, b: int, h: int, w: int) -> None:
        key = (b, h, w)
        if self._key is not None and self._key != key and self.state is not None:
            warnings.warn(f"streamssm: frame size changed from {self._key[1]}x{self._key[2]} to {h}x{w} "
                          f"(or stream count {self._key[0]} -> {b}); the filter starts over", RuntimeWarning, stacklevel=3)
            self.state = None
        self._key = key

    def _run(self, P: Tensor, I: Tensor | None, parallel: bool) -> Tensor:
        """P, I (B, T, 3, H, W) float on device -> O (same)."""
        b, t, _, h, w = P.shape
        self._stream_key(b, h, w)
        amp = self.half and self.device.type == "cuda"
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            if parallel:
                O, self.state = self.model(P, I, self.state, strength=self.strength)
            else:
                outs = []
                for i in range(t):
                    o, self.state = self.model.step(P[:, i], None if I is None else I[:, i], self.state, self.strength)
                    outs.append(o)
                O = torch.stack(outs, 1)
        self.frames_seen += t
        return O.float()

    def _tensor_in(self, frame: Tensor, name: str) -> Tensor:
        if frame.dim() != 4 or frame.shape[1] != 3:
            raise ValueError(f"{name} tensor must be (B, 3, H, W) float in [0, 1], got shape {tuple(frame.shape)}")
        if not frame.is_floating_point():
            raise ValueError(f"{name} tensor must be floating point in [0, 1], got {frame.dtype}")
        return frame.to(self.device, torch.float32)

    # ------------------------------------------------------------------------------------- API
    def step(self, frame: Any, original: Any = None):
        """Filter one frame (see the class docstring for the accepted types)."""
        if isinstance(frame, Tensor):
            P = self._tensor_in(frame, "frame")
            I = None if original is None else self._tensor_in(original, "original")
            if I is not None and I.shape != P.shape:
                raise ValueError(f"original {tuple(I.shape)} and processed {tuple(P.shape)} frames differ in size")
            O = self._run(P[:, None], None if I is None else I[:, None], parallel=False)[:, 0]
            return O.to(frame.dtype)
        p, dtype = frame_to_float(frame, "frame")
        P = torch.from_numpy(p).permute(2, 0, 1)[None, None].to(self.device)
        I = None
        if original is not None:
            i, _ = frame_to_float(original, "original")
            if i.shape != p.shape:
                raise ValueError(f"original frame is {i.shape[1]}x{i.shape[0]} but the processed frame is "
                                 f"{p.shape[1]}x{p.shape[0]}: they must be the same size")
            I = torch.from_numpy(i).permute(2, 0, 1)[None, None].to(self.device)
        O = self._run(P, I, parallel=False)[0, 0]
        return float_to_frame(O.permute(1, 2, 0).cpu().numpy(), dtype)

    def filter(self, frames: Sequence[Any] | Iterable[Any], originals: Sequence[Any] | None = None, chunk: int = 32) -> list:
        """Filter a clip with the parallel scan, ``chunk`` frames at a time with the state carried
        (continuing from, and advancing, the current state): the same frames as :meth:`step`."""
        frames = list(frames)
        if originals is not None:
            originals = list(originals)
            if len(originals) != len(frames):
                raise ValueError(f"{len(frames)} processed frames but {len(originals)} originals: they must pair up")
        if not frames:
            raise ValueError("no frames to filter")
        out = []
        for s in range(0, len(frames), chunk):
            ps = [frame_to_float(f, f"frame {s + i}") for i, f in enumerate(frames[s : s + chunk])]
            dtype = ps[0][1]
            sizes = {p.shape for p, _ in ps}
            if len(sizes) != 1:
                # a size change inside the chunk: fall back to frame-by-frame, which resets with a warning
                for i, f in enumerate(frames[s : s + chunk]):
                    out.append(self.step(f, None if originals is None else originals[s + i]))
                continue
            P = torch.from_numpy(np.stack([p for p, _ in ps])).permute(0, 3, 1, 2)[None].to(self.device)
            I = None
            if originals is not None:
                ii = [frame_to_float(f, f"original {s + i}")[0] for i, f in enumerate(originals[s : s + chunk])]
                if any(i.shape != ps[0][0].shape for i in ii):
                    raise ValueError(f"originals and processed frames differ in size near frame {s}")
                I = torch.from_numpy(np.stack(ii)).permute(0, 3, 1, 2)[None].to(self.device)
            O = self._run(P, I, parallel=True)[0].permute(0, 2, 3, 1).cpu().numpy()
            out += [float_to_frame(o, dtype) for o in O]
        return out

    def reset(self) -> None:
        self.state, self._key = None, None

    def get_state(self):
        return None if self.state is None else tuple(s.clone() for s in self.state)

    def set_state(self, state) -> None:
        self.state = None if state is None else tuple(s.to(self.device).clone() for s in state)
