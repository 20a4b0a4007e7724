"""Video deflicker quality against baselines, on real processed videos and held-out operators.

    python benchmarks/video_quality.py [--weights W] [--frames 48] [--width 640] [--strength 1.3] [--no-uncalibrated]
        [--score-flow farneback|deepflow|tvl1] [--no-write]  (--weights needs --no-write)

Cases:
* real per-frame processed videos with their originals (../shared/data/pairs: dehazing, enhancement);
* held-out operators (never used in training) applied to shared footage with moving cameras.
Methods: identity (P), EMA (alpha 0.3), motion-compensated EMA (DIS flow on the originals, alpha 0.3
where not occluded: the issue's baseline; and alpha 0.4 with no occlusion mask, which trades better here; and
alpha 0.3 with DIS flow between the processed frames, which needs no original: processed-only's baseline),
ffmpeg's ``deflicker`` filter (through PyAV's libavfilter; it looks 5 frames ahead, so it is *not* causal),
streamssm guided (P and I) and processed-only (P), guided at another ``--strength`` (the user's trade of
flicker against fidelity to P), and guided with the shipped weights' blend calibration undone
(``streamssm.train.video.calibrate_blend``, chosen on the pairs alone by ``video_calibration.py``; this row
shows what it does on the held-out cases), and processed-only as trained (the weights' processed-only finishing,
``streamssm.train.video.finish_processed_only``, chosen on the pairs alone by ``video_processed_only.py``, undone).
Scores: E_warp(O)/E_warp(P) (Lai et al. 2018) with Farneback flow -- a different algorithm from the
DIS flow MC-EMA uses and from streamssm's pyramidal Lucas-Kanade flow; ``--score-flow deepflow`` or ``tvl1``
(opencv-contrib, slow) to check that the ranking does not hang on the scorer -- and PSNR(O, P). CPU ms/frame for each
method on this machine. Writes the section "video_quality" of benchmarks/RESULTS.md and one picture
per case (x-t slice through P and streamssm's output, and per-frame mean luminance).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._results import machine, md_table, write_section  # noqa: E402
from streamssm import baselines_video as bv  # noqa: E402
from streamssm import metrics  # noqa: E402
from streamssm.video.filter import DEFAULT_WEIGHTS, VideoFilter  # noqa: E402
from streamssm.video.operators import HELDOUT_OPERATORS, make_demo_operator, make_operator  # noqa: E402
from streamssm.train.video import undo_calibration, undo_processed_only  # noqa: E402
from streamssm.weights import read_weights  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("STREAMSSM_DATA") or HERE.parent / ".." / "shared" / "data").resolve()  # env: a copy elsewhere
HELDOUT_CLIPS = ["edgetam_03_skateboarder.mp4", "edgetam_08_driving.mp4", "edgetam_11_polevault.mp4", "edgetam_21_biker.mp4"]


def read_folder(d: Path, n: int) -> list[np.ndarray]:
    files = sorted(d.glob("*.jpg"))[:n]
    return [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]


def read_video(p: Path, n: int, width: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(p))
    out = []
    while len(out) < n:
        ok, f = cap.read()
        if not ok:
            break
        h, w = f.shape[:2]
        f = cv2.resize(f, (width, int(round(h * width / w / 2)) * 2), interpolation=cv2.INTER_AREA)
        out.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    return out


def ffmpeg_deflicker(frames: list[np.ndarray], size: int = 5) -> list[np.ndarray]:
    """ffmpeg's deflicker (mode am, size 5) via PyAV's filter graph; output re-aligned to the input."""
    import av

    h, w = frames[0].shape[:2]
    g = av.filter.Graph()
    src = g.add_buffer(width=w, height=h, format="rgb24", time_base="1/30")
    df = g.add("deflicker", f"size={size}:mode=am")
    sink = g.add("buffersink")
    src.link_to(df)
    df.link_to(sink)
    g.configure()
    out = []

    def drain():
        while True:
            try:
                out.append(g.pull().to_ndarray(format="rgb24"))
            except (av.error.BlockingIOError, av.error.EOFError):
                return

    for i, f in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(f, format="rgb24")
        vf.pts = i
        g.push(vf)
        drain()
    g.push(None)
    drain()
    return out[: len(frames)]


def cases(args) -> dict[str, tuple[list, list, list | None]]:
    """name -> (processed P, original I, consistent target T or None). T (held-out operators only) is the same
    operator with its parameters held (``Operator.apply_consistent``): what a perfect deflicker would return."""
    pairs = validation_pairs()
    out = {"real: dehazing (Haze2)": (*pairs["Haze2"], None),
           "real: enhancement (bike-packing)": (*pairs["bike-packing"], None)}
    for i, (op, clip) in enumerate(zip(HELDOUT_OPERATORS, HELDOUT_CLIPS)):
        I = read_video(DATA / "videos" / clip, args.frames, args.width)
        o = make_operator(op, np.random.default_rng(100 + i))
        o.fit(I[0])
        P = [o.apply(f, t) for t, f in enumerate(I)]
        T = [o.apply_consistent(f, t) for t, f in enumerate(I)]
        out[f"held-out op: {op} on {clip.split('_', 2)[-1][:-4]}"] = (P, I, T)
    return out


def validation_pairs() -> dict[str, tuple[list, list]]:
    """The two real processed videos of ../shared/data/pairs with their originals: name -> (P, I), uint8 RGB."""
    pairs = DATA / "pairs"
    return {"Haze2": (read_folder(pairs / "dehazing" / "Haze2_processed", 122),
                      read_folder(pairs / "dehazing" / "Haze2_input", 122)),
            "bike-packing": (read_folder(pairs / "enhancement" / "bike-packing-processed", 69),
                             read_folder(pairs / "enhancement" / "bike-packing-input", 69))}


def pair_scorer(data: dict[str, tuple[list, list]]):
    """For :func:`validation_pairs`' videos: a function of outputs {name: frames} -> (mean E_warp ratio, mean
    PSNR(O, P), "ratio/PSNR" per video), E_warp scored with Farneback flow between the originals."""
    scored = {}
    for k, (P, I) in data.items():
        flows = metrics.compute_flows(I, "farneback")
        scored[k] = (flows, metrics.warp_error(P, flows=flows))

    def score(outs: dict) -> tuple[float, float, str]:
        per = [(metrics.warp_error(outs[k], flows=scored[k][0]) / scored[k][1], metrics.psnr(outs[k], data[k][0]))
               for k in data]
        return float(np.mean([a for a, _ in per])), float(np.mean([b for _, b in per])), \
            " ".join(f"{a:.3f}/{b:.1f}" for a, b in per)
    return score


def pick(grid: dict, psnr_floor: float):
    """The pairs' rule (``video_calibration.py``, ``video_processed_only.py``): the key of ``grid`` (key -> (mean
    ratio, mean PSNR(O, P), ...)) with the lowest mean ratio among those whose mean PSNR is at least
    ``psnr_floor``; None when none is."""
    ok = [(r[0], key) for key, r in grid.items() if r[1] >= psnr_floor]
    return min(ok)[1] if ok else None


def still_camera_case(pairs: dict, frames: int = 24) -> tuple[np.ndarray, list]:
    """The demo webcam's case: one real frame (bike-packing's first original, a quarter size) under the
    ``gamma_jitter`` operator -> (the still frame, its processed frames)."""
    still = pairs["bike-packing"][1][0][::4, ::4].copy()
    op = make_demo_operator("gamma_jitter", seed=0)
    return still, [op.apply(still, t) for t in range(frames)]


def still_flicker_left(O: list, still: np.ndarray, still_P: list) -> float:
    """``metrics.luminance_flicker`` of a still-camera output against its still frame, after 4 frames."""
    return metrics.luminance_flicker(O[4:], [still] * (len(still_P) - 4), still_P[4:])


def floats(text: str, name: str) -> list[float]:
    """A comma-separated list of numbers from the command line; SystemExit naming the option otherwise."""
    try:
        out = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"{name}: expected comma-separated numbers, got {text!r}") from None
    if not out:
        raise SystemExit(f"{name}: expected at least one number")
    return out


def has_real_flicker(eP: float, eI: float) -> bool:
    """The issue's definition of a case with real flicker: E_warp(P) at least twice E_warp(I)."""
    return eP >= 2 * eI


