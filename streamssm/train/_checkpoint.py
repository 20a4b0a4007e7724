"""What the pose and video trainers share: the optimiser's half of a checkpoint, stopping on request, and the
checks that no non-finite weights are ever saved.

The weights go to ``<out>.safetensors`` (:func:`streamssm.weights.save_weights`, with the step in their metadata);
the optimiser state goes beside them to ``<out>.opt.pt`` as ``{"step", "optimizer", ...}``, written first,
atomically, so that a run stopped between the two saves leaves an optimiser one save ahead of the weights, which
:func:`load_optimizer` notices and says. The rest of the dict is the trainer's own (its random generators' state
and the time it has trained), so that a resumed run goes on as the uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import pickle
import signal
from pathlib import Path
from typing import Any, Callable

import torch


def optimizer_path(weights: str | Path) -> Path:
    """Where the optimiser state of the checkpoint ``weights`` lives."""
    return Path(weights).with_suffix(".opt.pt")


def save_optimizer(weights: str | Path, opt: torch.optim.Optimizer, step: int, **extra: Any) -> None:
    """Write ``opt``'s state (and ``extra``) for the checkpoint ``weights`` at ``step`` (temp + rename; the folder
    is made if it is missing, as the weights' writer does)."""
    path = optimizer_path(weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        torch.save({"step": step, "optimizer": opt.state_dict(), **extra}, tmp)
        tmp.replace(path)
    finally:  # a second Ctrl-C during the save: no temporary file left behind
        tmp.unlink(missing_ok=True)


def load_optimizer(weights: str | Path, opt: torch.optim.Optimizer, step: int, log: Callable[[str], None] | None,
                   map_location=None) -> dict:
    """Load the optimiser state saved beside the checkpoint ``weights`` (whose weights are at ``step``) into ``opt``
    and return the rest of what was saved with it (``{}`` when there is none: a fresh optimiser, said to ``log``).

    A state one save ahead of the weights (a stop between the two saves) is loaded with a warning; one behind
    them, one that does not fit this model (another size: checked tensor by tensor here, since Adam itself only
    fails at its first step, mid-training), or a file that is not an optimiser state at all (junk, truncated) is
    refused (ValueError naming the file and saying to delete it): it comes from another run, or was damaged.
    A plain state dict (files from before session 16) is taken as it is. ``log`` None: silent."""
    path = optimizer_path(weights)
    if not path.exists():
        if log is not None:
            log(f"warning: no optimiser state beside {weights} ({path.name}): resuming with a fresh optimiser")
        return {}
    fresh = "delete it to resume with a fresh optimiser, or start the run over (--overwrite instead of --resume)"
    try:
        saved = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # junk, a truncated zip, a pickle weights_only refuses: each raises its own type
        # torch's unpickling errors advise loading with weights_only=False: never that, for a file of unknown origin
        why = ("not a torch.save file of tensors" if isinstance(e, pickle.UnpicklingError) else
               (str(e).strip().splitlines() or [type(e).__name__])[0][:160])
        raise ValueError(f"{path}: not a readable optimiser state, junk or truncated ({why}); {fresh}") from None
    rest: dict = {}
    if isinstance(saved, dict) and "optimizer" in saved:
        saved_step = saved.get("step")
        if not isinstance(saved_step, int) or isinstance(saved_step, bool):
            raise ValueError(f"{path}: its step is {saved_step!r}, expected a whole number; {fresh}")
        if saved_step < step:
            raise ValueError(f"{path} holds the optimiser of step {saved_step}, behind {weights}'s weights "
                             f"(step {step}): it is from another run; {fresh}")
        if saved_step != step and log is not None:
            log(f"warning: {path} holds the optimiser of step {saved_step}, {weights} the weights of step {step} "
                "(a run stopped between the two saves): resuming with that optimiser state")
        rest = {k: v for k, v in saved.items() if k not in ("optimizer", "step")}
        saved = saved["optimizer"]
    try:
        _check_fits(saved, opt)
        opt.load_state_dict(saved)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise ValueError(f"{path}: an optimiser state that does not fit this model ({e}); {fresh}") from None
    return rest


def _check_fits(saved: Any, opt: torch.optim.Optimizer) -> None:
    """ValueError unless the optimiser state dict ``saved`` has one entry per parameter of ``opt``, each of its
    tensors (Adam's moments) of that parameter's shape. ``load_state_dict`` compares only the parameter counts, so
    a state of a model of another width loaded, and Adam failed at its first step with a shape error."""
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list) \
            or not isinstance(saved.get("state"), dict):
        raise ValueError(f"expected an optimiser state dict ({{'state', 'param_groups'}}), got {type(saved).__name__}")
    ids = [i for g in saved["param_groups"] for i in g["params"]]
    params = [p for g in opt.param_groups for p in g["params"]]
    if len(ids) != len(params):
        raise ValueError(f"it is for {len(ids)} parameters, this model has {len(params)}")
    for n, (i, p) in enumerate(zip(ids, params)):
        for name, v in saved["state"].get(i, {}).items():
            if name != "step" and torch.is_tensor(v) and v.shape != p.shape:
                raise ValueError(f"parameter {n}'s {name} is {tuple(v.shape)}, the parameter {tuple(p.shape)}: the "
                                 "state of a model of another size")


