#!/usr/bin/env python
"""An exported video graph (ONNX Runtime) against the PyTorch model it came from, on real footage.

    python export/compare_footage.py video.onnx dog.mp4 cups.mp4 --frames 8 --size 640x360

The clips are played one after another (so each change of clip is a scene cut), ``--frames`` frames of each, resized
to ``--size``. The processed frames are the clip's with a colour gain drawn per frame and channel from
[1 - flicker, 1 + flicker] (an operator's flicker, seeded); a guided graph gets the clip's frames as the original.
Both runners start from a zero state and feed their own state back. Per frame it prints the output's relative error
(||onnx - torch|| / ||torch||), its largest absolute difference and how many values differ by more than 1e-3, and
the largest relative error of a state tensor. The figures in export/README.md's "Agreement with PyTorch" come from
this script.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="compare_footage.py", description=__doc__.splitlines()[0])
    p.add_argument("graph", help="a video graph written by 'streamssm export onnx --model video'")
    p.add_argument("clips", nargs="+", help="video files, played one after another (scene cuts between them)")
    p.add_argument("--frames", type=int, default=8, help="frames of each clip (default 8)")
    p.add_argument("--size", default="640x360", help="WxH the frames are resized to (default 640x360)")
    p.add_argument("--flicker", type=float, default=0.15, help="the processed frames' gain range, +- (default 0.15)")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--weights", default=None, help="the weights the graph was exported from (default: the package's)")
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads (default 1)")
    args = p.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from streamssm.export import OnnxRunner
    from streamssm.export._onnx import _rel_err
    from streamssm.export._spec import load_model
    from streamssm.io import open_source

    w, h = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)
    runner = OnnxRunner(args.graph, threads=args.threads)
    if runner.kind != "video":
        p.error(f"{args.graph} holds the {runner.kind} model; this compares video graphs")
    model = load_model("video", args.weights).eval()
    frames = []
    for clip in args.clips:
        with open_source(clip, max_frames=args.frames, on_limit="stop") as src:
            for f in src:
                x = torch.from_numpy(f.rgb).permute(2, 0, 1)[None].float() / 255
                frames.append(F.interpolate(x, size=(h, w), mode="area").numpy())
    state = None
    worst = (0.0, 0.0)
    print(f"{args.graph}: {'guided' if runner.guided else 'processed-only'}, {len(frames)} frames of {w}x{h}, "
          f"cuts after every {args.frames}")
    for t, orig in enumerate(frames):
        gain = np.random.default_rng([args.seed, t]).uniform(1 - args.flicker, 1 + args.flicker, (1, 3, 1, 1))
        proc = np.clip(orig * gain, 0, 1).astype(np.float32)
        guide = orig.astype(np.float32) if runner.guided else None
        with torch.no_grad():
            want, state = model.step(torch.from_numpy(proc), None if guide is None else torch.from_numpy(guide), state)
        got = runner.step(proc, guide)
        want = want.numpy()
        d = np.abs(got - want)
        states = max(_rel_err(a, b.numpy()) for a, b in zip(runner.get_state(), state))
        err = _rel_err(got, want)
        worst = (max(worst[0], err), max(worst[1], float(d.max())))
        print(f"frame {t:3d}: output relative error {err:.1e}, max abs {d.max():.1e}, "
              f"{int((d > 1e-3).sum())} values > 1e-3; worst state relative error {states:.1e}")
    print(f"worst output relative error {worst[0]:.1e}, max abs {worst[1]:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
