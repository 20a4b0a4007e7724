"""The selective SSM recurrence: one definition, three ways to run it.

Math (Mamba-2 / SSD form, Dao & Gu 2024, "Transformers are SSMs", eq. 2 with scalar-times-identity A
per head; the official implementation is ``mamba_ssm.ops.triton.ssd_combined``)::

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t (outer) B_t        h: (b, h, p, n)
    y_t = h_t @ C_t + D * x_t

with ``dt_t > 0`` per head (input-dependent step size, already passed through softplus by the
caller), ``A < 0`` per head, ``B_t, C_t`` shared by all heads (one group). The three execution paths
below take the same arguments and must agree:

* :func:`ssm_step` -- one time step, explicit state in, new state out (never mutates its inputs).
  This is the single source of truth: :func:`ssm_scan_ref` is a Python loop over it.
* :func:`ssm_scan` -- the work-efficient chunked parallel scan (SSD "minimal discrete" algorithm:
  quadratic attention-like form inside chunks of ``chunk_size`` steps, a linear recurrence of chunk
  states between them). Pure PyTorch, runs on CPU, O(T * chunk_size) memory, takes an initial state
  and returns the final state.
* :func:`ssm_scan_ref` -- the sequential reference the tests compare against.

Everything is computed in float32 whatever the input dtype (the cumulative sums of ``dt * A`` and
the state lose too much in half precision); outputs are cast back to the input dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ssm_step", "ssm_scan", "ssm_scan_ref", "check_scan_args", "check_state"]


def check_state(state: Tensor, batch: int, nheads: int, headdim: int, d_state: int) -> None:
    """Raise ValueError unless ``state`` has shape (b, h, p, n) = (batch, nheads, headdim, d_state)."""
    expected = (batch, nheads, headdim, d_state)
    if not isinstance(state, Tensor):
        raise ValueError(f"state must be a tensor of shape (B, H, P, N)={expected}, got {type(state).__name__}")
    if tuple(state.shape) != expected:
        raise ValueError(f"state has shape {tuple(state.shape)}, expected (B, H, P, N)={expected}")


def check_scan_args(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> None:
    """Shape checks shared by every backend: x (b,t,h,p), dt (b,t,h), A (h,), B and C (b,t,n)."""
    if x.dim() != 4:
        raise ValueError(f"x must be (B, T, H, P), got shape {tuple(x.shape)}")
    b, t, h, p = x.shape
    if tuple(dt.shape) != (b, t, h):
        raise ValueError(f"dt must be (B, T, H)={(b, t, h)}, got {tuple(dt.shape)}")
    if tuple(A.shape) != (h,):
        raise ValueError(f"A must be (H,)={(h,)}, got {tuple(A.shape)}")
    if B.dim() != 3 or B.shape[:2] != (b, t) or B.shape != C.shape:
        raise ValueError(f"B and C must be (B, T, N), both with (B, T)={(b, t)}, got {tuple(B.shape)} and {tuple(C.shape)}")


def ssm_step(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, state: Tensor
) -> tuple[Tensor, Tensor]:
    """One step of the recurrence.

    Args:
        x: (b, h, p) input; dt: (b, h) positive step sizes; A: (h,) negative; B, C: (b, n);
        D: (h, p) skip or None; state: (b, h, p, n) float32.

    Returns:
        y: (b, h, p) in x's dtype, and the new state (b, h, p, n) float32 -- a new tensor, the
        caller's ``state`` is left untouched (ONNX/TensorRT and snapshot/restore rely on this).
    """
    xf, dtf = x.float(), dt.float()
    decay = torch.exp(dtf * A.float())  # (b, h)
    new_state = state * decay[:, :, None, None] + (dtf[:, :, None] * xf)[..., None] * B.float()[:, None, None, :]
    # The readout as a product and a sum over n, not an einsum: the einsum becomes a batched GEMV that reads the
    # whole state again (measured: 43% of a compiled pose step on an H100), while a sum fuses into the update.
    y = (new_state * C.float()[:, None, None, :]).sum(-1)
    if D is not None:
        y = y + xf * D.float()
    return y.to(x.dtype), new_state


def ssm_scan_ref(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
    chunk_size: int | None = None,
    reset: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Sequential reference: a Python loop of :func:`ssm_step`. Same signature as :func:`ssm_scan`
    (``chunk_size`` is accepted and ignored). Where ``reset[b, t]`` is True the state is zeroed just
    before step t."""
    check_scan_args(x, dt, A, B, C)
    b, t, h, p = x.shape
    state = initial_state.float() if initial_state is not None else x.new_zeros(b, h, p, B.shape[-1], dtype=torch.float32)
    ys = []
    for i in range(t):
        if reset is not None:
            state = torch.where(reset[:, i, None, None, None], torch.zeros_like(state), state)
        y, state = ssm_step(x[:, i], dt[:, i], A, B[:, i], C[:, i], D, state)
        ys.append(y)
    return torch.stack(ys, dim=1), state


