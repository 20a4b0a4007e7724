"""Is the video filter's flow what limits its trade-off? The shipped weights with another flow swapped in.

    python benchmarks/video_flow_swap.py [--flows lk,lk2,dis] [--strengths 1,1.3] [--frames 48] [--width 640]
        [--score-flow farneback|deepflow|tvl1] [--no-write]

A diagnostic, not a setting the filter offers: the reference scan (``VideoSSM``, guided, CPU) runs with its flow
(``streamssm.video.model.estimate_flow``: pyramidal Lucas-Kanade at half resolution, one step a level; "lk")
replaced by two Lucas-Kanade steps a level ("lk2") or by OpenCV's DIS, medium preset ("dis": the flow MC-EMA uses,
3x more accurate on exact-flow tests, ``benchmarks/flow_accuracy.py``; not exportable). The blend's confidence is
computed from each flow's own residual, as always. Scored like ``video_tradeoff.py``: mean E_warp ratio and PSNR(O, P)
over the cases of ``video_quality.py`` with real flicker (Farneback flow between the originals, or ``--score-flow``:
DeepFlow and TV-L1 need opencv-contrib). Writes the section "video_flow_swap" of benchmarks/RESULTS.md
("video_flow_swap deepflow" and so on for another scorer).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import streamssm.video.model as vm  # noqa: E402
from benchmarks._results import machine, md_table, write_section  # noqa: E402
from streamssm import metrics  # noqa: E402
from streamssm.video.filter import load_video_model  # noqa: E402
from video_quality import floats, real_flicker_cases, scan_uint8  # noqa: E402

LABELS = {"lk": "Lucas-Kanade, 1 step a level (shipped)", "lk2": "Lucas-Kanade, 2 steps a level",
          "dis": "DIS medium (OpenCV)"}


def dis_flow(cur: torch.Tensor, prev: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """``estimate_flow``'s contract -- backward flow (n, 2, h, w) from ``cur`` to ``prev`` and the 3 x 3 mean
    residual -- computed with OpenCV's DIS (medium) on the uint8 luminance."""
    calc = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    u8 = lambda x: (x[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()  # noqa: E731
    flow = torch.stack([torch.from_numpy(calc.calc(u8(c), u8(p), None)).permute(2, 0, 1) for c, p in zip(cur, prev)])
    flow = flow.to(cur.dtype)
    return flow, vm._box((cur - vm.warp_backward(prev, flow)).abs(), 3)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", default="lk,lk2,dis")
    ap.add_argument("--strengths", default="1,1.3")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--score-flow", default="farneback", choices=["farneback", "deepflow", "tvl1"])
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    flows = [f.strip() for f in args.flows.split(",") if f.strip()]
    bad = [f for f in flows if f not in LABELS]
    if bad or not flows:
        raise SystemExit(f"--flows: expected some of {', '.join(LABELS)}, got {args.flows!r}")
    strengths = floats(args.strengths, "--strengths")
    t0 = time.time()
    data = real_flicker_cases(args)
    model = load_video_model(None, "cpu", backend="torch").eval()
    shipped = vm.estimate_flow
    swaps = {"lk": shipped, "lk2": functools.partial(shipped, iters=2), "dis": dis_flow}
    rows = []
    try:
        for f in flows:
            vm.estimate_flow = swaps[f]
            for s in strengths:
                per = []
                for _, P, I, _, fl, eP in data:
                    O = scan_uint8(model, P, I, s)
                    per.append((metrics.warp_error(O, flows=fl) / eP, metrics.psnr(O, P)))
                rows.append([LABELS[f], f"{s:g}", f"{np.mean([r for r, _ in per]):.3f}",
                             f"{np.mean([p for _, p in per]):.1f}", " ".join(f"{r:.3f}/{p:.1f}" for r, p in per)])
                print(" | ".join(rows[-1]), flush=True)
    finally:
        vm.estimate_flow = shipped
    scorer = {"farneback": "Farneback", "deepflow": "DeepFlow", "tvl1": "TV-L1"}[args.score_flow]
    flag = "" if args.score_flow == "farneback" else f" --score-flow {args.score_flow}"
    body = (
        "## Video filter with another flow swapped in (diagnostic)" + (f", scored with {scorer}" if flag else "")
        + f"\n\n`python benchmarks/video_flow_swap.py --flows {args.flows} --strengths {args.strengths}{flag}` on "
        f"{machine('cpu')}. "
        "The shipped weights, reference scan, guided, with the blend's flow replaced; mean over the cases of "
        "`video_quality.py` with real flicker: " + ", ".join(n for n, *_ in data) + f" ({args.frames} frames at "
        f"{args.width} px for the held-out operators), E_warp scored with {scorer} flow between the originals. "
        "Per case: E_warp ratio / PSNR(O, P) dB.\n\n"
        + md_table(["flow", "strength", "mean E_warp ratio", "mean PSNR(O,P)", "per case"], rows)
        + f"\n\nRun took {time.time() - t0:.0f} s."
    )
    print(body)
    if not args.no_write:
        write_section("video_flow_swap" + ("" if not flag else f" {args.score_flow}"), body)


if __name__ == "__main__":
    main()
