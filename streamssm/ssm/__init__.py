"""The selective state-space model: math, parallel scan, recurrent step, fused backends.

Nothing in here knows about video or pose; nothing here imports the rest of streamssm.

Dimension letters, used in every einsum string, docstring and shape check of the package:

====  ==========================================================
b     streams (batch): independent sequences processed together
t     time steps (frames)
d     SSM width (channels of the layer, ``d_model``)
h     heads (``d / p``): each has its own decay ``A`` and step ``dt``
p     channels per head (``headdim``)
n     state size per channel (``d_state``)
c     chunks of the parallel scan (video models also use ``c`` for colour channels)
k     keypoints (pose)
h w   pixels (video models; context makes clear which ``h`` is meant)
====  ==========================================================

Entry points: :class:`SelectiveSSM` and :class:`SSMBlock` (modules with ``forward(x, state)`` and
``step(x_t, state)``), and the functional ops :func:`ssm_scan`, :func:`ssm_step`, :func:`ssm_scan_ref`.
"""

from .layer import BACKENDS, Backend, RMSNorm, SelectiveSSM, SSMBlock, resolve_backend
from .ops import ssm_scan, ssm_scan_ref, ssm_step

__all__ = [
    "BACKENDS",
    "Backend",
    "RMSNorm",
    "SelectiveSSM",
    "SSMBlock",
    "resolve_backend",
    "ssm_scan",
    "ssm_scan_ref",
    "ssm_step",
]
