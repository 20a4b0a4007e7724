"""Train the pose filter: clean CMU mocap + estimator-like noise, full backprop through time with the
parallel scan. ``streamssm train pose --minutes 25 -o pose.safetensors`` (CPU, 2 cores)."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from streamssm.pose.data import VAL_SUBJECTS, PoseDataset, subjects_in
from streamssm.pose.model import PoseSSM, PoseSSMConfig
from streamssm.pose.noise import add_noise
from streamssm.train._checkpoint import (StopRequest, check_finite, finite, load_optimizer, save_optimizer,
                                         train_settings, warn_changed_settings)
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
    # what the filter is given beside the points, per stream (:func:`vary_confidence`): nothing (MediaPipe users,
    # the baselines), a confidence scaled down (a detector scoring lower), or one unrelated to the error; the rest
    # get the noise model's own, which drops on its outliers
    p_no_conf: float = 0.35
    p_conf_scaled: float = 0.3
    p_conf_noise: float = 0.1
    p_flip: float = 0.3  # streams in another axis convention (``PoseDataset.sample_batch``'s p_flip)
    val_subjects: tuple[str, ...] | None = None  # file-name prefixes held out; None: VAL_SUBJECTS, else the last one


def vary_confidence(noisy: np.ndarray, conf: np.ndarray, rng: np.random.Generator, p_none: float = 0.0,
                    p_scaled: float = 0.0, p_noise: float = 0.0) -> np.ndarray:
    """The noise model's confidence (b, t, k), made per stream what real input gives: with probability ``p_none``
    none (1 wherever a point is given: held dropouts look valid, as they do without a confidence), ``p_scaled``
    scaled by 0.25-1 and raised to a power of 0.5-2 (a detector calibrated otherwise), ``p_noise`` unrelated to
    the error (uniform 0.2-1 where the noise model's is above 0: its held dropouts keep 0, as a detector that
    reports a missed point does). A missing point keeps confidence 0 but where there is none at all."""
    b = conf.shape[0]
    given = np.isfinite(noisy).all(-1)
    u = rng.random(b)[:, None, None]
    scale = rng.uniform(0.25, 1.0, (b, 1, 1))
    power = np.exp(rng.uniform(np.log(0.5), np.log(2.0), (b, 1, 1)))
    noise = np.where(given & (conf > 0), rng.uniform(0.2, 1.0, conf.shape), 0.0)
    out = np.where(u < p_none, given.astype(conf.dtype), conf)
    out = np.where((u >= p_none) & (u < p_none + p_scaled), scale * conf ** power, out)
    return np.where((u >= p_none + p_scaled) & (u < p_none + p_scaled + p_noise), noise, out).astype(conf.dtype)


def make_batch(ds: PoseDataset, rng: np.random.Generator, batch: int, length: int,
               speed: tuple[float, float] = (0.8, 1.25), cfg: PoseTrainConfig | None = None):
    """(noisy, confidence, clean, fps, body_size) torch tensors for one training batch; ``cfg``: its confidence
    and axis-convention mix (None: the noise model's confidence, the usual axes)."""
    b = ds.sample_batch(rng, batch, length, speed_range=speed, p_flip=cfg.p_flip if cfg else 0.0)
    noisy, conf = add_noise(b.clean, rng, names=b.names, fps=b.fps, size=b.body_size)
    if cfg is not None:
        conf = vary_confidence(noisy, conf, rng, cfg.p_no_conf, cfg.p_conf_scaled, cfg.p_conf_noise)
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


def validation_subjects(data_dir, wanted: tuple[str, ...] | None, log=print) -> tuple[str, ...]:
    """The subjects (file-name prefixes before the first ``_``) held out for validation: ``wanted``, else
    :data:`VAL_SUBJECTS` where the data has them, else the last subject in name order (said to ``log``).
    ValueError naming the folder when fewer than two subjects leave nothing to train or to validate on."""
    present = subjects_in(data_dir)
    if wanted:
        missing = [s for s in wanted if s not in present]
        if missing:
            raise ValueError(f"--val-subjects {','.join(missing)}: no clip of the data is named so (its subjects, "
                             f"the file-name part before the first '_': {', '.join(present[:12])})")
        val = tuple(wanted)
    else:
        val = tuple(s for s in VAL_SUBJECTS if s in present)
        if not val and len(present) >= 2:
            val = (present[-1],)
            log(f"validation on subject {val[0]} (the data has none of {', '.join(VAL_SUBJECTS)}; "
                "choose with --val-subjects)")
    if val and len(val) == len(present):
        raise ValueError(f"--val-subjects {','.join(val)}: that is every subject of the data, leaving none to train on")
    if not val:
        raise ValueError(f"{data_dir}: pose training needs clips of at least two subjects (the file-name part before "
                         f"the first '_', e.g. 002_01.bvh.gz): some to train on, one held out for validation; "
                         f"found {len(present)} ({', '.join(present[:12])})")
    return val


def train_pose(out: str | Path, cfg: PoseTrainConfig | None = None, model_cfg: PoseSSMConfig | None = None,
               resume: str | Path | None = None, data_dir=None, progress: bool = True, log=print,
               device: str = "cpu", init: str | Path | None = None) -> Path:
    """Train and save ``out`` (safetensors); returns the path. Resumes weights, optimiser and random state from
    ``resume`` (a resumed run goes on as the uninterrupted one would), or starts from the weights ``init`` at
    step 0 (fine-tuning, a fresh optimiser).

    The batches are drawn on the CPU (numpy noise model) and moved to ``device``."""
    cfg = cfg or PoseTrainConfig()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("pose training runs in one process (it is small enough for one CPU core); torchrun is for "
                         "`streamssm train video`: run `streamssm train pose` without it")
    torch.manual_seed(cfg.seed)
    model_cfg = model_cfg or PoseSSMConfig(backend="torch")
    model = PoseSSM(model_cfg)
    start_step, saved = 0, {}
    resuming = bool(resume) and Path(resume).exists()
    if resume and not resuming:
        log(f"no checkpoint at {resume} yet: starting a new run")
    src = resume if resuming else init
    if src:
        conf, tensors, extra = read_weights(src, "pose")
        if conf != model_cfg.to_dict():
            raise ValueError(f"{src}: its config {conf} differs from the requested {model_cfg.to_dict()}; "
                             "use the same --preset, or write to a new file")
        load_into(model, tensors, src)
        if resuming:
            start_step = int(extra.get("step", 0))
            log(f"resumed from {src} at step {start_step}")
            warn_changed_settings(src, extra.get("train"), cfg, log, per_piece=("steps", "val_every"))
        else:
            log(f"starting from the weights {src}")
    # the same random streams as the uninterrupted run: restored from the checkpoint (below) when it has them
    rng = np.random.default_rng(cfg.seed)
    dev = torch.device(device)
    model.to(dev)
    to_dev = lambda batch: tuple(a.to(dev, non_blocking=True) for a in batch)  # noqa: E731
    val_subjects = validation_subjects(data_dir, cfg.val_subjects, log)
    train_ds = PoseDataset.from_dir(data_dir, split="train", layout=cfg.layout, val_subjects=val_subjects)
    val_ds = PoseDataset.from_dir(data_dir, split="val", layout=cfg.layout, val_subjects=val_subjects)
    vrng = np.random.default_rng(12345)
    val = [to_dev(make_batch(val_ds, vrng, 16, 128, cfg=cfg)) for _ in range(4)]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if start_step:
        saved = load_optimizer(resume, opt, start_step, log)
        if "rng" in saved:
            rng.bit_generator.state = saved["rng"]
            torch.set_rng_state(saved["torch_rng"])
        else:  # a checkpoint from before session 18: new batches (the resume step in the seed), not replayed ones
            rng = np.random.default_rng([cfg.seed, start_step])
    trained_before = float(saved.get("elapsed", 0.0))  # seconds of the earlier pieces of this run
    total = cfg.steps
    if start_step >= total:
        log(f"{resume} is already at step {start_step} of {total}: nothing to train (raise --steps to go on)")
        return Path(out)
    # the budget is the whole run's (below): one the earlier pieces spent already leaves nothing to train, and a
    # step here would rewrite the checkpoint past its budget
    if cfg.minutes is not None and trained_before >= cfg.minutes * 60:
        log(f"{resume} has trained {trained_before / 60:.3g} min already, the whole --minutes {cfg.minutes:g} budget: "
            f"nothing to train, it stays at step {start_step} (resume with a larger --minutes to go on)")
        return Path(out)

    def lr_at(i):  # warm-up then cosine over the run: steps done or time spent (every piece), whichever is further
        w = min(1.0, (i + 1) / 100)
        frac = min(i, total) / total
        if cfg.minutes:
            frac = max(frac, min(1.0, (trained_before + time.time() - t0) / (cfg.minutes * 60)))
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
    saved_step = None  # this run's last checkpoint

    def save(v: float) -> None:
        nonlocal saved_step
        # never NaN weights over a checkpoint (an all-NaN output scores a loss of 0 here, NaN joints being "not yet
        # seen": the weights tell); checked where it matters, not every step
        check_finite(finite(model, torch.tensor(v)), done, out, saved_step)
        # the optimiser first: the weights' step is the checkpoint's; with it the random streams, for a resume
        save_optimizer(out, opt, done, rng=rng.bit_generator.state, torch_rng=torch.get_rng_state(),
                       elapsed=trained_before + time.time() - t0)
        save_weights(out, model, "pose", model_cfg.to_dict(), {"step": done, "val_loss": v, "train": train_settings(cfg)})
        saved_step = done

    with StopRequest() as stop:
        for step in bar:
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            noisy, conf, clean, fps, size = to_dev(make_batch(train_ds, rng, cfg.batch, cfg.length, cfg.speed, cfg))
            y, _ = model(noisy, conf, fps=fps)
            loss = pose_loss(y, clean, size, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            done = step + 1
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if done % cfg.val_every == 0 or done == total:
                v = validate()
                log(f"step {done}: train loss {loss.item():.3f}, val loss {v:.3f}")
                save(v)
                best = min(best, v)
            if stop.requested:
                save(validate())
                log(f"{stop.requested}: stopped at step {done}; {out} holds it (rerun with --resume to continue)")
                StopRequest.raise_for(stop.code)
            # the budget counts the earlier pieces of a resumed run, as the schedule does: the run never stopped
            if cfg.minutes is not None and trained_before + time.time() - t0 > cfg.minutes * 60:
                log(f"time budget of {cfg.minutes} min reached at step {done}; rerun with --resume and a larger "
                    "--minutes to continue")
                break
    v = validate()
    save(v)
    log(f"saved {out} (step {done}, val loss {v:.3f}, {time.time() - t0:.0f} s)")
    return Path(out)
