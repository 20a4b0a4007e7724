"""Train the pose filter: clean CMU mocap + estimator-like noise, full backprop through time with the
parallel scan. ``streamssm train pose --minutes 25 -o pose.safetensors`` (CPU, 2 cores)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from streamssm.pose.data import PoseDataset
from streamssm.pose.model import PoseSSM, PoseSSMConfig
from streamssm.pose.noise import add_noise
from streamssm.train._checkpoint import load_optimizer, save_optimizer
from streamssm.weights import load_into, read_weights, save_weights


@dataclass
class PoseTrainConfig:
    steps: int = 8000
    minutes: float | None = None  # wall-clock budget: the schedule follows time as well, ending at the budget
    batch: int = 16
    length: int = 96
    lr: float = 5e-3
    weight_decay: float = 1e-4
    w_pos: float = 2.0
    w_vel: float = 1.0
    w_acc: float = 1.5
    seed: int = 0
    val_every: int = 250
    layout: str = "body17"
    speed: tuple[float, float] = (0.8, 1.25)  # playback speed range (log-uniform): wider = faster motions seen


def make_batch(ds: PoseDataset, rng: np.random.Generator, batch: int, length: int,
               speed: tuple[float, float] = (0.8, 1.25)):
    """(noisy, confidence, clean, fps, body_size) torch tensors for one training batch."""
    b = ds.sample_batch(rng, batch, length, speed_range=speed)
    noisy, conf = add_noise(b.clean, rng, names=b.names, fps=b.fps, size=b.body_size)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return t(noisy), t(conf), t(b.clean), t(b.fps), t(b.body_size)


def pose_loss(y: torch.Tensor, clean: torch.Tensor, size: torch.Tensor, cfg: PoseTrainConfig) -> torch.Tensor:
    """L1 on position, velocity and acceleration errors, in percent of body size; NaN outputs (joints
    not yet seen) are left out."""
    e = (y - clean) / size[:, None, None, None] * 100.0
    ok = torch.isfinite(e).all(-1, keepdim=True)
    e = torch.where(ok, e, torch.zeros_like(e))
    okf = ok.float()
    pos = e.abs().sum() / okf.sum().clamp_min(1) / e.shape[-1]
    ev, okv = e[:, 1:] - e[:, :-1], okf[:, 1:] * okf[:, :-1]
    vel = (ev.abs() * okv).sum() / okv.sum().clamp_min(1) / e.shape[-1]
    ea, oka = ev[:, 1:] - ev[:, :-1], okv[:, 1:] * okv[:, :-1]
    acc = (ea.abs() * oka).sum() / oka.sum().clamp_min(1) / e.shape[-1]
    return cfg.w_pos * pos + cfg.w_vel * vel + cfg.w_acc * acc


def train_pose(out: str | Path, cfg: PoseTrainConfig | None = None, model_cfg: PoseSSMConfig | None = None,
               resume: str | Path | None = None, data_dir=None, progress: bool = True, log=print,
               device: str = "cpu") -> Path:
    """Train and save ``out`` (safetensors); returns the path. Resumes weights from ``resume``.

    The batches are drawn on the CPU (numpy noise model) and moved to ``device``."""
    cfg = cfg or PoseTrainConfig()
    torch.manual_seed(cfg.seed)
    model_cfg = model_cfg or PoseSSMConfig(backend="torch")
    model = PoseSSM(model_cfg)
    start_step = 0
    if resume and Path(resume).exists():
        conf, tensors, extra = read_weights(resume, "pose")
        if conf != model_cfg.to_dict():
            raise ValueError(f"{resume}: its config {conf} differs from the requested {model_cfg.to_dict()}; "
                             "resume with the same preset or write to a new file")
        load_into(model, tensors, resume)
        start_step = int(extra.get("step", 0))
        log(f"resumed from {resume} at step {start_step}")
    # a resumed run draws new batches (the resume step is in the seed), not the ones its first piece trained on
    rng = np.random.default_rng([cfg.seed] + ([start_step] if start_step else []))
    dev = torch.device(device)
    model.to(dev)
    to_dev = lambda batch: tuple(a.to(dev, non_blocking=True) for a in batch)  # noqa: E731
    train_ds = PoseDataset.from_dir(data_dir, split="train", layout=cfg.layout)
    val_ds = PoseDataset.from_dir(data_dir, split="val", layout=cfg.layout)
    vrng = np.random.default_rng(12345)
    val = [to_dev(make_batch(val_ds, vrng, 16, 128)) for _ in range(4)]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if start_step:
        load_optimizer(resume, opt, start_step, log)
    total = cfg.steps
    if start_step >= total:
        log(f"{resume} is already at step {start_step} of {total}: nothing to train (raise --steps to go on)")
        return Path(out)

    def lr_at(i):  # warm-up then cosine over the run: steps done or time spent, whichever is further along
        w = min(1.0, (i + 1) / 100)
        frac = min(i, total) / total
        if cfg.minutes:
            frac = max(frac, min(1.0, (time.time() - t0) / (cfg.minutes * 60)))
        return cfg.lr * w * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))

    def validate():
        model.eval()
        with torch.no_grad():
            ls = [pose_loss(model(n, c, fps=f)[0], cl, s, cfg).item() for n, c, cl, f, s in val]
        model.train()
        return float(np.mean(ls))

    try:
        from tqdm import tqdm

        bar = tqdm(range(start_step, total), initial=start_step, total=total, disable=not progress, desc="train pose")
    except ImportError:  # tqdm is in the pose/video extras; fall back to plain logging
        bar = range(start_step, total)
    raw = float(np.mean([pose_loss(n, cl, s, cfg).item() for n, c, cl, f, s in val]))
    log(f"val loss of the unfiltered input: {raw:.3f}")
    t0 = time.time()
    best = float("inf")
    done = start_step

    def save(v: float) -> None:
        save_optimizer(out, opt, done)  # first: the weights' step is the checkpoint's
        save_weights(out, model, "pose", model_cfg.to_dict(), {"step": done, "val_loss": v})

    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        noisy, conf, clean, fps, size = to_dev(make_batch(train_ds, rng, cfg.batch, cfg.length, cfg.speed))
        y, _ = model(noisy, conf, fps=fps)
        loss = pose_loss(y, clean, size, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        done = step + 1
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % cfg.val_every == 0 or step + 1 == total:
            v = validate()
            log(f"step {done}: train loss {loss.item():.3f}, val loss {v:.3f}")
            save(v)
            best = min(best, v)
        if cfg.minutes is not None and time.time() - t0 > cfg.minutes * 60:
            log(f"time budget of {cfg.minutes} min reached at step {done}; rerun with --resume to continue")
            break
    v = validate()
    save(v)
    log(f"saved {out} (step {done}, val loss {v:.3f}, {time.time() - t0:.0f} s)")
    return Path(out)
