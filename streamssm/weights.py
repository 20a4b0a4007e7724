"""Weights on disk: safetensors only (never pickle), validated against the model before loading.

A file holds the model's tensors and, in its metadata, ``streamssm.model`` (``pose`` or ``video``) and
``streamssm.config`` (JSON of the model config), so a file can rebuild its own model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "weights"


def save_weights(path: str | Path, model: nn.Module, kind: str, config: dict, extra: dict | None = None) -> Path:
    """Write ``model``'s state dict as safetensors with its kind and config (atomic: temp + rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"streamssm.model": kind, "streamssm.config": json.dumps(config)}
    meta.update({f"streamssm.{k}": json.dumps(v) for k, v in (extra or {}).items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.partial")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_weights(path: str | Path, kind: str) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(config, tensors, extra metadata) from a safetensors file; ValueError naming the file if it is
    not a streamssm ``kind`` weights file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist (expected a .safetensors file)")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from None
    if meta.get("streamssm.model") != kind:
        raise ValueError(f"{path} holds streamssm.model={meta.get('streamssm.model')!r}, expected {kind!r} weights")
    try:
        config = json.loads(meta["streamssm.config"])
    except (KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} has no valid streamssm.config metadata ({e})") from None
    extra = {k[len("streamssm."):]: json.loads(v) for k, v in meta.items()
             if k.startswith("streamssm.") and k not in ("streamssm.model", "streamssm.config")}
    return config, tensors, extra


def load_into(model: nn.Module, tensors: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy ``tensors`` into ``model`` after checking names, shapes and dtypes match exactly."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise ValueError(f"{source}: tensor names do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    for k, v in tensors.items():
        if v.shape != own[k].shape or v.dtype != own[k].dtype:
            raise ValueError(f"{source}: tensor {k} is {tuple(v.shape)} {v.dtype}, the model expects {tuple(own[k].shape)} {own[k].dtype}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ValueError(f"{source}: tensor {k} contains NaN or inf")
    model.load_state_dict(tensors)
