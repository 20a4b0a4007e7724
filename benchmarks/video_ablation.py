"""Video filter ablations on the real-flicker cases of ``video_quality.py``: weights, strength, guided correction.

    python benchmarks/video_ablation.py [--variant "LABEL|WEIGHTS|STRENGTH|GC" ...] [--frames 48] [--width 640]

Each variant: a label, a weights file ("" = the shipped weights), a strength, and the guided colour correction
("on", "off" or "" = as the weights say). The cases are ``video_quality.py``'s with real flicker (E_warp(P) >=
2 E_warp(I): the issue's definition), scored the same way (Farneback flow between originals); the luminance
flicker (``metrics.luminance_flicker``) is over the cases with a consistent target. Writes the section
"video_ablation" of benchmarks/RESULTS.md (``--note`` adds a paragraph, e.g. how the weights were made).
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
from streamssm import metrics  # noqa: E402
from streamssm.video.filter import VideoFilter  # noqa: E402
from video_quality import real_flicker_cases  # noqa: E402

DEFAULT_VARIANTS = ["shipped|||", "shipped, strength 1.3||1.3|", "shipped, guided correction on|||on"]


def parse_variant(spec: str) -> tuple[str, str | None, float, bool | None]:
    parts = spec.split("|")
    if len(parts) != 4:
        raise SystemExit(f"--variant {spec!r}: expected 'LABEL|WEIGHTS|STRENGTH|GC' (4 fields, empty = default)")
    label, weights, strength, gc = parts
    if gc not in ("", "on", "off"):
        raise SystemExit(f"--variant {spec!r}: GC must be 'on', 'off' or empty, got {gc!r}")
    if weights and not Path(weights).is_file():
        raise SystemExit(f"--variant {spec!r}: weights file {weights} not found")
    return label, weights or None, float(strength or 1.0), None if gc == "" else gc == "on"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", default=None, help="LABEL|WEIGHTS|STRENGTH|GC (repeatable)")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--note", default="", help="a paragraph for the section (how the variants' weights were made)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    variants = [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
    t0 = time.time()
    data = real_flicker_cases(args)
    rows = []
    for label, weights, strength, gc in variants:
        per = []
        for name, P, I, T, flows, eP in data:
            f = VideoFilter(weights, device="cpu", strength=strength)
            if gc is not None:
                f.model.config.guided_correction = gc
            O = f.filter(P, I)
            per.append((metrics.warp_error(O, flows=flows) / eP, metrics.psnr(O, P),
                        None if T is None else metrics.luminance_flicker(O, T, P)))
        lfs = [c for _, _, c in per if c is not None]
        rows.append([label, f"{np.mean([a for a, _, _ in per]):.3f}", f"{np.mean([b for _, b, _ in per]):.1f}",
                     f"{np.mean(lfs):.2f}" if lfs else "-", " ".join(f"{a:.3f}/{b:.1f}" for a, b, _ in per)])
        print(" | ".join(rows[-1]), flush=True)
    body = (
        "## Video filter ablations (guided)\n\n"
        f"`python benchmarks/video_ablation.py` on {machine('cpu')}. The {len(data)} cases of `video_quality.py` with "
        "real flicker (E_warp(P) >= 2 E_warp(I)): " + ", ".join(n for n, *_ in data) + f"; {args.frames} frames at "
        f"{args.width} px for the held-out operators. Per case: E_warp ratio / PSNR(O, P) dB, in that order.\n\n"
        + md_table(["variant", "mean E_warp ratio", "mean PSNR(O,P)", "mean lum. flicker (cases with T)", "per case"],
                   rows)
        + (f"\n\n{args.note}" if args.note else "") + f"\n\nRun took {time.time() - t0:.0f} s."
    )
    print(body)
    if not args.no_write:
        write_section("video_ablation", body)


if __name__ == "__main__":
    main()
