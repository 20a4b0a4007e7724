"""The flicker / fidelity trade-off: streamssm's strength knob against the motion-compensated EMA's alpha.

    python benchmarks/video_tradeoff.py [--strengths 0.6,0.8,1,1.15,1.3,1.5] [--alphas 0.2,0.3,0.4,0.5,0.6]
        [--frames 48] [--width 640] [--score-flow farneback|deepflow|tvl1] [--processed-only] [--blur 0.5,0.7,1]
        [--no-write]

One setting of each method is a single point (mean E_warp ratio, mean PSNR(O, P)) over the cases of
``video_quality.py`` with real flicker (E_warp(P) >= 2 E_warp(I)), scored the same way (Farneback flow between the
originals). A user picks the setting, so the question is which method's *curve* is better: for every MC-EMA
point (DIS flow on the originals; with the occlusion mask, the issue's baseline, and without it) the table gives
streamssm's ratio at the same mean PSNR, interpolated linearly between its two neighbouring strengths ("-" when
that PSNR lies outside streamssm's range). streamssm runs guided, on the CPU fast step, with the shipped weights;
``--processed-only``: streamssm without the originals, against the MC-EMA run on P alone (DIS flow between the
processed frames), processed-only's own baseline. ``--blur SIGMAS``: a diagnostic curve more, streamssm at strength 1
with its output blurred (Gaussian, sigma in pixels): what the score gives for spatial smoothing, which no user asked
for. Writes the section "video_tradeoff" of benchmarks/RESULTS.md and
``benchmarks/video_tradeoff.png`` (neither with ``--no-write``; "video_tradeoff processed-only" and so on, and a
picture of that name, for the other settings).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks._results import machine, md_table, write_section  # noqa: E402
from streamssm import baselines_video as bv  # noqa: E402
from streamssm import metrics  # noqa: E402
from streamssm.video.filter import VideoFilter  # noqa: E402
from video_quality import floats, real_flicker_cases  # noqa: E402

HERE = Path(__file__).resolve().parent


def at_psnr(curve: list[tuple[float, float]], psnr: float) -> float | None:
    """The ratio of a (ratio, psnr) curve at ``psnr``, linear between the two neighbouring points; None outside."""
    pts = sorted(curve, key=lambda p: p[1])
    for (r0, p0), (r1, p1) in zip(pts, pts[1:]):
        if p0 <= psnr <= p1:
            return r0 if p1 == p0 else r0 + (r1 - r0) * (psnr - p0) / (p1 - p0)
    return None


def plot(curves: dict[str, list[tuple[float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label, pts in curves.items():
        pts = sorted(pts, key=lambda p: p[1])
        ax.plot([p for _, p in pts], [r for r, _ in pts], "o-", label=label)
    ax.axhline(0.2, color="grey", lw=0.8, ls="--")
    ax.axvline(30.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("mean PSNR(O, P), dB (higher: closer to the processed video)")
    ax.set_ylabel("mean E_warp(O) / E_warp(P) (lower: less flicker)")
    ax.set_title("real-flicker cases: the trade-off each knob offers")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strengths", default="0.6,0.8,1,1.15,1.3,1.5")
    ap.add_argument("--alphas", default="0.2,0.3,0.4,0.5,0.6")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--score-flow", default="farneback", choices=["farneback", "deepflow", "tvl1"],
                    help="the flow E_warp is scored with (deepflow, tvl1: opencv-contrib; written to a section of its own)")
    ap.add_argument("--processed-only", action="store_true",
                    help="streamssm without the originals, MC-EMA with its flow on P alone")
    ap.add_argument("--blur", default=None, metavar="SIGMAS",
                    help="also streamssm at strength 1, its output blurred by these Gaussian sigmas (px): a diagnostic")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    po = args.processed_only
    mode = "processed-only" if po else "guided"
    strengths, alphas = floats(args.strengths, "--strengths"), floats(args.alphas, "--alphas")
    t0 = time.time()
    data = real_flicker_cases(args)

    def point(run) -> tuple[float, float]:
        per = []
        for _, P, I, _, flows, eP in data:
            O = run(P, I)
            per.append((metrics.warp_error(O, flows=flows) / eP, metrics.psnr(O, P)))
        return float(np.mean([r for r, _ in per])), float(np.mean([p for _, p in per]))

    ours: list[tuple[float, float]] = []
    curves: dict[str, list[tuple[float, float]]] = {f"streamssm {mode} (strength)": ours}
    settings: dict[str, list[str]] = {}  # the MC-EMA and blur curves' settings, for their rows
    for s in strengths:
        ours.append(point(lambda P, I: VideoFilter(None, device="cpu", strength=s).filter(P, None if po else I)))
        print(f"strength {s:g}: {ours[-1]}", flush=True)
    ema = "MC-EMA on P alone" if po else "MC-EMA"
    for occ, label in [(True, f"{ema}, occlusion mask (alpha)"), (False, f"{ema}, no mask (alpha)")]:
        curves[label], settings[label] = [], [f"alpha {a:g}" for a in alphas]
        for a in alphas:
            curves[label].append(point(lambda P, I: bv.mc_ema(P, P if po else I, alpha=a, occlusion=occ)))
            print(f"{label} {a:g}: {curves[label][-1]}", flush=True)
    if args.blur:
        import cv2

        sigmas = floats(args.blur, "--blur")
        label = f"streamssm {mode}, strength 1, output blurred (sigma px)"
        curves[label], settings[label] = [], [f"Gaussian sigma {g:g} px" for g in sigmas]
        for g in sigmas:
            curves[label].append(point(lambda P, I: [cv2.GaussianBlur(o, (0, 0), g) for o in
                                                     VideoFilter(None, device="cpu").filter(P, None if po else I)]))
            print(f"{label} {g:g}: {curves[label][-1]}", flush=True)
    rows = [[f"streamssm {mode}", f"strength {s:g}", f"{r:.3f}", f"{p:.1f}", "", ""]
            for s, (r, p) in zip(strengths, ours)]
    wins = losses = 0
    for label in list(curves)[1:]:
        for a, (r, p) in zip(settings[label], curves[label]):
            o = at_psnr(ours, p)
            if o is not None and label.startswith(ema):  # the count is against the baselines, not the diagnostic
                wins, losses = wins + (o < r), losses + (o >= r)
            rows.append([label.split(" (")[0], a, f"{r:.3f}", f"{p:.1f}", "-" if o is None else f"{o:.3f}",
                         "-" if o is None else f"{o - r:+.3f}"])
    tags = ([args.score_flow] if args.score_flow != "farneback" else []) + (["processed-only"] if po else []) \
        + (["blur"] if args.blur else [])
    flag = "".join({"processed-only": " --processed-only", "blur": f" --blur {args.blur}"}.get(t, f" --score-flow {t}")
                   for t in tags)
    png = HERE / f"video_tradeoff{''.join('_' + t.replace('-', '_') for t in tags)}.png"
    if not args.no_write:
        plot(curves, png)
    body = (
        "## Video flicker / fidelity trade-off (strength against MC-EMA's alpha)"
        + (", processed-only" if po else "")
        + ("" if args.score_flow == "farneback" else f", scored with {args.score_flow}") + "\n\n"
        f"`python benchmarks/video_tradeoff.py --strengths {args.strengths} --alphas {args.alphas}{flag}` on "
        f"{machine('cpu')}. Mean over the {len(data)} cases of `video_quality.py` with real flicker (E_warp(P) >= 2 "
        "E_warp(I)): " + ", ".join(n for n, *_ in data) + f"; {args.frames} frames at {args.width} px for the held-out "
        f"operators; E_warp scored with {args.score_flow} flow between the originals"
        + ("; streamssm without the originals, MC-EMA with DIS flow between the processed frames" if po else "")
        + ("; the blurred rows are a diagnostic: streamssm's output through a Gaussian blur, which lowers the score's "
           "error (flow disagreements cost less on smooth content) at a cost in PSNR, and which no user asked for"
           if args.blur else "")
        + ". Last two columns: streamssm's "
        "ratio at the MC-EMA point's PSNR (linear between its neighbouring strengths; '-' outside its range) and its "
        "difference (negative: streamssm removes more flicker at the same fidelity).\n\n"
        + md_table(["method", "setting", "mean E_warp ratio", "mean PSNR(O,P)", "streamssm at that PSNR", "difference"],
                   rows)
        + f"\n\nMC-EMA points inside streamssm's PSNR range where streamssm's curve is lower: {wins} of {wins + losses}. "
        f"Picture: `benchmarks/{png.name}`. Run took {time.time() - t0:.0f} s."
    )
    print(body)
    if not args.no_write:
        write_section(" ".join(["video_tradeoff", *tags]), body)


if __name__ == "__main__":
    main()
