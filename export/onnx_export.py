#!/usr/bin/env python
"""Export the step graphs without the ``streamssm`` entry point (same arguments as ``streamssm export``).

    python export/onnx_export.py onnx --model pose -o pose.onnx --dims 2
    python export/onnx_export.py onnx --model video -o video.onnx --weights video.safetensors [--guided]
    python export/onnx_export.py tensorrt --onnx video.onnx -o video.engine --opt 1x3x720x1280

The code lives in :mod:`streamssm.export` (importable); this script only parses arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys

from streamssm.export.cli import add_export_parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onnx_export.py", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    add_export_parser(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    # ``add_export_parser`` adds the ``export`` level; accept both ``export onnx ...`` and ``onnx ...``
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("onnx", "tensorrt"):
        argv = ["export", *argv]
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, ImportError, RuntimeError) as e:  # OSError: FileExistsError, FileNotFoundError
        print(f"onnx_export.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
