"""The ``streamssm`` command line: one sub-command per job."""

from __future__ import annotations

import argparse
import logging
import os
import sys

# Before torch loads: OpenMP workers sleep instead of spin-waiting between ops. On a shared or busy CPU the
# default (spinning) collapses throughput (measured on a loaded 2-core VM: `streamssm video --sample` 0.7 fps
# spinning vs 18.9 fps passive); on an idle 2-core machine passive costs ~30% (75 -> 99 ms per 720p frame).
# Set OMP_WAIT_POLICY=ACTIVE yourself to keep spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _cmd_info(args: argparse.Namespace) -> int:
    from streamssm._info import info_lines

    print("\n".join(info_lines()))
    return 0


def _speed_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--speed must be MIN,MAX (two numbers), got {text!r}") from None
    if not (0 < lo <= hi < 100):
        raise ValueError(f"--speed needs 0 < MIN <= MAX < 100, got {text!r}")
    return lo, hi


# options that only one model's training reads: given to the other, they are refused rather than ignored
def _conf_mix(text: str) -> tuple[float, float, float]:
    import math

    try:
        mix = tuple(float(v) for v in text.split(","))
    except ValueError:
        mix = ()
    if len(mix) != 3 or not all(math.isfinite(v) and v >= 0 for v in mix) or sum(mix) > 1 + 1e-9:  # 0.34+0.56+0.1
        raise ValueError(f"--conf-mix must be NONE,SCALED,NOISE: three shares >= 0 adding up to at most 1, "
                         f"got {text!r}")
    return mix


POSE_ONLY = ("preset", "w_pos", "w_vel", "w_acc", "speed", "val_subjects", "conf_mix", "p_flip")
VIDEO_ONLY = ("workers", "w_temporal", "p_no_blend", "p_fade", "real_flow", "max_frames", "frame_cache")


def _data_files(args: argparse.Namespace) -> list:
    """The files a training run reads (to refuse an -o that is one of them)."""
    from pathlib import Path

    if args.model == "video":
        d = Path(args.data) if args.data else _default_videos()
        from streamssm.io.video import VIDEO_EXTENSIONS  # what load_training_videos reads from a folder

        return [f for f in d.iterdir() if f.suffix.lower() in VIDEO_EXTENSIONS] if d.is_dir() else [d]
    try:
        from streamssm.pose.data import bvh_dir

        return list(bvh_dir(args.data).glob("*.bvh*"))
    except ValueError:  # no data: said by the trainer, naming the folder
        return []


