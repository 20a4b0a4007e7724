"""Forward+backward time of the parallel scan vs the sequential reference (and mamba's kernels on CUDA).

    python benchmarks/ssm_scan.py [--device cpu|cuda] [--lengths 16 256 1024 4096]

B=8 streams, D=64 channels (16 heads of 4), N=16. Times are medians; GPU times use CUDA events.
Also checks, on CUDA, that the mamba backend matches the torch backend (fp32 and bf16).
Writes the section "ssm_scan <device>" of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._results import machine, md_table, write_section  # noqa: E402
from streamssm.ssm.ops import ssm_scan, ssm_scan_ref  # noqa: E402


def make(b, t, h, p, n, device, dtype=torch.float32, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(b, t, h, p, generator=g).to(device, dtype)
    dt = (torch.rand(b, t, h, generator=g) * 0.1 + 0.001).to(device)
    A = -(torch.rand(h, generator=g) * 4 + 0.5).to(device)
    B = torch.randn(b, t, n, generator=g).to(device, dtype)
    C = torch.randn(b, t, n, generator=g).to(device, dtype)
    D = torch.randn(h, p, generator=g).to(device)
    s0 = torch.randn(b, h, p, n, generator=g).to(device)
    return [v.requires_grad_(True) if v.is_floating_point() else v for v in (x, dt, A, B, C, D, s0)]


def time_fwd_bwd(fn, args, device, reps, warmup=1):
    def once():
        for a in args:
            a.grad = None
        y, s = fn(*args)
        (y.float().square().mean() + s.square().mean()).backward()

    for _ in range(warmup):
        once()
    times = []
    for _ in range(reps):
        if device == "cuda":
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            once()
            e1.record()
            torch.cuda.synchronize()
            times.append(e0.elapsed_time(e1))
        else:
            t0 = time.perf_counter()
            once()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--lengths", type=int, nargs="+", default=[16, 256, 1024, 4096])
    ap.add_argument("--headdim", type=int, default=16, help="channels per head P (D=64 split in 64/P heads)")
    ap.add_argument("--chunk", type=int, default=None, help="scan chunk length (default 32 on CPU, 64 on CUDA)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    dev = args.device
    b, p, n = 8, args.headdim, 16
    h = 64 // p
    cs = args.chunk or (64 if dev == "cuda" else 32)
    backends = {"torch scan": lambda *a: ssm_scan(*a, chunk_size=cs), "scan_ref (loop)": ssm_scan_ref}
    notes = []
    if dev == "cuda":
        from streamssm.ssm import _mamba

        ok, why = _mamba.available()
        if ok:
            backends["mamba (triton)"] = lambda *a: _mamba.mamba_scan(*a, chunk_size=cs)
            # correctness of the fused kernel against the torch path, fp32 and bf16
            for dtype, tol in [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)]:
                a = make(b, 1024, h, p, n, dev, dtype, seed=1)
                ym, sm = _mamba.mamba_scan(*a, chunk_size=64)
                a32 = [v.detach().float() for v in a]
                yt, st = ssm_scan(*a32, chunk_size=64)
                ey, es = rel(ym.float(), yt), rel(sm, st)
                notes.append(f"mamba vs torch backend, {str(dtype)[6:]}, T=1024: rel. error y {ey:.2e}, final state {es:.2e} (limit {tol:g}) -> {'OK' if max(ey, es) <= tol else 'FAIL'}")
        else:
            notes.append(f"mamba backend unavailable: {why}")
    rows = []
    for t in args.lengths:
        row = [t]
        times = {}
        for name, fn in backends.items():
            reps = 3 if ("ref" in name and (dev == "cpu" or t >= 1024)) else 10
            times[name] = time_fwd_bwd(fn, make(b, t, h, p, n, dev), dev, reps)
            row.append(f"{times[name]:.2f}")
        ref = times["scan_ref (loop)"]
        row += [f"{ref / times[k]:.1f}x" for k in backends if k != "scan_ref (loop)"]
        rows.append(row)
        print(row, flush=True)
    header = ["T"] + [f"{k} ms" for k in backends] + [f"speed-up {k} vs ref" for k in backends if k != "scan_ref (loop)"]
    body = (
        f"## SSM scan, forward+backward ({dev})\n\n"
        f"`python benchmarks/ssm_scan.py --device {dev}` on {machine(dev)}; B={b}, D={h * p} ({h} heads x {p}), N={n}, chunk {cs}, median ms.\n\n"
        + md_table(header, rows)
        + ("\n\n" + "\n".join(f"- {x}" for x in notes) if notes else "")
    )
    print(body)
    if not args.no_write:
        write_section(f"ssm_scan {dev}", body)


if __name__ == "__main__":
    main()
