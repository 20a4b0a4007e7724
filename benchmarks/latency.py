"""Per-frame latency of the video step, against the 2018 anchor network, plus pose throughput and host I/O.

    python benchmarks/latency.py --out latency.md            # GPU machine: everything within --time-budget
    python benchmarks/latency.py --quick --no-write          # CPU smoke test (one size, few reps)
    python benchmarks/latency.py --sizes 1080p,2160p --batches 1 --time-budget 200

What is timed (guided video: processed + original frame; 480p = 848x480, a multiple of 16):

* video step, GPU, at each size and batch (1 and 8 streams): eager fp32; eager fp16 (``torch.autocast``);
  eager fp16 with ``.half()`` weights under autocast (batch 1); CUDA graph fp16
  (:class:`streamssm.fast.FastVideoStep`, ``compile=False``, the probed SSM backend); ``torch.compile`` + CUDA
  graph fp16 (``FastVideoStep``, torch SSM backend: Inductor fuses the SSM step itself). Each fast row also reports
  its largest relative error against the eager step of the same precision over 3 steps.
* video step, CPU: eager fp32 and ONNX Runtime (the exported step graph, :class:`streamssm.export.OnnxRunner`)
  at 480p and 720p, with all cores.
* the anchor: Lai et al., "Learning Blind Video Temporal Consistency", ECCV 2018, re-implemented from the paper
  and the official code (``networks/TransformNet.py`` + ``ConvLSTM.py``): two 7x7 conv encoders (P_t with
  O_{t-1}; I_t with I_{t-1}), strided 3x3 convs to 1/4 resolution, 5 residual blocks, a ConvLSTM at 1/4, two
  upsample+conv decoder layers with skips, a 7x7 output conv, tanh residual on P_t; 32 base channels, ~3.0 M
  parameters, random weights (timing does not depend on them). The official code's instance norm is a no-op
  (``if self.norm in ["BN" or "IN"]``), so there is none here. Timed eager fp32 (cuDNN may use TF32, torch's
  default) and fp16 (``.half()``, channels-last, CUDA graph) at the same sizes in the same run.
* pose: ``PoseSSM.step`` for B = 1k, 10k, 100k streams x 33 keypoints (2-D), eager and CUDA graph
  (:class:`streamssm.fast.FastPoseStep`), in stream-steps per second.
* host I/O at 1080p: uint8 frame -> GPU -> host, pageable and pinned; ``FastVideoStep.step_uint8`` (synchronous)
  and ``pipeline_uint8`` (one frame of latency, copies overlapped), wall clock per frame.

GPU figures are CUDA-event times of one step, synchronised after every step (latency, not throughput), median
of up to ``--reps`` (100) after warm-up; a slow row gets fewer (at least 10) so that it stays within its share
of ``--time-budget`` -- the table gives the count. CPU figures are wall clock. Every row runs in its own
try/except: an error or a skip is written in the table instead of a number. Rows run in priority order and
the ones that do not fit the time budget are listed as skipped. Results go to ``--out`` (markdown, and the
same rows as JSON in ``<out>.json``) after every row, and to the section ``latency <device>`` of
benchmarks/RESULTS.md (``$STREAMSSM_RESULTS``) unless ``--no-write``.

Targets (from the issue): video step 1080p <= 1.5 ms and >= 25x faster than the anchor; 2160p <= 6 ms;
pose >= 5 M stream-steps/s; CPU 720p >= 30 fps.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine, md_table, write_section  # noqa: E402

from streamssm.fast import FastPoseStep, FastVideoStep, _StaticStep  # noqa: E402
from streamssm.pose.filter import load_pose_model  # noqa: E402
from streamssm.video.model import VideoSSM, VideoSSMConfig  # noqa: E402

SIZES = {"480p": (848, 480), "720p": (1280, 720), "1080p": (1920, 1080), "2160p": (3840, 2160)}
POSE_K = 33
TARGETS = ("video step 1080p <= 1.5 ms and >= 25x faster than the anchor; 2160p <= 6 ms; "
           "pose >= 5M stream-steps/s; CPU 720p >= 30 fps")


# ------------------------------------------------------------------------------------------ the anchor
class _Conv(nn.Sequential):
    """Reflection pad + conv (the official ``ConvLayer``)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__(nn.ReflectionPad2d(k // 2), nn.Conv2d(cin, cout, k, stride))


class _UpConv(nn.Sequential):
    """Nearest x2 upsampling + reflection pad + conv (the official ``UpsampleConvLayer``)."""

    def __init__(self, cin: int, cout: int, k: int = 3):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(k // 2), nn.Conv2d(cin, cout, k))


class _ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.conv2 = _Conv(c, c, 3), _Conv(c, c, 3)

    def forward(self, x):
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.2))


class LaiConsistencyNet(nn.Module):
    """Lai et al. 2018's TransformNet + ConvLSTM, for timing (random weights).

    ``step(P, I, state) -> (O, state)``, state = (hidden, cell) at 1/4 resolution, O_{t-1}, I_{t-1}.
    Frame sides must be multiples of 4 (the skips concatenate 1/2-resolution maps)."""

    def __init__(self, nf: int = 32, blocks: int = 5):
        super().__init__()
        self.nf = nf
        self.conv1a, self.conv1b = _Conv(6, nf, 7), _Conv(6, nf, 7)  # (P_t, O_{t-1}) and (I_t, I_{t-1})
        self.conv2a, self.conv2b = _Conv(nf, 2 * nf, 3, 2), _Conv(nf, 2 * nf, 3, 2)
        self.conv3 = _Conv(4 * nf, 4 * nf, 3, 2)
        self.res = nn.ModuleList(_ResBlock(4 * nf) for _ in range(blocks))
        self.gates = nn.Conv2d(8 * nf, 16 * nf, 3, padding=1)  # ConvLSTM: [x, h] -> (i, f, o, g)
        self.deconv1, self.deconv2 = _UpConv(4 * nf, 2 * nf), _UpConv(4 * nf, nf)
        self.deconv3 = _Conv(2 * nf, 3, 7)

    def init_state(self, b, h, w, device=None, dtype=torch.float32, memory_format=torch.contiguous_format):
        if h % 4 or w % 4:
            raise ValueError(f"the anchor needs frame sides that are multiples of 4, got {h}x{w}")
        z = lambda *s: torch.zeros(*s, device=device, dtype=dtype).contiguous(memory_format=memory_format)  # noqa: E731
        c4 = 4 * self.nf
        return (z(b, c4, h // 4, w // 4), z(b, c4, h // 4, w // 4), z(b, 3, h, w), z(b, 3, h, w))

    def step(self, P, I, state):
        hid, cell, O_prev, I_prev = state
        act = lambda x: F.leaky_relu(x, 0.2, inplace=True)  # noqa: E731
        e1a = act(self.conv1a(torch.cat([P, O_prev], 1)))
        e1b = act(self.conv1b(torch.cat([I, I_prev], 1)))
        e2a, e2b = act(self.conv2a(e1a)), act(self.conv2b(e1b))
        x = act(self.conv3(torch.cat([e2a, e2b], 1)))
        for blk in self.res:
            x = blk(x)
        i, f, o, g = self.gates(torch.cat([x, hid], 1)).chunk(4, 1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        hid = torch.sigmoid(o) * torch.tanh(cell)
        d2 = act(self.deconv1(hid))
        d1 = act(self.deconv2(torch.cat([d2, e2a], 1)))
        O = P + torch.tanh(self.deconv3(torch.cat([d1, e1a], 1)))
        return O, (hid, cell, O, I)


def _anchor_step_into(net, P, I, state):
    O, new = net.step(P, I, state)
    for s, n in zip(state, new):
        s.copy_(n)
    return O


# ------------------------------------------------------------------------------------------ plumbing
class Budget:
    def __init__(self, seconds: float):
        self.t0 = time.perf_counter()
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.seconds - self.elapsed()


class Bench:
    """Rows, the time budget, incremental output."""

    def __init__(self, args, device: torch.device):
        self.args = args
        self.device = device
        self.budget = Budget(args.time_budget)
        self.rows: list[dict] = []
        self.notes: list[str] = []
        self.compile_est = 90.0  # seconds for one compile + capture, until one is measured
        self.anchor_params = 0

    def cap(self) -> float:
        """Seconds of timing a row may take."""
        return max(0.5, min(self.args.row_seconds, self.budget.left() / 12))

    def row(self, group: str, path: str, size: str, batch, est: float, fn, **info) -> dict:
        rec = {"group": group, "path": path, "size": size, "batch": batch, **info}
        if self.budget.left() < est:
            rec["skip"] = f"time budget ({self.budget.left():.0f} s left, needs ~{est:.0f} s)"
        else:
            t0 = time.perf_counter()
            try:
                rec.update(fn() or {})
            except Exception as e:  # one row's failure is a finding, not the end of the run
                msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
                rec["error"] = f"{type(e).__name__}: {msg}"[:300]
                if self.args.verbose:
                    traceback.print_exc()
            rec["row_s"] = round(time.perf_counter() - t0, 1)
            cleanup()
        self.rows.append(rec)
        self._progress(rec)
        self.save()
        return rec

    def _progress(self, r: dict) -> None:
        if "ms" in r:
            val = f"{r['ms']:.3f} ms ({r['reps']} reps)"
            if r.get("err") is not None:
                val += f", err {r['err']:.1e}"
            if r.get("setup_s"):
                val += f", setup {r['setup_s']:.0f} s"
        else:
            val = r.get("error") or r.get("skip") or f"done in {r.get('row_s', 0):.0f} s"
        where = f"{r['group']:6s} {r['path'][:44]:44s} {r['size']:>6s} b{r['batch']}"
        print(f"[{self.budget.elapsed():5.0f}s] {where}: {val[:150]}", flush=True)

    def find(self, group: str, path: str, size: str, batch) -> dict | None:
        for r in self.rows:
            if (r["group"], r["path"], r["size"], r["batch"]) == (group, path, size, batch) and "ms" in r:
                return r
        return None

    def save(self) -> None:
        if not self.args.out:
            return
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report(self, full=True) + "\n")
        blob = json.dumps({"notes": self.notes, "rows": self.rows}, indent=1, default=str)
        out.with_name(out.name + ".json").write_text(blob)


def cleanup() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def _stats(ms: list[float], walls: list[float], reps_wanted: int) -> dict:
    ms_sorted = sorted(ms)
    return {"ms": statistics.median(ms), "p90": ms_sorted[min(len(ms) - 1, int(0.9 * len(ms)))],
            "wall_ms": statistics.median(walls), "reps": len(ms), "reps_wanted": reps_wanted}


def time_cuda(fn, bench: Bench, warmup: int = 5) -> dict:
    """CUDA-event time of ``fn`` (one step), synchronised after each step; median."""
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    est = time.perf_counter() - t
    for _ in range(warmup if est < 0.05 else 1):
        fn()
    torch.cuda.synchronize()
    reps = bench.args.reps
    n = int(max(bench.args.min_reps, min(reps, bench.cap() / max(est, 1e-6))))
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
    walls = []
    for s, e in events:
        t = time.perf_counter()
        s.record()
        fn()
        e.record()
        e.synchronize()
        walls.append((time.perf_counter() - t) * 1e3)
    return _stats([s.elapsed_time(e) for s, e in events], walls, reps)


def time_wall(fn, bench: Bench, warmup: int = 2) -> dict:
    """Wall-clock time of ``fn`` (CPU work, or GPU work that synchronises itself); median."""
    t = time.perf_counter()
    fn()
    est = time.perf_counter() - t
    for _ in range(warmup if est < 0.2 else 0):
        fn()
    n = int(max(bench.args.min_reps, min(bench.args.reps, bench.cap() / max(est, 1e-6))))
    walls = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        walls.append((time.perf_counter() - t) * 1e3)
    return _stats(walls, walls, bench.args.reps)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def frames(b: int, h: int, w: int, device, seed: int = 0, n: int = 3):
    """``n`` (processed, original) pairs: a smooth scene drifting a pixel per frame, with a flickering gain."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    lo = torch.rand(b, 3, h // 16 + 2, w // 16 + 2, generator=g).to(device)
    big = F.interpolate(lo, size=(h + 16 * n, w + 16 * n), mode="bilinear", align_corners=False)
    out = []
    for t in range(n):
        I = big[..., t : t + h, t : t + w].contiguous()
        gain = 1 + 0.1 * torch.randn(b, 3, 1, 1, generator=g).to(device)
        out.append(((I * gain).clamp(0, 1), I))
    return out


def parse_size(name: str) -> tuple[str, int, int]:
    if name in SIZES:
        return (name, *SIZES[name])
    try:
        w, h = (int(v) for v in name.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--sizes: {name!r} is neither one of {list(SIZES)} nor WxH") from None
    return name, w, h


def amp(dtype: torch.dtype, device: torch.device):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32 and device.type == "cuda")


# ------------------------------------------------------------------------------------------ models
def probe_backend(requested: str, device: torch.device) -> tuple[str, str]:
    """The SSM backend that actually runs a step here (the fused one can import and still fail)."""
    if device.type != "cuda" or requested == "torch":
        return "torch", ""
    try:
        from streamssm.ssm import SelectiveSSM

        ssm = SelectiveSSM(64, d_state=16, headdim=16, backend=requested).to(device)
        x = torch.randn(4, 64, device=device)
        with torch.no_grad():
            ssm.step(x, None)
        torch.cuda.synchronize()
        return ssm.backend.name, ""
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return "torch", f"SSM backend {requested!r} failed a step ({type(e).__name__}: {msg[:200]}); rows use 'torch'"


def video_model(args, device, backend: str) -> VideoSSM:
    if args.video_weights:
        from streamssm.video.filter import load_video_model

        return load_video_model(args.video_weights, device, backend)
    torch.manual_seed(0)
    return VideoSSM(VideoSSMConfig(backend=backend)).to(device).eval()


def with_backend(model: nn.Module, cls, cfg_cls, backend: str, device) -> nn.Module:
    if all(getattr(getattr(m, "backend", None), "name", backend) == backend for m in model.modules()):
        return model
    other = cls(cfg_cls(**{**model.config.to_dict(), "backend": backend}))
    other.load_state_dict(model.state_dict())
    return other.to(device).eval()


# ------------------------------------------------------------------------------------------ rows
def video_eager(bench, model, size, b, w, h, dtype, path, half_weights=False):
    dev = bench.device

    def run():
        m = copy.deepcopy(model).half() if half_weights else model
        fr = frames(b, h, w, dev)
        P, I = fr[0]
        st = [m.init_state(b, h, w, dev)]

        def fn():
            with torch.no_grad(), amp(dtype, dev):
                _, st[0] = m.step(P, I, st[0], 1.0)

        res = time_cuda(fn, bench) if dev.type == "cuda" else time_wall(fn, bench)
        if half_weights:  # how far .half() weights move the output from autocast over fp32 weights
            with torch.no_grad(), amp(dtype, dev):
                o1, _ = m.step(P, I, None)
                o2, _ = model.step(P, I, None)
            res["err"] = rel(o1, o2)
        return res

    return bench.row("video", path, size, b, 3 + bench.cap(), run, dtype=str(dtype).replace("torch.", ""))


def check_fast(fast: FastVideoStep, model, fr, dtype, device) -> float:
    """Largest relative error of the fast path's outputs against the eager step over the clip."""
    fast.reset()
    st, worst = None, 0.0
    for P, I in fr:
        with torch.no_grad(), amp(dtype, device):
            O, st = model.step(P, I, st, 1.0)
        worst = max(worst, rel(fast.step(P, I), O.float()))
    fast.reset()
    return worst


def video_fast(bench, model, size, b, w, h, dtype, compile, path, keep=None):
    dev = bench.device

    def run():
        fr = frames(b, h, w, dev)
        t0 = time.perf_counter()
        fast = FastVideoStep(model, h, w, batch=b, guided=True, dtype=dtype, compile=compile)
        fast.capture()
        setup = time.perf_counter() - t0
        if compile:
            bench.compile_est = max(30.0, setup * 1.2)
        err = check_fast(fast, model, fr, dtype, dev)
        P, I = fr[0]
        res = time_cuda(lambda: fast.step(P, I, clone=False), bench) if dev.type == "cuda" else \
            time_wall(lambda: fast.step(P, I, clone=False), bench)
        if keep is not None:
            keep["fast"] = fast
        return {**res, "err": err, "setup_s": round(setup, 1)}

    est = (bench.compile_est if compile else 5) + bench.cap()
    return bench.row("video", path, size, b, est, run, dtype=str(dtype).replace("torch.", ""))


def anchor_rows(bench, net, size, b, w, h):
    dev = bench.device

    def eager32():
        fr = frames(b, h, w, dev)
        P, I = fr[0]
        st = [net.init_state(b, h, w, dev)]

        def fn():
            with torch.no_grad():
                _, st[0] = net.step(P, I, st[0])

        return time_cuda(fn, bench) if dev.type == "cuda" else time_wall(fn, bench)

    bench.row("anchor", "anchor fp32 eager", size, b, 3 + bench.cap(), eager32, dtype="float32")
    if dev.type != "cuda":
        return

    def graph16():
        cl = torch.channels_last
        net16 = copy.deepcopy(net).half().to(memory_format=cl)
        P, I = (x.half().contiguous(memory_format=cl) for x in frames(b, h, w, dev)[0])
        state = net16.init_state(b, h, w, dev, torch.float16, cl)
        runner = _StaticStep(_anchor_step_into, (net16, P, I, state), state, dev, cuda_graph=True, compiled=False)
        runner.capture()
        return time_cuda(runner, bench)

    bench.row("anchor", "anchor fp16 (half, channels-last, CUDA graph)", size, b, 5 + bench.cap(), graph16,
              dtype="float16")


def pose_rows(bench, model, B, path, fast: bool, compile: bool = False, dtype=torch.float32):
    """Eager ``PoseSSM.step`` or :class:`FastPoseStep` (CUDA graph on a GPU; optionally compiled)."""
    dev = bench.device
    m = model

    def run():
        blk = m.blocks[0].ssm
        state_gb = B * POSE_K * len(m.blocks) * blk.nheads * blk.headdim * blk.d_state * 4 / 2**30
        factor = 2.2 if (compile or blk.backend.name == "mamba") else 3.2  # eager torch step: 3 state-sized temporaries
        if dev.type == "cuda":
            free = torch.cuda.mem_get_info(dev)[0] / 2**30
            if factor * state_gb + 1 > free:
                return {"skip": f"needs ~{factor * state_gb + 1:.0f} GiB, {free:.0f} GiB free"}
        g = torch.Generator().manual_seed(0)
        pts = torch.randn(B, POSE_K, 2, generator=g).to(dev)
        t0 = time.perf_counter()
        if fast:
            runner = FastPoseStep(m, B, POSE_K, 2, compile=compile, cuda_graph=True, dtype=dtype)
            runner.capture()
            setup = time.perf_counter() - t0
            if compile:
                bench.compile_est = max(bench.compile_est, setup * 1.2)
            # streams are independent: check the first 1000 against an eager step (a full-size eager step
            # may not fit beside the static state)
            n = min(B, 1000)
            with torch.no_grad():
                want, _ = m.step(pts[:n], None, m.init_state(n, POSE_K, dev), torch.full((n,), 30.0, device=dev))
            err = rel(torch.nan_to_num(runner.step(pts)[:n]), torch.nan_to_num(want))
            runner.reset()
            fn = lambda: runner.step(pts, clone=False)  # noqa: E731
        else:
            setup, err = 0.0, None
            st = [m.init_state(B, POSE_K, dev)]
            fps = torch.full((B,), 30.0, device=dev)

            def fn():
                with torch.no_grad():
                    _, st[0] = m.step(pts, None, st[0], fps)

        res = time_cuda(fn, bench) if dev.type == "cuda" else time_wall(fn, bench)
        return {**res, "err": err, "setup_s": round(setup, 1), "msteps": B / res["ms"] / 1e3}

    est = (bench.compile_est if compile else 5) + bench.cap()
    return bench.row("pose", path, f"k={POSE_K}", B, est, run)


_EXPORT = """
import json, sys, torch
from streamssm.video.model import VideoSSM, VideoSSMConfig
from streamssm.export import export_onnx
m = VideoSSM(VideoSSMConfig(**json.loads(sys.argv[1])))
m.load_state_dict(torch.load(sys.argv[2]))
export_onnx("video", sys.argv[3], model=m.eval(), guided=True, check=False)
"""


def cpu_model(model: nn.Module) -> VideoSSM:
    """A separate CPU copy with the same weights (moving the caller's model would break the GPU rows after)."""
    m = VideoSSM(VideoSSMConfig(**{**model.config.to_dict(), "backend": "torch"}))
    m.load_state_dict(model.state_dict())
    return m.eval()


def export_row(bench, model) -> None:
    """Export the guided video step to ONNX in a fresh interpreter, so that the TorchScript exporter never sees
    the state torch.compile leaves in a process (with an earlier model revision, exporting after
    ``import torch._dynamo`` failed: "adaptive pooling, since output_size is not constant")."""
    bench.onnx = (bench.args.onnx, None)
    if bench.args.onnx:
        return

    def run():
        import subprocess

        tmp = Path(tempfile.mkdtemp(prefix="streamssm_latency_"))
        m = cpu_model(model)
        torch.save(m.state_dict(), tmp / "video.pt")
        out = tmp / "video_guided.onnx"
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.pathsep.join(
            [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
        cmd = [sys.executable, "-c", _EXPORT, json.dumps(m.config.to_dict()), str(tmp / "video.pt"), str(out)]
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=240, check=False)
        if proc.returncode != 0 or not out.exists():
            tail = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()][-1:] or ["no output"]
            raise RuntimeError(f"export subprocess failed (rc {proc.returncode}): {tail[0][:200]}")
        bench.onnx = (str(out), None)

    r = bench.row("cpu", "ONNX export (guided video step, subprocess)", "-", "-", 30, run)
    if bench.onnx[0] is None:
        bench.onnx = (None, r.get("error") or r.get("skip"))


def cpu_rows(bench, model, sizes, batches):
    """Eager fp32 on the CPU and ONNX Runtime on the CPU (the graph from :func:`export_row`), 480p and 720p."""
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    m = cpu_model(model)
    cpu_sizes = [s for s in sizes if s[0] in ("480p", "720p")] or sizes[:1]
    if not batches:
        return

    for b in batches:
        for name, w, h in cpu_sizes:
            def eager(b=b, w=w, h=h):
                P, I = frames(b, h, w, cpu)[0]
                st = [m.init_state(b, h, w)]

                def fn():
                    with torch.no_grad():
                        _, st[0] = m.step(P, I, st[0], 1.0)

                return time_wall(fn, bench)

            r = bench.row("cpu", f"CPU eager fp32 ({threads} threads)", name, b, 3 + 2 * bench.cap(), eager)
            if "ms" in r:
                r["fps"] = 1e3 / r["ms"] * b

            def ort(b=b, w=w, h=h):
                from streamssm.export import OnnxRunner

                path, why = getattr(bench, "onnx", (None, "not exported"))
                if path is None:
                    raise RuntimeError(f"no ONNX graph (export: {why})")
                runner = OnnxRunner(path, threads=threads, spinning=True)
                fr = frames(b, h, w, cpu)
                st, err = None, 0.0
                runner.init_state(b, h, w)
                for P, I in fr:  # check against the eager step over the clip
                    with torch.no_grad():
                        O, st = m.step(P, I, st, 1.0)
                    got = runner.step(P.numpy(), I.numpy(), strength=1.0)
                    err = max(err, rel(torch.from_numpy(got), O))
                P, I = (x.numpy() for x in fr[0])
                res = time_wall(lambda: runner.step(P, I, strength=1.0), bench)
                return {**res, "err": err}

            r = bench.row("cpu", f"ONNX Runtime CPU fp32 ({threads} threads)", name, b, 5 + 2 * bench.cap(), ort)
            if "ms" in r:
                r["fps"] = 1e3 / r["ms"] * b


def io_rows(bench, model, keep: dict):
    """uint8 1080p host round trip, and the uint8 step through FastVideoStep (sync and pipelined)."""
    dev = bench.device
    w, h = SIZES["1080p"]
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    orig = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)

    def pageable():
        return time_wall(lambda: torch.from_numpy(frame).to(dev).cpu().numpy(), bench)

    def pinned():
        pin_in = torch.empty(h, w, 3, dtype=torch.uint8, pin_memory=True)
        pin_out = torch.empty(h, w, 3, dtype=torch.uint8, pin_memory=True)
        d = torch.empty(h, w, 3, dtype=torch.uint8, device=dev)

        def fn():
            pin_in.numpy()[...] = frame
            d.copy_(pin_in, non_blocking=True)
            pin_out.copy_(d, non_blocking=True)
            torch.cuda.current_stream().synchronize()
            return pin_out.numpy().copy()

        return time_wall(fn, bench)

    bench.row("io", "uint8 frame host->GPU->host, pageable", "1080p", 1, 3 + bench.cap(), pageable)
    bench.row("io", "uint8 frame host->GPU->host, pinned (+2 host copies)", "1080p", 1, 3 + bench.cap(), pinned)

    def fast_for_io():
        fast = keep.get("fast")
        if fast is None:
            fast = FastVideoStep(model, h, w, batch=1, guided=True, dtype=torch.float16, compile=False)
        return fast

    which = "compiled + graph" if keep.get("fast") is not None else "graph"

    def sync():
        fast = fast_for_io()
        fast.reset()
        return time_wall(lambda: fast.step_uint8(frame, orig), bench)

    def piped():
        fast = fast_for_io()
        fast.reset()
        fast.pipeline_uint8(frame, orig)
        res = time_wall(lambda: fast.pipeline_uint8(frame, orig), bench)
        fast.flush_uint8()
        return {**res, "note": "one frame of latency; per-frame time = throughput"}

    bench.row("io", f"FastVideoStep.step_uint8 fp16 ({which}), sync", "1080p", 1, 5 + bench.cap(), sync)
    bench.row("io", f"FastVideoStep.pipeline_uint8 fp16 ({which})", "1080p", 1, 5 + bench.cap(), piped)


# ------------------------------------------------------------------------------------------ report
def _cell(r: dict | None) -> str:
    if r is None:
        return "-"
    if "ms" in r:
        s = f"{r['ms']:.3f}" if r["ms"] < 10 else f"{r['ms']:.1f}"
        if r["reps"] < r.get("reps_wanted", r["reps"]):
            s += f" (n={r['reps']})"
        return s
    return "skipped" if "skip" in r else "error"


def _best(bench: Bench, size: str, b) -> dict | None:
    cands = [r for r in bench.rows if r["group"] == "video" and r["size"] == size and r["batch"] == b and "ms" in r]
    return min(cands, key=lambda r: r["ms"]) if cands else None


def report(bench: Bench, full: bool = False) -> str:
    a = bench.args
    dev = bench.device
    intro = (f"`python benchmarks/latency.py{' --quick' if a.quick else ''}` on {machine(str(dev))}; "
             f"guided video step (processed + original frame), 480p = 848x480; CUDA-event ms per step, synchronised "
             f"after each step, median of n (n = {a.reps} unless shown); CPU rows wall clock. "
             f"Budget {a.time_budget:.0f} s, used {bench.budget.elapsed():.0f} s.")
    lines = [f"## Per-frame latency ({dev.type})", "", intro, "", f"<!-- targets (issue): {TARGETS} -->", ""]
    lines += [f"- {n}" for n in bench.notes]
    if bench.notes:
        lines.append("")

    # the wide table: one row per path, one column per size x batch
    cols = sorted({(r["size"], r["batch"]) for r in bench.rows if r["group"] in ("video", "anchor", "cpu")
                   and r["size"] != "-" and r["size"] != "all"},
                  key=lambda c: (c[1] if isinstance(c[1], int) else 0, [*SIZES, c[0]].index(c[0])))
    paths = []
    for r in bench.rows:
        if r["group"] in ("video", "anchor", "cpu") and r["path"] not in paths and r["size"] != "-":
            paths.append(r["path"])
    notes: list[str] = []

    def footnoted(r):
        """The row's cell text, with a numbered footnote for an error or a skip."""
        c = _cell(r)
        if c in ("error", "skipped"):
            text = r.get("error") or r.get("skip")
            if text not in notes:
                notes.append(text)
            c += f" [{notes.index(text) + 1}]"
        return c

    def cell(path, size, b):
        rs = [r for r in bench.rows if r["path"] == path and r["size"] in (size, "all") and r["batch"] in (b, "-")]
        if not rs:
            return "-"
        return footnoted(rs[0])

    if cols:
        lines.append("### Video step, ms per frame")
        lines.append("")
        lines.append(md_table(["path"] + [f"{s} b{b}" for s, b in cols],
                              [[p] + [cell(p, s, b) for s, b in cols] for p in paths]))
        lines.append("")
        # errors of the fast paths against eager
        worst: dict[str, float] = {}
        for r in bench.rows:
            if r["group"] in ("video", "cpu") and r.get("err") is not None:
                worst[r["path"]] = max(worst.get(r["path"], 0.0), r["err"])
        if worst:
            lines.append("Largest relative error of the output vs the eager step of the same precision (3 steps, "
                         "all sizes): " + "; ".join(f"{p}: {e:.1e}" for p, e in worst.items()))
            lines.append("")

        # ratios
        ratio_rows = []
        for s, b in cols:
            best = _best(bench, s, b)
            a16 = bench.find("anchor", "anchor fp16 (half, channels-last, CUDA graph)", s, b)
            a32 = bench.find("anchor", "anchor fp32 eager", s, b)
            e32 = bench.find("video", "eager fp32", s, b)
            if best is None and a32 is None:
                continue
            ratio_rows.append([
                s, b, "-" if best is None else f"{best['ms']:.3f} ({best['path']})",
                "-" if a16 is None else f"{a16['ms']:.2f}",
                "-" if a16 is None or best is None else f"{a16['ms'] / best['ms']:.1f}x",
                "-" if a32 is None else f"{a32['ms']:.2f}",
                "-" if e32 is None else f"{e32['ms']:.3f}",
                "-" if a32 is None or e32 is None else f"{a32['ms'] / e32['ms']:.1f}x",
            ])
        if ratio_rows:
            lines.append(f"### Anchor (Lai et al. 2018, {bench.anchor_params / 1e6:.2f} M parameters) / streamssm")
            lines.append("")
            lines.append(md_table(["size", "batch", "streamssm best ms (path)", "anchor fp16 ms", "anchor fp16 / best",
                                   "anchor fp32 ms", "streamssm eager fp32 ms", "anchor fp32 / eager fp32"], ratio_rows))
            lines.append("")

    # pose
    prow = [r for r in bench.rows if r["group"] == "pose"]
    if prow:
        bs = sorted({r["batch"] for r in prow if isinstance(r["batch"], int)})
        ppaths = list(dict.fromkeys(r["path"] for r in prow))

        def pcell(p, B):
            r = next((r for r in prow if r["path"] == p and r["batch"] in (B, "-")), None)
            if r is None:
                return "-"
            if "ms" in r:
                n = f" (n={r['reps']})" if r["reps"] < r["reps_wanted"] else ""
                return f"{r['ms']:.3g} ms = {r['msteps']:.3g} M/s{n}"
            text = r.get("error") or r.get("skip")
            if text not in notes:
                notes.append(text)
            return ("skipped" if "skip" in r else "error") + f" [{notes.index(text) + 1}]"

        lines.append(f"### Pose step, {POSE_K} keypoints (2-D) per stream: ms per step = M stream-steps/s")
        lines.append("")
        lines.append(md_table(["path"] + [f"B={B:,}" for B in bs], [[p] + [pcell(p, B) for B in bs] for p in ppaths]))
        lines.append("")

    io = [r for r in bench.rows if r["group"] == "io"]
    if io:
        lines.append("### Host I/O, uint8 1920x1080x3, wall ms per frame")
        lines.append("")
        rows = []
        for r in io:
            rows.append([r["path"], footnoted(r)])
        lines.append(md_table(["path", "ms"], rows))
        lines.append("")

    lines.append("### Targets")
    lines.append("")
    lines.append(md_table(["target", "measured", "met"], targets(bench)))
    lines.append("")
    if notes:
        lines.append("Errors and skips: " + " ".join(f"[{i + 1}] {t if full else t[:160]}" for i, t in enumerate(notes)))
        lines.append("")
    if full:
        lines.append("### All rows")
        lines.append("")
        keys = ["group", "path", "size", "batch", "dtype", "ms", "p90", "wall_ms", "reps", "err", "setup_s", "row_s",
                "msteps", "fps", "note", "error", "skip"]
        fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
        lines.append(md_table(keys, [[fmt(r.get(k)) for k in keys] for r in bench.rows]))
    return "\n".join(lines)


def targets(bench: Bench) -> list[list[str]]:
    out = []
    best1080 = _best(bench, "1080p", 1)
    best2160 = _best(bench, "2160p", 1)
    a16 = bench.find("anchor", "anchor fp16 (half, channels-last, CUDA graph)", "1080p", 1)
    yes = lambda ok: "yes" if ok else "NO"  # noqa: E731
    gpu = bench.device.type == "cuda"
    out.append(["video step 1080p b1 <= 1.5 ms", "-" if best1080 is None or not gpu else f"{best1080['ms']:.3f} ms",
                "-" if best1080 is None or not gpu else yes(best1080["ms"] <= 1.5)])
    r = None if (best1080 is None or a16 is None) else a16["ms"] / best1080["ms"]
    out.append([">= 25x faster than the anchor (fp16, 1080p b1)", "-" if r is None else f"{r:.1f}x",
                "-" if r is None else yes(r >= 25)])
    out.append(["video step 2160p b1 <= 6 ms", "-" if best2160 is None or not gpu else f"{best2160['ms']:.3f} ms",
                "-" if best2160 is None or not gpu else yes(best2160["ms"] <= 6)])
    pose = [r for r in bench.rows if r["group"] == "pose" and "msteps" in r]
    bp = max(pose, key=lambda r: r["msteps"]) if pose and gpu else None
    got = "-" if bp is None else f"{bp['msteps']:.2f} M/s (B={bp['batch']:,}, {bp['path']})"
    # This script times the pose step in fp32 at B <= 100k and the CPU video step eager and through ONNX Runtime, not
    # the shipped fast CPU paths nor fp16 pose: where its rows miss, the benchmarks that time those are named.
    ok = bp is not None and bp["msteps"] >= 5
    out.append([">= 5 M pose stream-steps/s", got,
                "yes" if ok else "no (see `benchmarks/pose_speed.py --device cuda`)"])
    cpu = [r for r in bench.rows if r["group"] == "cpu" and r["size"] == "720p" and r["batch"] == 1 and "ms" in r]
    bc = min(cpu, key=lambda r: r["ms"]) if cpu else None
    ok = bc is not None and 1e3 / bc["ms"] >= 30
    out.append(["CPU 720p b1 >= 30 fps", "-" if bc is None else f"{1e3 / bc['ms']:.1f} fps ({bc['path']})",
                "yes" if ok else "no (see `benchmarks/video_cpu_speed.py`: the CPU fast step and pipeline, 2 cores)"])
    return out


# ------------------------------------------------------------------------------------------ plans
def run_cpu_only(bench, models, sizes, batches, pose_batches, compile_ok) -> None:
    """No CUDA: the GPU rows are listed as skipped; the CPU fallbacks, the anchor, ORT and pose run."""
    model, anchor, pose = models["video"], models["anchor"], models["pose"]
    export_row(bench, model)
    for p in ["eager fp32", "eager fp16 (autocast)", "CUDA graph fp16", "compiled + CUDA graph fp16",
              "anchor fp16 (half, channels-last, CUDA graph)"]:
        bench.row("video" if "anchor" not in p else "anchor", p, "all", "-", 0,
                  lambda: {"skip": "no CUDA device (torch.cuda.is_available() is False)"})
    for name, w, h in sizes:
        for b in batches:
            video_fast(bench, model, name, b, w, h, torch.float32, False, "FastVideoStep fp32 (CPU fallback)")
            anchor_rows(bench, anchor, name, b, w, h)
    cpu_rows(bench, model, sizes, batches)
    for B in pose_batches:
        pose_rows(bench, pose, B, "eager fp32 (CPU)", fast=False)
        pose_rows(bench, pose, B, "FastPoseStep fp32 (CPU fallback)", fast=True)


def run_gpu(bench, models, sizes, batches, pose_batches, compile_ok) -> None:
    """Rows in priority order (what the targets need first): the ONNX export, the cheap GPU rows at batch 1,
    the compiled 1080p row, pose eager and graph, CPU and ONNX Runtime at batch 1, host I/O, the compiled
    2160p and pose rows, the cheap rows at the other batches, CPU at the other batches, then the remaining
    compiled rows -- as far as the time budget goes."""
    model, model_t, anchor = models["video"], models["video_torch"], models["anchor"]
    pose, pose_t, backend = models["pose"], models["pose_torch"], models["backend"]
    keep: dict = {}

    def phase_a(b):
        for name, w, h in sizes:
            video_eager(bench, model, name, b, w, h, torch.float32, "eager fp32")
            video_eager(bench, model, name, b, w, h, torch.float16, "eager fp16 (autocast)")
            if b == 1:
                video_eager(bench, model, name, b, w, h, torch.float16, "eager fp16 (.half() weights + autocast)",
                            half_weights=True)
            video_fast(bench, model, name, b, w, h, torch.float16, False, "CUDA graph fp16 (FastVideoStep)")
            anchor_rows(bench, anchor, name, b, w, h)

    def compiled(name, b):
        for n, w, h in sizes:
            if n == name and b in batches:
                video_fast(bench, model_t, n, b, w, h, torch.float16, True, "compiled + CUDA graph fp16 (FastVideoStep)",
                           keep=keep if (n, b) == ("1080p", 1) else None)

    b0, later = batches[0], batches[1:]
    if getattr(bench.args, "compiled_only", False):  # a follow-up run for the rows a full run had no time for
        for name, _, _ in sizes:
            compiled(name, b0)
        return
    export_row(bench, model)
    phase_a(b0)
    if compile_ok:
        compiled("1080p", b0)
    for B in pose_batches:
        pose_rows(bench, pose, B, f"eager fp32 ({backend})", fast=False)
        pose_rows(bench, pose, B, f"FastPoseStep CUDA graph fp32 ({backend})", fast=True)
    cpu_rows(bench, model, sizes, [b0])
    io_rows(bench, model, keep)
    keep.clear()
    cleanup()
    if compile_ok:
        compiled("2160p", b0)
        pose_rows(bench, pose_t, max(pose_batches), "FastPoseStep compiled + CUDA graph fp32 (torch)", fast=True,
                  compile=True)
    for b in later:
        phase_a(b)
    cpu_rows(bench, model, sizes, later)
    if compile_ok:
        order = ["1080p", "2160p", "720p", "480p"]
        rest = [(n, b) for b in batches for n, _, _ in sizes if (n, b) not in (("1080p", b0), ("2160p", b0))]
        rest.sort(key=lambda nb: (nb[1], order.index(nb[0]) if nb[0] in order else 9))
        for name, b in rest:
            compiled(name, b)


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    ap.add_argument("--quick", action="store_true", help="smoke test: one size, batch 1, few reps, no compile")
    ap.add_argument("--time-budget", type=float, default=300.0, help="seconds for the whole run (rows beyond it are skipped)")
    ap.add_argument("--video-weights", default=None, help="safetensors of a trained video model (default: random init)")
    ap.add_argument("--sizes", default=None, help=f"comma list of {list(SIZES)} or WxH (default: all; --quick: 480p)")
    ap.add_argument("--batches", default=None, help="comma list of stream counts (default 1,8; --quick: 1)")
    ap.add_argument("--pose-batches", default=None, help="comma list (default 1000,10000,100000; --quick: 100)")
    ap.add_argument("--reps", type=int, default=None, help="timed steps per row (default 100; --quick: 5)")
    ap.add_argument("--min-reps", type=int, default=None, help="fewest timed steps of a slow row (default 10; --quick: 1)")
    ap.add_argument("--row-seconds", type=float, default=None, help="timing seconds a row may take (default 3)")
    ap.add_argument("--backend", default="auto", choices=["auto", "torch", "mamba"],
                    help="SSM backend of the eager and graph rows")
    ap.add_argument("--compiled-only", action="store_true",
                    help="only the compiled + CUDA graph video rows of --sizes at the first batch (a follow-up run)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--onnx", default=None, help="a guided video step graph from streamssm.export.export_onnx (default: "
                    "export one here, which needs the onnx package)")
    ap.add_argument("--out", default=None, help="write the full results (markdown; rows as JSON in OUT.json) here")
    ap.add_argument("--no-write", action="store_true", help="do not write the RESULTS.md section")
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of failing rows")
    a = ap.parse_args(argv)
    q = a.quick
    a.reps = a.reps or (5 if q else 100)
    a.min_reps = a.min_reps or (1 if q else 10)
    a.row_seconds = a.row_seconds or (1.0 if q else 3.0)
    sizes = [parse_size(s) for s in (a.sizes or ("480p" if q else ",".join(SIZES))).split(",")]
    batches = [int(b) for b in (a.batches or ("1" if q else "1,8")).split(",")]
    pose_batches = [int(b) for b in (a.pose_batches or ("100" if q else "1000,10000,100000")).split(",")]
    compile_ok = not (a.no_compile or q)

    if a.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(a.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: CUDA is not available here")
    bench = Bench(a, device)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cudnn.benchmark = True
    print(f"latency: {machine(str(device))}; budget {a.time_budget:.0f} s; sizes {[s[0] for s in sizes]}, "
          f"batches {batches}", flush=True)

    backend, why = probe_backend(a.backend, device)
    if why:
        bench.notes.append(why)
    bench.notes.append(f"SSM backend of the eager and graph rows: {backend}; compiled rows: torch")
    model = video_model(a, device, backend)
    model_t = with_backend(model, VideoSSM, VideoSSMConfig, "torch", device)
    torch.manual_seed(0)
    anchor = LaiConsistencyNet().to(device).eval()
    bench.anchor_params = sum(p.numel() for p in anchor.parameters())
    print(f"anchor (Lai et al. 2018) parameters: {bench.anchor_params:,}", flush=True)
    bench.notes.append(f"anchor network: {bench.anchor_params:,} parameters, random weights; fp32 convolutions may use "
                       f"TF32 (cudnn.allow_tf32={torch.backends.cudnn.allow_tf32})")
    pose = load_pose_model(None, device, backend)
    pose_t = with_backend(pose, type(pose), type(pose.config), "torch", device)

    models = {"video": model, "video_torch": model_t, "anchor": anchor, "pose": pose, "pose_torch": pose_t,
              "backend": backend}
    plan = run_gpu if gpu else run_cpu_only
    plan(bench, models, sizes, batches, pose_batches, compile_ok)

    text = report(bench)
    if not a.no_write:
        path = write_section(f"latency {torch.cuda.get_device_name(0) if gpu else 'cpu'}{' (quick)' if q else ''}", text)
        print(f"wrote {path}")
    bench.save()
    print()
    print("\n".join(l for l in text.splitlines() if not l.startswith("<!--")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