def _check_train_args(args: argparse.Namespace) -> None:
    """Before any training: each number in its range (naming the option), and an output that can be written and
    does not hold something already, unless --resume (continue it) or --overwrite (start it over)."""
    import math
    import tempfile
    from pathlib import Path

    other = VIDEO_ONLY if args.model == "pose" else POSE_ONLY
    given = [n for n in other if getattr(args, n) not in (None, False)]
    if given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        raise ValueError(f"{flags}: for `streamssm train {'video' if args.model == 'pose' else 'pose'}`, not "
                         f"{args.model} (see streamssm train --help)")
    if args.speed is not None:
        _speed_range(args.speed)
    if args.conf_mix is not None:
        _conf_mix(args.conf_mix)
    if args.init is not None and not Path(args.init).is_file():
        raise ValueError(f"--init {args.init}: no such weights file (expected a .safetensors from streamssm train)")
    for name, lo, hi in (("steps", 1, None), ("batch", 1, None), ("workers", 0, None), ("minutes", 0, None),
                         ("lr", 0, 1), ("w_pos", 0, None), ("w_vel", 0, None), ("w_acc", 0, None),
                         ("w_temporal", 0, None), ("p_no_blend", 0, 1), ("p_fade", 0, 1), ("seed", 0, None),
                         ("p_flip", 0, 1),
                         ("save_every", 1, None), ("max_frames", 1, None)):
        v = getattr(args, name)
        strict = name in ("minutes", "lr")  # a budget or a learning rate of 0 trains nothing
        if v is not None and not (math.isfinite(v) and (v > lo if strict else v >= lo) and (hi is None or v <= hi)):
            want = (f"in {'(' if strict else '['}{lo}, {hi}]" if hi is not None
                    else f"{'above' if strict else 'at least'} {lo}")
            raise ValueError(f"--{name.replace('_', '-')} must be {want}, got {v}")
    fc = getattr(args, "frame_cache", None)
    if fc is not None:
        fcp = Path(fc).expanduser()
        if fcp.exists() and not fcp.is_dir():
            raise ValueError(f"--frame-cache {fc}: is a file; expected a folder for the decoded frames (made if new)")
        up = next((u for u in [fcp, *fcp.parents] if u.exists()), None)
        if up is not None and not up.is_dir():
            raise ValueError(f"--frame-cache {fc}: {up} is a file, not a folder; expected a folder for the frames")
        if up is not None and up != fcp and not os.access(up, os.W_OK):  # an existing cache may be read-only
            raise ValueError(f"--frame-cache {fc}: cannot make it in {up} (not writable); choose another folder")
    out = Path(args.output)
    if not args.output or out.name in ("", ".", ".."):
        raise ValueError(f"-o {args.output!r}: expected a weights file name such as video.safetensors")
    if out.is_dir():
        raise ValueError(f"{out}: is a directory; expected the weights file to write (.safetensors)")
    parent = out.parent
    for up in [parent, *parent.parents]:
        if up.exists():
            if not up.is_dir():
                raise ValueError(f"{out}: {up} is a file, not a folder; expected an output path inside a folder")
            try:  # a file made and removed: permissions, a read-only or pseudo file system (/proc), a full disk
                with tempfile.TemporaryFile(dir=up):
                    pass
            except OSError as e:
                raise ValueError(f"{out}: cannot write in {up} ({e.strerror or e}); choose another output path") from None
            break
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite contradict each other: --resume continues the run in -o, "
                         "--overwrite starts a new one over it")
    from streamssm.io.video import special_file

    if kind := special_file(out):
        raise ValueError(f"{out}: is {kind}, not a regular file; expected a weights file (.safetensors) to write")
    if out.exists() and not (args.resume or args.overwrite):
        raise FileExistsError(f"{out}: already exists; pass --resume to continue training it, or --overwrite to "
                              "start over and replace it")
    from streamssm.train._checkpoint import optimizer_path

    for f in _data_files(args) + ([Path(args.init)] if args.init else []):
        for written in (out, optimizer_path(out)):
            if written.exists() and f.exists() and written.samefile(f):
                raise ValueError(f"{out}: would write over the training input {f} (--overwrite never replaces an "
                                 "input); choose another output path")


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    _check_train_args(args)
    out = Path(args.output)

    def signature():  # what is at -o: a checkpoint save replaces the file (a new inode, time and size)
        try:
            st = out.stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    before = signature()
    try:
        return _train(args)
    except KeyboardInterrupt:  # say what was kept: the last checkpoint, and how to go on from it
        from streamssm.weights import read_weights

        saved = out.exists() and signature() != before  # written by this run
        try:
            step = read_weights(out, args.model)[2].get("step") if saved else None
        except (OSError, ValueError):
            step = None
        if step is not None:
            print(f"streamssm train: stopped; {out} holds this run's checkpoint of step {step} (rerun with --resume "
                  "to continue)", file=sys.stderr)
        elif out.exists():
            print(f"streamssm train: stopped before this run's first checkpoint; {out} is as it was", file=sys.stderr)
        else:
            print(f"streamssm train: stopped before the first checkpoint; nothing was written to {out}",
                  file=sys.stderr)
        raise


def _override(cfg, args: argparse.Namespace, names: tuple[str, ...], **renamed: str) -> None:
    """Set on the trainer's ``cfg`` each option in ``names`` (and ``renamed``: option -> field) that was given."""
    for name, field in [*((n, n) for n in names), *renamed.items()]:
        if getattr(args, name) is not None:
            setattr(cfg, field, getattr(args, name))


