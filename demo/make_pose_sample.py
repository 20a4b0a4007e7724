"""Regenerate ``streamssm/assets/sample_pose.npz``, the pose file behind the demo's Pose tab.

Source: ``../shared/data/pose/mp_edgetam_juggle.npz``, the output of MediaPipe Pose 0.10.21 (legacy
``mp.solutions.pose``, model_complexity=1, its own smoothing off) run frame by frame on the EdgeTAM
example clip ``edgetam_05_default_juggle.mp4`` (Apache-2.0 repository licence; see
``streamssm/assets/README.md``). We keep the frames that ``sample.mp4`` holds (0-95 by default, so the
skeleton lines up with the sample clip) and only the keys the reader and the demo use: ``landmarks_raw``
(t, 33, 4: x, y normalised to the image, z, visibility), ``detected_raw``, ``fps``, ``width``,
``height`` and the provenance strings ``source``, ``estimator``, ``layout``. Compressed, about 50 kB.

    python demo/make_pose_sample.py       # writes streamssm/assets/sample_pose.npz
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / ".." / "shared" / "data" / "pose" / "mp_edgetam_juggle.npz"
TARGET = ROOT / "streamssm" / "assets" / "sample_pose.npz"
KEYS = ("landmarks_raw", "detected_raw", "fps", "width", "height", "source", "estimator", "layout")
MAX_BYTES = 300_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("-o", "--output", type=Path, default=TARGET)
    ap.add_argument("--start", type=int, default=0, help="first frame")
    ap.add_argument("--frames", type=int, default=96, help="frames to keep (sample.mp4 holds frames 0-95)")
    a = ap.parse_args()
    if not a.source.is_file():
        raise SystemExit(f"{a.source}: not found (expected ../shared/data beside the checkout)")
    with np.load(a.source, allow_pickle=False) as z:
        arrays = {k: z[k] for k in KEYS}
    cut = slice(a.start, a.start + a.frames)
    for k in ("landmarks_raw", "detected_raw"):
        arrays[k] = arrays[k][cut]
    arrays["source"] = np.array(f"{arrays['source']} frames {a.start}-{a.start + len(arrays['landmarks_raw']) - 1}")
    tmp = a.output.with_name(f".{a.output.stem}.partial.npz")
    np.savez_compressed(tmp, **arrays)
    size = tmp.stat().st_size
    if size > MAX_BYTES:  # checked before the move: an over-budget file never replaces the one in place
        tmp.unlink()
        raise SystemExit(f"{a.output}: not written: {size} bytes, over the {MAX_BYTES} byte budget; keep fewer frames")
    os.replace(tmp, a.output)
    print(f"{a.output}: {len(arrays['landmarks_raw'])} frames, {size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
