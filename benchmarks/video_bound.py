"""How low can E_warp(O)/E_warp(P) go at a given PSNR(O, P)?  The optimum of the score itself, per case.

    python benchmarks/video_bound.py [--lams 0.004,0.02,0.1,0.4,1.5,6] [--iters 16] [--device cpu|cuda] [--frames 48]
        [--width 640] [--only SUBSTR] [--no-write]

For each case of ``video_quality.py`` with real flicker, the output that minimises

    E_warp(O) + lam * MSE(O, P)

over the whole clip -- *not causal*: every frame sees the future. The objective is a quadratic in O; conjugate
gradient (float64, one colour channel at a time, ``--iters`` steps a lam, each lam warm-started from the next larger
one's solution) approximates the minimiser, and the table gives the relative residual it stops at. The output is
rounded to uint8 and scored like ``video_quality.py`` (Farneback flow between the originals). Three versions:

* **along the scorer's flow**: the very flows and occlusion masks that score it. What the score allows a method that
  knew the scorer's flow: no method does better at the same PSNR, up to the residual, the rounding and the
  interpolation between lam points.
* **along DIS flow** and **along streamssm's flow** (its pyramidal Lucas-Kanade flow on the half-resolution
  luminance, as the filter runs it): the same smoother with flows (and occlusion masks) from another algorithm, as
  a real filter must use (the issue asks for a scorer different from the filter's flow for this reason). It is not
  a bound on a filter using that flow: a filter may also smooth in space, which lowers the score along any flow
  (streamssm's stronger settings do; compare).

Each is run at every ``--lams`` (larger: closer to P); the table also gives the ratio interpolated at streamssm's
PSNR and at 30 dB (linear between the two neighbouring lam points; '-' outside) and, along the other flows, the
lowest ratio over the sweep. streamssm (guided, strength 1, 1.3 and 1.5; on the CPU) and MC-EMA (alpha 0.3) are
scored in the same run. The solves take about an hour on a 2-core CPU (Haze2 is 122 frames at 1024 x 576):
``--device cuda`` runs them on a GPU (``bash benchmarks/gpu_session.sh bound10``). Writes the section
"video_bound" of benchmarks/RESULTS.md.
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
from streamssm.video.model import VideoSSMConfig, _luma, estimate_flow, flow_shape  # noqa: E402
from video_quality import floats, real_flicker_cases  # noqa: E402
from video_tradeoff import at_psnr  # noqa: E402


def sampling(flows: metrics.Flows) -> tuple[torch.Tensor, torch.Tensor]:
    """``grid`` (t-1, h, w, 2) for ``grid_sample`` doing ``metrics.warp`` (x + flow, bilinear, zeros outside), and
    per-pixel weights (t-1, 1, h, w) that make a weighted sum of squares equal ``metrics.warp_error``'s mean over
    pairs (those with a non-empty mask) of the masked per-pixel mean."""
    fw = torch.from_numpy(flows.forward).double()
    _, h, w, _ = fw.shape
    gx, gy = torch.meshgrid(torch.arange(w, dtype=torch.float64), torch.arange(h, dtype=torch.float64), indexing="xy")
    grid = torch.stack([2 * (gx + fw[..., 0]) / (w - 1) - 1, 2 * (gy + fw[..., 1]) / (h - 1) - 1], -1)
    m = torch.from_numpy(flows.valid).double()
    n = m.flatten(1).sum(1)
    pairs = max(int((n > 0).sum()), 1)
    return grid, (m / n.clamp_min(1)[:, None, None] / pairs)[:, None]


def filter_flows(originals: list[np.ndarray]) -> metrics.Flows:
    """Flows between consecutive originals as streamssm estimates them (:func:`estimate_flow` on the half-resolution
    luminance, the shipped configuration), in ``metrics.Flows``' convention, with the forward-backward mask."""
    cfg = VideoSSMConfig()
    h, w = originals[0].shape[:2]
    div, _, _ = flow_shape(h, w, cfg)
    g = _luma(torch.from_numpy(np.stack(originals)).permute(0, 3, 1, 2).float().div_(255.0))
    g = F.avg_pool2d(g, div) if div > 1 else g

    def flow(cur, prev):
        f, _ = estimate_flow(cur, prev, cfg.flow_levels, window=cfg.flow_window, smooth=cfg.flow_smooth)
        f = F.interpolate(f * div, size=(h, w), mode="bilinear", align_corners=False)
        return f.permute(0, 2, 3, 1).contiguous().numpy()

    fwd, bwd = flow(g[:-1], g[1:]), flow(g[1:], g[:-1])  # backward flow of frame t towards t+1 = forward flow
    valid = np.stack([metrics.consistency_mask(a, b) for a, b in zip(fwd, bwd)])
    return metrics.Flows(fwd, valid, "streamssm")


