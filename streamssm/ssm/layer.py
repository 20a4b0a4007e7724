"""SelectiveSSM: the selective state-space layer, and SSMBlock: a gated residual block around it."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .ops import check_state, ssm_scan, ssm_scan_ref, ssm_step

log = logging.getLogger("streamssm")

BACKENDS = ("auto", "torch", "mamba", "ref")


@dataclass(frozen=True)
class Backend:
    """The pair of functions a layer runs with, chosen once at construction."""

    name: str
    scan: Callable
    step: Callable


def resolve_backend(backend: str = "auto") -> Backend:
    """Map ``"auto" | "torch" | "mamba" | "ref"`` to the scan/step functions.

    ``auto`` picks ``mamba`` when its Triton kernels import and CUDA exists, else ``torch`` (with a
    one-line log saying why). The ``mamba`` functions hand CPU tensors to the torch ones, so a model
    built on a GPU machine still runs after ``.cpu()``. ``ref`` runs the sequential loop (tests only).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend in ("auto", "mamba"):
        from . import _mamba

        ok, why = _mamba.available()
        if ok:
            return Backend("mamba", _mamba.mamba_scan, _mamba.mamba_step)
        if backend == "mamba":
            raise RuntimeError(f"backend='mamba' is not available: {why}")
        if torch.cuda.is_available():
            log.info("streamssm: mamba-ssm kernels unavailable (%s); using the torch backend", why)
        return Backend("torch", ssm_scan, ssm_step)
    if backend == "ref":
        return Backend("ref", ssm_scan_ref, ssm_step)
    return Backend("torch", ssm_scan, ssm_step)


class SelectiveSSM(nn.Module):
    """Selective state-space layer over a sequence of D-dimensional vectors.

    Input-dependent step size ``dt = softplus(x W_dt + b_dt)`` (one per head), input-dependent
    ``B = x W_B`` and ``C = x W_C`` (shared by all heads), a learned negative ``A`` per head and a skip
    ``D`` per channel -- Mamba-2's SSD parameterisation (Dao & Gu 2024, section 7) without the
    convolution, gate and projections, which live in :class:`SSMBlock`. The recurrence itself is
    defined once, in :mod:`streamssm.ssm.ops`.

    Args:
        d_model: channels D (split into ``D / headdim`` heads of ``headdim`` channels).
        d_state: state size N per channel.
        headdim: channels per head P; each head has its own decay rate.
        dt_min, dt_max: range of the initial step sizes (log-uniform, as in Mamba).
        A_init_range: range of the initial ``-A``.
        chunk_size: chunk length of the parallel scan.
        backend: ``"auto" | "torch" | "mamba" | "ref"``, chosen once here.
        validate: check shapes and finiteness of every input (turn off on a hot path that checks
            upstream: the finiteness check synchronises a GPU).

    Shapes: ``forward(x (B, T, D), state (B, H, P, N) | None) -> (y (B, T, D), state)``;
    ``step(x (B, D), state | None) -> (y (B, D), state)``. ``state=None`` is a fresh stream.

    >>> import torch
    >>> ssm = SelectiveSSM(8, d_state=4, headdim=2, backend="torch")
    >>> x = torch.randn(3, 10, 8)
    >>> y, s = ssm(x)
    >>> y1, s1 = ssm(x[:, :6]); y2, s2 = ssm(x[:, 6:], s1)
    >>> torch.allclose(torch.cat([y1, y2], 1), y, atol=1e-5) and torch.allclose(s2, s, atol=1e-5)
    True
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        headdim: int = 8,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        A_init_range: tuple[float, float] = (1.0, 16.0),
        chunk_size: int = 32,
        backend: str = "auto",
        validate: bool = True,
    ):
        super().__init__()
        if d_model % headdim:
            raise ValueError(f"d_model={d_model} must be a multiple of headdim={headdim}")
        self.d_model, self.d_state, self.headdim = d_model, d_state, headdim
        self.nheads = d_model // headdim
        self.chunk_size = chunk_size
        self.validate = validate
        self.backend = resolve_backend(backend)

        self.x_proj = nn.Linear(d_model, self.nheads + 2 * d_state, bias=False)
        # dt bias initialised so softplus(dt_bias) is log-uniform in [dt_min, dt_max] (Mamba's init).
        dt = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        A = torch.empty(self.nheads).uniform_(*A_init_range)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d_model))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_state={self.d_state}, headdim={self.headdim}, backend={self.backend.name}"

    def init_state(self, batch: int, device=None) -> Tensor:
        """A fresh state (zeros), float32, (B, H, P, N)."""
        return torch.zeros(batch, self.nheads, self.headdim, self.d_state, device=device, dtype=torch.float32)

    def _params(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """dt (..., H), B (..., N), C (..., N) from x (..., D)."""
        dtbc = self.x_proj(x)
        dt, B, C = torch.split(dtbc, [self.nheads, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(dt.float() + self.dt_bias.float())
        return dt, B, C

    def _check(self, x: Tensor, rank: int, state: Tensor | None) -> None:
        if not self.validate:
            return
        shape = "(B, T, D)" if rank == 3 else "(B, D)"
        if not isinstance(x, Tensor):
            raise ValueError(f"x must be a torch.Tensor of shape {shape}, got {type(x).__name__}")
        if x.dim() != rank or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape {shape} with D={self.d_model}, got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("x contains NaN or inf; mask missing values before the SSM")
        if state is not None:
            check_state(state, x.shape[0], self.nheads, self.headdim, self.d_state)

    def forward(self, x: Tensor, state: Tensor | None = None, reset: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``reset`` (B, T) bool: start the stream over just before those steps (scene cuts)."""
        self._check(x, 3, state)
        b, t, _ = x.shape
        dt, B, C = self._params(x)
        xh = x.reshape(b, t, self.nheads, self.headdim)
        A = -torch.exp(self.A_log.float())
        D = self.D.reshape(self.nheads, self.headdim)
        if reset is not None:
            y, state = self.backend.scan(xh, dt, A, B, C, D, state, self.chunk_size, reset)
        else:
            y, state = self.backend.scan(xh, dt, A, B, C, D, state, self.chunk_size)
        return y.reshape(b, t, self.d_model), state

    def step(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x, 2, state)
        b = x.shape[0]
        if state is None:
            state = self.init_state(b, x.device)
        dt, B, C = self._params(x)
        A = -torch.exp(self.A_log.float())
        D = self.D.reshape(self.nheads, self.headdim)
        y, state = self.backend.step(x.reshape(b, self.nheads, self.headdim), dt, A, B, C, D, state)
        return y.reshape(b, self.d_model), state


