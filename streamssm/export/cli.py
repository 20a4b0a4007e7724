"""``streamssm export onnx|tensorrt``: the CLI side of :mod:`streamssm.export`.

Hooked into ``streamssm/cli.py`` with ``add_export_parser(sub)``; each sub-command sets ``func``.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("streamssm")


def _cmd_onnx(args: argparse.Namespace) -> int:
    from streamssm.export import export_onnx
    from streamssm.export._spec import parse_shape

    if args.model == "pose" and args.guided:
        raise ValueError("--guided is for --model video (a graph that also takes the original frame), not pose")
    if args.model == "video" and args.dims is not None:
        raise ValueError("--dims is for --model pose (coordinates per keypoint), not video")
    if args.model == "pose" and args.ghost_res is not None:
        raise ValueError("--ghost-res is for --model video (the ghost guard of its temporal blend), not pose")
    if args.model == "pose" and args.exposure_lock is not None:
        raise ValueError("--exposure-lock is for --model video, not pose")
    from streamssm._args import as_exposure_lock, as_ghost_res

    if args.ghost_res is not None:  # named as typed (the Python keyword is ghost_res)
        as_ghost_res(args.ghost_res, "--ghost-res")
    if args.exposure_lock is not None:
        as_exposure_lock(args.exposure_lock, "--exposure-lock")
    args.dims = 2 if args.dims is None else args.dims
    shape = None
    if args.shape:
        s = parse_shape(args.shape)
        pose_ok = len(s) == 3 and s[2] == args.dims
        video_ok = len(s) == 4 and s[1] == 3
        if not (pose_ok if args.model == "pose" else video_ok):
            raise ValueError(f"--shape is BxKxD (D = --dims) for pose, Bx3xHxW for video, got {args.shape}")
        shape = (s[0], s[1]) if args.model == "pose" else (s[0], s[2], s[3])
    try:
        path = export_onnx(args.model, args.output, weights=args.weights, opset=args.opset, guided=args.guided,
                           dims=args.dims, shape=shape, dynamic_size=not args.static_size, check=not args.no_check,
                           ghost_res=args.ghost_res, exposure_lock=args.exposure_lock, overwrite=args.overwrite)
    except (ImportError, RuntimeError, ValueError) as e:  # missing extra, a graph that failed its check: a message
        # export_onnx's advice names its keywords; here the user types the options
        raise ValueError(str(e).replace("dynamic_size=False", "--static-size")) from e
    print(f"wrote {path}")
    return 0


def _cmd_tensorrt(args: argparse.Namespace) -> int:
    from streamssm.export import build_engine
    from streamssm.export._tensorrt import read_onnx_spec

    if args.workspace_mb is not None and args.workspace_mb < 1:
        raise ValueError(f"--workspace-mb must be a positive number of MiB, got {args.workspace_mb}")
    try:
        spec = read_onnx_spec(args.onnx)
        if args.model and args.model != spec.kind:
            raise ValueError(f"{args.onnx} holds the {spec.kind} model, not {args.model}")
        path = build_engine(args.onnx, args.output, fp16=args.fp16, min_shapes=args.min, opt_shapes=args.opt,
                            max_shapes=args.max, compute_capabilities=args.compute_capability or None,
                            tf32=args.tf32, workspace_mb=args.workspace_mb, verbose=args.trt_verbose,
                            overwrite=args.overwrite)
    except (ImportError, RuntimeError) as e:  # no TensorRT, or a parse/build failure: a message, not a traceback
        raise ValueError(str(e)) from e
    print(f"wrote {path} (settings in {path}.json)")
    return 0


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``export onnx`` and ``export tensorrt`` to a CLI's sub-parsers; returns the ``export`` parser."""
    p = subparsers.add_parser("export", help="export the step graphs to ONNX or a TensorRT engine")
    sub = p.add_subparsers(dest="export_format", metavar="FORMAT")
    sub.required = True

    o = sub.add_parser("onnx", help="one step of the model as ONNX, state as explicit inputs/outputs")
    o.add_argument("--model", choices=["pose", "video"], required=True)
    o.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    o.add_argument("--weights", default=None, help="safetensors weights (default: the package's)")
    o.add_argument("--opset", type=int, default=17,
                   help="ONNX opset, 17 up to what torch writes (23); ONNX Runtime must run it too (default 17)")
    o.add_argument("--dims", type=int, choices=[2, 3], default=None, help="pose: coordinates per keypoint (default 2)")
    o.add_argument("--guided", action="store_true", help="video: the graph also takes the original frame")
    o.add_argument("--shape", default=None,
                   help="shape traced at: BxKxD pose (default 2x17xD), Bx3xHxW video (default 2x3x144x256)")
    o.add_argument("--static-size", action="store_true", help="only the batch is dynamic (not K, or H and W)")
    o.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    o.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    o.add_argument("--ghost-res", type=float, default=None, metavar="R",
                   help="video: bake the ghost guard into the graph (as streamssm video --ghost-res; default: the "
                        "weights', off)")
    o.add_argument("--exposure-lock", type=float, default=None, metavar="A",
                   help="video: bake the exposure lock into the graph (as streamssm video --exposure-lock; default: "
                        "the weights', off)")
    o.set_defaults(func=_cmd_onnx)

    t = sub.add_parser("tensorrt", help="build a TensorRT (or TensorRT-RTX) engine from an exported .onnx")
    t.add_argument("--model", choices=["pose", "video"], default=None, help="checked against the .onnx")
    t.add_argument("--onnx", required=True, help="a graph written by 'streamssm export onnx'")
    t.add_argument("-o", "--output", required=True, help="the engine file; <output>.json is written beside it")
    t.add_argument("--fp16", action="store_true", help="FP16 kernels (NVIDIA TensorRT only)")
    t.add_argument("--min", default=None, help="smallest frame shape, e.g. 1x3x64x64 or 1x1x2")
    t.add_argument("--opt", default=None, help="shape to tune for, e.g. 1x3x720x1280 or 1x17x2")
    t.add_argument("--max", default=None, help="largest frame shape, e.g. 1x3x2160x3840 or 16x133x2")
    t.add_argument("--compute-capability", action="append", default=[], metavar="SMxx",
                   help="TensorRT-RTX target, repeatable (default: CURRENT with a GPU, else SM80..SM121)")
    t.add_argument("--tf32", action="store_true", help="allow TF32 matmuls")
    t.add_argument("--workspace-mb", type=int, default=None)
    t.add_argument("--trt-verbose", action="store_true", help="TensorRT's verbose log")
    t.add_argument("--overwrite", action="store_true", help="replace an existing engine file")
    t.set_defaults(func=_cmd_tensorrt)
    return p
