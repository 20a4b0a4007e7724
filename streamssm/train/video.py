"""Train the video filter on synthetic flicker made from real footage, with the parallel scan.

    streamssm train video --data ../shared/data/videos -o video.safetensors --minutes 9 [--resume]
    torchrun --nproc_per_node=N -m streamssm.cli train video ...   # DistributedDataParallel, unchanged

Each clip: real frames (own temporal order, or a still frame under a synthetic camera path with known
flow, sometimes with a scene cut), a training operator applied with jittered parameters (P) and with
fixed ones (the target). Losses: L1 to the target, and a temporal loss on known-flow clips (with
``real_flow``, ``--real-flow``, also on clips in the footage's own motion, DIS flow between the originals):
``|(O_t - warp(O_{t+1})) - (T_t - warp(T_{t+1}))|`` on valid pixels. Half of the clips are shown
without the original (processed-only mode); with ``p_no_blend`` (``--p-no-blend``) that share of the batches
runs with the motion-compensated blend off, so the per-cell colour correction has to remove the flicker on its
own (on real footage the blend gives way wherever the flow is unsure, and the correction is what is left); with
``p_fade`` (``--p-fade``) that share of the clips fades in or out, or gets a light switched on or off, and the
target with it, so the filter learns to let a lasting brightness change through (processed-only batches only:
:func:`without_faded`).
Checkpoints (weights + optimiser) let a run resume, so it can go in pieces of a few minutes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from streamssm.video.model import VideoSSM, VideoSSMConfig
from streamssm.train._checkpoint import (StopRequest, check_finite, finite, load_optimizer, save_optimizer,
                                         train_settings, warn_changed_settings)
from streamssm.weights import build_config, load_into, read_weights, save_weights


@dataclass
class VideoTrainConfig:
    steps: int = 4000
    minutes: float | None = None
    batch: int = 16  # per process
    length: int = 16
    sizes: tuple[int, ...] = (160, 192, 256, 320)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    w_temporal: float = 4.0
    p_unguided: float = 0.5
    p_no_blend: float = 0.0  # share of batches trained with the temporal blend off (the colour correction alone)
    real_flow: bool = False  # temporal loss on real-motion clips too, with DIS flow between the originals
    p_fade: float = 0.0  # share of clips whose originals fade or get a light switched on/off (processed-only batches)
    workers: int = 8
    seed: int = 0
    save_every: int = 250
    short_side: int = 288
    max_frames: int | None = None  # frames decoded per training video; None: every one
    frame_cache: str | None = None  # keep the decoded frames on disk in this folder (load_videos); None: in memory


BUDGET_SYNC = 10  # steps between the DDP ranks' agreements on the --minutes budget


def warp_torch(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` (n, c, h, w) at ``p + flow(p)`` (bilinear, border clamp). flow (n, 2, h, w) in px."""
    n, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gx = (xs[None] + flow[:, 0]) / max(w - 1, 1) * 2 - 1
    gy = (ys[None] + flow[:, 1]) / max(h - 1, 1) * 2 - 1
    return F.grid_sample(x, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="border", align_corners=True)


def video_loss(O, target, flow, flow_valid, w_temporal: float):
    """L1 fidelity to the consistent target + temporal L1 against the target's own change."""
    fid = (O - target).abs().mean()
    b, t = O.shape[:2]
    if t < 2 or not bool(flow_valid.any()):
        return fid, fid.detach() * 0
    fl = flow.flatten(0, 1)
    wO = warp_torch(O[:, 1:].flatten(0, 1), fl)
    wT = warp_torch(target[:, 1:].flatten(0, 1), fl)
    d = (O[:, :-1].flatten(0, 1) - wO) - (target[:, :-1].flatten(0, 1) - wT)
    m = flow_valid.flatten(0, 1)[:, None].float()
    tmp = (d.abs() * m).sum() / (m.sum() * 3).clamp_min(1)
    return fid + w_temporal * tmp, tmp.detach()


