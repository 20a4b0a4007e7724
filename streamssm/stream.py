"""Streaming convenience layer: holds the explicit state of a batch of streams for you.

Any module with ``init_state(batch, *dims, device) -> state`` (``dims``: the stream sizes its state depends on, K
for the pose model, H and W for the video model, none for an SSM layer) and ``step(x, ..., state) -> (y, state)``,
where the state is a tensor or a flat tuple of tensors whose first dimension is the stream, can be wrapped.
The explicit ``step`` stays the single source of truth (export and tests call it directly); this
class only remembers the last state, resets chosen streams and takes snapshots (the pattern of
kyutai's ``StreamingModule``, without hidden in-place mutation inside the model).
"""

from __future__ import annotations

import inspect
import numbers

from typing import Any, Sequence

import torch
from torch import Tensor

State = Tensor | tuple[Tensor, ...]

__all__ = ["Stream", "State", "FilterState", "reset_state", "take_streams", "cat_streams"]


class FilterState(tuple):
    """A filter's snapshot (``PoseFilter.get_state()``, ``VideoFilter.get_state()``): the model's state tensors, a
    tuple as the model's ``step(..., state=)`` takes it, with the stream's timeline beside them, so that a stream
    restored elsewhere goes on where it stopped (its next timestamp checked for order and gaps):

    - ``last_timestamp``: the last frame's time in seconds (None before the first, or if none were given; video:
      also after a frame given without one);
    - ``dims``: the pose points' D (2 or 3), None for video.

    It pickles (``torch.save``) with both; ``torch.load`` with ``weights_only=True`` (torch's default) takes it once
    this module is imported (``from streamssm import FilterState``, or any filter: ``import streamssm`` alone
    imports nothing).
    A plain tuple of the same tensors is accepted by ``set_state`` too: the timeline then starts at the next frame.
    """

    def __new__(cls, tensors: Sequence[Tensor] = (), last_timestamp: float | None = None, dims: int | None = None):
        self = super().__new__(cls, tensors)
        self.last_timestamp = None if last_timestamp is None else float(last_timestamp)
        self.dims = None if dims is None else int(dims)
        return self

    def __reduce__(self):
        return (FilterState, (tuple(self), self.last_timestamp, self.dims))

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(t.shape)) for t in self)
        return f"FilterState({len(self)} tensors [{shapes}], last_timestamp={self.last_timestamp}, dims={self.dims})"


torch.serialization.add_safe_globals([FilterState])


def _describe(state: Any) -> str:
    """What a bad ``set_state`` argument is: ``tuple of ndarray``, ``dict``, ..."""
    if isinstance(state, (tuple, list)) and state:
        kinds = sorted({type(s).__name__ for s in state})
        hint = " (torch.from_numpy each)" if "ndarray" in kinds else ""
        return f"{type(state).__name__} of {'/'.join(kinds)}{hint}"
    return type(state).__name__


def state_by_keyword(arg: Any, name: str) -> None:
    """TypeError where a model's ``step`` got a state tuple in place of its second argument, ``name``:
    ``model.step(x, state)`` instead of ``model.step(x, state=state)``."""
    if isinstance(arg, (tuple, list)):
        raise TypeError(f"step() got a tuple as its {name}: pass the state by keyword, step(x, state=state)")