def _train(args: argparse.Namespace) -> int:
    if args.model == "pose":
        from streamssm._device import resolve_device
        from streamssm.pose.model import PoseSSMConfig
        from streamssm.train.pose import PoseTrainConfig, train_pose

        cfg = PoseTrainConfig(minutes=args.minutes, seed=args.seed)
        if args.tiny:
            cfg = PoseTrainConfig(steps=args.steps or 20, batch=4, length=32, val_every=10, seed=args.seed,
                                  minutes=args.minutes)
        _override(cfg, args, ("steps", "batch", "w_pos", "w_vel", "w_acc", "lr", "p_flip"), save_every="val_every")
        if args.conf_mix is not None:
            cfg.p_no_conf, cfg.p_conf_scaled, cfg.p_conf_noise = _conf_mix(args.conf_mix)
        if args.speed is not None:
            cfg.speed = _speed_range(args.speed)
        if args.val_subjects:
            cfg.val_subjects = tuple(v.strip() for v in args.val_subjects.split(",") if v.strip())
        train_pose(args.output, cfg, PoseSSMConfig.preset(args.preset or "tiny", backend="torch"),
                   resume=args.output if args.resume else None, data_dir=args.data,
                   progress=not args.no_progress, device=str(resolve_device(args.device)), init=args.init)
        return 0
    from streamssm.train.video import VideoTrainConfig, train_video

    cfg = VideoTrainConfig(steps=args.steps or 4000, minutes=args.minutes, seed=args.seed)
    if args.tiny:  # a few small steps; the options below still apply
        cfg = VideoTrainConfig(steps=args.steps or 10, batch=2, length=6, sizes=(64, 96), workers=0, save_every=5,
                               short_side=128, seed=args.seed, minutes=args.minutes)
    _override(cfg, args, ("workers", "batch", "w_temporal", "p_no_blend", "p_fade", "lr", "save_every", "max_frames",
                          "frame_cache"))
    if args.real_flow:
        cfg.real_flow = True
    videos = args.data or str(_default_videos())
    train_video(args.output, videos, cfg, resume=args.resume, device=args.device, progress=not args.no_progress,
                init=args.init)
    return 0


def _default_videos():
    """``$STREAMSSM_DATA/videos``, as pose training reads ``$STREAMSSM_DATA/pose``; else the checkout's
    ``../shared/data/videos``."""
    from streamssm.pose.data import default_data_dir

    return default_data_dir() / "videos"


