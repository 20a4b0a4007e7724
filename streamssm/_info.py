"""`streamssm info`: versions, devices and which SSM backends work on this machine."""

from __future__ import annotations

import importlib
import platform

import torch

import streamssm


def _version(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # any import failure is reported, not raised
        return f"not available ({type(e).__name__})"
    return str(getattr(mod, "__version__", "installed"))


def info_lines() -> list[str]:
    from streamssm.ssm import _mamba

    ok, why = _mamba.available()
    lines = [
        f"streamssm {streamssm.__version__}",
        f"python {platform.python_version()} on {platform.machine()} ({platform.system()})",
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads",
        f"cuda: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'}",
        "ssm backends: torch (always), ref (tests), mamba " + ("(available)" if ok else f"(unavailable: {why})"),
    ]
    for name, mod in [("numpy", "numpy"), ("opencv", "cv2"), ("av", "av"), ("safetensors", "safetensors"),
                      ("onnx", "onnx"), ("onnxruntime", "onnxruntime"), ("gradio", "gradio")]:
        lines.append(f"{name}: {_version(mod)}")
    return lines