def as_reset_mask(mask: Any, batch: int | None) -> Tensor:
    """A ``reset(mask)`` argument as a (B,) bool tensor; ValueError for the wrong length or for anything but booleans
    (``reset([0, 2])`` would otherwise read the indices as True/False). ``batch`` None: no stream is running yet (a
    filter before its first frame), so only the length goes unchecked -- a mask refused mid-stream is refused there
    too, rather than accepted because there was nothing to reset."""
    import numpy as np

    a = None if isinstance(mask, Tensor) else np.asarray(mask)
    if a is not None and a.dtype != np.bool_:  # strings, objects: torch cannot take them
        raise ValueError(f"reset mask must be booleans, one per stream, got {a.dtype} values {a.tolist()!r:.60}: "
                         "to remove streams by index use drop_streams(), to restart some pass [True, False, ...]")
    m = mask if a is None else torch.as_tensor(a)
    if m.dtype != torch.bool:
        raise ValueError(f"reset mask must be booleans, one per stream, got {m.dtype} values {m.tolist()!r:.60}: "
                         "to remove streams by index use drop_streams(), to restart some pass [True, False, ...]")
    if batch is None and m.dim() != 1:
        raise ValueError(f"reset mask must have shape (B,), one boolean per stream, got {tuple(m.shape)}")
    if batch is not None and tuple(m.shape) != (batch,):
        raise ValueError(f"reset mask must have shape (B,)=({batch},), got {tuple(m.shape)}")
    return m


def _as_tuple(state: State) -> tuple[Tensor, ...]:
    return (state,) if isinstance(state, Tensor) else tuple(state)


def _like(template: State, parts: Sequence[Tensor]) -> State:
    return parts[0] if isinstance(template, Tensor) else tuple(parts)


def reset_state(state: State, fresh: State, mask: Tensor) -> State:
    """Return ``state`` with the streams where ``mask`` (B,) is True replaced by ``fresh``'s.

    Out of place: ``state`` is not modified.
    """
    out = []
    for s, f in zip(_as_tuple(state), _as_tuple(fresh)):
        if mask.numel() != s.shape[0]:
            raise ValueError(f"reset mask must have one entry per stream ({s.shape[0]}), got shape {tuple(mask.shape)}")
        m = mask.to(device=s.device, dtype=torch.bool).reshape(-1, *([1] * (s.dim() - 1)))
        out.append(torch.where(m, f.to(s.dtype), s))
    return _like(state, out)


def take_streams(state: State, index: Sequence[int] | Tensor) -> State:
    """The streams ``index`` (in that order) of a batched state: drop a stream by leaving it out.

    Out of place (``index_select`` copies), so the kept streams' state is bit-identical to before.
    """
    parts = _as_tuple(state)
    idx = torch.as_tensor(index, dtype=torch.long).reshape(-1)
    b = parts[0].shape[0]
    if idx.numel() and (int(idx.min()) < -b or int(idx.max()) >= b):
        raise ValueError(f"stream index {idx.tolist()} out of range for {b} stream(s)")
    return _like(state, [s.index_select(0, (idx % b).to(s.device)) for s in parts])


def kept_streams(index: Any, batch: int) -> list[int]:
    """The stream indices that remain when those in ``index`` (an int or a list; negative counts from the
    end) are dropped from ``batch`` streams, in order. ValueError naming ``index`` if one is out of range.

    >>> kept_streams([0, -1], 4)
    [1, 2]
    """
    import numpy as np

    idx = np.atleast_1d(np.asarray(index))
    if idx.size == 0:  # nothing to drop (a list comprehension that found no finished stream)
        return list(range(batch))
    if idx.dtype == bool or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"drop_streams: index must be an int or a list of ints, got {index!r}")
    drop = {int(i) % batch if -batch <= int(i) < batch else None for i in idx.tolist()}
    if None in drop:
        raise ValueError(f"drop_streams: index {index!r} out of range for {batch} stream(s)")
    return [i for i in range(batch) if i not in drop]


def cat_streams(*states: State) -> State:
    """Concatenate batched states along the stream dimension (add streams: ``cat_streams(old, fresh)``)."""
    if not states:
        raise ValueError("cat_streams needs at least one state")
    parts = [_as_tuple(s) for s in states]
    if len({len(p) for p in parts}) != 1:
        raise ValueError("states to concatenate hold different numbers of tensors")
    return _like(states[0], [torch.cat(group, 0) for group in zip(*parts)])


