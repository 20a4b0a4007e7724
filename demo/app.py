"""The streamssm Gradio demo, from a checkout: ``python demo/app.py [--port 7860] [--share]``.

A thin launcher: the app itself is :mod:`streamssm.demo.app` (inside the package, so that
``streamssm demo`` works from an installed wheel too). Options are those of ``streamssm demo --help``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package, even if not installed

from streamssm.demo.app import build_app, main, serve  # noqa: E402 (after the sys.path line)

__all__ = ["build_app", "main", "serve"]

if __name__ == "__main__":
    raise SystemExit(main())