def without_faded(batch: dict) -> dict:
    """A guided batch without its faded clips (``p_fade``; all of them if every clip is faded): fades are shown
    processed-only. Guided, the guide gain already follows the original's brightness, and fade clips in guided
    batches cost guided quality (session 11's fine-tunes of the shipped weights: E_warp ratio 0.463 against 0.410
    without fades, 0.413 with them in processed-only batches alone)."""
    faded = batch["faded"]
    if not bool(faded.any()) or bool(faded.all()):
        return batch
    return {k: v[~faded] for k, v in batch.items()}


def _quiet_worker(_: int) -> None:
    """A data-loader worker leaves Ctrl-C and SIGTERM to the training process, which finishes its step, saves and
    shuts the workers down (a worker that died of the signal first failed the step under way instead)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextlib.contextmanager
def _workers_shut_down(it):
    """Shut the data loader's workers down when training ends, an error included: they ignore SIGTERM
    (:func:`_quiet_worker`), so the terminate() of Python's exit would leave the process waiting on them forever."""
    try:
        yield
    finally:
        shut = getattr(it, "_shutdown_workers", None)  # workers > 0: PyTorch's own clean shutdown of the iterator
        if shut is not None:
            shut()


class _ClipStream(torch.utils.data.IterableDataset):
    """Endless batches of clips, step ``k``'s drawn from the seed ``(seed, rank, k)`` alone: whichever DataLoader
    worker draws it and however many there are, a run resumed at ``start`` gets the batches the uninterrupted run
    would have (its weights are the same, bit for bit on a CPU); each DDP rank draws its own."""

    def __init__(self, videos, cfg: VideoTrainConfig, rank: int, operators=None, start: int = 0):
        self.videos, self.cfg, self.rank, self.operators, self.start = videos, cfg, rank, operators, start

    def __iter__(self):
        from streamssm.data.video_clips import VideoClipSampler
        from streamssm.video.operators import TRAIN_OPERATORS

        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else 0
        nw = info.num_workers if info is not None else 1
        sampler = VideoClipSampler(self.videos, operators=self.operators or TRAIN_OPERATORS,
                                   real_flow=self.cfg.real_flow, p_fade=self.cfg.p_fade)
        k = self.start + wid  # the DataLoader takes the workers' batches in turn: step k's from worker k % nw
        while True:
            rng = np.random.default_rng([self.cfg.seed, self.rank, k])  # step k's clips from k alone, whoever draws
            k += nw
            size = int(rng.choice(self.cfg.sizes))
            batch = [sampler.sample_clip(rng, self.cfg.length, size) for _ in range(self.cfg.batch)]
            hw = (size, size)
            flow = np.zeros((len(batch), self.cfg.length - 1, 2, *hw), np.float32)
            valid = np.zeros((len(batch), self.cfg.length - 1, *hw), bool)
            for j, c in enumerate(batch):
                if c["flow"] is not None:
                    flow[j], valid[j] = c["flow"], c["flow_valid"]
            out = {k: torch.from_numpy(np.stack([c[k] for c in batch])) for k in ("processed", "original", "target", "cut_mask")}
            out["flow"], out["flow_valid"] = torch.from_numpy(flow), torch.from_numpy(valid)
            out["faded"] = torch.tensor([c["faded"] for c in batch])
            yield out


def _not_the_input(src: str | Path, out: str | Path) -> Path:
    """``out`` as a Path; ValueError naming it when it is the weights ``src`` (the same path, or a link to that
    file): the finishing steps below write a finished copy and keep what they read, like every other writer here
    (the training --output, the exporters, ``streamssm video``)."""
    out = Path(out)
    try:
        same = out.exists() and Path(src).exists() and os.path.samefile(out, src)
    except OSError:
        same = False
    if same or os.path.realpath(out) == os.path.realpath(src):
        raise ValueError(f"{out}: is the input weights file ({src}); refusing to overwrite it, name another output")
    return out