def _cmd_pose(args: argparse.Namespace) -> int:
    from streamssm.pose.cli import run_pose

    return run_pose(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamssm", description="Causal streaming temporal-consistency filter (selective SSM).")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    s = sub.add_parser("info", help="versions, device and available backends")
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("train", help="train the pose or video filter")
    s.add_argument("model", choices=["pose", "video"])
    s.add_argument("-o", "--output", required=True, help="weights file to write (.safetensors); resumed if it exists and --resume")
    s.add_argument("--data", default=None,
                   help="pose: a folder of BVH clips named SUBJECT_CLIP.bvh.gz (or one holding them in cmu/ or "
                        "pose/cmu/); video: a folder of videos, a video or a cache .npz (default: $STREAMSSM_DATA, "
                        "else the checkout's ../shared/data)")
    s.add_argument("--steps", type=int, default=None, help="steps of the whole run (default: pose 8000, video 4000; "
                   "with --tiny 20 / 10)")
    s.add_argument("--minutes", type=float, default=None,
                   help="wall-clock budget; a checkpoint is saved when it runs out. Video: this piece's (its "
                        "schedule follows --steps); pose: the whole run's, counting the earlier pieces of a resumed "
                        "run, as its learning-rate schedule does (resume with a larger --minutes to go on)")
    s.add_argument("--batch", type=int, default=None, help="clips a step (default: pose 16, video 16 per process)")
    s.add_argument("--lr", type=float, default=None, help="peak learning rate (default: pose 5e-3, video 2e-3)")
    s.add_argument("--save-every", type=int, default=None,
                   help="steps between checkpoints (default 250; pose validates there too); Ctrl-C and SIGTERM also "
                        "save one, after the step under way")
    s.add_argument("--init", default=None, metavar="WEIGHTS",
                   help="start from these weights at step 0 with a fresh optimiser (fine-tuning; video: a finished "
                        "file such as the shipped one has its calibration undone first)")
    s.add_argument("--workers", type=int, default=None, help="video: data-loader processes (default 8; 0 with --tiny)")
    s.add_argument("--max-frames", type=int, default=None,
                   help="video: frames decoded from each training video (at a 288-px short side ~0.45 MB a 16:9 "
                        "frame, held in memory unless --frame-cache); default: every frame")
    s.add_argument("--frame-cache", default=None, metavar="DIR",
                   help="video: keep the decoded training frames on disk in DIR (one .npy a video, memory-mapped; "
                        "decoded once, reused by later runs and pieces with the same settings, shared by torchrun's "
                        "processes) instead of in memory; default: in memory")
    s.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    s.add_argument("--seed", type=int, default=0, help="seed of the data and the initial weights (default 0)")
    s.add_argument("--resume", action="store_true",
                   help="continue the run in --output if it exists (weights, optimiser and the random streams: the "
                        "same run as an uninterrupted one, with the same number of torchrun processes); a new run if "
                        "not")
    s.add_argument("--overwrite", action="store_true", help="start over, replacing an existing --output")
    s.add_argument("--tiny", action="store_true", help="a few small steps (tests, smoke runs)")
    s.add_argument("--preset", default=None, choices=["base", "small", "tiny"],
                   help="pose: network size (tiny: the shipped size, the one the native CPU step runs at 100k+ stream-steps/s)")
    s.add_argument("--w-pos", type=float, default=None, help="pose: loss weight of position error")
    s.add_argument("--w-vel", type=float, default=None, help="pose: loss weight of velocity error")
    s.add_argument("--w-acc", type=float, default=None, help="pose: loss weight of acceleration error")
    s.add_argument("--speed", default=None, metavar="MIN,MAX",
                   help="pose: playback speed range of the training clips, log-uniform (default 0.8,1.25)")
    s.add_argument("--val-subjects", default=None, metavar="S1,S2",
                   help="pose: subjects held out for validation (file-name prefixes before the first '_'; default "
                        "CMU's 006,131 where the data has them, else the last subject)")
    s.add_argument("--conf-mix", default=None, metavar="NONE,SCALED,NOISE",
                   help="pose: shares of training streams given no confidence (as MediaPipe's are), one scaled and "
                        "bent (a detector calibrated otherwise), one unrelated to the error; the rest get the noise "
                        "model's own (default 0.35,0.3,0.1)")
    s.add_argument("--p-flip", type=float, default=None,
                   help="pose: share of training streams in another axis convention: 2-D y up; 3-D Y down "
                        "(MediaPipe's world landmarks) or Z up (default 0.3)")
    s.add_argument("--w-temporal", type=float, default=None, help="video: loss weight of the temporal term (default 4)")
    s.add_argument("--p-no-blend", type=float, default=None,
                   help="video: share of batches trained with the temporal blend off (default 0)")
    s.add_argument("--p-fade", type=float, default=None,
                   help="video: share of clips that fade or get a light switched on/off, the target too; "
                        "taught processed-only (default 0)")
    s.add_argument("--real-flow", action="store_true",
                   help="video: temporal loss also on clips in the footage's own motion (DIS flow between originals)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("pose", help="filter a pose file (.npz/.csv/.json) or an OpenPose folder")
    s.add_argument("input", help="a .npz/.csv/.json pose file, an OpenPose output folder (*_keypoints.json), or a "
                   "video (MediaPipe Pose runs on it)")
    s.add_argument("-o", "--output", required=True,
                   help=".npz/.csv/.json; from an OpenPose folder also a folder (any other name); a video from a video")
    s.add_argument("--fps", type=float, default=None,
                   help="frame rate of the filter (default: from the file, else 30): frame numbers count frames at "
                        "it; timestamps (an .npz's 'timestamps', a video's) are used where the recording runs at "
                        "it, and left out, with a warning, where it runs at another rate")
    s.add_argument("--strength", type=float, default=1.0,
                   help="0 = the input unchanged, 1 = the weights' smoothing (default), in between a blend; above 1 "
                        "(up to 2) the correction is extrapolated: it overshoots rather than smoothing more")
    s.add_argument("--weights", default=None,
                   help="pose .safetensors (default: the weights shipped in the package)")
    s.add_argument("--device", default="cpu", help="cpu (default: the native step is fastest there), cuda[:N] or auto")
    s.add_argument("--key", default=None, help=".npz: which array to filter: (t, k, 2|3) points or (t, k, 4|5) "
                   "MediaPipe landmarks (default landmarks_raw / points); OpenPose folder: pose_keypoints_2d "
                   "(default), face_keypoints_2d, hand_left_keypoints_2d or hand_right_keypoints_2d")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=_cmd_pose)

    from streamssm.video.cli import add_video_parser

    add_video_parser(sub)

    from streamssm.export.cli import add_export_parser

    add_export_parser(sub)

    from streamssm.demo.app import add_demo_parser

    add_demo_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("streamssm: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # OSError: missing/unreadable/unwritable paths, a full disk
        print(f"streamssm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
