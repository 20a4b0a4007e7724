"""Soak: long single runs of the pose and video filters, checked for NaN/inf, state growth, drift and memory.

    python benchmarks/soak.py                                   # CPU, the size used for RESULTS.md
    python benchmarks/soak.py --device cuda --dtype float16     # GPU, fp16 (autocast), the full size
    python benchmarks/soak.py --pose-frames 1000000 --video-frames 20000 --device cuda

What runs (one filter object each, its state carried from the first frame to the last, never reset):

- **pose**: ``--pose-streams`` streams of 33 keypoints in 2-D pixels, batched in one
  :class:`~streamssm.PoseFilter` (B = streams). Stream 0 is a static pose, exactly repeated (the
  drift check); stream 1 the same pose with 2 px Gaussian jitter; the others move (a body swaying and
  walking within the frame, limbs swinging) with 2 px jitter, 1 % missing keypoints and 0.2 % whole
  frames missing. The first ``--pose-step-frames`` frames go through ``step`` (the live path), the
  rest through ``filter`` in chunks of ``--pose-chunk`` frames (the parallel scan continuing the same
  state; tests/pose/test_filter.py checks it equals stepping). A "pose step" below is one frame of
  one stream: steps = frames x streams.
- **video**: ``--video-streams`` streams of ``--video-size`` frames batched in one
  :class:`~streamssm.VideoFilter`, guided, one ``step`` per frame (torch tensors in and out on the
  device). Stream 0 is a static scene (processed == original, constant): its output must not drift
  from it. The others show a drifting pattern whose processed version flickers (a random gain per
  frame) with a scene cut every 500 frames.

Checked at every checkpoint (``--checkpoints`` per run): outputs and every state tensor finite; the
largest state magnitude; the static stream's error (pose: max |y - x| in % of the body size; video:
max |O - P| in 8-bit levels); the process RSS (after ``malloc_trim(0)``, see :func:`_malloc_trim`); Python heap (``tracemalloc``, started after warm-up)
and, on CUDA, ``torch.cuda.memory_allocated``. Warm-up is the first 10 % of frames (of each phase);
"growth" is the largest value in the second half of the remaining checkpoints minus the largest in the
first half, so allocator caches that fill up once read 0 and a leak reads what it leaked.

``--dtype float16`` (CUDA only) runs the networks under ``torch.autocast`` (pose) / ``half=True``
(video, the filter's own autocast); the states stay float32 by design and that is checked too.
Writes the section ``soak <device> <dtype>`` of benchmarks/RESULTS.md (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine, md_table, write_section  # noqa: E402

K = 33
BODY = 200.0  # px, rough body height; jitter and the drift figure are relative to the body size


def _malloc_trim() -> None:
    """Give glibc's free lists back to the OS, so RSS measures what is live, not what malloc caches.

    Measured: after a 1024-frame pose scan, RSS swings between 570 and 860 MiB from chunk to chunk
    (freed scan intermediates parked in malloc's arenas); after ``malloc_trim(0)`` it reads 270 MiB at
    every chunk."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_bytes() -> int:
    """Resident set size now (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Monitor:
    """Checkpoints of memory and state figures; warm-up ends at ``warm`` frames."""

    def __init__(self, warm: int, device: torch.device):
        self.warm, self.device = warm, device
        self.rows: list[dict] = []
        self._traced = False

    def check(self, frame: int, state, **figures) -> None:
        gc.collect()
        _malloc_trim()
        if frame >= self.warm and not self._traced:
            tracemalloc.start()
            self._traced = True
        parts = [s for s in state if isinstance(s, torch.Tensor)]
        row = dict(frame=frame, rss=rss_bytes(), traced=tracemalloc.get_traced_memory()[0] if self._traced else None,
                   cuda=torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else None,
                   state_max=max(float(s.abs().max()) for s in parts),
                   state_finite=all(bool(torch.isfinite(s).all()) for s in parts),
                   state_fp32=all(s.dtype == torch.float32 for s in parts), **figures)
        self.rows.append(row)

    def close(self) -> None:
        if self._traced:
            tracemalloc.stop()

    def growth(self, key: str) -> float | None:
        """Largest value in the second half of the post-warm-up checkpoints minus the largest in the
        first half: a plateau (allocator caches filling up once) reads 0, a leak reads its growth."""
        after = [r[key] for r in self.rows if r["frame"] >= self.warm and r[key] is not None]
        if len(after) < 2:
            return None
        half = len(after) // 2
        return float(max(after[half:]) - max(after[:half]))

    def summary(self) -> dict:
        after = [r for r in self.rows if r["frame"] >= self.warm] or self.rows
        half = len(after) // 2
        return dict(
            state_finite=all(r["state_finite"] for r in self.rows),
            state_fp32=all(r["state_fp32"] for r in self.rows),
            state_max_early=max(r["state_max"] for r in after[: max(1, half)]),
            state_max_late=max(r["state_max"] for r in after[half:] or after),
            rss_warm=after[0]["rss"], rss_end=self.rows[-1]["rss"], rss_growth=self.growth("rss"),
            traced_growth=self.growth("traced"), cuda_growth=self.growth("cuda"),
        )


def _autocast(device: torch.device, dtype: str):
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, dtype))


# ------------------------------------------------------------------------------------------ pose
class PoseStreams:
    """Deterministic synthetic keypoints, generated chunk by chunk (nothing held for the whole run)."""

    def __init__(self, streams: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.b = streams
        self.skeleton = (rng.normal(size=(K, 2)) * np.array([0.25, 0.5]) * BODY).astype(np.float64)
        self.phase = rng.uniform(0, 2 * np.pi, size=(streams, K))
        self.center = np.array([640.0, 360.0])
        self.rng = np.random.default_rng(seed + 1)

    def clean(self, t0: int, n: int) -> np.ndarray:
        t = np.arange(t0, t0 + n, dtype=np.float64)[:, None, None]  # (n, 1, 1)
        x = np.broadcast_to(self.center + self.skeleton, (n, self.b, K, 2)).copy()
        if self.b > 2:
            ts = t[:, :, 0]  # (n, 1)
            sx = 300 * np.sin(2 * np.pi * ts / 900.0 + np.arange(self.b - 2)[None])  # (n, b-2)
            sy = np.broadcast_to(40 * np.sin(2 * np.pi * ts / 150.0), sx.shape)
            sway = np.stack([sx, sy], -1)  # (n, b-2, 2)
            swing = 0.15 * BODY * np.sin(2 * np.pi * t / 40.0 + self.phase[None, 2:])  # (n, b-2, K)
            x[:, 2:] += sway[:, :, None, :]
            x[:, 2:, :, 0] += swing
        return x

    def chunk(self, t0: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(noisy (n, b, K, 2) float32 with NaN = missing, clean)."""
        clean = self.clean(t0, n)
        noisy = clean + self.rng.normal(scale=2.0, size=clean.shape)
        noisy[:, 0] = clean[:, 0]  # stream 0: exact static pose
        if self.b > 2:
            miss = self.rng.random((n, self.b - 2, K)) < 0.01
            miss |= (self.rng.random((n, self.b - 2, 1)) < 0.002)
            if t0 == 0:
                miss[0] = False  # every joint seen at the first frame: no NaN output is expected
            noisy[:, 2:][miss] = np.nan
        return noisy.astype(np.float32), clean


def soak_pose(frames: int, streams: int = 4, step_frames: int = 1000, chunk: int = 2048, device: str = "cpu",
              dtype: str = "float32", checkpoints: int = 20, weights: str | None = None, seed: int = 0,
              progress: bool = False, max_seconds: float | None = None) -> dict:
    """The pose soak (module docstring); figures per checkpoint, memory per phase (step, then scan).
    ``max_seconds``: stop at the first chunk boundary past it (the result says how many frames ran)."""
    from streamssm import PoseFilter

    if streams < 2:
        raise ValueError("soak_pose needs at least 2 streams (0: static, 1: static + jitter)")
    filt = PoseFilter(weights=weights, device=device, fps=30.0)
    dev = filt.device
    gen = PoseStreams(streams, seed)
    step_frames = min(step_frames, frames)
    scan_frames = frames - step_frames
    phases = {"step": Monitor(warm=max(1, step_frames // 10), device=dev),
              "scan": Monitor(warm=step_frames + max(chunk, scan_frames // 10), device=dev)}
    every = max(1, frames // checkpoints)
    done, outputs, nonfinite = 0, 0, 0
    exact, noisy, raw, at = [], [], [], []  # per checkpoint window
    w_exact, w_noisy, w_raw, w_n = 0.0, 0.0, 0.0, 0
    seconds = {"step": 0.0, "scan": 0.0}
    next_check = every
    deadline = None if max_seconds is None else time.perf_counter() + max_seconds
    planned = frames
    with torch.no_grad(), _autocast(dev, dtype):
        while done < frames:
            if deadline is not None and time.perf_counter() > deadline and done > step_frames and at:
                frames = done  # out of time: the run ends here, and says so
                break
            phase = "step" if done < step_frames else "scan"
            n = min(frames - done, 256, step_frames - done) if phase == "step" else min(frames - done, chunk)
            x, clean = gen.chunk(done, n)
            t = time.perf_counter()
            y = np.stack([filt.step(x[i]) for i in range(n)]) if phase == "step" else filt.filter(x)
            seconds[phase] += time.perf_counter() - t
            outputs += y.shape[0] * y.shape[1]
            nonfinite += int((~np.isfinite(y)).sum())
            w_exact = max(w_exact, float(np.abs(y[:, 0] - x[:, 0]).max()))
            w_noisy += float(np.abs(y[:, 1] - clean[:, 1]).sum(-1).mean(-1).sum())
            w_raw += float(np.abs(x[:, 1] - clean[:, 1]).sum(-1).mean(-1).sum())
            w_n += n
            done += n
            del x, clean, y
            if done >= next_check or done == frames or done == step_frames:
                exact.append(w_exact)
                noisy.append(w_noisy / w_n)
                raw.append(w_raw / w_n)
                at.append(done)
                w_exact, w_noisy, w_raw, w_n = 0.0, 0.0, 0.0, 0
                phases[phase].check(done, filt.state)
                next_check = done + every
                if done == step_frames:
                    phases["step"].close()
                if progress:
                    r = phases[phase].rows[-1]
                    print(f"pose {done}/{frames} frames, state max {r['state_max']:.3g}, rss {r['rss'] / 2**20:.0f} MiB, "
                          f"static error {exact[-1]:.3g} px, jittered {noisy[-1]:.3g} px", file=sys.stderr)
    for m in phases.values():
        m.close()
    rows = phases["step"].rows + phases["scan"].rows
    half = len(at) // 2
    mem = {f"{k}_{ph}": v for ph, m in phases.items() if m.rows for k, v in m.summary().items()
           if k.startswith(("rss", "traced", "cuda"))}
    return dict(
        filter="pose", streams=streams, frames=frames, planned_frames=planned, steps=frames * streams, outputs=outputs,
        step_frames=step_frames, scan_frames=frames - step_frames, chunk=chunk, seconds_step=seconds["step"],
        seconds_scan=seconds["scan"], nonfinite_outputs=nonfinite,
        checkpoints=at, static_error_px=exact, jitter_error_px=noisy, jitter_raw_px=float(np.mean(raw)),
        static_error_first=exact[0], static_error_mid=exact[half], static_error_last=exact[-1],
        jitter_error_first=noisy[0], jitter_error_mid=noisy[half], jitter_error_last=noisy[-1],
        state_finite=all(r["state_finite"] for r in rows), state_fp32=all(r["state_fp32"] for r in rows),
        state_max_mid=max(r["state_max"] for r in rows[: max(1, len(rows) // 2)]),
        state_max_late=max(r["state_max"] for r in rows[len(rows) // 2 :]),
        device=str(dev), dtype=dtype, **mem,
    )


# ----------------------------------------------------------------------------------------- video
class VideoStreams:
    """Deterministic synthetic frames on the device: (P, I) (b, 3, h, w) float in [0, 1]."""

    def __init__(self, streams: int, size: tuple[int, int], device: torch.device, seed: int = 0):
        w, h = size
        g = torch.Generator().manual_seed(seed)
        self.b, self.device = streams, device
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        self.yy, self.xx = yy.to(device), xx.to(device)
        self.static = (0.2 + 0.6 * torch.stack([xx, yy, 0.5 * (xx + yy)])).to(device)  # (3, h, w)
        self.gains = torch.empty(0)
        self.g = g

    def frame(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        if t % 1024 == 0:  # gains for the next 1024 frames, drawn on the CPU (deterministic on any device)
            self.gains = (0.85 + 0.3 * torch.rand(1024, self.b, generator=self.g)).to(self.device)
        scene = t // 500
        shift = 0.01 * (t % 500)
        I = [self.static]
        for s in range(1, self.b):
            f = 6 + (scene + s) % 5
            ch = [0.5 + 0.35 * torch.sin(f * (self.xx + shift) + 4 * self.yy + c + scene) for c in (0.0, 1.0, 2.0)]
            I.append(torch.stack(ch))
        I = torch.stack(I)  # (b, 3, h, w)
        gain = self.gains[t % 1024].clone()
        gain[0] = 1.0  # stream 0: processed == original, no flicker
        P = (I * gain[:, None, None, None]).clamp(0, 1)
        return P, I


def soak_video(frames: int, streams: int = 2, size: tuple[int, int] = (64, 48), device: str = "cpu",
               dtype: str = "float32", checkpoints: int = 20, weights: str | None = None, seed: int = 0,
               progress: bool = False, max_seconds: float | None = None) -> dict:
    from streamssm import VideoFilter

    if streams < 1:
        raise ValueError("soak_video needs at least 1 stream")
    half = dtype == "float16"
    filt = VideoFilter(weights=weights, device=device, half=half)
    dev = filt.device
    gen = VideoStreams(streams, size, dev, seed)
    mon = Monitor(warm=max(1, frames // 10), device=dev)
    every = max(1, frames // checkpoints)
    outputs, nonfinite = 0, 0
    static_err, window = [], 0.0
    t0 = time.perf_counter()
    planned = frames
    for t in range(frames):
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds and static_err:
            frames = t  # out of time: the run ends here, and says so
            break
        P, I = gen.frame(t)
        O = filt.step(P, I)
        outputs += O.shape[0]
        window = max(window, float((O[0] - P[0]).abs().max()) * 255)  # syncs once a frame: fine here
        if not torch.isfinite(O).all():
            nonfinite += int((~torch.isfinite(O)).sum())
        if (t + 1) % every == 0 or t + 1 == frames:
            static_err.append(window)
            window = 0.0
            mon.check(t + 1, filt.state, static=static_err[-1])
            if progress:
                print(f"video {t + 1}/{frames} frames, state max {mon.rows[-1]['state_max']:.3g}, "
                      f"rss {mon.rows[-1]['rss'] / 2**20:.0f} MiB", file=sys.stderr)
    seconds = time.perf_counter() - t0
    mon.close()
    half = len(static_err) // 2
    rows = mon.rows
    return dict(
        filter="video", streams=streams, frames=frames, planned_frames=planned, steps=frames * streams, outputs=outputs,
        size=f"{size[0]}x{size[1]}", seconds=seconds, nonfinite_outputs=nonfinite,
        static_error_first=static_err[0], static_error_mid=static_err[half], static_error_last=static_err[-1],
        state_finite=all(r["state_finite"] for r in rows), state_fp32=all(r["state_fp32"] for r in rows),
        state_max_mid=max(r["state_max"] for r in rows[: max(1, len(rows) // 2)]),
        state_max_late=max(r["state_max"] for r in rows[len(rows) // 2 :]),
        device=str(dev), dtype=dtype, **{f"{k}_step": v for k, v in mon.summary().items() if k.startswith(("rss", "traced", "cuda"))},
    )


# ------------------------------------------------------------------------------------------ report
def _mib(v) -> str:
    return "n/a" if v is None else f"{v / 2**20:+.1f} MiB"


def _kib(v) -> str:
    return "n/a" if v is None else f"{v / 2**10:+.0f} KiB"


def _mem(r: dict, phase: str) -> list[str]:
    if f"rss_warm_{phase}" not in r:
        return ["-", "-", "-"]
    return [f"{r[f'rss_end_{phase}'] / 2**20:.0f} MiB at the end, growth {_mib(r[f'rss_growth_{phase}'])}",
            _kib(r[f"traced_growth_{phase}"]), _mib(r[f"cuda_growth_{phase}"])]


def report(pose: dict | None, video: dict | None, command: str, device: str) -> str:
    rows = []
    if pose is not None:
        r = pose
        common = [f"{r['nonfinite_outputs']} / {'0' if r['state_finite'] else 'NON-FINITE'}",
                  f"{r['state_max_mid']:.3g} / {r['state_max_late']:.3g}",
                  f"{r['static_error_first']:.3g} / {r['static_error_mid']:.3g} / {r['static_error_last']:.3g} px",
                  f"{r['jitter_error_first']:.3g} / {r['jitter_error_mid']:.3g} / {r['jitter_error_last']:.3g} px "
                  f"(input {r['jitter_raw_px']:.3g})"]
        rows.append(["pose, `step`", f"{r['step_frames']:,} x {r['streams']} = {r['step_frames'] * r['streams']:,}",
                     f"{r['seconds_step']:.0f} s", *common, *_mem(r, "step")])
        rows.append([f"pose, `filter` (chunks of {r['chunk']})", f"{r['scan_frames']:,} x {r['streams']} = "
                     f"{r['scan_frames'] * r['streams']:,}", f"{r['seconds_scan']:.0f} s", "(same run)", "", "", "",
                     *_mem(r, "scan")])
        rows.append(["**pose, total**", f"**{r['frames']:,} frames x {r['streams']} streams = {r['steps']:,} steps**",
                     f"{r['seconds_step'] + r['seconds_scan']:.0f} s", f"outputs {r['outputs']:,} / {r['steps']:,}",
                     "", "", "", "", "", ""])
    if video is not None:
        r = video
        rows.append([f"video {r['size']}, `step`, guided",
                     f"**{r['frames']:,} frames x {r['streams']} streams = {r['steps']:,} steps**",
                     f"{r['seconds']:.0f} s", f"{r['nonfinite_outputs']} / {'0' if r['state_finite'] else 'NON-FINITE'}",
                     f"{r['state_max_mid']:.3g} / {r['state_max_late']:.3g}",
                     f"{r['static_error_first']:.3g} / {r['static_error_mid']:.3g} / {r['static_error_last']:.3g} levels of 255",
                     f"outputs {r['outputs']:,} / {r['steps']:,}", *_mem(r, "step")])
    table = md_table(["run", "frames x streams = steps", "time", "NaN+inf: outputs / state",
                      "state max abs: 1st half / 2nd half", "static stream max error: first / mid / last window",
                      "jittered static stream mean error: first / mid / last", "RSS, growth after warm-up",
                      "Python heap growth", "CUDA mem growth"], rows)
    dt = (pose or video)["dtype"]
    cut = [f"{r['filter']} stopped by its time budget after {r['frames']:,} of {r['planned_frames']:,} frames"
           for r in (pose, video) if r is not None and r["frames"] < r["planned_frames"]]
    return (f"## Soak ({device}, {dt})\n\n`{command}` on {machine(device)}.\n\n{table}\n\n"
            "One filter object per family, state carried from the first frame to the last (never reset). A "
            "step = one frame of one stream. Pose: stream 0 is an exactly repeated still pose, stream 1 the same "
            "with 2 px jitter (body ~200 px), the others move with jitter and dropouts; the error windows are "
            "one checkpoint interval each. Video: stream 0 is a static scene (processed == "
            "original), the other a moving, flickering one with a scene cut every 500 frames. Growth = largest "
            "value in the second half of the checkpoints after warm-up (10 % of the phase) minus the largest in "
            "the first half; RSS is read after glibc's `malloc_trim(0)` (what is live, not what malloc keeps "
            "cached). "
            + ("States stayed float32 under autocast. " if dt != "float32" else "")
            + ("; ".join(cut) + "." if cut else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                    help="float16: CUDA autocast (the video filter's half=True); bfloat16: autocast, pose only")
    ap.add_argument("--pose-frames", type=int, default=100_000)
    ap.add_argument("--pose-streams", type=int, default=4)
    ap.add_argument("--pose-step-frames", type=int, default=2000)
    ap.add_argument("--pose-chunk", type=int, default=2048)
    ap.add_argument("--video-frames", type=int, default=4000)
    ap.add_argument("--video-streams", type=int, default=2)
    ap.add_argument("--video-size", default="64x48")
    ap.add_argument("--checkpoints", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--pose-seconds", type=float, default=None, help="stop the pose run after this long (reported)")
    ap.add_argument("--video-seconds", type=float, default=None, help="stop the video run after this long (reported)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--progress", action="store_true")
    a = ap.parse_args(argv)
    if a.dtype == "float16" and not a.device.startswith("cuda"):
        ap.error("--dtype float16 needs --device cuda (CPU fp16 autocast is not a supported path)")
    if a.dtype == "bfloat16" and a.video_frames:
        ap.error("--dtype bfloat16 is for the pose filter only (pass --video-frames 0)")
    if a.threads:
        torch.set_num_threads(a.threads)
    w, h = (int(v) for v in a.video_size.lower().split("x"))
    pose = video = None
    if a.pose_frames:
        pose = soak_pose(a.pose_frames, a.pose_streams, a.pose_step_frames, a.pose_chunk, a.device, a.dtype,
                         a.checkpoints, progress=a.progress, max_seconds=a.pose_seconds)
        print(pose)
    if a.video_frames:
        video = soak_video(a.video_frames, a.video_streams, (w, h), a.device, a.dtype, a.checkpoints,
                           progress=a.progress, max_seconds=a.video_seconds)
        print(video)
    command = "python benchmarks/soak.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(pose, video, command.strip(), a.device)
    print(text)
    if not a.no_write:
        print("wrote", write_section(f"soak {a.device} {a.dtype}", text))
    ok = all(r is None or (r["nonfinite_outputs"] == 0 and r["state_finite"] and r["outputs"] == r["steps"])
             for r in (pose, video))
    if not ok:
        print("soak: FAILED (non-finite values or lost outputs)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