def without_guided_correction(src: str | Path, out: str | Path) -> Path:
    """Copy video weights with ``guided_correction`` off: guided, the per-cell colour correction (dA, db) is not
    applied and only the learned, motion-compensated temporal blend remains; processed-only is unchanged. How
    the shipped weights were finished: with session 4's flow, the guided correction changed nothing measurable
    on the real-flicker benchmark cases (E_warp ratio 0.327 vs 0.325, PSNR 28.2 vs 28.3 dB) but slowly pulled a
    clean still scene ~7/255 away from its input (``tests/test_soak.py``); without it that scene passes through
    unchanged. Processed-only the correction stays here (it removes some global colour flicker on moving content);
    :func:`finish_processed_only` is the separate step that, for the shipped weights, switches it off there too."""
    out = _not_the_input(src, out)
    config, tensors, extra = read_weights(src, "video")
    model = VideoSSM(VideoSSMConfig(**config))
    load_into(model, tensors, src)
    config = {**config, "guided_correction": False}
    return save_weights(out, model, "video", config, extra)


def recalibrate_blend(model: VideoSSM, conf_shift: float, gain: float, still_px: float) -> VideoSSM:
    """In place: ``log_conf`` plus ``conf_shift``, ``config.blend_gain`` times ``gain``, ``config.still_px`` set.
    The one definition of the blend calibration (:func:`calibrate_blend` writes it to a file; the benchmarks undo
    it with ``-conf_shift``, ``1 / gain``, ``still_px=0`` and try grid points on top)."""
    with torch.no_grad():
        model.log_conf += conf_shift
    model.config.blend_gain *= gain
    model.config.still_px = float(still_px)
    return model


def calibrate_blend(src: str | Path, out: str | Path, conf_shift: float = 2.0, gain: float = 0.6,
                    still_px: float = 0.25) -> Path:
    """Copy video weights with the temporal blend recalibrated: the flow-confidence scale ``exp(log_conf)`` times
    ``exp(conf_shift)`` (a flow residual must be larger before a pixel counts as occluded), the blend weight times
    ``gain`` where the content moves (``config.blend_gain``), and full weight kept where the guide holds still
    (flow under ~``still_px`` full-resolution pixels; :func:`streamssm.video.model.blend_confidence`). Both
    modes; nothing else changes.

    The shipped weights' second finishing step (after :func:`without_guided_correction`): (conf_shift, gain) are
    the point of a grid on the validation pairs alone (../shared/data/pairs: Haze2 dehazing, bike-packing
    enhancement; guided, E_warp scored with Farneback flow) with the lowest mean E_warp ratio among those at
    least 0.5 dB above the motion-compensated EMA's mean PSNR(O, P) there (``benchmarks/video_calibration.py``:
    E_warp ratio 0.358 at 35.3 dB, against 0.338 / 32.2 dB uncalibrated and 0.372 / 34.6 dB for the EMA; since
    session 9's guide gain the shipped point scores 0.372 / 35.5 dB there and the rule would pick conf_shift 2.7).
    Training learned a strict confidence scale (0.078), which stops the blend on real footage wherever the flow
    is slightly off; the looser scale blends there, and the gain keeps the output closer to the processed frame
    where the content moves. ``still_px`` keeps the long memory a still shot's flicker needs (with the gain alone
    a still camera under a flickering operator kept a quarter of its flicker, as MC-EMA's a=0.3 does; 2% with
    it, as uncalibrated)."""
    out = _not_the_input(src, out)
    config, tensors, extra = read_weights(src, "video")
    if "calibration" in extra:  # a second shift would stack on the first while the record kept only one
        raise ValueError(f"{src}: its blend is calibrated already ({extra['calibration']}); calibrate the weights it "
                         "was made from (or undo_finishing() first)")
    model = VideoSSM(VideoSSMConfig(**config))
    load_into(model, tensors, src)
    before = float(model.config.still_px)
    recalibrate_blend(model, conf_shift, gain, still_px)
    config = {**config, "blend_gain": float(model.config.blend_gain), "still_px": model.config.still_px}
    extra = {**extra, "calibration": {"conf_shift": conf_shift, "gain": gain, "still_px": still_px,
                                      "still_px_before": before}}
    return save_weights(out, model, "video", config, extra)


GATE_OFF = 1e4  # a processed-only gate this wide passes every pixel (exp(-1 / 1e4) > 0.9999)


def stored_gate_width(gate_width: float) -> float:
    """The processed-only gate width as the weights hold it: ``math.inf`` (no gate) -> ``GATE_OFF``; ValueError
    naming ``gate_width`` unless it is positive."""
    width = GATE_OFF if gate_width == math.inf else float(gate_width)
    if not 0 < width < math.inf:
        raise ValueError(f"gate_width: expected a positive width (or inf: no gate), got {gate_width!r}")
    return width


def set_processed_only(model: VideoSSM, correction: bool, gate_width: float) -> VideoSSM:
    """In place: processed-only, the per-cell colour correction on or off (``config.processed_correction``) and the
    width of the gate that refuses to blend where the warped previous output disagrees with the frame
    (``exp(log_gate[1])``; ``math.inf``: the gate is off, stored as a width of ``GATE_OFF``). The one definition of
    the processed-only finishing (:func:`finish_processed_only` writes it to a file; ``benchmarks/
    video_processed_only.py`` tries grid points with it)."""
    with torch.no_grad():
        model.log_gate[1] = math.log(stored_gate_width(gate_width))
    model.config.processed_correction = bool(correction)
    return model


def finish_processed_only(src: str | Path, out: str | Path, correction: bool = False,
                          gate_width: float = 2.0) -> Path:
    """Copy video weights with the processed-only mode finished (:func:`set_processed_only`); guided is
    unchanged. The file records the setting and, under "before", the one the weights were trained with (kept from
    the source's record if it was finished already), so a benchmark can undo it.

    The shipped weights' third finishing step (after :func:`calibrate_blend`), with these defaults: the point of a
    grid on the validation pairs alone (``benchmarks/video_processed_only.py``: processed-only, E_warp scored with
    Farneback flow between the originals) with the lowest mean E_warp ratio among those at least 0.5 dB above the
    mean PSNR(O, P) of the motion-compensated EMA run on P alone (DIS flow between the processed frames, a=0.3,
    occlusion mask): 0.381 / 35.7 dB there, against 0.383 / 34.7 for that EMA and 0.457 / 35.5 as trained. Training
    left a narrow gate (width 0.25), which refused the blend exactly where P flickers, and a per-cell colour
    correction that on the pairs cost 2.9 dB of PSNR(O, P) for a 0.025 lower ratio (at that gate)."""
    out = _not_the_input(src, out)
    config, tensors, extra = read_weights(src, "video")
    model = VideoSSM(VideoSSMConfig(**config))
    load_into(model, tensors, src)
    before = {"correction": model.config.processed_correction, "gate_width": float(model.log_gate[1].detach().exp())}
    set_processed_only(model, correction, gate_width)
    config = {**config, "processed_correction": model.config.processed_correction}
    extra = {**extra, "processed_only": {"correction": bool(correction), "gate_width": stored_gate_width(gate_width),
                                         "before": extra.get("processed_only", {}).get("before", before)}}
    return save_weights(out, model, "video", config, extra)


def undo_calibration(model: VideoSSM, extra: dict) -> bool:
    """In place: the blend calibration a weights file records (its ``extra``, :func:`calibrate_blend`) taken off
    ``model`` again; False if it records none. ``still_px`` goes back to the value recorded before (0 for files
    calibrated before session 18, which did not record it: the trained value then)."""
    cal = extra.get("calibration")
    if not cal:
        return False
    still_before = float(cal.get("still_px_before", 0.0))
    recalibrate_blend(model, -float(cal["conf_shift"]), 1.0 / float(cal["gain"]), still_before)
    return True


def undo_processed_only(model: VideoSSM, extra: dict) -> bool:
    """In place: the processed-only finishing a weights file records (:func:`finish_processed_only`) taken off
    ``model`` again (its "before"); False if it records none."""
    po = extra.get("processed_only")
    if not po:
        return False
    before = po["before"]
    set_processed_only(model, bool(before["correction"]), float(before["gate_width"]))
    return True