class RMSNorm(nn.Module):
    """RMS normalisation over the last dim (Zhang & Sennrich 2019), computed in float32."""

    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


class SSMBlock(nn.Module):
    """Pre-norm gated residual block: ``x + W_out(SSM(W_u norm(x)) * silu(W_z norm(x)))``.

    The Mamba block (Gu & Dao 2023, fig. 3) without its causal convolution: every bit of memory is in
    the SSM state, so the streaming state is one tensor. Same ``forward``/``step`` contract as
    :class:`SelectiveSSM`.

    >>> import torch
    >>> blk = SSMBlock(16, expand=2, d_state=4, backend="torch")
    >>> x = torch.randn(2, 5, 16)
    >>> y, s = blk(x)
    >>> ys = []; st = None
    >>> for t in range(5):
    ...     yt, st = blk.step(x[:, t], st); ys.append(yt)
    >>> torch.allclose(torch.stack(ys, 1), y, atol=1e-5)
    True
    """

    def __init__(self, d_model: int, expand: int = 2, d_state: int = 16, headdim: int = 4, **ssm_kwargs):
        super().__init__()
        d_inner = expand * d_model
        self.norm = RMSNorm(d_model)
        self.in_proj = nn.Linear(d_model, 2 * d_inner)
        self.ssm = SelectiveSSM(d_inner, d_state=d_state, headdim=headdim, **ssm_kwargs)
        self.out_proj = nn.Linear(d_inner, d_model)
        nn.init.zeros_(self.out_proj.weight)  # start as the identity: residual only
        nn.init.zeros_(self.out_proj.bias)

    def init_state(self, batch: int, device=None) -> Tensor:
        return self.ssm.init_state(batch, device)

    def _mix(self, x: Tensor, run) -> tuple[Tensor, Tensor]:
        u, z = self.in_proj(self.norm(x)).chunk(2, dim=-1)
        y, state = run(u)
        return x + self.out_proj(y * F.silu(z)), state

    def forward(self, x: Tensor, state: Tensor | None = None, reset: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._mix(x, lambda u: self.ssm(u, state, reset))

    def step(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._mix(x, lambda u: self.ssm.step(u, state))
