"""Weights on disk: safetensors only (never pickle), validated against the model before loading.

A file holds the model's tensors and, in its metadata, ``streamssm.model`` (``pose`` or ``video``) and
``streamssm.config`` (JSON of the model config), so a file can rebuild its own model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "weights"
# A config is checked before the model is built from it: a hostile file could otherwise ask for a
# d_model of 10^9 and exhaust memory before the tensor shapes are ever compared.
MAX_CONFIG_INT = 8192


def _umask() -> int:
    """The process's umask, read without setting it (os.umask would change it for every thread meanwhile)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def save_weights(path: str | Path, model: nn.Module, kind: str, config: dict, extra: dict | None = None) -> Path:
    """Write ``model``'s state dict as safetensors with its kind and config (atomic: temp + rename)."""
    from safetensors.torch import save_file

    from streamssm.io.video import special_file

    path = Path(path)
    if kind_of_file := special_file(path):
        raise ValueError(f"{path}: is {kind_of_file}, not a regular file; expected a weights file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"streamssm.model": kind, "streamssm.config": json.dumps(config)}
    meta.update({f"streamssm.{k}": json.dumps(v) for k, v in (extra or {}).items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.partial")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors writes 0600: the mode any new file gets here (0644 usually)
        tmp.replace(path)
    finally:  # interrupted (a second Ctrl-C), a full disk: no temporary file left behind
        tmp.unlink(missing_ok=True)
    return path


def read_weights(path: str | Path, kind: str) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(config, tensors, extra metadata) from a safetensors file; ValueError naming the file if it is
    not a streamssm ``kind`` weights file."""
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(f"weights file {path} {what} (expected a .safetensors file)")
    with open(path, "rb") as f:
        head = f.read(9)
    # torch.save files are zip archives (PK) or raw pickles (0x80, protocol 2-5): refuse them by content,
    # whatever their extension. Safetensors starts with an 8-byte little-endian header size and a JSON
    # header, so look for that first: its size's low byte may well be 0x80 (a 2688-byte header).
    n = int.from_bytes(head[:8], "little") if len(head) == 9 else -1
    safetensors_like = head[8:9] == b"{" and 0 < n <= path.stat().st_size - 8
    pickle_like = head[:2] == b"PK" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))
    if pickle_like and not safetensors_like:
        raise ValueError(f"{path} is a pickle or torch.save checkpoint, not safetensors: streamssm never "
                         "unpickles weights (unpickling can run code). Convert it with safetensors.torch.save_file "
                         "in an environment you trust")
    try:
        from safetensors import safe_open
    except ImportError as e:
        raise ImportError(f"reading {path} needs the safetensors package: pip install safetensors ({e})") from None
    try:
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


def check_tensors(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], source: str | Path) -> None:
    """ValueError naming ``source`` unless ``tensors`` have exactly the names, shapes and dtypes of ``expected`` (a
    model's state dict; on the meta device too: only shapes and dtypes are read) and finite values."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{source}: tensor names do not match the model (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]})")
    for k, v in tensors.items():
        if v.shape != expected[k].shape or v.dtype != expected[k].dtype:
            raise ValueError(f"{source}: tensor {k} is {tuple(v.shape)} {v.dtype}, the model expects "
                             f"{tuple(expected[k].shape)} {expected[k].dtype}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ValueError(f"{source}: tensor {k} contains NaN or inf")


def load_into(model: nn.Module, tensors: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy ``tensors`` into ``model`` after checking names, shapes and dtypes match exactly."""
    check_tensors(model.state_dict(), tensors, source)
    model.load_state_dict(tensors)


def build_model(model_cls: type, config_cls: type, config: Any, tensors: dict[str, torch.Tensor], source: str | Path,
                **override: Any) -> nn.Module:
    """``model_cls`` built from a file's config and tensors (:func:`read_weights`), on the CPU: the config checked
    (:func:`build_config`), then the tensors' names and shapes compared with those of the model built on the meta
    device (shapes without storage), and only then the model built and loaded. A small file whose config asks for
    a large model (d_model 1024 over 8 layers is ~500 MiB; the bounds on each field allow terabytes) is refused
    before any of it is allocated."""
    cfg = build_config(config_cls, config, source, **override)
    # the pure-torch backend for the shell: the same shapes, and no optional kernels imported under the meta device
    shell_cfg = dataclasses.replace(cfg, backend="torch") if hasattr(cfg, "backend") else cfg
    try:
        with torch.device("meta"):
            shell = model_cls(shell_cfg)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: config does not describe a {model_cls.__name__} ({e})") from None
    check_tensors(shell.state_dict(), tensors, source)
    model = model_cls(cfg)
    model.load_state_dict(tensors)
    return model


def _check_value(name: str, value: Any, default: Any, source: str | Path) -> Any:
    """``value`` if it has the type of the field's ``default`` (bool, int, float or str -- what the model
    configs hold) and a sane size; ValueError naming ``source`` and the field otherwise."""
    def bad(expected: str) -> ValueError:
        return ValueError(f"{source}: config field {name!r} is {value!r}, expected {expected}")

    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
    elif isinstance(default, int):
        if not (number and isinstance(value, int) and 0 <= value <= MAX_CONFIG_INT):
            raise bad(f"an integer in [0, {MAX_CONFIG_INT}]")
    elif isinstance(default, float):
        if not (number and math.isfinite(value)):
            raise bad("a finite number")
        value = float(value)
    elif isinstance(default, str):
        if not (isinstance(value, str) and len(value) <= 64):
            raise bad("a short string")
    else:  # a field type the model configs do not have
        raise bad(f"a {type(default).__name__}")
    return value


def _check_ssm_sizes(cfg: Any) -> None:
    """ValueError naming the field unless the SSM sizes a model config has (every one here has them all) are at least
    1 and ``headdim`` divides the SSM's ``d_model * expand`` channels into heads (``SSMBlock``)."""
    for name in ("d_model", "n_layers", "expand", "d_state", "headdim"):
        if getattr(cfg, name, 1) < 1:
            raise ValueError(f"config field {name!r} is {getattr(cfg, name)}, expected an integer in "
                             f"[1, {MAX_CONFIG_INT}]")
    if all(hasattr(cfg, name) for name in ("d_model", "expand", "headdim")) and cfg.d_model * cfg.expand % cfg.headdim:
        raise ValueError(f"config field 'headdim' is {cfg.headdim}, expected a divisor of d_model * expand = "
                         f"{cfg.d_model * cfg.expand}")


def build_config(cls: type, config: Any, source: str | Path, **override: Any):
    """``cls(**config)`` after checking, against the dataclass ``cls``'s fields and defaults, that every
    key is known and every value has the default's type and a sane size (ints in [0, MAX_CONFIG_INT],
    finite floats, short strings), and then that the values are ones the model runs with: the SSM's sizes
    (:func:`_check_ssm_sizes`) and the config's own ranges (its ``check()``, where it has one); ValueError naming
    ``source`` and the field otherwise."""
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
        cfg = cls(**checked)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: config does not describe a {cls.__name__} ({e})") from None
    try:
        _check_ssm_sizes(cfg)
        if hasattr(cfg, "check"):
            cfg.check()
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    return cfg
