"""How the shipped video weights' processed-only mode was finished: a grid on the validation pairs alone.

    python benchmarks/video_processed_only.py [--corrections on,off] [--gate-widths 0.25,0.5,1,2,inf]
        [--margin 0.5] [--weights W] [--no-write]

Processed-only (no original: the flow runs on the processed frames), the given weights (default: the shipped ones)
with the per-cell colour correction on or off and the blend gate at each width
(``streamssm.train.video.set_processed_only``; inf: no gate), on the two real processed videos of
../shared/data/pairs (Haze2 dehazing, bike-packing enhancement), against the motion-compensated EMA run on P alone
(DIS flow between the processed frames, a=0.3, occlusion mask; and a=0.4 without the mask) in the same run. E_warp
is scored with Farneback flow between the originals, as in ``video_quality.py``. The rule: the lowest mean E_warp
ratio among the points whose mean PSNR(O, P) is at least ``--margin`` dB above that EMA's (a=0.3, masked). The
held-out operators of ``video_quality.py`` are not used. Also reported, not part of the rule: the still-camera
case of the demo's webcam tab (one real frame under ``gamma_jitter``, processed-only), as the share of its
frame-to-frame mean-luminance flicker left (``metrics.luminance_flicker``). The weights' own point is marked.
Writes the section "video_processed_only" of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks._results import machine, md_table, write_section  # noqa: E402
from streamssm import baselines_video as bv  # noqa: E402
from streamssm.train.video import GATE_OFF, set_processed_only, stored_gate_width  # noqa: E402
from streamssm.video.filter import VideoFilter  # noqa: E402
from video_quality import (floats, pair_scorer, pick, still_camera_case, still_flicker_left,  # noqa: E402
                           validation_pairs)


def corrections(text: str) -> list[bool]:
    """``--corrections``: a comma-separated list of on/off."""
    out = [v.strip() for v in text.split(",") if v.strip()]
    if not out or any(v not in ("on", "off") for v in out):
        raise SystemExit(f"--corrections: expected a comma-separated list of on/off, got {text!r}")
    return [v == "on" for v in out]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="video weights (default: the shipped ones)")
    ap.add_argument("--corrections", default="on,off", help="the processed-only colour correction: on, off or both")
    ap.add_argument("--gate-widths", default="0.25,0.5,1,2,inf", help="processed-only gate widths (inf: no gate)")
    ap.add_argument("--margin", type=float, default=0.5, help="dB above the P-alone EMA's mean PSNR(O, P)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.weights and not args.no_write:
        raise SystemExit("--weights: the RESULTS section is the shipped weights'; add --no-write to score other "
                         "weights")
    corr, widths = corrections(args.corrections), floats(args.gate_widths, "--gate-widths")
    try:
        [stored_gate_width(w) for w in widths]
    except ValueError:
        raise SystemExit(f"--gate-widths: expected positive widths (or inf), got {args.gate_widths!r}") from None
    t0 = time.time()
    data = validation_pairs()
    score = pair_scorer(data)

    still, still_P = still_camera_case(data)
    emas = {}
    for label, alpha, occ in [("a=0.3, occlusion mask", 0.3, True), ("a=0.4, no mask", 0.4, False)]:
        r = score({k: bv.mc_ema(P, P, alpha=alpha, occlusion=occ) for k, (P, _) in data.items()})
        emas[label] = (*r, still_flicker_left(bv.mc_ema(still_P, still_P, alpha=alpha, occlusion=occ), still, still_P))
        print(f"MC-EMA on P alone, {label}: {r[0]:.3f} / {r[1]:.1f}", flush=True)
    ema = emas["a=0.3, occlusion mask"]

    def filt() -> VideoFilter:
        return VideoFilter(args.weights, device="cpu")

    own = filt().model
    own_point = (own.config.processed_correction, float(torch.exp(own.log_gate[1].detach())))
    grid = {}
    for c in corr:
        for w in widths:
            outs = {}
            for k, (P, _) in data.items():
                f = filt()
                set_processed_only(f.model, c, w)
                outs[k] = f.filter(P, None)
            f.reset()
            grid[c, w] = (*score(outs), still_flicker_left(f.filter(still_P, None), still, still_P))
            r = grid[c, w]
            print(f"correction {'on' if c else 'off'}, gate {w:g}: {r[0]:.3f} / {r[1]:.1f}, still {r[3]:.3f}",
                  flush=True)
    best = pick(grid, ema[1] + args.margin)

    def is_own(c: bool, w: float) -> bool:
        return c == own_point[0] and math.isclose(stored_gate_width(w), own_point[1], rel_tol=1e-3)

    rows = [[f"motion-compensated EMA on P alone, {label} (DIS on P)", "-", "-", f"{r[0]:.3f}", f"{r[1]:.1f}", r[2],
             f"{r[3]:.3f}"] for label, r in emas.items()]
    for (c, w), r in grid.items():
        mark = "**" if (c, w) == best else ""
        tag = " (the weights' own)" if is_own(c, w) else ""
        rows.append([f"{mark}correction {'on' if c else 'off'}, gate {w:g}{mark}{tag}", "on" if c else "off", f"{w:g}",
                     f"{r[0]:.3f}", f"{r[1]:.1f}", r[2], f"{r[3]:.3f}"])
    chosen = (f"chosen: correction {'on' if best[0] else 'off'}, gate width {best[1]:g} (the lowest mean ratio with "
              f"PSNR(O, P) >= {ema[1] + args.margin:.1f} dB)" if best
              else f"no point reaches {ema[1] + args.margin:.1f} dB")
    chosen += (f"; the weights' own: correction {'on' if own_point[0] else 'off'}, gate width "
               + ("inf" if math.isclose(own_point[1], GATE_OFF, rel_tol=1e-3) else f"{own_point[1]:.3g}"))
    print(chosen, flush=True)
    flag = "" if args.weights is None else f" --weights {args.weights}"
    body = (
        "## Video processed-only finishing (validation pairs only)\n\n"
        f"`python benchmarks/video_processed_only.py --corrections {args.corrections} --gate-widths "
        f"{args.gate_widths} --margin {args.margin:g}{flag}` on {machine('cpu')}. Processed-only (no original: the "
        "flow runs on the processed frames), the per-cell colour correction on or off and the blend gate at each width "
        "(`streamssm.train.video.set_processed_only`; inf: no gate), on the two real processed videos of "
        "../shared/data/pairs only; E_warp ratio (Farneback flow between the originals) / PSNR(O, P) dB, mean and "
        "per video (Haze2, bike-packing). Baseline: the motion-compensated EMA run on P alone (DIS flow between the "
        f"processed frames). Rule: the lowest mean ratio among the points at least {args.margin:g} dB above that "
        f"EMA's mean PSNR (a=0.3, occlusion mask). {chosen}. Still-camera flicker left: the demo webcam's case (one "
        "frame of bike-packing's original, `gamma_jitter`, 24 frames, processed-only), `metrics.luminance_flicker` "
        "of O against that frame, after 4 frames (not part of the rule).\n\n"
        + md_table(["variant", "correction", "gate width", "mean E_warp ratio", "mean PSNR(O,P)", "per video",
                    "still-camera flicker left"], rows)
        + f"\n\nRun took {time.time() - t0:.0f} s."
    )
    if not args.no_write:
        write_section("video_processed_only", body)
    print(body)


if __name__ == "__main__":
    main()
