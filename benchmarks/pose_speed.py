"""Pose filter speed: one stream's step latency and batched stream-steps/s, against One Euro in the same run.

    python benchmarks/pose_speed.py                  # CPU (2 torch threads unless --threads)
    python benchmarks/pose_speed.py --device cuda    # GPU: eager, CUDA graph, compiled + graph

Paths timed, all running the *same* ``PoseSSM.step`` (the explicit-state step; the fast paths are ways of
running it, checked against it in tests/test_fast.py):

* ``PoseFilter.step`` -- the public API (numpy in/out, input checks, state held by the filter): eager PyTorch,
  the native C step (the CPU default, :mod:`streamssm.pose.native`) and ``compile=True``;
* ``NativePoseStep`` (CPU) -- the C step on fixed buffers, its state kept in the kernel's lane layout, streams split
  over ``--threads`` threads;
* ``FastPoseStep`` eager -- static buffers, no per-call checks;
* ``FastPoseStep`` compiled -- ``torch.compile`` (Inductor: C++ on CPU, Triton on GPU), plus a CUDA graph on GPU;
  always on the torch SSM backend (the eager rows use ``auto``: mamba's Triton step kernel on a GPU).

Baseline in the same run: the vectorised One Euro filter of :mod:`streamssm.baselines` stepping the same
(B, 33, 2) frames. Latency is the median over steps (CUDA: synchronised after each step); throughput is
B x steps / wall time. Targets (issue #3): one stream of 33 keypoints <= 0.5 ms/step on CPU; >= 100k
stream-steps/s batched on CPU; >= 5M batched on a GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine, md_table, write_section  # noqa: E402

from streamssm.baselines import OneEuro  # noqa: E402
from streamssm.fast import FastPoseStep  # noqa: E402
from streamssm.pose.native import NativePoseStep, native_available  # noqa: E402
from streamssm.pose.filter import PoseFilter  # noqa: E402

K = 33


def frames(n: int, b: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, b, K, 2)) * 3).cumsum(0).astype(np.float32) + 300


def timed(fn, xs, sync) -> tuple[float, float]:
    """(median ms per call, calls per second) over xs after a 1/5 warm-up."""
    warm = max(3, len(xs) // 5)
    for x in xs[:warm]:
        fn(x)
    sync()
    ts = []
    t_all = time.perf_counter()
    for x in xs[warm:]:
        t0 = time.perf_counter()
        fn(x)
        sync()
        ts.append(time.perf_counter() - t0)
    total = time.perf_counter() - t_all
    return float(np.median(ts)) * 1e3, (len(xs) - warm) / total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch threads on CPU for batched rows (the target machine has "
                    "2 cores); one stream runs on 1 thread (the fastest for its tiny ops)")
    ap.add_argument("--batches", default=None, help="comma-separated stream counts (default: CPU 1,256,1024,4096; GPU 1,1024,16384,65536)")
    ap.add_argument("--steps", type=int, default=None, help="steps per row (default: 300 single stream, 40 batched)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--half", default=None, help="comma list of autocast dtypes for extra compiled FastPoseStep rows "
                    "(float16, bfloat16; default: float16,bfloat16 on CUDA, none on CPU). The SSM state stays fp32.")
    ap.add_argument("--profile", action="store_true", help="CUDA: print the top kernels of the largest compiled row")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if not cuda:
        torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    batches = [int(b) for b in (args.batches or ("1,1024,16384,65536" if cuda else "1,256,1024,4096")).split(",")]

    filt = PoseFilter(device=str(dev), native=False)
    model = filt.model
    native_ok, native_why = (False, "CUDA run") if cuda else native_available(model)
    if not cuda and not native_ok:
        print(f"native C step unavailable: {native_why}", flush=True)
    # torch.compile traces the torch backend (mamba's in-place Triton step kernel is not compile-safe)
    model_c = PoseFilter(device=str(dev), backend="torch").model
    cfg = model.config
    n_state = sum(int(np.prod(s[1:])) for s in model.state_shapes(1, K)) // K  # per stream-keypoint
    rows, best = [], {}
    halves = [h for h in (args.half if args.half is not None else ("float16,bfloat16" if cuda else "")).split(",") if h]
    notes = []
    for b in batches:
        n = args.steps or (300 if b == 1 else 40)
        if not cuda:
            torch.set_num_threads(1 if b == 1 else args.threads)
        xs_np = frames(n, b)
        xs = [torch.from_numpy(x).to(dev) for x in xs_np]
        one = b == 1

        def add(path, ms, per_s):
            rows.append([path, b, f"{ms:.3f}", f"{per_s * b:,.0f}"])
            best[path] = max(best.get(path, (0, 0, 0)), (per_s * b, b, ms))
            print(f"B={b:6d} {path:42s} {ms:9.3f} ms/step {per_s * b:14,.0f} stream-steps/s", flush=True)

        oe = OneEuro(min_cutoff=1.0, beta=0.1, fps=30.0)
        xs_oe = [x[0] for x in xs_np] if one else list(xs_np)
        ms, ps = timed(oe.step, xs_oe, lambda: None)
        add("baseline: One Euro (numpy, vectorised)", ms, ps)

        filt.reset()
        api_in = [x[0] for x in xs_np] if one else list(xs_np)
        ms, ps = timed(filt.step, api_in, sync)
        add("PoseFilter.step (API, eager)", ms, ps)
        if native_ok:
            filt_n = PoseFilter(device="cpu")  # the CPU default: the native step
            ms, ps = timed(filt_n.step, api_in, sync)
            add("PoseFilter.step (API, native C step: the CPU default)", ms, ps)
            nat = NativePoseStep(model, b, K, 2, threads=1 if one else args.threads)
            ms, ps = timed(partial(nat.step, clone=False), xs, sync)
            add("NativePoseStep (C)", ms, ps)
            del filt_n, nat
        if not args.no_compile:
            filt_c = PoseFilter(device=str(dev), compile=True)
            filt_c.step(api_in[0])  # compiles
            ms, ps = timed(filt_c.step, api_in, sync)
            add("PoseFilter(compile=True).step (API)", ms, ps)
            del filt_c

        with torch.no_grad():
            fast = FastPoseStep(model, b, K, 2, compile=False)
            ms, ps = timed(partial(fast.step, clone=False), xs, sync)
            add("FastPoseStep, eager" + (" + CUDA graph" if cuda else ""), ms, ps)
            if not args.no_compile:
                t0 = time.perf_counter()
                fastc = FastPoseStep(model_c, b, K, 2, compile=True)
                fastc.step(xs[0])
                sync()
                tc = time.perf_counter() - t0
                ms, ps = timed(partial(fastc.step, clone=False), xs, sync)
                add("FastPoseStep, torch.compile" + (" + CUDA graph" if cuda else ""), ms, ps)
                print(f"  (compile + first step {tc:.1f} s)")
                fastc.reset()
                ref = fastc.step(xs[0])  # fp32 output of one step, to compare the half rows with
                if args.profile and cuda and b == batches[-1]:
                    from torch.profiler import ProfilerActivity, profile

                    with profile(activities=[ProfilerActivity.CUDA]) as prof:
                        for x in xs[:10]:
                            fastc.step(x, clone=False)
                        sync()
                    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15))
                del fastc
                for hname in halves:
                    fasth = FastPoseStep(model_c, b, K, 2, compile=True, dtype=getattr(torch, hname))
                    fasth.step(xs[0])
                    fasth.reset()
                    dev_h = float((fasth.step(xs[0]) - ref).abs().max())
                    ms, ps = timed(partial(fasth.step, clone=False), xs, sync)
                    add(f"FastPoseStep, torch.compile + CUDA graph, {hname} autocast", ms, ps)
                    notes.append(f"{hname} at B={b}: largest first-step difference from fp32 {dev_h:.2e} "
                                 "(pixels; the synthetic points are spread over ~10-50 px)")
                    del fasth
            del fast

    where = machine(str(dev))
    single = {r[0]: float(r[2]) for r in rows if r[1] == 1}
    fast_single = min((v for k, v in single.items() if k.startswith(("FastPoseStep", "NativePoseStep"))), default=float("nan"))
    api_single = min((v for k, v in single.items() if k.startswith("PoseFilter")), default=float("nan"))
    top = max((v for k, v in best.items() if not k.startswith("baseline")), default=(0, 0, 0))
    oe_top = best.get("baseline: One Euro (numpy, vectorised)", (0, 0, 0))
    lines = [
        f"## Pose filter speed ({'GPU' if cuda else 'CPU'})",
        "",
        f"`python benchmarks/pose_speed.py{' ' + ' '.join(argv if argv is not None else sys.argv[1:]) if (argv or sys.argv[1:]) else ''}` on {where}"
        f"{'' if cuda else ' (B=1 rows on 1 thread), OMP_WAIT_POLICY=' + os.environ.get('OMP_WAIT_POLICY', 'unset')}. Shipped weights: "
        f"d_model {cfg.d_model}, {cfg.n_layers} layers, expand {cfg.expand}, d_state {cfg.d_state}, headdim {cfg.headdim}: "
        f"{n_state} state floats per stream-keypoint. 33 keypoints, 2-D. ms/step = median latency of one step of all B streams"
        f"{' (synchronised)' if cuda else ''}; stream-steps/s = B x steps / wall time. One Euro runs in the same process on the same frames.",
        "",
        md_table(["path", "B streams", "ms/step", "stream-steps/s"], rows),
        "",
    ]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    if cuda:
        lines.append(f"Best: {top[0]:,.0f} stream-steps/s at B={top[1]} (target >= 5M); One Euro (numpy on the host CPU) {oe_top[0]:,.0f}.")
    else:
        lines.append(f"One stream: API {api_single:.3f} ms (fastest PoseFilter row; eager "
                     f"{single.get('PoseFilter.step (API, eager)', float('nan')):.3f} ms), fastest path "
                     f"{fast_single:.3f} ms (target <= 0.5 ms); One Euro {single.get('baseline: One Euro (numpy, vectorised)', float('nan')):.3f} ms.")
        lines.append(f"Batched: best {top[0]:,.0f} stream-steps/s at B={top[1]} (target >= 100k); One Euro {oe_top[0]:,.0f} at B={oe_top[1]}.")
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section(f"pose_speed {'cuda' if cuda else 'cpu'}", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
