"""How far the video filter's output lags a real fade (no flicker at all: nothing to remove).

    python benchmarks/video_fade.py [--frames 24] [--fade 12] [--weights W] [--no-write]  (--weights needs --no-write)

A filter that cannot see the original cannot tell a fade from flicker in one frame, so processed-only it holds
some of the old brightness back; over two frames a lag that keeps its sign is made up
(``streamssm.video.model.fade_gain``, session 11), at the price of some exposure flicker, which the second table
measures (the share of a white exposure jitter's frame-to-frame luminance flicker left in the output, 2% and 8% a
frame over 48 frames, still shot and moving clip, no fade; and the same with every frame shown twice, or twice and
three times in turn, as after a frame-rate conversion by repetition (24 to 60 fps): compared with its own copy, a
repeated frame read to the fade gain as a lag that kept its sign until session 13's ``fade_reference``).

Inputs: one real frame held still (bike-packing's first original, quarter size) and a real moving clip
(``edgetam_08_driving.mp4`` at 640 px), each faded in from 30% to full brightness over ``--fade`` frames, then
held; the still frame with only its left half faded in (a light switched on over part of the scene), its halves
scored apart; and the still frame faded in from 10% (near black) instead of 30%. Per mode the table gives mean
luminance of O over that of P: the lowest and highest over the clip and the last frame's (1 = follows the fade
exactly). Each mode runs as shipped and with what changed how it follows brightness switched off -- guided, the
guide's local brightness gain on the warped previous output (``streamssm.video.model.guide_gain``, session 9; also
with one global gain for the frame instead, the first version tried) and, under a gamma and a histogram equalisation
(operators whose output does not scale with their input), the exponent fitted to how the processed frames follow the
original's brightness (``streamssm.video.model.guide_elasticity``, session 20); processed-only, the fade gain's
reference that skips repeated frames (``streamssm.video.model.fade_reference``, session 13), the fade gain (session
11) and its flow guide's brightness match (``streamssm.video.model.match_brightness``, session 8); and processed-only as
trained, with the weights' processed-only finishing (``streamssm.train.video.finish_processed_only``, session 14:
the colour correction off, a wider blend gate) undone; and both modes with the exposure lock on
(``VideoFilter(exposure_lock=0.3)``, ``streamssm.video.model.exposure_gain``, session 19; off in the shipped weights).
The jitter table also scores the issue's baselines on the clips of distinct frames: motion-compensated EMA (guided,
and on P alone) and ffmpeg's deflicker. CPU, shipped weights, the reference scan. Writes the section "video_fade" of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
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
from streamssm.train.video import set_processed_only  # noqa: E402
from streamssm.video.filter import DEFAULT_WEIGHTS, load_video_model  # noqa: E402
from streamssm.weights import read_weights  # noqa: E402
from streamssm.baselines_video import mc_ema  # noqa: E402
from video_quality import DATA, ffmpeg_deflicker, read_folder, read_video, scan_uint8  # noqa: E402


def fade(frames: list[np.ndarray], n: int, left_half: bool = False, start: float = 0.3) -> list[np.ndarray]:
    """Frames faded in from ``start`` (30%) to full brightness over ``n`` frames, then held; ``left_half``: only the
    frames' left half (a light switched on over part of the scene), the right half as it is."""
    gain = np.concatenate([np.linspace(start, 1.0, n), np.ones(max(0, len(frames) - n))])[: len(frames)]
    out = []
    for f, g in zip(frames, gain):
        f = f.astype(np.float32)
        if left_half:
            f[:, : f.shape[1] // 2] *= g
        else:
            f = f * g
        out.append(np.clip(f + 0.5, 0, 255).astype(np.uint8))
    return out


def ratios(O: list[np.ndarray], P: list[np.ndarray], cols: slice = slice(None)) -> np.ndarray:
    """Per frame: mean luminance of O over that of P, over the columns ``cols``."""
    return metrics.mean_luminance([o[:, cols] for o in O]) / metrics.mean_luminance([p[:, cols] for p in P])


JITTERS, JITTER_FRAMES = (0.02, 0.08), 48  # exposure jitter: log-normal sigmas per frame, clip length
LOCK = 0.3  # the exposure lock's rows (``VideoFilter(exposure_lock=0.3)``, off in the shipped weights)
LOCKED_G, LOCKED_P = f"guided, exposure lock {LOCK}", f"processed-only, exposure lock {LOCK}"
# guided under an operator whose gain depends on the brightness, so that P/I moves with the original's fade: the
# lock's release (``exposure_gain``'s EXPOSURE_FADE) at work; with P = I the lock's level is 0 and it does nothing
GAMMA_G = "guided, a gamma operator (P = I^0.5: P/I changes in the fade)"
GAMMA_G_LOCKED = f"{GAMMA_G}, exposure lock {LOCK}"
# and under an operator whose output hardly follows its input's brightness at all: per-channel histogram equalisation
EQ_G = "guided, histogram equalisation (P hardly follows the fade)"
FLAT = ", guide elasticity off (before session 20)"  # guide_gain not raised to guide_elasticity's exponent


def gamma(frame: np.ndarray) -> np.ndarray:
    """The gamma operator of the rows above: P = 255 (I / 255)^0.5, uint8."""
    return (255.0 * (frame.astype(np.float32) / 255.0) ** 0.5 + 0.5).astype(np.uint8)


def equalize(frame: np.ndarray) -> np.ndarray:
    """The histogram equalisation of the rows above: OpenCV's equalizeHist on each RGB channel."""
    return np.ascontiguousarray(np.stack([cv2.equalizeHist(np.ascontiguousarray(frame[..., c])) for c in range(3)], -1))


OPERATORS = {GAMMA_G: gamma, GAMMA_G_LOCKED: gamma, GAMMA_G + FLAT: gamma, EQ_G: equalize, EQ_G + FLAT: equalize}


def no_elasticity(g, p, g_prev, p_prev, sums_prev, first):
    """``guide_elasticity`` switched off: the exponent 1 on every frame (the guide's gain as it is), sums at 0."""
    return torch.ones(first.shape), torch.zeros_like(sums_prev)


def jitter(frames: list[np.ndarray], sigma: float, seed: int = 0) -> list[np.ndarray]:
    """Frames under a white exposure jitter: each scaled by exp(N(0, ``sigma``)), seeded."""
    g = np.exp(np.random.default_rng(seed).normal(0.0, sigma, len(frames)))
    return [np.clip(f.astype(np.float32) * x + 0.5, 0, 255).astype(np.uint8) for f, x in zip(frames, g)]


def shown(frames: list, times: tuple[int, ...], n: int) -> list:
    """The first ``n`` frames of ``frames`` each shown ``times[i % len(times)]`` times: (2,) ``[a, a, b, b, ...]``,
    (2, 3) ``[a, a, b, b, b, c, c, ...]`` (24 to 60 fps by repetition)."""
    out = [f for i, f in enumerate(frames) for _ in range(times[i % len(times)])]
    if len(out) < n:
        raise ValueError(f"{len(frames)} frames shown {times} times make {len(out)}, fewer than {n}")
    return out[:n]


def no_gain(cur, prev, flow, prev_guided=None, **_):
    return cur.new_ones(cur.shape[0], 1, 1, 1)


def global_gain(cur, prev, flow, prev_guided=None, **_):
    """``guide_gain`` with one ratio for the whole frame, mean(cur) / mean(warp(prev)): what session 9 tried first."""
    wp = vm.warp_backward(prev, flow)
    dims = (-2, -1)
    return ((cur.mean(dims, keepdim=True) + vm.GAIN_EPS) / (wp.mean(dims, keepdim=True) + vm.GAIN_EPS)).clamp(*vm.GAIN_RANGE)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--fade", type=int, default=12, help="frames the fade takes")
    ap.add_argument("--weights", default=None,
                    help="video weights to score (default: the shipped ones; others need --no-write)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.weights and not args.no_write:
        raise SystemExit("--weights: the RESULTS section is the shipped weights'; "
                         "add --no-write to score other weights")
    if not 2 <= args.fade <= args.frames:
        raise SystemExit(f"--fade {args.fade}: expected 2 <= fade <= --frames ({args.frames})")
    t0 = time.time()
    still = read_folder(DATA / "pairs" / "enhancement" / "bike-packing-input", 1)[0]
    still = cv2.resize(still, (still.shape[1] // 4 // 2 * 2, still.shape[0] // 4 // 2 * 2), interpolation=cv2.INTER_AREA)
    half = still.shape[1] // 2
    clips = {"still shot": fade([still] * args.frames, args.fade),
             "moving camera (driving)": fade(read_video(DATA / "videos" / "edgetam_08_driving.mp4", args.frames, 640),
                                             args.fade),
             "still shot, a light on its left half": fade([still] * args.frames, args.fade, left_half=True),
             "still shot, from near black (10%)": fade([still] * args.frames, args.fade, start=0.1)}
    regions = {"still shot, a light on its left half": [(": the lit half", slice(0, half)),
                                                         (": the unlit half", slice(half, None))]}
    model = load_video_model(args.weights, "cpu", backend="torch").eval()
    cfg = model.config
    shipped, shipped_gain, follow = vm.match_brightness, vm.guide_gain, cfg.fade_follow
    shipped_elasticity = vm.guide_elasticity
    tol = vm.REPEAT_TOL
    finished = (cfg.processed_correction, float(model.log_gate[1].detach().exp()))
    rec = read_weights(args.weights or DEFAULT_WEIGHTS, "video")[2].get("processed_only")
    trained = (rec["before"]["correction"], rec["before"]["gate_width"]) if rec else None
    po = [("processed-only", False, shipped_gain, True, follow, tol),
          (LOCKED_P, False, shipped_gain, True, follow, tol),
          *([("processed-only, as trained (before session 14's finish_processed_only)", False, shipped_gain, True,
              follow, tol)] if trained else []),
          ("processed-only, a repeated frame compared with its copy (before session 13)", False, shipped_gain, True,
           follow, 0.0),
          ("processed-only, fade gain off (before session 11)", False, shipped_gain, True, 0.0, tol)]

    def finish(mode: str):  # the weights' processed-only finishing, or (the "as trained" rows) the one before it
        set_processed_only(model, *(trained if mode.startswith("processed-only, as trained") else finished))
        cfg.exposure_lock = LOCK if mode.startswith((LOCKED_G, LOCKED_P)) or mode == GAMMA_G_LOCKED else 0.0

    rows, flick = [], []
    try:
        for name, P in clips.items():
            for mode, guided, gain, match, fo, rt in [
                    ("guided (original = P: the fade is in the original too)", True, shipped_gain, True, follow, tol),
                    (LOCKED_G + " (inactive here: P = I)", True, shipped_gain, True, follow, tol),
                    (GAMMA_G, True, shipped_gain, True, follow, tol),
                    (GAMMA_G_LOCKED, True, shipped_gain, True, follow, tol),
                    (GAMMA_G + FLAT, True, shipped_gain, True, follow, tol),
                    (EQ_G, True, shipped_gain, True, follow, tol),
                    (EQ_G + FLAT, True, shipped_gain, True, follow, tol),
                    ("guided, guide gain off (before session 9)", True, no_gain, True, follow, tol),
                    ("guided, one global gain for the frame (tried in session 9)", True, global_gain, True, follow,
                     tol),
                    *po,
                    ("processed-only, fade gain and brightness match off (before session 8)", False, shipped_gain,
                     False, 0.0, tol)]:
                vm.match_brightness = shipped if match else (lambda prev, cur: prev)
                vm.guide_gain, cfg.fade_follow, vm.REPEAT_TOL = gain, fo, rt
                vm.guide_elasticity = no_elasticity if mode.endswith(FLAT) else shipped_elasticity
                finish(mode)
                Pm = [OPERATORS[mode](x) for x in P] if mode in OPERATORS else P  # the operator's frames
                O = scan_uint8(model, Pm, P if guided else None)
                for part, cols in regions.get(name, [("", slice(None))]):
                    r = ratios(O, Pm, cols)
                    rows.append([name + part, mode, f"{r.min():.3f}", f"{r.max():.3f}", f"{r[-1]:.3f}"])
                    print(" | ".join(rows[-1]), flush=True)
        vm.match_brightness, vm.guide_gain, vm.guide_elasticity = shipped, shipped_gain, shipped_elasticity
        moving = read_video(DATA / "videos" / "edgetam_08_driving.mp4", JITTER_FRAMES, 640)
        n = JITTER_FRAMES
        for shown_as, times in [("", (1,)), (", every frame shown twice", (2,)),
                                (", every frame shown twice and three times in turn", (2, 3))]:
            for clip, frames in [("still shot", [still] * n), ("moving camera (driving)", moving)]:
                T = shown(frames, times, n)  # the frames before the jitter, repeated as the jittered ones are
                Ps = [shown(jitter(frames, sigma), times, n) for sigma in JITTERS]  # the jitter repeats with its frame
                for mode, guided, _, _, fo, rt in [("guided (original: the frames before the jitter)", True, None, True,
                                                    follow, tol), (LOCKED_G, True, None, True, follow, tol), *po]:
                    cfg.fade_follow, vm.REPEAT_TOL = fo, rt
                    finish(mode)
                    outs = [scan_uint8(model, P, T if guided else None) for P in Ps]
                    flick.append([clip + shown_as, mode, *(f"{metrics.luminance_flicker(O, T, P):.3f} / "
                                                           f"{metrics.psnr(O, T):.1f}" for O, P in zip(outs, Ps))])
                    print(" | ".join(flick[-1]), flush=True)
                if times == (1,):  # the baselines, on the clips of distinct frames
                    for mode, fn in [("MC-EMA a=0.3 (DIS flow on the original)", lambda P: mc_ema(P, T)),
                                     ("MC-EMA a=0.3 on P alone (DIS flow on P)", lambda P: mc_ema(P, P)),
                                     ("ffmpeg deflicker (looks 5 frames ahead: not causal)", ffmpeg_deflicker)]:
                        outs = [fn(P) for P in Ps]
                        flick.append([clip, mode, *(f"{metrics.luminance_flicker(O, T, P):.3f} / "
                                                    f"{metrics.psnr(O, T):.1f}" for O, P in zip(outs, Ps))])
                        print(" | ".join(flick[-1]), flush=True)
    finally:
        vm.match_brightness, vm.guide_gain, cfg.fade_follow, vm.REPEAT_TOL = shipped, shipped_gain, follow, tol
        vm.guide_elasticity = shipped_elasticity
        set_processed_only(model, *finished)
        cfg.exposure_lock = 0.0
    body = (
        "## Video filter against a real fade, whole frame or half (no flicker)\n\n"
        f"`python benchmarks/video_fade.py --frames {args.frames} --fade {args.fade}` on {machine('cpu')}. "
        + (f"Weights {args.weights}, " if args.weights else "Shipped weights, ")
        + f"reference scan; {args.frames} frames faded in from 30% to full brightness over {args.fade} frames, "
        "then held; "
        "mean luminance of O over that of P (1 = O follows the fade exactly). The third input fades in only the left "
        "half of the frame (a light switched on over part of a still scene); its two halves are scored apart: the lit "
        "half should follow the fade and the unlit half stay as it is (O/P = 1 on every frame). The last fades the "
        "still shot in from 10% (near black) instead.\n\n"
        + md_table(["input", "mode", "lowest O/P luminance", "highest O/P luminance", "last frame O/P luminance"], rows)
        + f"\n\nThe price, under a white exposure jitter ({' and '.join(f'{j:g}' for j in JITTERS)} log-brightness a "
        f"frame, {JITTER_FRAMES} frames, no fade): the share of the processed clip's frame-to-frame mean-luminance "
        "flicker left in the output (`metrics.luminance_flicker` against the frames before the jitter; 0: none, 1: "
        "all of it) / PSNR(O, T) in dB to those frames. 'Shown twice' (or 'twice and three times in turn', as 24 to "
        "60 fps by repetition): the clip's "
        "first frames, each with its jitter, repeated so, to the same length (as when a processed clip is converted to "
        "a higher frame rate by repetition).\n\n"
        + md_table(["input", "mode", *(f"flicker left / PSNR(O, T), jitter {j:g}" for j in JITTERS)], flick)
        + f"\n\nRun took {time.time() - t0:.0f} s."
    )
    print(body)
    if not args.no_write:
        write_section("video_fade", body)


if __name__ == "__main__":
    main()