def undo_finishing(src: str | Path) -> tuple[VideoSSM, dict]:
    """The model of the video weights ``src`` as training left it: the blend calibration (:func:`calibrate_blend`)
    and the processed-only finishing (:func:`finish_processed_only`) undone from their records in the file, so that
    training can go on from them (``streamssm train video --init``); (model, its config). Whether the guided
    correction is off (:func:`without_guided_correction`) stays as the file has it: it is part of the config."""
    config, tensors, extra = read_weights(src, "video")
    model = VideoSSM(VideoSSMConfig(**config))
    load_into(model, tensors, src)
    undo_calibration(model, extra)
    undo_processed_only(model, extra)
    kept = ("blend_gain", "still_px", "processed_correction")
    return model, {**config, **{k: getattr(model.config, k) for k in kept}}


def load_training_videos(videos: str | Path, short_side: int, max_frames: int | None = None,
                         frame_cache: str | Path | None = None) -> dict:
    """A folder of videos, a list of files, or a cache .npz -> {name: (t, h, w, 3) uint8}; ``frame_cache``: a folder
    where the decoded frames are kept on disk (:func:`streamssm.data.video_clips.load_videos`)."""
    from streamssm.data.video_clips import load_cache, load_videos

    p = Path(videos)
    if not p.exists():
        raise ValueError(f"{p}: no such file or folder; expected a folder of videos, a video file or a cache .npz")
    if p.suffix == ".npz":
        try:
            cache = load_cache(p)
        except Exception as e:  # a zip that is not an npz, a truncated file
            raise ValueError(f"{p}: not a readable .npz ({e}); expected a cache of training videos") from None
        bad = [k for k, v in cache.items() if v.ndim != 4 or v.shape[-1] != 3 or v.dtype != np.uint8]
        if not cache or bad:
            raise ValueError(f"{p}: not a cache of training videos (expected arrays of (t, h, w, 3) uint8 frames; "
                             f"{'it holds none' if not cache else 'not: ' + ', '.join(bad[:5])})")
        if frame_cache is not None:
            logging.getLogger("streamssm").warning("--frame-cache %s: unused, %s is a .npz of decoded frames, read "
                                                   "into memory", frame_cache, p)
        return cache
    from streamssm.io.video import VIDEO_EXTENSIONS

    files = sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_EXTENSIONS) if p.is_dir() else [p]
    if not files:
        raise ValueError(f"{p}: no video files found (expected {'/'.join(VIDEO_EXTENSIONS)})")
    return load_videos(files, short_side=short_side, max_frames=max_frames, cache_dir=frame_cache)


def _dist():
    """(rank, world, local_rank) from torchrun's environment; initialises the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return dist.get_rank(), world, local


def _check_resumable(path: Path, conf: dict, extra: dict, model_cfg: VideoSSMConfig, hint: str) -> None:
    """ValueError unless the weights at ``path`` can be resumed with this run's model config: a blend-calibrated
    file (:func:`calibrate_blend`, recorded in its ``extra``; its shifted ``log_conf`` would be trained over), a
    file with a finished processed-only mode (:func:`finish_processed_only`; likewise its gate) and a file saved with
    another model config are refused (``hint``: what to do instead). So a :func:`without_guided_correction` file is
    refused unless the run's config has ``guided_correction`` off too (then training goes on consistently)."""
    if "calibration" in extra:
        raise ValueError(f"{path}: cannot resume training from blend-calibrated weights (calibrate_blend: "
                         f"{extra['calibration']}); resume the checkpoint they were made from, or train to a new --output")
    if "processed_only" in extra:
        raise ValueError(f"{path}: cannot resume training from weights with a finished processed-only mode "
                         f"(finish_processed_only: {extra['processed_only']}); resume the checkpoint they were made "
                         "from, or train to a new --output")
    want = model_cfg.to_dict()
    diff = [f"{k}: file {conf[k]!r}, this run {want[k]!r}" for k in sorted(want)
            if k != "backend" and k in conf and conf[k] != want[k]]
    if diff:
        raise ValueError(f"{path}: cannot resume: its model config differs from this run's ({'; '.join(diff)}); "
                         f"{hint}, or train to a new --output")


