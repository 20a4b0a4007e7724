"""Test streams for the export tests: pose and video inputs that exercise the models' special cases."""

from __future__ import annotations

import torch

STEPS = 20


def pose_frames(batch: int, k: int, d: int, steps: int = STEPS, seed: int = 0) -> list[dict]:
    """A jittery skeleton moving slowly, with a joint that is missing (NaN) for a while and one at
    confidence 0, at a per-stream frame rate."""
    g = torch.Generator().manual_seed(seed)
    body = torch.randn(1, k, d, generator=g)
    frames = []
    for t in range(steps):
        pts = body + 0.05 * t + 0.02 * torch.randn(batch, k, d, generator=g)
        conf = torch.rand(batch, k, generator=g) * 0.8 + 0.2
        if 3 <= t < 8:
            pts[0, 1] = float("nan")
        conf[-1, -1] = 0.0
        frames.append({"points": pts, "confidence": conf, "fps": torch.linspace(24.0, 60.0, batch)})
    return frames


def video_frames(batch: int, h: int, w: int, steps: int = STEPS, seed: int = 0) -> list[dict]:
    """A textured scene drifting a pixel per frame, its processed version with flickering colour gains,
    and a scene cut half way (the cut detector and the state reset are in the graph)."""
    g = torch.Generator().manual_seed(seed)
    scenes = [torch.rand(batch, 3, h + steps, w + steps, generator=g) for _ in range(2)]
    frames = []
    for t in range(steps):
        scene = scenes[t >= steps // 2]
        orig = scene[..., t : t + h, t : t + w]
        gain = 1 + 0.15 * torch.randn(batch, 3, 1, 1, generator=g)
        frames.append({"original": orig.contiguous(), "processed": (orig * gain).clamp(0, 1)})
    return frames


def perturbed(model, seed: int = 0):
    """Nudge every parameter: the zero-initialised head and mixers otherwise hide most of the graph."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()
