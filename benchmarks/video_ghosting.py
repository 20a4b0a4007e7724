"""Ghost trails on clean moving footage, and what the ghost guard (``VideoFilter(ghost_res=...)``) costs in flicker.

    python benchmarks/video_ghosting.py [--guards 0.3,0.2,0.1] [--frames 48] [--widths 640,1280] [--no-write]

A temporal filter that blends the motion-compensated previous output leaves copies of a thin or fast object
behind it wherever its flow misses the object (a lamp post passing a moving car): the warped old output still
holds the object where the current frame no longer does. The warping error scores such a trail as *less*
flicker, so the quality benchmarks cannot see it. Here the input has no flicker at all -- the processed frames
are the originals (P = I), the 10 clips of ../shared/data/videos, moving cameras -- so every difference between
output and input is the filter's own artefact. Scores per method, averaged over the clips:

* ghost share: the share of pixels where the output is off the input by more than 24 of 255 levels (any channel);
* p99.9 error: the 99.9th percentile of that difference, in levels (a trail is a small area, a high percentile);
* PSNR(O, P) on the clean clip.

Methods: streamssm guided and processed-only with the shipped weights (guard off) and with the guard at each
``--guards`` value (the flow residual at which the blend is cut to 1/e; lower is stricter), and the
motion-compensated EMA (DIS flow, alpha 0.3, occlusion mask: the issue's baseline), at each ``--widths``.

Then the guard's price in flicker: on the 4 cases of ``video_quality.py`` with real flicker (Farneback scoring, as
there), mean E_warp ratio and PSNR(O, P) for guided at strengths 1 and 1.3 and processed-only at strength 1, each
against the shipped filter's strength curve at the same PSNR (linear between its strengths 0.8 .. 1.5; positive:
the guard leaves that much more flicker at equal fidelity). Writes the section "video_ghosting" of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
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
from video_quality import DATA, floats, read_video, real_flicker_cases  # noqa: E402
from video_tradeoff import at_psnr  # noqa: E402

GHOST_LEVELS = 24  # of 255: a difference a viewer sees on a flat background


def ghost_scores(outs: list[np.ndarray], clean: list[np.ndarray]) -> tuple[float, float, float]:
    """(ghost share %, p99.9 difference in levels, PSNR dB) of a filtered clean clip against the clip."""
    d = np.stack([np.abs(o.astype(np.int16) - c).max(-1) for o, c in zip(outs, clean)])
    return 100.0 * float((d > GHOST_LEVELS).mean()), float(np.percentile(d, 99.9)), metrics.psnr(outs, clean)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guards", default="0.3,0.2,0.1", help="ghost_res values to measure besides off")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--widths", default="640,1280")
    ap.add_argument("--width", type=int, default=640, help="the held-out operators' width in the flicker part")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    guards = floats(args.guards, "--guards")
    widths = [int(w) for w in floats(args.widths, "--widths")]
    t0 = time.time()
    clips = sorted((DATA / "videos").glob("*.mp4"))
    if not clips:
        raise SystemExit(f"no clips in {DATA / 'videos'} (set STREAMSSM_DATA)")

    settings = [("off (shipped)", 0.0)] + [(f"ghost_res {g:g}", g) for g in guards]
    rows = []
    for width in widths:
        data = [read_video(p, args.frames, width) for p in clips]
        runs = [(f"streamssm {mode}, guard {label}", mode, g) for label, g in settings for mode in ("guided",
                                                                                                     "processed-only")]
        for name, mode, g in runs + [("MC-EMA a=0.3 (DIS)", "ema", None)]:
            per = []
            for fr in data:
                if mode == "ema":
                    outs = bv.mc_ema(fr, fr, alpha=0.3)
                else:
                    f = VideoFilter(device="cpu", ghost_res=g)
                    outs = f.filter(fr, fr if mode == "guided" else None)
                per.append(ghost_scores(outs, fr))
            share, p999, psnr = (float(np.mean([p[i] for p in per])) for i in range(3))
            rows.append([f"{width} px", name, f"{share:.3f}", f"{p999:.1f}", f"{psnr:.1f}",
                         " ".join(f"{p[0]:.2f}" for p in per)])
            print(rows[-1], flush=True)

    # the guard's price in flicker, on the real-flicker cases
    cases = real_flicker_cases(argparse.Namespace(frames=args.frames, width=args.width, score_flow="farneback"))

    def point(g: float, strength: float, guided: bool) -> tuple[float, float]:
        per = []
        for _, P, I, _, flows, eP in cases:
            O = VideoFilter(device="cpu", strength=strength, ghost_res=g).filter(P, I if guided else None)
            per.append((metrics.warp_error(O, flows=flows) / eP, metrics.psnr(O, P)))
        return float(np.mean([r for r, _ in per])), float(np.mean([p for _, p in per]))

    curve_strengths = (0.8, 1.0, 1.15, 1.3, 1.5)
    curves = {m: [point(0.0, s, m == "guided") for s in curve_strengths] for m in ("guided", "processed-only")}
    flick = []
    for label, g in settings:
        for mode, s in (("guided", 1.0), ("guided", 1.3), ("processed-only", 1.0)):
            r, p = curves[mode][curve_strengths.index(s)] if g == 0 else point(g, s, mode == "guided")
            o = at_psnr(curves[mode], p)
            flick.append([label, f"{mode}, strength {s:g}", f"{r:.3f}", f"{p:.1f}", "-" if o is None else f"{o:.3f}",
                          "-" if o is None else f"{r - o:+.3f}"])
            print(flick[-1], flush=True)

    body = (
        "## Video ghost trails on clean footage, and the ghost guard\n\n"
        f"`python benchmarks/video_ghosting.py --guards {args.guards} --frames {args.frames} --widths {args.widths}` "
        f"on {machine('cpu')}. Clean footage: the {len(clips)} clips of ../shared/data/videos (moving cameras), first "
        f"{args.frames} frames, the processed frames being the originals (P = I), so any difference is the filter's "
        f"own artefact (a trail of copies where the flow misses a thin or fast object). Ghost share: % of pixels off "
        f"by more than {GHOST_LEVELS}/255 in some channel; p99.9: the 99.9th percentile of that difference in "
        "levels; both averaged over the clips (per clip: ghost share, in the clips' name order "
        + ", ".join(p.stem.split("_", 2)[-1] for p in clips) + ").\n\n"
        + md_table(["width", "method", "ghost share %", "p99.9 error", "PSNR(O,P) clean", "per clip"], rows)
        + "\n\nWhat the guard costs in flicker: mean over the cases of `video_quality.py` with real flicker ("
        + ", ".join(n for n, *_ in cases) + f"; {args.frames} frames at {args.width} px for the held-out operators), "
        "E_warp scored with Farneback flow between the originals. Last two columns: the shipped filter (guard off) "
        "at the same PSNR, linear between its strengths " + ", ".join(f"{s:g}" for s in curve_strengths)
        + ", and the difference (positive: the guard leaves that much more flicker at equal fidelity).\n\n"
        + md_table(["guard", "mode", "mean E_warp ratio", "mean PSNR(O,P)", "guard off at that PSNR", "difference"],
                   flick)
        + f"\n\nRun took {time.time() - t0:.0f} s."
    )
    print(body)
    if not args.no_write:
        write_section("video_ghosting", body)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