def _segsum(a: Tensor) -> Tensor:
    """(..., L) -> (..., L, L) with out[i, j] = a[j+1] + ... + a[i] for i >= j, -inf above the diagonal.

    Built by a masked cumulative sum rather than ``cs[i] - cs[j]`` so that large negative sums do
    not cancel catastrophically.
    """
    L = a.shape[-1]
    a = a[..., None].expand(*a.shape, L)  # [..., i, j] = a[i]
    strict = torch.ones(L, L, dtype=torch.bool, device=a.device).tril(-1)
    a = a.masked_fill(~strict, 0.0)
    out = torch.cumsum(a, dim=-2)
    lower = torch.ones(L, L, dtype=torch.bool, device=a.device).tril(0)
    return out.masked_fill(~lower, float("-inf"))


def ssm_scan(
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
    """Chunked parallel scan (pure PyTorch, differentiable).

    Args:
        x: (b, t, h, p); dt: (b, t, h) > 0; A: (h,) < 0; B, C: (b, t, n); D: (h, p) or None;
        initial_state: (b, h, p, n) or None for a fresh stream.
        reset: (b, t) bool or None: the state is zeroed just before each step where it is True
            (scene cuts). Implemented exactly, with segment masks on the decay matrices (the idea of
            mamba's ``seq_idx``), never with large negative log-decays that would lose precision.

    Returns:
        y: (b, t, h, p) in x's dtype and the final state (b, h, p, n) in float32.

    Chunks are made by zero-padding the time axis: a padded step has dt = 0, so it neither decays nor
    feeds the state and the final state is exact.
    """
    check_scan_args(x, dt, A, B, C)
    b, t, h, p = x.shape
    n = B.shape[-1]
    L = max(1, min(chunk_size, t))
    pad = (-t) % L
    xf, dtf, Bf, Cf = x.float(), dt.float(), B.float(), C.float()
    if pad:
        xf = F.pad(xf, (0, 0, 0, 0, 0, pad))
        dtf = F.pad(dtf, (0, 0, 0, pad))
        Bf = F.pad(Bf, (0, 0, 0, pad))
        Cf = F.pad(Cf, (0, 0, 0, pad))
    c = (t + pad) // L
    seg = None
    if reset is not None:
        if tuple(reset.shape) != (b, t):
            raise ValueError(f"reset must be (B, T)={(b, t)}, got {tuple(reset.shape)}")
        # segment id of every step: how many resets happened up to and including it
        seg = torch.cumsum(reset.to(torch.int32), dim=1)
        if pad:
            seg = F.pad(seg, (0, pad), mode="replicate")
        seg = seg.reshape(b, c, L)
    xs = (xf * dtf[..., None]).reshape(b, c, L, h, p)  # discretised input dt * x
    a = (dtf * A.float()).reshape(b, c, L, h).permute(0, 3, 1, 2)  # (b, h, c, L) log-decays
    Bc = Bf.reshape(b, c, L, n)
    Cc = Cf.reshape(b, c, L, n)
    a_cs = torch.cumsum(a, dim=-1)

    # 1. inside each chunk: y_l = sum_{s<=l} (C_l . B_s) exp(a_{s+1..l}) dt_s x_s
    decay_in = torch.exp(_segsum(a))  # (b, h, c, L, L)
    cb = torch.einsum("bcln,bcsn->bcls", Cc, Bc)
    if seg is not None:  # x_s reaches y_l only if no reset in (s, l]
        cb = cb * (seg[:, :, :, None] == seg[:, :, None, :])
    y = torch.einsum("bhcls,bcshp->bclhp", decay_in * cb[:, None], xs)

    # 2. the state each chunk adds at its own end
    decay_to_end = torch.exp(a_cs[..., -1:] - a_cs)  # (b, h, c, L)
    if seg is not None:  # only the chunk's last segment survives to its end
        decay_to_end = decay_to_end * (seg == seg[:, :, -1:])[:, None]
    chunk_states = torch.einsum("bcln,bhcl,bclhp->bchpn", Bc, decay_to_end, xs)

    # 3. linear recurrence over chunk boundaries (c is small: T / chunk_size)
    if initial_state is None:
        init = xf.new_zeros(b, 1, h, p, n)
    else:
        init = initial_state.float()[:, None]
    chunk_states = torch.cat([init, chunk_states], dim=1)  # (b, c+1, h, p, n)
    decay_chunk = torch.exp(_segsum(F.pad(a_cs[..., -1], (1, 0))))  # (b, h, c+1, c+1)
    decay_entry = torch.exp(a_cs)  # (b, h, c, L): from a chunk's entry to each of its steps
    if seg is not None:
        # segment id at each chunk boundary; index 0 is "before the clip" (id 0)
        seg_end = F.pad(seg[:, :, -1], (1, 0))  # (b, c+1)
        decay_chunk = decay_chunk * (seg_end[:, :, None] == seg_end[:, None, :])[:, None]
        decay_entry = decay_entry * (seg == seg_end[:, :-1, None])[:, None]
    states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, chunk_states)
    prev_states, final_state = states[:, :-1], states[:, -1]

    # 4. what the state entering each chunk contributes inside it
    y = y + torch.einsum("bcln,bchpn,bhcl->bclhp", Cc, prev_states, decay_entry)
    y = y.reshape(b, c * L, h, p)[:, :t]
    if D is not None:
        y = y + x.float() * D.float()
    return y.to(x.dtype), final_state
