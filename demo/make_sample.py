"""Regenerate ``streamssm/assets/sample.mp4``, the clip behind ``streamssm video --sample``.

Source: ``../shared/data/videos/edgetam_05_default_juggle.mp4`` (EdgeTAM example clip, Apache-2.0
repository licence; see ``streamssm/assets/README.md``). We keep ``--seconds`` (default 4 s, at most
120 frames) from ``--start``, downscale 1280x720 -> 640x360 (INTER_AREA) and encode H.264 crf 23 with
PyAV. No audio (the source has none). The frame rate is the source's (24 fps).

    python demo/make_sample.py            # writes streamssm/assets/sample.mp4
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import av
import cv2

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / ".." / "shared" / "data" / "videos" / "edgetam_05_default_juggle.mp4"
TARGET = ROOT / "streamssm" / "assets" / "sample.mp4"
MAX_FRAMES = 120
MAX_BYTES = 1_500_000


def make_sample(src: Path, dst: Path, start: float, seconds: float, width: int, height: int, crf: int) -> tuple[int, int]:
    """Cut, downscale and encode; returns (frames written, bytes). Written to a temporary name first."""
    tmp = dst.with_name(f".{dst.stem}.partial{dst.suffix}")
    with av.open(str(src)) as inp:
        vs = inp.streams.video[0]
        rate = vs.average_rate
        first = round(start * rate)
        n = min(MAX_FRAMES, math.floor(seconds * rate))
        with av.open(str(tmp), "w") as out:
            os_ = out.add_stream("libx264", rate=rate)
            os_.width, os_.height, os_.pix_fmt = width, height, "yuv420p"
            # "slow" buys a smaller file for the same crf; a 4 s clip encodes in a second anyway.
            os_.options = {"crf": str(crf), "preset": "slow", "movflags": "+faststart"}
            cc = os_.codec_context
            cc.colorspace, cc.color_primaries, cc.color_trc = 6, 6, 6  # BT.601 (SMPTE 170M): SD size
            cc.color_range = 1  # limited
            written = 0
            for i, frame in enumerate(inp.decode(vs)):
                if i < first:
                    continue
                if written >= n:
                    break
                rgb = cv2.resize(frame.to_ndarray(format="rgb24"), (width, height), interpolation=cv2.INTER_AREA)
                vf = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                    format="yuv420p", dst_colorspace=av.video.reformatter.Colorspace.ITU601,
                    dst_color_range=av.video.reformatter.ColorRange.MPEG)
                vf.pts = written
                for p in os_.encode(vf):
                    out.mux(p)
                written += 1
            for p in os_.encode(None):
                out.mux(p)
    size = tmp.stat().st_size
    if size > MAX_BYTES:  # checked before the move: an over-budget clip never replaces the one in place
        tmp.unlink()
        raise SystemExit(f"{dst}: not written: {written} frames {width}x{height} make {size} bytes, over the "
                         f"{MAX_BYTES} byte budget; raise --crf or cut shorter")
    os.replace(tmp, dst)
    return written, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("-o", "--output", type=Path, default=TARGET)
    ap.add_argument("--start", type=float, default=0.0, help="seconds into the source")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--crf", type=int, default=23)
    a = ap.parse_args()
    if not a.source.is_file():
        raise SystemExit(f"{a.source}: not found (expected ../shared/data beside the checkout)")
    w, h = (int(v) for v in a.size.split("x"))
    n, size = make_sample(a.source, a.output, a.start, a.seconds, w, h, a.crf)
    print(f"{a.output}: {n} frames {w}x{h}, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
