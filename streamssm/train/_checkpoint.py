"""The optimiser's half of a training checkpoint, shared by the pose and video trainers.

The weights go to ``<out>.safetensors`` (:func:`streamssm.weights.save_weights`, with the step in their metadata);
the optimiser state goes beside them to ``<out>.opt.pt`` as ``{"step", "optimizer"}``, written first, atomically,
so that a run stopped between the two saves leaves an optimiser one save ahead of the weights, which
:func:`load_optimizer` notices and says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch


def optimizer_path(weights: str | Path) -> Path:
    """Where the optimiser state of the checkpoint ``weights`` lives."""
    return Path(weights).with_suffix(".opt.pt")


def save_optimizer(weights: str | Path, opt: torch.optim.Optimizer, step: int) -> None:
    """Write ``opt``'s state for the checkpoint ``weights`` at ``step`` (temp + rename)."""
    path = optimizer_path(weights)
    tmp = path.with_name(path.name + ".partial")
    torch.save({"step": step, "optimizer": opt.state_dict()}, tmp)
    tmp.replace(path)


def load_optimizer(weights: str | Path, opt: torch.optim.Optimizer, step: int, log: Callable[[str], None] | None,
                   map_location=None) -> bool:
    """Load the optimiser state saved beside the checkpoint ``weights`` (whose weights are at ``step``) into ``opt``;
    False when there is none. A state from another step (a stop between the two saves) is loaded with a warning to
    ``log`` (None: silent); a plain state dict (files from before session 16) is taken as it is."""
    path = optimizer_path(weights)
    if not path.exists():
        return False
    saved = torch.load(path, map_location=map_location, weights_only=True)
    if "optimizer" in saved:
        if saved["step"] != step and log is not None:
            log(f"warning: {path} holds the optimiser of step {saved['step']}, {weights} the weights of step {step} "
                "(a run stopped between the two saves): resuming with that optimiser state")
        saved = saved["optimizer"]
    opt.load_state_dict(saved)
    return True
