"""How low can E_warp(O)/E_warp(P) go at a given PSNR(O, P)?  The optimum of the score itself, per case.

    python benchmarks/video_bound.py [--lams 0.5,1.5,5] [--iters 12] [--device cpu|cuda] [--frames 48] [--width 640]
        [--only SUBSTR] [--no-write]

For each case of ``video_quality.py`` with real flicker, the output that minimises

    E_warp(O) + lam * MSE(O, P)

over the whole clip -- *not causal*: every frame sees the future -- found exactly (the objective is a quadratic in
O: conjugate gradient, float64, one colour channel at a time), rounded to uint8 and scored like
``video_quality.py`` (Farneback flow between the originals). Two versions:

* **along the scorer's flow**: the optimum is taken with the very flows and occlusion masks that score it. No
  method can do better at the same PSNR; it is a bound, reachable only by knowing the scorer.
* **along DIS flow** and **along streamssm's flow** (its pyramidal Lucas-Kanade flow, at half resolution as the
  filter runs it): the same optimum with flows (and occlusion masks) from another algorithm: the most that pure
  temporal smoothing along a flow one estimates oneself can reach, as any real filter must (the issue asks for a
  scorer different from the filter's flow for this reason). It is not a bound on a filter using that flow: a filter
  may also smooth in space, which lowers the score along any flow (streamssm's stronger settings do; compare).

Each is run at every ``--lams`` (larger: closer to P); the table also gives the ratio interpolated at streamssm's
PSNR and at 30 dB (linear between the two neighbouring lam points; '-' outside) and the lowest ratio over the sweep.
streamssm (guided, strength 1, 1.3 and 1.5; on the CPU) and MC-EMA (alpha 0.3) are scored in the same run. The optimum takes minutes a case on a
2-core CPU (Haze2, 122 frames at 1024 x 576, about an hour): ``--device cuda`` solves it on a GPU. Writes the
section "video_bound" of benchmarks/RESULTS.md.

Convergence (checked on the CPU for detail_enhance and equalize_hist along DIS flow, 12 against 40 iterations): at
lam 0.4 the ratio moves by at most 0.002; at lam 0.02 the solution is still moving towards more smoothing, which
along a flow other than the scorer's leaves the ratio flat (0.554 -> 0.553) or raises it (0.581 -> 0.775), so the
lowest ratio over the sweep is not an artefact of stopping early.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks._results import machine, md_table, write_section  # noqa: E402
from streamssm import baselines_video as bv  # noqa: E402
from streamssm import metrics  # noqa: E402
from streamssm.video.filter import VideoFilter  # noqa: E402
from streamssm.video.model import VideoSSMConfig, estimate_flow, flow_shape  # noqa: E402
from video_quality import floats, real_flicker_cases  # noqa: E402
from video_tradeoff import at_psnr  # noqa: E402


def sampling(flows: metrics.Flows) -> tuple[torch.Tensor, torch.Tensor]:
    """``grid`` (t-1, h, w, 2) for ``grid_sample`` doing ``metrics.warp`` (x + flow, bilinear, zeros outside), and
    per-pixel weights (t-1, 1, h, w) that make a weighted sum of squares equal ``metrics.warp_error``'s mean over
    pairs of the masked per-pixel mean."""
    fw = torch.from_numpy(flows.forward).double()
    _, h, w, _ = fw.shape
    gx, gy = torch.meshgrid(torch.arange(w, dtype=torch.float64), torch.arange(h, dtype=torch.float64), indexing="xy")
    grid = torch.stack([2 * (gx + fw[..., 0]) / (w - 1) - 1, 2 * (gy + fw[..., 1]) / (h - 1) - 1], -1)
    m = torch.from_numpy(flows.valid).double()
    n = m.flatten(1).sum(1).clamp_min(1)
    return grid, (m / n[:, None, None] / m.shape[0])[:, None]


def filter_flows(originals: list[np.ndarray]) -> metrics.Flows:
    """Flows between consecutive originals as streamssm estimates them (:func:`estimate_flow` on the half-resolution
    luminance, the shipped configuration), in ``metrics.Flows``' convention, with the forward-backward mask."""
    cfg = VideoSSMConfig()
    h, w = originals[0].shape[:2]
    div, _, _ = flow_shape(h, w, cfg)
    g = torch.from_numpy(np.stack([metrics._to_gray_u8(f) for f in originals])).float().div_(255.0)[:, None]
    g = F.avg_pool2d(g, div) if div > 1 else g

    def flow(cur, prev):
        f, _ = estimate_flow(cur, prev, cfg.flow_levels, window=cfg.flow_window, smooth=cfg.flow_smooth)
        f = F.interpolate(f * div, size=(h, w), mode="bilinear", align_corners=False)
        return f.permute(0, 2, 3, 1).contiguous().numpy()

    fwd, bwd = flow(g[:-1], g[1:]), flow(g[1:], g[:-1])  # backward flow of frame t towards t+1 = forward flow
    valid = np.stack([metrics.consistency_mask(a, b) for a, b in zip(fwd, bwd)])
    return metrics.Flows(fwd, valid, "streamssm")