def real_flicker_cases(args) -> list[tuple]:
    """The cases with real flicker (E_warp(P) >= 2 E_warp(I): the issue's definition), as the averages here take
    them: (name, P, I, T, flows between the originals (Farneback, or ``args.score_flow``), E_warp(P)). For the
    other benchmarks that score on them (``video_ablation.py``, ``video_tradeoff.py``)."""
    out = []
    for name, (P, I, T) in cases(args).items():
        flows = metrics.compute_flows(I, getattr(args, "score_flow", "farneback"))
        eP, eI = metrics.warp_error(P, flows=flows), metrics.warp_error(I, flows=flows)
        if has_real_flicker(eP, eI):
            out.append((name, P, I, T, flows, eP))
    return out


def timed(fn, n):
    t0 = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t0) / n * 1e3


def picture(name: str, P, O, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    row = P[0].shape[0] // 2
    xt_p = np.stack([f[row] for f in P])
    xt_o = np.stack([f[row] for f in O])
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1, 1, 1.2]})
    ax[0].imshow(xt_p, aspect="auto")
    ax[0].set_title("x-t slice, processed (P)")
    ax[1].imshow(xt_o, aspect="auto")
    ax[1].set_title("x-t slice, streamssm")
    for a in ax[:2]:
        a.set_xlabel("x")
        a.set_ylabel("frame")
    ax[2].plot(metrics.mean_luminance(P), label="processed")
    ax[2].plot(metrics.mean_luminance(O), label="streamssm")
    ax[2].set_xlabel("frame")
    ax[2].set_title("mean luminance")
    ax[2].legend()
    fig.suptitle(name)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def uncalibrated(weights=None) -> VideoFilter:
    """A CPU VideoFilter of ``weights`` (default: the shipped ones) with the blend calibration its file records
    (``streamssm.train.video.calibrate_blend``) taken off again."""
    f = VideoFilter(weights, device="cpu")
    undo_calibration(f.model, read_weights(weights or DEFAULT_WEIGHTS, "video")[2])
    return f


