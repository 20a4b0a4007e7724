"""Accuracy of the video filter's optical flow against exact flow, with DIS (OpenCV) alongside.

    python benchmarks/flow_accuracy.py [--pairs 24] [--width 640] [--motion 1,3] [--no-write]

Ground truth: real frames of the held-out clips (never used in training) under random camera paths
(``streamssm.data.video_clips.camera_path``: pan, zoom, rotation, perspective; ``--motion`` scales the
speed, 1 = the training range of up to ~4 px a frame), rendered with ``cv2.warpPerspective``; the exact
flow between consecutive renders comes from the homographies (``homography_flow``). Scored: mean
end-point error (px) over pixels whose target stays in the frame, the share of pixels off by more than
1 px, and wall ms per flow on this CPU (1 thread). streamssm's flow runs as the filter runs it: on the
half-resolution luminance (``VideoSSM``'s ``flow_shape``), upsampled x2, through the CPU step's twin of
``estimate_flow`` (the same math to ~1e-5 px). Writes the section
"flow_accuracy" of benchmarks/RESULTS.md.
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
from benchmarks._results import machine, md_table, write_section  # noqa: E402
from streamssm.data.video_clips import camera_path, homography_flow  # noqa: E402
from streamssm.video.cpu_step import estimate_flow_fast, opencv_exact  # noqa: E402
from streamssm.video.model import VideoSSMConfig  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = (HERE.parent / ".." / "shared" / "data").resolve()
CLIPS = ["edgetam_03_skateboarder.mp4", "edgetam_08_driving.mp4", "edgetam_11_polevault.mp4", "edgetam_21_biker.mp4"]


def source_frames(path: Path, n: int) -> list[np.ndarray]:
    """n grey frames spread over the clip, full size."""
    cap = cv2.VideoCapture(str(path))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 1
    out = []
    for i in np.linspace(0, total - 1, n).astype(int):
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(i))
        ok, f = cap.read()
        if ok:
            out.append(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))
    if not out:
        raise SystemExit(f"{path}: no frames could be read")
    return out


def streamssm_flow(a: np.ndarray, b: np.ndarray, cfg: VideoSSMConfig) -> np.ndarray:
    """Flow from a to b as the video filter computes it on a CPU (``CPUVideoStep``'s twin of ``estimate_flow``;
    a(x) ~ b(x + flow)), full-resolution pixels."""
    t = lambda x: F.avg_pool2d(torch.from_numpy(x.astype(np.float32) / 255)[None, None], 2)  # noqa: E731
    with torch.no_grad():
        fl, _ = estimate_flow_fast(t(a), t(b), cfg.flow_levels, window=cfg.flow_window, smooth=cfg.flow_smooth,
                                   cv=opencv_exact())
        fl = F.interpolate(fl * 2, size=a.shape, mode="bilinear", align_corners=False)
    return fl[0].permute(1, 2, 0).numpy()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=24, help="frame pairs per motion scale")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--motion", default="1,3", help="comma list of camera speed scales")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    cfg = VideoSSMConfig()
    srcs = [f for c in CLIPS for f in source_frames(DATA / "videos" / c, max(1, args.pairs // len(CLIPS)))]
    dis_fast = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    dis_medium = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    methods = {
        "streamssm (Lucas-Kanade pyramid, half resolution)": lambda a, b: streamssm_flow(a, b, cfg),
        "DIS ultrafast (OpenCV)": lambda a, b: dis_fast.calc(a, b, None),
        "DIS medium (OpenCV; MC-EMA's flow)": lambda a, b: dis_medium.calc(a, b, None),
    }
    rows = []
    for motion in [float(m) for m in args.motion.split(",")]:
        rng = np.random.default_rng(0)
        stats = {k: ([], [], []) for k in methods}
        motions = []
        for i in range(args.pairs):
            src = srcs[i % len(srcs)]
            hs, ws = src.shape
            h = int(round(args.width * hs / ws / 2)) * 2
            Hs = camera_path(rng, 2, (h, args.width), (hs, ws), motion=motion)
            flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # Hs map output pixels to source pixels
            a, b = (cv2.warpPerspective(src, H, (args.width, h), flags=flags) for H in Hs)
            gt, valid = homography_flow(Hs, (h, args.width))
            gt, valid = gt[0].transpose(1, 2, 0), valid[0]
            motions.append(float(np.linalg.norm(gt, axis=-1)[valid].mean()))
            for name, fn in methods.items():
                t0 = time.perf_counter()
                fl = fn(a, b)
                ms = (time.perf_counter() - t0) * 1000
                epe = np.linalg.norm(fl - gt, axis=-1)[valid]
                stats[name][0].append(float(epe.mean()))
                stats[name][1].append(float((epe > 1.0).mean()))
                stats[name][2].append(ms)
        for name, (e, o, ms) in stats.items():
            label = f"{motion:g} ({np.mean(motions):.1f} px)"
            rows.append([label, name, f"{np.mean(e):.3f}", f"{100 * np.mean(o):.1f}", f"{np.median(ms):.1f}"])
        print("\n".join(" | ".join(r) for r in rows[-len(methods):]), flush=True)
    body = (
        "## Optical flow accuracy (exact flow from camera paths over real frames)\n\n"
        f"`python benchmarks/flow_accuracy.py --pairs {args.pairs} --width {args.width} --motion {args.motion}` on "
        f"{machine('cpu')}, 1 thread. Real frames of the 4 held-out clips under random camera paths "
        "(`camera_path`; motion 1 = the training range, up to ~4 px a frame; 3 = three times faster), exact flow "
        "from the homographies; end-point error over pixels that stay in the frame, in pixels of the "
        f"{args.width}-px frame.\n\n"
        + md_table(["motion (mean true motion)", "method", "mean EPE px", "% pixels > 1 px", "ms / flow"], rows)
    )
    print(body)
    if not args.no_write:
        write_section("flow_accuracy", body)


if __name__ == "__main__":
    main()