def gradient(O: torch.Tensor, P: torch.Tensor, grid, wgt, lam: float, chunk: int = 8) -> torch.Tensor:
    """Gradient of ``sum_t wgt_t |O_t - warp(O_{t+1})|^2 + lam * MSE(O, P)`` for one channel of three:
    O, P (t, 1, h, w)."""
    O = O.detach().requires_grad_(True)
    f = lam * ((O - P) ** 2).sum() / (3 * P.numel())  # MSE over the three channels
    for s in range(0, O.shape[0] - 1, chunk):
        e = min(s + chunk, O.shape[0] - 1)
        b = F.grid_sample(O[s + 1:e + 1], grid[s:e], mode="bilinear", padding_mode="zeros", align_corners=True)
        f = f + (wgt[s:e] * (O[s:e] - b) ** 2).sum()
    return torch.autograd.grad(f, O)[0]


def optimum(P: torch.Tensor, grid, wgt, lam: float, iters: int) -> torch.Tensor:
    """The minimiser of the quadratic above for one channel: conjugate gradient from O = P. The gradient is
    ``A O - c``, so ``A v = gradient(v) + c`` with ``c = -gradient(0)``."""
    c = -gradient(torch.zeros_like(P), P, grid, wgt, lam)
    x = P.clone()
    r = -gradient(x, P, grid, wgt, lam)
    p, rs = r.clone(), (r * r).sum()
    for _ in range(iters):
        Ap = gradient(p, P, grid, wgt, lam) + c
        a = rs / (p * Ap).sum()
        x, r = x + a * p, r - a * Ap
        rs, rs_old = (r * r).sum(), rs
        p = r + (rs / rs_old) * p
    return x


def optimum_uint8(P: list[np.ndarray], flows: metrics.Flows, lam: float, iters: int, device: str = "cpu"
                  ) -> list[np.ndarray]:
    grid, wgt = (x.to(device) for x in sampling(flows))
    Pt = torch.from_numpy(np.stack(P)).to(device).double().div_(255.0)  # (t, h, w, 3)
    out = np.empty((len(P), *P[0].shape), np.uint8)
    for ch in range(3):
        Pc = Pt[..., ch][:, None].contiguous()
        x = optimum(Pc, grid, wgt, lam, iters)[:, 0].cpu().numpy()
        out[..., ch] = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return list(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lams", default="0.5,1.5,5")
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--device", default="cpu", help="where the optimum is solved (float64)")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--only", default="", help="only the cases whose name contains this")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    lams = floats(args.lams, "--lams")
    args.score_flow = "farneback"
    t_start = time.time()
    rows, summary = [], {}
    for name, P, I, T, flows, eP in real_flicker_cases(args):
        if args.only not in name:
            continue
        score = lambda O: (metrics.warp_error(O, flows=flows) / eP, metrics.psnr(O, P))  # noqa: E731
        pts = {"streamssm guided": score(VideoFilter(device="cpu").filter(P, I)),
               "streamssm guided, strength 1.3": score(VideoFilter(device="cpu", strength=1.3).filter(P, I)),
               "streamssm guided, strength 1.5": score(VideoFilter(device="cpu", strength=1.5).filter(P, I)),
               "MC-EMA a=0.3 (DIS)": score(bv.mc_ema(P, I, alpha=0.3))}
        for label, (r, ps) in pts.items():
            rows.append([name, label, f"{r:.3f}", f"{ps:.1f}", "", "", ""])
            summary.setdefault(label, []).append((r, ps))
        own_psnr = pts["streamssm guided"][1]
        for label, along in [("optimum along the scorer's flow (bound)", flows),
                             ("optimum along DIS flow", metrics.compute_flows(I, "dis")),
                             ("optimum along streamssm's flow", filter_flows(I))]:
            curve = []
            for lam in lams:
                t0 = time.time()
                curve.append(score(optimum_uint8(P, along, lam, args.iters, args.device)))
                print(f"{name} | {label} | lam {lam:g}: {curve[-1][0]:.3f} at {curve[-1][1]:.1f} dB "
                      f"({time.time() - t0:.0f} s)", flush=True)
            at_own, at_30 = at_psnr(curve, own_psnr), at_psnr(curve, 30.0)
            low = min(curve)
            for lam, (r, ps) in zip(lams, curve):
                rows.append([name, f"{label}, lam {lam:g}", f"{r:.3f}", f"{ps:.1f}", "", "", ""])
            rows.append([name, f"{label}: summary", "", "", "-" if at_own is None else f"{at_own:.3f}",
                         "-" if at_30 is None else f"{at_30:.3f}", f"{low[0]:.3f} ({low[1]:.1f} dB)"])
            summary.setdefault(f"{label}, at streamssm's PSNR", []).append((at_own, None))
            summary.setdefault(f"{label}, lowest over the sweep", []).append(low)
    mean = lambda xs, f: f.format(np.mean(xs)) if all(x is not None for x in xs) else "-"  # noqa: E731
    mean_rows = [[k, mean([r for r, _ in v], "{:.3f}"), mean([p for _, p in v], "{:.1f}"), len(v)]
                 for k, v in summary.items()]
    body = (
        "## Video deflicker: how low the warping error can go (the score's own optimum, not causal)\n\n"
        f"`python benchmarks/video_bound.py --lams {args.lams} --iters {args.iters} --device {args.device}` on "
        f"{machine(args.device)}, OpenCV {cv2.__version__} (the optimum on {args.device}, float64; streamssm and MC-EMA on "
        "the CPU). The cases "
        f"of `video_quality.py` with real flicker ({args.frames} frames at {args.width} px for the held-out "
        "operators), scored the same way (Farneback flow between the originals). 'Optimum' rows: the whole-clip "
        "output minimising E_warp(O) + lam MSE(O, P), solved exactly with the flows named (see the script's "
        "docstring); along the scorer's own flow it bounds every method; along DIS flow or streamssm's own flow it is "
        "the most that pure temporal smoothing along that flow can reach, even seeing the whole clip (not a bound on "
        "a filter, which may also smooth in space).\n\n"
        + md_table(["case", "method", "E_warp ratio", "PSNR(O,P)", "ratio at streamssm's PSNR", "ratio at 30 dB",
                    "lowest ratio (its PSNR)"], rows)
        + "\n\nMeans over the cases:\n\n" + md_table(["row", "mean E_warp ratio", "mean PSNR(O,P)", "cases"], mean_rows)
        + f"\n\nRun took {time.time() - t_start:.0f} s."
    )
    print(body)
    if not args.no_write and not args.only:
        write_section("video_bound", body)


if __name__ == "__main__":
    main()