def gradient(O: torch.Tensor, P: torch.Tensor, grid, wgt, lam: float, chunk: int = 8) -> torch.Tensor:
    """Gradient of ``sum_t wgt_t |O_t - warp(O_{t+1})|^2 + lam * MSE(O, P)`` for one channel of three (so the
    three sum to E_warp + lam MSE over RGB): O, P (t, 1, h, w). A pair of frames at a time, ``chunk`` pairs a
    graph."""
    g = (2.0 * lam / (3 * P.numel())) * (O - P)
    for s in range(0, O.shape[0] - 1, chunk):
        e = min(s + chunk, O.shape[0] - 1)
        a, b = O[s:e].detach().requires_grad_(True), O[s + 1:e + 1].detach().requires_grad_(True)
        f = (wgt[s:e] * (a - F.grid_sample(b, grid[s:e], mode="bilinear", padding_mode="zeros",
                                           align_corners=True)) ** 2).sum()
        ga, gb = torch.autograd.grad(f, (a, b))
        g[s:e] += ga
        g[s + 1:e + 1] += gb
    return g


def optimum(P: torch.Tensor, grid, wgt, lam: float, iters: int, x0: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, float]:
    """The minimiser of the quadratic above for one channel, by ``iters`` conjugate-gradient steps from ``x0``
    (default P), and the relative residual ``|A x - c| / |c|`` it stops at. The gradient is ``A O - c``, with
    ``c = 2 lam P / (3 numel)``."""
    c = (2.0 * lam / (3 * P.numel())) * P
    x = (P if x0 is None else x0).clone()
    r = -gradient(x, P, grid, wgt, lam)
    p, rs = r.clone(), (r * r).sum()
    for _ in range(iters):
        Ap = gradient(p, P, grid, wgt, lam) + c
        a = rs / (p * Ap).sum()
        x, r = x + a * p, r - a * Ap
        rs, rs_old = (r * r).sum(), rs
        p = r + (rs / rs_old) * p
    return x, float(gradient(x, P, grid, wgt, lam).norm() / c.norm())