def unfinished_processed_only(weights=None) -> VideoFilter | None:
    """A CPU VideoFilter of ``weights`` with the processed-only finishing its file records
    (``streamssm.train.video.finish_processed_only``) taken off again; None if it records none."""
    f = VideoFilter(weights, device="cpu")
    return f if undo_processed_only(f.model, read_weights(weights or DEFAULT_WEIGHTS, "video")[2]) else None


def scan_uint8(model, P: list, I: list | None = None, strength: float = 1.0) -> list[np.ndarray]:
    """A clip through ``model``'s reference scan (``VideoSSM.forward``, fp32, CPU): uint8 frames in and out. For
    the diagnostics that patch the model's module (``video_flow_swap.py``, ``video_fade.py``), which the CPU fast
    step would not see."""
    tens = lambda fr: torch.from_numpy(np.stack(fr)).permute(0, 3, 1, 2)[None].float() / 255  # noqa: E731
    with torch.no_grad():
        O, _ = model(tens(P), None if I is None else tens(I), strength=strength)
    return list((O[0].permute(0, 2, 3, 1) * 255 + 0.5).to(torch.uint8).numpy())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None,
                    help="video weights to score (default: the shipped ones; others need --no-write)")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--strength", type=float, default=1.3,
                    help="also run streamssm guided at this strength (the user's knob; default 1.0 is the main row)")
    ap.add_argument("--exposure-lock", type=float, default=0.3,
                    help="also score the exposure lock at this weight (VideoFilter(exposure_lock=...); 0: not)")
    ap.add_argument("--uncalibrated", action=argparse.BooleanOptionalAction, default=True,
                    help="also run streamssm guided with the weights' blend calibration undone (calibrate_blend), "
                         "and processed-only with its finishing undone (finish_processed_only)")
    ap.add_argument("--score-flow", default="farneback", choices=["farneback", "deepflow", "tvl1"],
                    help="the flow E_warp is scored with (deepflow, tvl1: opencv-contrib; written to a section of its own)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.weights and not args.no_write:
        raise SystemExit("--weights: the RESULTS section and pictures are the shipped weights'; "
                         "add --no-write to score other weights")
    rows, real_rows = [], []
    pics = []
    for name, (P, I, T) in cases(args).items():
        n = len(P)
        flows = metrics.compute_flows(I, args.score_flow)
        eP, eI = metrics.warp_error(P, flows=flows), metrics.warp_error(I, flows=flows)
        res = {}
        res["identity (P)"] = (P, 0.0)
        res["EMA a=0.3"] = timed(lambda: bv.ema(P, alpha=0.3), n)
        res["MC-EMA a=0.3 (DIS)"] = timed(lambda: bv.mc_ema(P, I, alpha=0.3), n)
        res["MC-EMA a=0.4, no occlusion mask (DIS)"] = timed(lambda: bv.mc_ema(P, I, alpha=0.4, occlusion=False), n)
        res["MC-EMA a=0.3 on P alone (DIS on P; processed-only's baseline)"] = timed(
            lambda: bv.mc_ema(P, P, alpha=0.3), n)
        try:
            res["ffmpeg deflicker (look-ahead 5)"] = timed(lambda: ffmpeg_deflicker(P), n)
        except Exception as e:  # libavfilter build without deflicker
            print(f"ffmpeg deflicker unavailable: {e}")
        f = VideoFilter(args.weights, device="cpu")
        res["**streamssm guided**"] = timed(lambda: f.filter(P, I), n)
        f.reset()
        res["**streamssm processed-only**"] = timed(lambda: f.filter(P), n)
        if args.exposure_lock:
            f = VideoFilter(args.weights, device="cpu", exposure_lock=args.exposure_lock)
            res[f"streamssm guided, exposure lock {args.exposure_lock:g}"] = timed(lambda: f.filter(P, I), n)
            f.reset()
            res[f"streamssm processed-only, exposure lock {args.exposure_lock:g}"] = timed(lambda: f.filter(P), n)
        if args.strength != 1.0:
            f = VideoFilter(args.weights, device="cpu", strength=args.strength)
            res[f"streamssm guided, strength {args.strength:g}"] = timed(lambda: f.filter(P, I), n)
        if args.uncalibrated:
            f = uncalibrated(args.weights)
            res["streamssm guided, blend calibration undone"] = timed(lambda: f.filter(P, I), n)
            f = unfinished_processed_only(args.weights)
            if f is not None:
                label = "streamssm processed-only, as trained (finish_processed_only undone)"
                res[label] = timed(lambda: f.filter(P), n)
        real = has_real_flicker(eP, eI)
        if T is not None:
            res["(consistent target T: the operator with its parameters held)"] = (T, 0.0)
        fmt = lambda v: "inf" if not np.isfinite(v) else f"{v:.1f}"  # noqa: E731
        for label, (O, ms) in res.items():
            ratio = metrics.warp_error(O, flows=flows) / eP
            ps = metrics.psnr(O, P)
            lf = metrics.luminance_flicker(O, T, P) if T is not None else None
            r = [name, label, f"{ratio:.3f}", fmt(ps), fmt(metrics.psnr(O, T)) if T is not None else "-",
                 f"{lf:.2f}" if lf is not None else "-", f"{ms:.0f}" if ms else "-"]
            rows.append(r)
            if real:
                real_rows.append((label, ratio, ps, lf))
        rows.append([name, "(E_warp(I)/E_warp(P))", f"{eI / eP:.3f}", "", "", "", ""])
        slug = "".join(c if c.isalnum() else "_" for c in name.split(":")[-1].strip())[:40]
        png = HERE / f"video_{slug}.png"
        if not args.no_write:  # the tracked pictures are the shipped weights' too
            picture(name, P, res["**streamssm guided**"][0], png)
        pics.append(png.name)
        print("\n".join(" | ".join(r) for r in rows[-len(res) - 1 :]), flush=True)
    # averages over cases with real flicker (E_warp(P) >= 2 E_warp(I))
    avg = {}
    for label, ratio, ps, lf in real_rows:
        avg.setdefault(label, []).append((ratio, ps, lf))
    avg_rows = []
    for k, v in avg.items():
        fin = [b for _, b, _ in v if np.isfinite(b)]
        lfs = [c for _, _, c in v if c is not None]
        avg_rows.append([k, f"{np.mean([a for a, _, _ in v]):.3f}", f"{np.mean(fin):.1f}" if fin else "inf",
                         f"{np.mean(lfs):.2f} ({len(lfs)})" if lfs else "-", len(v)])
    scorer = {"farneback": "Farneback", "deepflow": "DeepFlow (opencv-contrib)", "tvl1": "TV-L1 (opencv-contrib)"}
    flag = "" if args.score_flow == "farneback" else f" --score-flow {args.score_flow}"
    body = (
        "## Video deflicker quality" + ("" if not flag else f", scored with {scorer[args.score_flow]}") + "\n\n"
        f"`python benchmarks/video_quality.py{flag}` on {machine('cpu')} (streamssm on CPU, fp32). E_warp ratio = "
        f"E_warp(O)/E_warp(P), scored with {scorer[args.score_flow]} flow between originals (MC-EMA uses DIS inside, "
        "streamssm "
        "its own pyramidal Lucas-Kanade flow); PSNR(O, P) in dB; PSNR(O, T) to the consistent target where there is "
        "one (held-out operators: the same operator with its parameters held); lum. flicker = the share of the "
        "processed clip's frame-to-frame mean-luminance flicker (its departure from T's) left in the output "
        "(`metrics.luminance_flicker`: 0 = brightness moves as T's, 1 = as P's); ms/frame on this CPU. Held-out "
        f"operators: {args.frames} frames at {args.width} px wide.\n\n"
        + md_table(["case", "method", "E_warp ratio", "PSNR(O,P)", "PSNR(O,T)", "lum. flicker", "ms/frame"], rows)
        + "\n\nAverage over cases with real flicker (E_warp(P) >= 2 E_warp(I)):\n\n"
        + md_table(["method", "mean E_warp ratio", "mean PSNR(O,P)", "mean lum. flicker (cases with T)", "cases"], avg_rows)
        + "\n\nThe consistent target's row is the reference for the held-out operators: where its E_warp ratio is "
        "near 1, the operator's frames differ along the motion mostly in texture the operator makes anew each frame "
        "(edge-aware filters on moving content), not in parameter flicker, and a lower ratio there is reached only "
        "by smoothing that texture in time (it shows as a lower PSNR(O, T))."
        + ("" if args.no_write else "\n\nPictures: " + ", ".join(f"`benchmarks/{p}`" for p in pics))
    )
    print(body)
    if not args.no_write:
        write_section("video_quality" + ("" if not flag else f" {args.score_flow}"), body)


if __name__ == "__main__":
    main()
