"""Weights files are told apart by content: safetensors load whatever their header size, pickles never do."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from streamssm.weights import read_weights


def _safetensors_with_header_low_byte(path, low: int) -> int:
    """A valid safetensors file whose 8-byte header size has ``low`` as its first (least significant) byte."""
    for pad in range(512):
        meta = {"streamssm.model": "video", "streamssm.config": json.dumps({}), "pad": "x" * pad}
        save_file({"w": torch.arange(3.0)}, str(path), metadata=meta)
        head = path.read_bytes()[:8]
        if head[0] == low:
            return int.from_bytes(head, "little")
    raise AssertionError("no padding gave that header size")


@pytest.mark.parametrize("low", [0x80, ord("P")])
def test_safetensors_whose_header_size_looks_like_a_pickle_loads(tmp_path, low):
    """Regression: a 2688-byte header (0x0a80) starts the file with 0x80, the pickle protocol byte; the
    shipped video weights had one and were refused as a pickle."""
    p = tmp_path / "w.safetensors"
    n = _safetensors_with_header_low_byte(p, low)
    assert n % 256 == low
    config, tensors, _ = read_weights(p, "video")
    assert config == {} and torch.equal(tensors["w"], torch.arange(3.0))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_raw_pickle_is_refused_by_content(tmp_path, protocol):
    p = tmp_path / "w.safetensors"
    p.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=protocol))
    with pytest.raises(ValueError, match="pickle or torch.save checkpoint"):
        read_weights(p, "video")


def test_save_weights_never_replaces_a_device_or_a_pipe(tmp_path):
    """Weights are written under a hidden name and renamed into place, which would turn a named pipe (or
    /dev/null) into a regular file: refused, naming it, and the pipe is still one."""
    import os
    import stat

    from streamssm.weights import save_weights

    fifo = tmp_path / "w.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"w\.safetensors: is a named pipe \(FIFO\), not a regular file"):
        save_weights(fifo, torch.nn.Linear(2, 2), "pose", {})
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]