class Stream:
    """Holds the state of ``batch`` streams of a stepping module.

    Args:
        module: a module with ``init_state(batch, *dims, device)`` and ``step(x, state)``.
        batch: number of streams B.
        device: where the state lives (default: the module's parameters' device).
        dims: the stream sizes the module's state depends on: ``(K,)`` for the pose model
            (``PoseSSM``), ``(H, W)`` for the video model (``VideoSSM``); none for an SSM layer.

    >>> import torch
    >>> from streamssm.ssm import SelectiveSSM
    >>> s = Stream(SelectiveSSM(8, d_state=4, headdim=2, backend="torch"), batch=2)
    >>> y = s.step(torch.randn(2, 8))
    >>> snap = s.get_state(); y1 = s.step(torch.ones(2, 8))
    >>> s.set_state(snap); y2 = s.step(torch.ones(2, 8))
    >>> torch.equal(y1, y2)
    True
    >>> s.reset(torch.tensor([True, False]))  # stream 0 starts over, stream 1 continues
    """

    def __init__(self, module: Any, batch: int = 1, device: torch.device | str | None = None,
                 dims: Sequence[int] = ()):
        if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
            raise ValueError(f"batch must be a whole number of streams >= 1, got {batch!r}")
        batch = int(batch)
        self.module = module
        self.batch = batch
        self.dims = tuple(int(d) for d in dims)
        if device is None:
            try:
                device = next(module.parameters()).device
            except (AttributeError, StopIteration):
                device = torch.device("cpu")
        self.device = torch.device(device)
        # the state by keyword where the module's step names it (the video model's second argument is the
        # original frame), else positionally as ``step(x, state)``
        self._state_kw = "state" in inspect.signature(module.step).parameters
        try:
            self.state: State = self._fresh()
        except TypeError as e:  # stream sizes missing or of the wrong count (the cause is chained, not hidden)
            call = ", ".join(map(str, (batch, *self.dims, "device")))
            raise ValueError(f"{type(module).__name__}.init_state({call}) failed ({e}): pass the stream sizes its "
                             "state depends on, dims=(K,) for the pose model, dims=(H, W) for the video model, none "
                             "for an SSM layer") from e

    def _fresh(self) -> State:
        return self.module.init_state(self.batch, *self.dims, self.device)

    def step(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """Advance every stream by one step, without autograd (to train, call the module's ``step`` with the state
        yourself); returns the module's output. ``args``/``kwargs`` go to the module's
        ``step`` after ``x`` (the video model's original frame, the pose model's confidence); the state is passed
        as ``state=`` where the module's ``step`` has that parameter, else second, as ``step(x, state)``."""
        with torch.no_grad():  # inference: a state that kept its autograd graph would grow it every step
            if self._state_kw:
                y, self.state = self.module.step(x, *args, state=self.state, **kwargs)
            else:
                y, self.state = self.module.step(x, self.state, *args, **kwargs)
        return y

    def reset(self, mask: Tensor | Sequence[bool] | None = None) -> None:
        """Start streams over: all of them (``mask=None``) or those where ``mask`` (B,) is True."""
        if mask is None:
            self.state = self._fresh()
            return
        self.state = reset_state(self.state, self._fresh(), as_reset_mask(mask, self.batch))

    def get_state(self) -> State:
        """A snapshot (copies): later steps do not change it."""
        return _like(self.state, [s.clone() for s in _as_tuple(self.state)])

    def set_state(self, state: State) -> None:
        """Restore a snapshot; shapes and dtypes must match a fresh state's."""
        fresh = _as_tuple(self._fresh())
        parts = _as_tuple(state)
        if len(parts) != len(fresh):
            raise ValueError(f"state must have {len(fresh)} tensors, got {len(parts)}")
        for i, (s, f) in enumerate(zip(parts, fresh)):
            if not isinstance(s, Tensor) or s.shape != f.shape or s.dtype != f.dtype:
                got = (tuple(s.shape), s.dtype) if isinstance(s, Tensor) else type(s).__name__
                raise ValueError(f"state[{i}] must be a tensor of shape {tuple(f.shape)} and dtype {f.dtype}, got {got}")
        self.state = _like(self.state, [s.to(self.device).clone() for s in parts])
