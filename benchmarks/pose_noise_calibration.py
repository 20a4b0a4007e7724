"""Compare real MediaPipe jitter with the synthetic noise model (streamssm.pose.noise).

Residual = raw - zero-phase low-pass (4th-order Butterworth, ``--cutoff`` Hz, filtfilt), in pixels,
divided by the median bbox diagonal, over the 12 body landmarks present in both (shoulders, elbows,
wrists, hips, knees, ankles). Reports the residual std per frequency band (Welch PSD) and overall, plus
per-part std, for each real clip and for synthetic CMU validation clips (24 fps, random camera) with
add_noise at ``--level``. Dropouts are disabled for the synthetic side because the real clips have none.

    PYTHONPATH=. python benchmarks/pose_noise_calibration.py [--data ../shared/data] [--out calib.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import signal

from streamssm.pose.bvh import MEDIAPIPE_BODY12, MEDIAPIPE33_NAMES
from streamssm.pose.data import PoseDataset, body_size
from streamssm.pose.noise import add_noise

BANDS = ((3.0, 6.0), (6.0, 9.0), (9.0, 12.01))
PARTS = ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")
BODY12_NAMES = tuple(MEDIAPIPE33_NAMES[i] for i in MEDIAPIPE_BODY12)


def residual_stats(points: np.ndarray, fps: float, names, cutoff: float) -> dict:
    """points (b, t, k, 2) pixels -> band stds / overall std relative to body size."""
    size = body_size(points)[:, None, None, None]
    b, a = signal.butter(4, cutoff / (fps / 2))
    res = (points - signal.filtfilt(b, a, points, axis=1)) / size
    res = res[:, 5:-5]  # drop filtfilt edge transients
    f, p = signal.welch(res, fs=fps, nperseg=64, axis=1)
    pm = p.mean(axis=(0, 2, 3))
    bands = [float(np.sqrt(np.trapezoid(pm[(f >= lo) & (f < hi)], f[(f >= lo) & (f < hi)]))) for lo, hi in BANDS]
    perj = res.std(axis=1).mean(axis=(0, -1))
    parts = {pt: float(np.mean([perj[i] for i, n in enumerate(names) if n.endswith(pt)])) for pt in PARTS}
    return {"bands": bands, "std": float(res.std()), "parts": parts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    ap.add_argument("--level", type=float, default=1.0)
    ap.add_argument("--cutoff", type=float, default=3.0)
    ap.add_argument("--out", default=None, help="optional JSON file for the numbers")
    args = ap.parse_args()

    rows = {}
    for f in sorted((Path(args.data) / "pose").glob("mp_*.npz")):
        with np.load(f) as z:
            wh = np.array([float(z["width"]), float(z["height"])])
            raw = z["landmarks_raw"][:, list(MEDIAPIPE_BODY12), :2] * wh
            fps = float(z["fps"])
        raw = raw[np.isfinite(raw).all(axis=(1, 2))]
        rows["real " + f.stem.replace("mp_edgetam_", "")] = residual_stats(raw[None], fps, BODY12_NAMES, args.cutoff)

    rng = np.random.default_rng(0)
    ds = PoseDataset.from_dir(args.data, split="val")
    batch = ds.sample_batch(rng, 64, 240, dim=2, fps_range=(24.0, 24.0), units="px")
    noisy, _ = add_noise(batch.clean, rng, names=ds.names, fps=24.0, level=args.level,
                         p_dropout=0.0, p_frame_dropout=0.0)
    cols = [ds.names.index(n) for n in BODY12_NAMES]
    rows[f"synthetic L={args.level:g}"] = residual_stats(noisy[:, :, cols].astype(np.float64), 24.0, BODY12_NAMES, args.cutoff)
    rows["clean CMU (motion only)"] = residual_stats(batch.clean[:, :, cols].astype(np.float64), 24.0, BODY12_NAMES, args.cutoff)

    head = "x1e-3 of bbox diag   " + "  ".join(f"{lo:g}-{hi:.0f}Hz" for lo, hi in BANDS) + "   std  | " + " ".join(f"{p[:5]:>5}" for p in PARTS)
    print(head)
    for name, r in rows.items():
        print(f"{name:<22}" + "  ".join(f"{1e3 * v:7.2f}" for v in r["bands"]) + f"  {1e3 * r['std']:6.2f} | "
              + " ".join(f"{1e3 * r['parts'][p]:5.1f}" for p in PARTS))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
