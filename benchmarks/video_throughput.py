"""File -> file throughput of ``streamssm video`` at 720p and 1080p: each stage alone, then pipelined.

    python benchmarks/video_throughput.py                      # CPU, and CUDA too when available
    python benchmarks/video_throughput.py --device cpu --weights runs/video.safetensors --frames 60

Inputs are made by upscaling ``--frames`` frames of a shared clip (played forwards then backwards when it is
shorter)
(``../shared/data/videos``) to 1280x720 and 1920x1080 and encoding them with libx264 (crf 20,
veryfast). Per resolution and device we time, in frames per second:

- decode: ``open_source`` iterated (H.264 decode + YUV -> RGB), no filter;
- filter: ``VideoFilter.step`` on frames already in memory, unguided (the ``streamssm video P -o O``
  case), after 8 warm-up frames; 1 / median per-frame time;
- encode: ``ThreadedSink(open_sink(...))`` as the CLI uses it (libx264 crf 18 ultrafast, frame threads; RGB -> YUV
  conversion on one thread, encoding on another) fed frames from memory;
- end-to-end: ``streamssm.video.cli.filter_video`` (decode thread -> filter -> convert thread -> encode
  thread; on CUDA the filter step is a CUDA graph with pinned-memory copies), the
  same code path as the CLI, model already loaded; frames / wall time, including the final flush.

Decode, encode and end-to-end are the best of two runs: on a shared machine a run that overlaps
another job measures that job.

The pipelined figure is bounded by the slowest stage; on a 2-core CPU the decode and encode threads
also compete with torch for the cores, so it lands below the filter-only figure.
Writes the section ``video_throughput <device>`` of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine, md_table, write_section  # noqa: E402

from streamssm.io import ThreadedSink, open_sink, open_source  # noqa: E402
from streamssm.video.cli import filter_video  # noqa: E402
from streamssm.video.filter import VideoFilter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / ".." / "shared" / "data" / "videos" / "edgetam_05_default_juggle.mp4"
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


def make_input(src: Path, dst: Path, size: tuple[int, int], frames: int) -> int:
    """``frames`` frames from ``src`` resized to ``size`` and encoded to ``dst``; returns the count. A clip
    shorter than ``frames`` is played forwards, then backwards, and so on (the motion stays continuous: no cut)."""
    w, h = size
    with open_source(src, max_frames=frames, on_limit="stop") as s:
        interp = cv2.INTER_CUBIC if w > s.width else cv2.INTER_AREA
        clip = [f.rgb if (s.width, s.height) == size else cv2.resize(f.rgb, size, interpolation=interp) for f in s]
        rate = s.rate
    cycle = clip + clip[-2:0:-1] if len(clip) > 2 else clip
    with open_sink(dst, fps=rate, width=w, height=h, crf=20, preset="veryfast") as out:
        for i in range(frames):
            out.write(cycle[i % len(cycle)])
        return out.frames_written


def random_weights(path: Path) -> Path:
    from streamssm.video.model import VideoSSM, VideoSSMConfig
    from streamssm.weights import save_weights

    torch.manual_seed(0)
    m = VideoSSM(VideoSSMConfig(backend="torch"))
    save_weights(path, m, "video", m.config.to_dict())
    return path


def fps_of(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def bench(path: Path, filt: VideoFilter, tmp: Path, sync, repeats: int = 2) -> dict:
    """fps of each stage; best of ``repeats`` runs (filter: 1 / median per-frame time), because the
    cores are shared and a run that overlaps someone else's job measures them, not us."""
    # decode only
    dec = []
    for _ in range(repeats):
        t = time.perf_counter()
        frames = [f.rgb for f in open_source(path)]
        dec.append(fps_of(len(frames), time.perf_counter() - t))
    n = len(frames)
    # filter only; warm-up: the first frames of a size build the state and let torch/oneDNN (or CUDA)
    # settle its kernels and buffers: ~6 frames on the CPU
    filt.reset()
    for f in frames[:8]:
        filt.step(f)
    sync()
    filt.reset()
    times, outs = [], []
    for f in frames:
        t = time.perf_counter()
        outs.append(filt.step(f))
        sync()
        times.append(time.perf_counter() - t)
    filt_fps = 1.0 / float(np.median(times))
    # encode only (the CLI's settings)
    h, w = frames[0].shape[:2]
    enc = []
    for _ in range(repeats):
        t = time.perf_counter()
        with ThreadedSink(open_sink(tmp / f"enc_{w}.mp4", fps=25, width=w, height=h, overwrite=True)) as sink:
            for o in outs:
                sink.write(o)
        enc.append(fps_of(n, time.perf_counter() - t))
    del frames, outs
    # end to end, the CLI's code path (model already loaded and warm)
    e2e = [filter_video(str(path), str(tmp / f"e2e_{w}.mp4"), filt=filt, overwrite=True, progress=False).fps
           for _ in range(repeats)]
    return dict(n=n, decode=max(dec), filter=filt_fps, encode=max(enc), e2e=max(e2e))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto: cpu, plus cuda when available; or cpu / cuda")
    ap.add_argument("--weights", default=None,
                    help="video .safetensors (default: the shipped weights); 'random': a random-init model of the "
                         "current code (the cost does not depend on the trained values)")
    ap.add_argument("--frames", type=int, default=None, help="frames per input (default: 600 on CUDA, 48 on CPU); a short clip is played back and forth")
    ap.add_argument("--clip", type=Path, default=CLIP)
    ap.add_argument("--sizes", default="720p,1080p")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    a = ap.parse_args()
    if a.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [a.device]
    sizes = [s.strip() for s in a.sizes.split(",")]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    warnings.filterwarnings("ignore", message="streamssm: frame size changed")
    with tempfile.TemporaryDirectory(prefix="streamssm_bench_") as d:
        tmp = Path(d)
        weights_path = random_weights(tmp / "random.safetensors") if a.weights == "random" else a.weights
        for dev in devices:
            n_frames = a.frames or (600 if dev.startswith("cuda") else 48)
            inputs = {s: tmp / f"in_{s}.mp4" for s in sizes}
            for s, p in inputs.items():
                if not p.exists() or open_source(p).frame_count != n_frames:
                    make_input(a.clip, p, SIZES[s], n_frames)
            filt = VideoFilter(weights=weights_path, device=dev)
            sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
            rows = []
            for s in sizes:
                r = bench(inputs[s], filt, tmp, sync)
                rows.append([s, r["n"], f"{r['decode']:.1f}", f"{r['filter']:.2f}", f"{r['encode']:.1f}", f"{r['e2e']:.2f}"])
                print(f"{dev} {s}: {r}", flush=True)
            weights = {None: "shipped weights", "random": "random init"}.get(a.weights, a.weights)
            load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            half = " (fp16 autocast)" if filt.half else ""
            body = "\n".join([
                f"## Video file -> file throughput ({dev})",
                "",
                f"`python benchmarks/video_throughput.py --device {dev}"
                + (f" --weights {a.weights}" if a.weights else "") + f" --frames {n_frames}` on {machine(dev)}{half}; "
                f"input: {n_frames} frames of `{a.clip.name}` (played back and forth) upscaled and encoded (libx264 crf 20); "
                f"weights: {weights}; 1-min load average {load:.1f} at start, {load_end:.1f} at the end (other jobs share "
                "the cores: noisy). Frames per second; filter unguided, 1 / median per-frame time after 8 warm-up "
                "frames; encode = libx264 crf 18 ultrafast, frame threads (the CLI default), RGB->YUV and encoding on two "
                "threads; end-to-end = decode thread -> filter -> convert thread -> encode thread (`filter_video`, "
                "model loaded; on a CPU the filter stage is itself the 3-thread pipeline of `VideoFilter.push`, on "
                "CUDA a CUDA-graph step); decode / encode / end-to-end best of 2 runs.",
                "",
                md_table(["size", "frames", "decode fps", "filter fps", "encode fps", "end-to-end fps"], rows),
            ])
            if not a.no_write:
                print(f"wrote {write_section(f'video_throughput {dev}', body)}")
            else:
                print(body)


if __name__ == "__main__":
    main()