def train_video(out: str | Path, videos, cfg: VideoTrainConfig | None = None, model_cfg: VideoSSMConfig | None = None,
                resume: bool = True, device: str = "auto", progress: bool = True, log=print,
                init: str | Path | None = None) -> Path:
    """Train and save ``out`` (safetensors + ``.opt.pt``); returns the path. ``resume``: go on from ``out`` if it
    exists, with the model config it was saved with (``model_cfg`` None; one given must be the same); ``init``:
    start at step 0 from the weights ``init`` (fine-tuning; finished weights are un-finished first,
    :func:`undo_finishing`, and their config is the run's). A resume of a run started with ``init`` needs no
    ``init``: the checkpoint holds that config.

    The checkpoint records how many processes trained it (torchrun's ``WORLD_SIZE``): each draws its own batches,
    so a resume with another count is another run from there on, and says so."""
    cfg = cfg or VideoTrainConfig()
    from streamssm._device import resolve_device

    dev = resolve_device(device)  # checked before torchrun's process group is made: a message, not a traceback
    rank, world, local = _dist()
    if device == "auto" and dev.type == "cuda":
        dev = torch.device(f"cuda:{local}")
    elif dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local if world > 1 else torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)
    out = Path(out)
    checkpoint = read_weights(out, "video") if resume and out.exists() else None  # (config, tensors, extra)
    if init is not None:  # fine-tuning: the file's config is the run's (a resume of it too)
        model, conf = undo_finishing(init)
        model_cfg = VideoSSMConfig(**conf)
        model = model.to(dev)
        hint = "resume without --init (a resume takes the checkpoint's own model config)"
        if rank == 0 and checkpoint is None:
            log(f"starting from the weights {init} (as trained: their finishing undone)")
    else:
        hint = "resume with model_cfg=None (the checkpoint's own model config)"
        if model_cfg is None and checkpoint is not None:
            # the run goes on with the model it trained: an --init run's config (guided correction off, the
            # shipped blend's settings...) is in its checkpoint, not in the defaults
            model_cfg = build_config(VideoSSMConfig, checkpoint[0], out)
        model_cfg = model_cfg or VideoSSMConfig()
        model = VideoSSM(model_cfg).to(dev)
    start = 0
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if checkpoint is not None:
        conf, tensors, extra = checkpoint
        _check_resumable(out, conf, extra, model_cfg, hint)
        load_into(model, tensors, out)
        start = int(extra.get("step", 0))
        load_optimizer(out, opt, start, log if rank == 0 else None, map_location=dev)
        log(f"resumed {out} at step {start}") if rank == 0 else None
        warn_changed_settings(out, extra.get("train"), cfg, log if rank == 0 else None)
        saved_world = extra.get("processes")  # None: a checkpoint from before it was recorded
        if saved_world is not None and saved_world != world and rank == 0:
            log(f"warning: {out} was trained by {saved_world} process{'es' if saved_world != 1 else ''}, resumed by "
                f"{world}: each process draws its own batches (global batch {saved_world} x {cfg.batch} -> {world} x "
                f"{cfg.batch}), so this is no longer the uninterrupted run; resume with torchrun --nproc_per_node="
                f"{saved_world} for that")
        if start >= cfg.steps and rank == 0:
            log(f"{out} is already at step {start} of {cfg.steps}: nothing to train (raise --steps to go on)")
    elif resume and rank == 0:
        log(f"no checkpoint at {out} yet: starting a new run")
    ddp = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # a batch with the blend off (--p-no-blend) leaves the blend's parameters without a gradient on every rank
        ddp = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                      find_unused_parameters=cfg.p_no_blend > 0)
    vids = videos if isinstance(videos, dict) else load_training_videos(videos, cfg.short_side, cfg.max_frames,
                                                                        cfg.frame_cache)
    loader = torch.utils.data.DataLoader(
        _ClipStream(vids, cfg, rank, start=start), batch_size=None, num_workers=cfg.workers,
        worker_init_fn=_quiet_worker,
        persistent_workers=cfg.workers > 0, prefetch_factor=4 if cfg.workers > 0 else None,
        pin_memory=dev.type == "cuda",
    )
    total = cfg.steps

    def lr_at(i):
        w = min(1.0, (i + 1) / 100)
        return cfg.lr * w * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(i, total) / total)))

    bar = None
    if progress and rank == 0:
        try:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=start, desc="train video")
        except ImportError:
            bar = None
    t0 = time.time()
    step = start
    amp = dev.type == "cuda"
    it = iter(loader)
    saved_step, stopped = None, 0  # this run's last checkpoint; the agreed stop request (StopRequest.code)
    with StopRequest() as stop, _workers_shut_down(it):
        while step < total:
            batch = next(it)
            batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            # the step's coin flips from the step alone (a resumed run makes the same ones), the same on every rank
            # (DDP needs every rank to use the same parameters: the blend's are unused where it is off)
            rng = np.random.default_rng([cfg.seed, 999, step])
            guided = rng.random() >= cfg.p_unguided
            if guided:
                batch = without_faded(batch)
            blend = bool(rng.random() >= cfg.p_no_blend)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                O, _ = ddp(batch["processed"], batch["original"] if guided else None, None, batch["cut_mask"],
                           blend=blend)
            loss, tmp = video_loss(O.float(), batch["target"], batch["flow"], batch["flow_valid"], cfg.w_temporal)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}", tmp=f"{tmp.item():.4f}")
            budget_hit = cfg.minutes is not None and time.time() - t0 > cfg.minutes * 60
            code = stop.code
            stopping = code > 0
            if world > 1:  # every rank stops at the same step, or the next one's gradient all-reduce waits
                # forever for the rank that left (each rank's clock, and each rank's signal, is its own). Agreed
                # every BUDGET_SYNC steps (a collective and a device sync): a stop is late by a few steps at most
                budget_hit = stopping = False
                if step % BUDGET_SYNC == 0 or step == total:
                    import torch.distributed as dist

                    over = cfg.minutes is not None and time.time() - t0 > cfg.minutes * 60
                    flag = torch.tensor([float(over), float(stop.code)], device=dev)
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # SIGTERM on any rank wins over Ctrl-C
                    budget_hit, code = bool(flag[0].item()), int(flag[1].item())
                    stopping = code > 0
            if step % cfg.save_every == 0 or step == total or budget_hit or stopping:
                # never NaN weights over a checkpoint; checked on every rank (the weights are the same on each, so
                # all stop together), at the saves rather than every step (a host sync)
                check_finite(finite(model, loss), step, out, saved_step)
                if rank == 0:
                    save_optimizer(out, opt, step)  # first: the weights' step is the checkpoint's
                    record = {"step": step, "loss": float(loss.item()), "train": train_settings(cfg),
                              "processes": world}  # a resume with another count is another run: said then
                    save_weights(out, model, "video", model_cfg.to_dict(), record)
                    if bar is None:
                        log(f"step {step}: loss {loss.item():.4f} (temporal {tmp.item():.4f}), "
                            f"{time.time() - t0:.0f} s")
                saved_step = step
            if stopping:
                if rank == 0:
                    what = {1: "SIGINT", 2: "SIGTERM"}[code] + ("" if stop.requested else " (on another rank)")
                    log(f"{what}: stopped at step {step}; {out} holds it (rerun with --resume to continue)")
                stopped = code
                break
            if budget_hit:
                if rank == 0:
                    log(f"time budget of {cfg.minutes} min reached at step {step}; rerun with --resume to continue")
                break
    if bar is not None:
        bar.close()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    if stopped:
        StopRequest.raise_for(stopped)
    return out
