"""Export of the pose and video step graphs: ONNX, ONNX Runtime, TensorRT.

One exported graph is one ``step`` of a model with its state as explicit inputs and outputs
(``state_in_i`` -> ``state_out_i``, shapes from the model's ``init_state``), so a runtime streams by
feeding each step's state back. Interface and metadata: :mod:`streamssm.export._spec`.

* :func:`export_onnx` -- PyTorch -> ONNX (opset >= 17), checked against PyTorch with ONNX Runtime.
* :class:`OnnxRunner` -- numpy in/out, ONNX Runtime, state ping-pong in preallocated buffers.
* :func:`build_engine` -- ONNX -> TensorRT / TensorRT-RTX engine with an optimisation profile.
* :class:`TensorRTRunner` -- CUDA-resident state in torch tensors, fixed addresses per context.

The models never import this package. onnx, onnxruntime and TensorRT are imported on first use
(extras ``streamssm[export]`` and ``streamssm[tensorrt]``).

>>> from streamssm.export import export_onnx, OnnxRunner   # doctest: +SKIP
>>> export_onnx("pose", "pose.onnx", dims=2)                # doctest: +SKIP
>>> OnnxRunner("pose.onnx").step(points)                   # doctest: +SKIP
"""

from __future__ import annotations

import importlib

# name -> submodule: imported on first use, so ``streamssm --help`` (which registers ``streamssm export``) does not
# import torch
_LAZY = {"export_onnx": "_onnx", "OnnxRunner": "_onnx", "compare_with_torch": "_onnx", "StepSpec": "_spec",
         "TensorRTRunner": "_tensorrt", "build_engine": "_tensorrt", "import_tensorrt": "_tensorrt"}

__all__ = ["export_onnx", "OnnxRunner", "build_engine", "TensorRTRunner", "StepSpec", "compare_with_torch",
           "import_tensorrt"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