def optimum_uint8(P: list[np.ndarray], sampled: tuple[torch.Tensor, torch.Tensor], lam: float, iters: int,
                  x0: list[torch.Tensor] | None = None) -> tuple[list[np.ndarray], list[torch.Tensor], float]:
    """:func:`optimum` for each colour channel of ``P``, along ``sampled`` (:func:`sampling` of the flows, on the
    device to solve on: built once for a sweep of lams): the output rounded to uint8, the float solution per channel
    (to warm-start another ``lam``) and the largest relative residual."""
    grid, wgt = sampled
    Pt = torch.from_numpy(np.stack(P)).to(grid.device).double().div_(255.0)  # (t, h, w, 3)
    out = np.empty((len(P), *P[0].shape), np.uint8)
    sol, res = [], 0.0
    for ch in range(3):
        x, r = optimum(Pt[..., ch][:, None].contiguous(), grid, wgt, lam, iters, None if x0 is None else x0[ch])
        sol.append(x)
        res = max(res, r)
        out[..., ch] = np.clip(x[:, 0].cpu().numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return list(out), sol, res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lams", default="0.004,0.02,0.1,0.4,1.5,6")
    ap.add_argument("--iters", type=int, default=16, help="conjugate-gradient steps a lam (warm-started)")
    ap.add_argument("--device", default="cpu", help="where the optimum is solved (float64)")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--only", default="", help="only the cases whose name contains this")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    lams = sorted(floats(args.lams, "--lams"), reverse=True)  # each solve starts from the next larger lam's
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
            rows.append([name, label, f"{r:.3f}", f"{ps:.1f}", "", "", "", ""])
            summary.setdefault(label, []).append((r, ps))
        own_psnr = pts["streamssm guided"][1]
        for label, along, own in [("optimum along the scorer's flow", flows, False),
                                  ("optimum along DIS flow", metrics.compute_flows(I, "dis"), True),
                                  ("optimum along streamssm's flow", filter_flows(I), True)]:
            curve, x0 = [], None
            sampled = tuple(x.to(args.device) for x in sampling(along))
            for lam in lams:
                t0 = time.time()
                O, x0, res = optimum_uint8(P, sampled, lam, args.iters, x0)
                curve.append(score(O))
                rows.append([name, f"{label}, lam {lam:g}", f"{curve[-1][0]:.3f}", f"{curve[-1][1]:.1f}", "", "", "",
                             f"{res:.0e}"])
                print(f"{name} | {label} | lam {lam:g}: {curve[-1][0]:.3f} at {curve[-1][1]:.1f} dB, residual "
                      f"{res:.1e} ({time.time() - t0:.0f} s)", flush=True)
            at_own, at_30 = at_psnr(curve, own_psnr), at_psnr(curve, 30.0)
            low = min(curve) if own else None  # along the scorer's flow the ratio only falls with lam
            rows.append([name, f"{label}: summary", "", "", "-" if at_own is None else f"{at_own:.3f}",
                         "-" if at_30 is None else f"{at_30:.3f}",
                         "" if low is None else f"{low[0]:.3f} ({low[1]:.1f} dB)", ""])
            summary.setdefault(f"{label}, at streamssm's PSNR", []).append((at_own, None))
            if own:
                summary.setdefault(f"{label}, lowest over the sweep", []).append(low)
    mean = lambda xs, f: f.format(np.mean(xs)) if all(x is not None for x in xs) else "-"  # noqa: E731
    mean_rows = [[k, mean([r for r, _ in v], "{:.3f}"), mean([p for _, p in v], "{:.1f}"), len(v)]
                 for k, v in summary.items()]
    body = (
        "## Video deflicker: how low the warping error can go (the score's own optimum, not causal)\n\n"
        f"`python benchmarks/video_bound.py --lams {args.lams} --iters {args.iters} --device {args.device}` on "
        f"{machine(args.device)}, OpenCV {cv2.__version__} (the optimum on {args.device}, float64; streamssm and MC-EMA "
        f"on the CPU). The cases of `video_quality.py` with real flicker ({args.frames} frames at {args.width} px for "
        "the held-out operators), scored the same way (Farneback flow between the originals). 'Optimum' rows: the "
        "whole-clip output minimising E_warp(O) + lam MSE(O, P) along the flows named, by conjugate gradient "
        f"({args.iters} steps a lam, each lam starting from the next larger one's solution; last column: the relative "
        "residual it stops at), rounded to uint8. Along the scorer's own flow it shows what the score allows a method "
        "that knew the scorer's flow: none does better at the same PSNR, up to that residual, the rounding and the "
        "interpolation between lam points. Along DIS flow or streamssm's own flow it is what this quadratic smoother "
        "reaches following a flow of its own, even seeing the whole clip; it is not a bound on a filter, which may "
        "also smooth in space (compare streamssm's rows). 'Lowest ratio': the lowest over the lam sweep, at the PSNR "
        "where it falls.\n\n"
        + md_table(["case", "method", "E_warp ratio", "PSNR(O,P)", "ratio at streamssm's PSNR", "ratio at 30 dB",
                    "lowest ratio (its PSNR)", "CG residual"], rows)
        + "\n\nMeans over the cases:\n\n" + md_table(["row", "mean E_warp ratio", "mean PSNR(O,P)", "cases"],
                                                     mean_rows)
        + f"\n\nRun took {time.time() - t_start:.0f} s."
    )
    print(body)
    if not args.no_write and not args.only:
        write_section("video_bound", body)


if __name__ == "__main__":
    main()
