"""Optional fused backend: mamba-ssm's Triton kernels, behind the signatures of :mod:`.ops`.

mamba-ssm 2.3.2's package ``__init__`` imports its compiled CUDA extension (``selective_scan_cuda``),
which a Triton-only install (``MAMBA_SKIP_CUDA_BUILD=TRUE``) lacks. We only need two Triton modules,
so when the normal import fails we register a bare package object for ``mamba_ssm`` whose
``__path__`` points at the installed files and import the Triton submodules from it, never running
the package ``__init__``. Nothing here is imported unless the ``mamba`` backend is asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from functools import lru_cache

import torch
from torch import Tensor

from .ops import check_scan_args, ssm_scan, ssm_step

# selective_state_update launches one program per row of the batch along grid axis y, which CUDA
# caps at 65,535: larger batches are processed in slices.
_MAX_GRID_Y = 65535


@lru_cache(maxsize=1)
def load_kernels():
    """Return (mamba_chunk_scan_combined, selective_state_update); raise ImportError with the reason."""
    try:
        import triton  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the machine
        raise ImportError(f"triton is not importable: {e}") from e
    # Triton's dots on fp32 inputs default to TF32 (~1e-3 relative error); follow torch's switch
    # instead, so the fused path is as exact as the torch path unless TF32 was asked for.
    os.environ.setdefault("TRITON_F32_DEFAULT", "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee")
    if "mamba_ssm" not in sys.modules:
        spec = importlib.util.find_spec("mamba_ssm")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("mamba-ssm is not installed (pip install 'streamssm[gpu]')")
        try:
            importlib.import_module("mamba_ssm")
        except ImportError:
            # The compiled extension is missing: expose the package without running its __init__.
            for name in [k for k in sys.modules if k == "mamba_ssm" or k.startswith("mamba_ssm.")]:
                del sys.modules[name]
            pkg = types.ModuleType("mamba_ssm")
            pkg.__path__ = list(spec.submodule_search_locations)
            pkg.__spec__ = spec
            sys.modules["mamba_ssm"] = pkg
    combined = importlib.import_module("mamba_ssm.ops.triton.ssd_combined")
    ssu = importlib.import_module("mamba_ssm.ops.triton.selective_state_update")
    return combined.mamba_chunk_scan_combined, ssu.selective_state_update


def available() -> tuple[bool, str]:
    """(True, "") when the kernels import and a CUDA device exists, else (False, reason)."""
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    try:
        load_kernels()
    except Exception as e:  # ImportError, or a Triton/driver error at import time
        return False, str(e).splitlines()[0] if str(e) else type(e).__name__
    return True, ""


def mamba_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
    chunk_size: int = 64,
    reset: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`streamssm.ssm.ops.ssm_scan` on mamba's fused chunked-scan kernel (CUDA tensors only).

    Mid-clip resets go to the torch scan (exact); the fused kernel's ``seq_idx`` does not combine
    with initial states in this version."""
    if not x.is_cuda or (reset is not None and bool(reset.any())):
        return ssm_scan(x, dt, A, B, C, D, initial_state, chunk_size, reset)
    check_scan_args(x, dt, A, B, C)
    chunk_scan, _ = load_kernels()
    init = None if initial_state is None else initial_state.float().contiguous()
    y, final = chunk_scan(
        x.contiguous(),
        dt.float().contiguous(),
        A.float(),
        B[:, :, None].contiguous(),
        C[:, :, None].contiguous(),
        chunk_size,
        D=None if D is None else D.float(),
        initial_states=init,
        return_final_states=True,
    )
    return y.to(x.dtype), final.float()


def mamba_step(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, state: Tensor
) -> tuple[Tensor, Tensor]:
    """:func:`streamssm.ssm.ops.ssm_step` on mamba's ``selective_state_update`` kernel.

    The kernel updates its state argument in place, so it runs on a copy: the caller's state is
    never mutated (explicit state in, state out).
    """
    if not x.is_cuda:
        return ssm_step(x, dt, A, B, C, D, state)
    _, update = load_kernels()
    b, h, p = x.shape
    n = B.shape[-1]
    new_state = state.float().clone()
    A3 = A.float()[:, None, None].expand(h, p, n)
    dt3 = dt[:, :, None].expand(b, h, p).contiguous()  # a stride-0 dt trips the kernel's tie_hdim check (dt_bias=None)
    # mamba-ssm 2.3.2's launcher unpacks dt_bias.stride() and D.stride() without a None check
    # ("Value after * must be an iterable"): pass explicit zeros for both
    dt_bias = torch.zeros(h, p, device=x.device, dtype=torch.float32)  # read only by the kernel
    D2 = dt_bias if D is None else D.float()
    ys = []
    for s in range(0, b, _MAX_GRID_Y):
        e = min(b, s + _MAX_GRID_Y)
        ys.append(update(new_state[s:e], x[s:e], dt3[s:e], A3, B[s:e, None], C[s:e, None], D=D2, dt_bias=dt_bias))
    y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=0)
    return y.to(x.dtype), new_state
