"""Weights on disk: safetensors only (never pickle), validated against the model before loading.

A file holds the model's tensors and, in its metadata, ``streamssm.model`` (``pose`` or ``video``) and
``streamssm.config`` (JSON of the model config), so a file can rebuild its own model.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "weights"
# A config is checked before the model is built from it: a hostile file could otherwise ask for a
# d_model of 10^9 and exhaust memory before the tensor shapes are ever compared.
MAX_CONFIG_INT = 8192
MAX_CONFIG_ITEMS = 64


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
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(f"weights file {path} {what} (expected a .safetensors file)")
    with open(path, "rb") as f:
        head = f.read(8)
    # torch.save files are zip archives (PK) or raw pickles (0x80 protocol byte): refuse them by
    # content, whatever their extension; safetensors starts with an 8-byte little-endian header size.
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise ValueError(f"{path} is a pickle or torch.save checkpoint, not safetensors: streamssm never "
                         "unpickles weights (unpickling can run code). Convert it with safetensors.torch.save_file "
                         "in an environment you trust")
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
    try:
        extra = {k[len("streamssm."):]: json.loads(v) for k, v in meta.items()
                 if k.startswith("streamssm.") and k not in ("streamssm.model", "streamssm.config")}
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} has invalid streamssm.* metadata ({e})") from None
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


def _check_value(name: str, value: Any, default: Any, source: str | Path) -> Any:
    def bad(expected: str) -> ValueError:
        return ValueError(f"{source}: config field {name!r} is {value!r}, expected {expected}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(value, bool):
        raise bad(f"a {type(default).__name__}" if default is not None else "a number or string")
    if isinstance(value, int):
        if isinstance(default, float):
            value = float(value)
        elif not (0 <= value <= MAX_CONFIG_INT) or not (default is None or isinstance(default, int)):
            raise bad(f"an integer in [0, {MAX_CONFIG_INT}]" if isinstance(default, int) else type(default).__name__)
        else:
            return value
    if isinstance(value, float):
        if not math.isfinite(value) or not (default is None or isinstance(default, float)):
            raise bad("a finite number" if isinstance(default, float) else type(default).__name__)
        return value
    if isinstance(value, str):
        if len(value) > 64 or not (default is None or isinstance(default, str)):
            raise bad("a short string" if isinstance(default, str) else type(default).__name__)
        return value
    if isinstance(value, list) and (default is None or isinstance(default, (list, tuple))):
        if len(value) > MAX_CONFIG_ITEMS:
            raise bad(f"a list of at most {MAX_CONFIG_ITEMS} items")
        item = default[0] if default else None
        items = [_check_value(f"{name}[{i}]", v, item, source) for i, v in enumerate(value)]
        return tuple(items) if isinstance(default, tuple) else items
    raise bad(type(default).__name__ if default is not None else "a number, string or list")


def build_config(cls: type, config: Any, source: str | Path, **override: Any):
    """``cls(**config)`` after checking, against the dataclass ``cls``'s fields and defaults, that every
    key is known and every value has the default's type and a sane size (ints in [0, MAX_CONFIG_INT],
    finite floats, short strings, short lists); ValueError naming ``source`` otherwise."""
    if not isinstance(config, dict):
        raise ValueError(f"{source}: streamssm.config must be a JSON object, got {type(config).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ValueError(f"{source}: config has fields {unknown} that {cls.__name__} does not know "
                         f"(expected some of {sorted(fields)})")
    checked = {}
    for k, v in config.items():
        f = fields[k]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        checked[k] = _check_value(k, v, default, source)
    checked.update(override)
    try:
        return cls(**checked)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: config does not describe a {cls.__name__} ({e})") from None
