"""Fixtures shared by the export tests."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def trt():
    """The TensorRT module (tensorrt, else TensorRT-RTX's), or a skip that says why there is none."""
    from streamssm.export import import_tensorrt

    try:
        return import_tensorrt()
    except ImportError as e:
        pytest.skip(f"no TensorRT module is importable (tensorrt, tensorrt_rtx, tensorrt_rtx_bindings): {e}")