# settings that may change between the pieces of one run (how long it runs, how often it saves)
PER_PIECE = ("steps", "minutes", "save_every", "val_every", "workers", "frame_cache")


def train_settings(cfg: Any) -> dict:
    """A trainer config (a dataclass) as the JSON-able dict a checkpoint records."""
    import dataclasses

    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


def warn_changed_settings(path: str | Path, saved: dict | None, cfg: Any, log: Callable[[str], None] | None,
                          per_piece: tuple[str, ...] = PER_PIECE) -> None:
    """Say which training settings a resume changes against those the checkpoint ``path`` recorded (learning rate,
    batch, seed, loss weights...): allowed, but no longer the run that was started. ``per_piece``: those a piece
    may change freely."""
    if not saved or log is None:
        return
    now = train_settings(cfg)
    diff = [f"{k} {saved[k]!r} -> {now[k]!r}" for k in sorted(now) if k in saved and k not in per_piece
            and saved[k] != now[k]]
    if diff:
        log(f"warning: resuming {path} with other settings than it was trained with: {'; '.join(diff)}")


class Diverged(ValueError):
    """Training met a non-finite loss or weight (a ValueError: the command line says it in one line, exit 2)."""


def finite(model: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """A 0-d bool tensor on the model's device: the loss and every weight finite (no host sync: the caller reads
    it once, or all-reduces it first)."""
    flags = [torch.isfinite(loss.detach()).all()] + [torch.isfinite(p).all() for p in model.parameters()]
    return torch.stack([f.to(flags[-1].device) for f in flags]).all()


def check_finite(ok: torch.Tensor | bool, step: int, out: str | Path, saved_step: int | None) -> None:
    """:class:`Diverged` unless ``ok`` (:func:`finite`): a run that has diverged stops there, before any save, so its
    last checkpoint is never replaced by NaN weights; ``saved_step``: this run's last checkpoint (None: none yet)."""
    if not bool(ok):
        kept = (f"{out} keeps this run's checkpoint of step {saved_step}" if saved_step is not None else
                f"this run saved nothing ({out} is as it was before it)")
        raise Diverged(f"training diverged at step {step} (non-finite loss or weights): lower --lr, or check the "
                       f"data; {kept}")


class StopRequest:
    """Within the block, Ctrl-C and SIGTERM (a cluster's preemption) only set :attr:`requested`; the training loop
    checks it after each step, saves a checkpoint and stops, so no step is cut in half. A second Ctrl-C stops at
    once (KeyboardInterrupt)."""

    def __init__(self):
        self.requested: str | None = None
        self._old: dict = {}

    CODES = {None: 0, "SIGINT": 1, "SIGTERM": 2}  # for DDP ranks to agree on one (the largest wins)

    @property
    def code(self) -> int:
        return self.CODES[self.requested]

    @classmethod
    def raise_for(cls, code: int):
        """The exception a stop with ``code`` ends in, the same on every rank: Ctrl-C's or SIGTERM's (exit 143)."""
        raise KeyboardInterrupt if code == 1 else SystemExit(143)

    def _handler(self, signum, frame):
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is signal.SIG_IGN:  # ignored by whoever started us (a background job): it stays
                continue
            with contextlib.suppress(ValueError):  # not the main thread: signals stay as they are
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
