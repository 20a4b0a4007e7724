"""How the shipped video weights' blend calibration was chosen: a grid on the validation pairs alone.

    python benchmarks/video_calibration.py [--shifts 0,0.7,1.4,2,2.7] [--gains 0.5,0.6,0.7,0.8,1]
        [--margin 0.5] [--still-px 0.25]

Starts from the shipped weights *without* their calibration (``streamssm.train.video.calibrate_blend`` undone
from the weights' own record of it) and scores every (confidence shift, blend gain) pair of the grid, guided,
on the two real processed videos of ../shared/data/pairs (Haze2 dehazing, bike-packing enhancement), against
the motion-compensated EMA (the issue's baseline: DIS flow, a=0.3, occlusion mask) in the same run; E_warp is
scored with Farneback flow between the originals, as in ``video_quality.py``. The rule: the lowest mean E_warp
ratio among the points whose mean PSNR(O, P) is at least ``--margin`` dB above the EMA's. The held-out operators
of ``video_quality.py`` are not used. Also reported, not part of the rule: the still-camera case of the demo's
webcam tab (one real frame under the ``gamma_jitter`` operator, 24 frames, guided), as the share of its
frame-to-frame mean-luminance flicker left in the output (``metrics.luminance_flicker``) -- the blend gain caps the blend weight everywhere, so a
lower gain would keep more of a still scene's flicker, as MC-EMA's a=0.3 does, but for ``--still-px``: where the
guide's flow is under about that many pixels the blend keeps its full weight. The weights' own calibration point
is marked, and gets a processed-only row too (after a change to the model the rule may pick another point than
the one the weights were calibrated at). Writes the section "video_calibration" of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks._results import machine, md_table, write_section  # noqa: E402
from streamssm import baselines_video as bv  # noqa: E402
from streamssm.train.video import recalibrate_blend  # noqa: E402
from streamssm.video.filter import DEFAULT_WEIGHTS  # noqa: E402
from streamssm.weights import read_weights  # noqa: E402
from video_quality import (floats, pair_scorer, pick, still_camera_case, still_flicker_left,  # noqa: E402
                           uncalibrated, validation_pairs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="video weights (default: the shipped ones)")
    ap.add_argument("--shifts", default="0,0.7,1.4,2,2.7", help="log flow-confidence shifts, comma-separated")
    ap.add_argument("--gains", default="0.5,0.6,0.7,0.8,1", help="blend gains, comma-separated")
    ap.add_argument("--margin", type=float, default=0.5, help="dB above the EMA's mean PSNR(O, P)")
    ap.add_argument("--still-px", type=float, default=0.25,
                    help="flow (full-res px) under which the guide counts as still and keeps the full blend; 0: off")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    shifts, gains = floats(args.shifts, "--shifts"), floats(args.gains, "--gains")
    t0 = time.time()
    data = validation_pairs()
    score = pair_scorer(data)

    # the still-camera case (the demo's webcam): one real frame, a per-frame gamma flicker; guided
    still, still_P = still_camera_case(data)

    def still_left(O) -> float:
        return still_flicker_left(O, still, still_P)

    ema = score({k: bv.mc_ema(P, I, alpha=0.3) for k, (P, I) in data.items()})
    ema_still = still_left(bv.mc_ema(still_P, [still] * len(still_P), alpha=0.3))
    print(f"MC-EMA: {ema[0]:.3f} / {ema[1]:.1f}", flush=True)

    def run(shift: float, gain: float, guided: bool = True):
        outs = {}
        for k, (P, I) in data.items():
            f = uncalibrated(args.weights)
            recalibrate_blend(f.model, shift, gain, args.still_px)
            outs[k] = f.filter(P, I if guided else None)
        f.reset()
        return (*score(outs), still_left(f.filter(still_P, [still] * len(still_P) if guided else None)))

    grid = {}
    for s in shifts:
        for g in gains:
            grid[s, g] = run(s, g)
            print(f"shift {s} gain {g}: {grid[s, g][0]:.3f} / {grid[s, g][1]:.1f}, still {grid[s, g][3]:.3f}", flush=True)
    best = pick(grid, ema[1] + args.margin)
    cal = read_weights(args.weights or DEFAULT_WEIGHTS, "video")[2].get("calibration")
    shipped = (float(cal["conf_shift"]), float(cal["gain"])) if cal else None
    rows = [["motion-compensated EMA a=0.3 (DIS)", "-", "-", f"{ema[0]:.3f}", f"{ema[1]:.1f}", ema[2],
             f"{ema_still:.3f}"]]
    for (s, g), r in grid.items():
        mark = "**" if (s, g) == best else ""
        tag = " (the weights' own)" if (s, g) == shipped else ""
        rows.append([f"{mark}shift {s:g}, gain {g:g}{mark}{tag}", f"{s:g}", f"{g:g}", f"{r[0]:.3f}", f"{r[1]:.1f}", r[2],
                     f"{r[3]:.3f}"])
    po = []
    for s, g in dict.fromkeys(k for k in [(0.0, 1.0), best, shipped] if k):
        r = run(s, g, guided=False)
        po.append([f"processed-only, shift {s:g}, gain {g:g}", f"{s:g}", f"{g:g}", f"{r[0]:.3f}", f"{r[1]:.1f}", r[2],
                   f"{r[3]:.3f}"])
    chosen = (f"chosen: shift {best[0]:g}, gain {best[1]:g} (the lowest mean ratio with PSNR(O, P) >= "
              f"{ema[1] + args.margin:.1f} dB)" if best else f"no point reaches {ema[1] + args.margin:.1f} dB")
    chosen += (f"; the weights' own calibration: shift {shipped[0]:g}, gain {shipped[1]:g}" if shipped
               else "; the weights record no calibration")
    print(chosen, flush=True)
    body = (
        "## Video blend calibration (validation pairs only)\n\n"
        f"`python benchmarks/video_calibration.py --shifts {args.shifts} --gains {args.gains} "
        f"--margin {args.margin:g} --still-px {args.still_px:g}` "
        f"on {machine('cpu')}. The shipped weights with their blend calibration taken off, then a log flow-confidence "
        "shift and a blend gain (`streamssm.train.video.calibrate_blend`), guided, on the two real processed videos "
        "of ../shared/data/pairs only; E_warp ratio (Farneback flow) / PSNR(O, P) dB, mean and per video (Haze2, "
        f"bike-packing). Rule: the lowest mean ratio among the points at least {args.margin:g} dB above the "
        f"motion-compensated EMA's mean PSNR. {chosen}; processed-only rows for reference. Still-camera flicker "
        "left: the demo webcam's case (one frame of bike-packing's original, `gamma_jitter`, 24 frames, guided), "
        "`metrics.luminance_flicker` of O against that frame, after 4 frames (not part of the rule).\n\n"
        + md_table(["variant", "shift", "gain", "mean E_warp ratio", "mean PSNR(O,P)", "per video",
                    "still-camera flicker left"], rows + po)
        + f"\n\nRun took {time.time() - t0:.0f} s."
    )
    if not args.no_write:
        write_section("video_calibration", body)
    print(body)


if __name__ == "__main__":
    main()
