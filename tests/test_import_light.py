"""``import streamssm`` (and the SSM core) needs only torch and numpy: every optional extra blocked."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = ["cv2", "av", "onnx", "onnxruntime", "onnxscript", "gradio", "mamba_ssm", "triton", "safetensors",
           "tqdm", "tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings", "matplotlib", "scipy"]


def test_import_without_extras():
    code = (
        "import sys\n"
        f"for m in {BLOCKED!r}: sys.modules[m] = None  # makes 'import m' raise ImportError\n"
        "import streamssm, torch\n"
        "from streamssm.ssm import SelectiveSSM\n"
        "from streamssm.stream import Stream\n"
        "m = SelectiveSSM(8, d_state=4, headdim=2)\n"
        "y, s = m(torch.randn(2, 5, 8))\n"
        "assert m.backend.name == 'torch', m.backend.name\n"
        "print('ok', streamssm.__version__)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")


def test_cli_parser_does_not_import_torch():
    """``streamssm --help`` builds every sub-command's parser (export included) without importing torch: a Ctrl-C
    at startup then ends quietly, and the help comes in a fraction of a second."""
    code = ("import sys, streamssm.cli as c\n"
            "c.build_parser()\n"
            "print(sorted(m for m in ('torch', 'cv2', 'av', 'gradio', 'onnx') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout
