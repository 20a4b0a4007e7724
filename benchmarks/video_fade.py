"""How far the video filter's output lags a real global fade (no flicker at all: nothing to remove).

    python benchmarks/video_fade.py [--frames 24] [--fade 12] [--no-write]

A filter that cannot see the original cannot tell a global fade from flicker, so processed-only it holds some of
the old brightness back. Inputs: one real frame held still (bike-packing's first original, quarter size) and a real
moving clip (``edgetam_08_driving.mp4`` at 640 px), each faded in from 30% to full brightness over ``--fade`` frames,
then held. Per mode the table gives mean luminance of O over that of P: the lowest over the clip and the last
frame's (1 = follows the fade exactly). Processed-only runs twice: as shipped, and with its flow guide's brightness
match (``streamssm.video.model.match_brightness``) switched off, which is what it was before session 8. CPU, shipped
weights, the reference scan. Writes the section "video_fade" of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import streamssm.video.model as vm  # noqa: E402
from benchmarks._results import machine, md_table, write_section  # noqa: E402
from streamssm import metrics  # noqa: E402
from streamssm.video.filter import load_video_model  # noqa: E402
from video_quality import DATA, read_folder, read_video, scan_uint8  # noqa: E402


def fade(frames: list[np.ndarray], n: int) -> list[np.ndarray]:
    gain = np.concatenate([np.linspace(0.3, 1.0, n), np.ones(max(0, len(frames) - n))])[: len(frames)]
    return [np.clip(f.astype(np.float32) * g + 0.5, 0, 255).astype(np.uint8) for f, g in zip(frames, gain)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--fade", type=int, default=12, help="frames the fade takes")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if not 2 <= args.fade <= args.frames:
        raise SystemExit(f"--fade {args.fade}: expected 2 <= fade <= --frames ({args.frames})")
    t0 = time.time()
    still = read_folder(DATA / "pairs" / "enhancement" / "bike-packing-input", 1)[0]
    still = cv2.resize(still, (still.shape[1] // 4 // 2 * 2, still.shape[0] // 4 // 2 * 2), interpolation=cv2.INTER_AREA)
    clips = {"still shot": fade([still] * args.frames, args.fade),
             "moving camera (driving)": fade(read_video(DATA / "videos" / "edgetam_08_driving.mp4", args.frames, 640),
                                             args.fade)}
    model = load_video_model(None, "cpu", backend="torch").eval()
    shipped = vm.match_brightness
    rows = []
    try:
        for name, P in clips.items():
            for mode, guided, match in [("guided (original = P: the fade is in the original too)", True, True),
                                        ("processed-only", False, True),
                                        ("processed-only, brightness match off (before session 8)", False, False)]:
                vm.match_brightness = shipped if match else (lambda prev, cur: prev)
                O = scan_uint8(model, P, P if guided else None)
                r = metrics.mean_luminance(O) / metrics.mean_luminance(P)
                rows.append([name, mode, f"{r.min():.3f}", f"{r[-1]:.3f}"])
                print(" | ".join(rows[-1]), flush=True)
    finally:
        vm.match_brightness = shipped
    body = (
        "## Video filter against a real global fade (no flicker)\n\n"
        f"`python benchmarks/video_fade.py --frames {args.frames} --fade {args.fade}` on {machine('cpu')}. Shipped weights, "
        f"reference scan; {args.frames} frames faded in from 30% to full brightness over {args.fade} frames, then held; "
        "mean luminance of O over that of P (1 = O follows the fade exactly).\n\n"
        + md_table(["input", "mode", "lowest O/P luminance", "last frame O/P luminance"], rows)
        + f"\n\nRun took {time.time() - t0:.0f} s."
    )
    print(body)
    if not args.no_write:
        write_section("video_fade", body)


if __name__ == "__main__":
    main()
