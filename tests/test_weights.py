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


def _with_config(tmp_path, kind: str, tensors: dict | None = None, **change):
    """The shipped ``kind`` weights (or ``tensors``) saved with their config changed by ``change``."""
    from streamssm.weights import PACKAGE_WEIGHTS

    config, shipped, extra = read_weights(PACKAGE_WEIGHTS / f"{kind}.safetensors", kind)
    meta = {"streamssm.model": kind, "streamssm.config": json.dumps({**config, **change})}
    meta.update({f"streamssm.{k}": json.dumps(v) for k, v in extra.items()})
    path = tmp_path / f"{kind}.safetensors"
    save_file(shipped if tensors is None else tensors, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("kind", ["video", "pose"])
def test_a_small_file_with_a_large_config_is_refused_before_the_model_is_built(kind, tmp_path, monkeypatch):
    """A 172-byte file whose config asked for d_model 1024 over 8 layers made the loader build that model (~500 MiB;
    the bounds on each field allow terabytes) before comparing its tensors' names and shapes. They are compared
    with a model built on the meta device now, which holds no storage; the real one is built only for a file that
    matches it. The pose loader did the same."""
    from streamssm.pose import model as pose_model
    from streamssm.pose.filter import load_pose_model
    from streamssm.video import model as video_model
    from streamssm.video.filter import load_video_model

    cls, load = (video_model.VideoSSM, load_video_model) if kind == "video" else (pose_model.PoseSSM, load_pose_model)
    built = []
    real_init = cls.__init__

    def recording_init(self, *a, **k):
        built.append(torch.empty(()).device.type)  # the default device the model's tensors are made on
        real_init(self, *a, **k)

    monkeypatch.setattr(cls, "__init__", recording_init)
    tiny = _with_config(tmp_path, kind, {"x": torch.zeros(1)}, d_model=1024, n_layers=8)
    assert tiny.stat().st_size < 4096
    with pytest.raises(ValueError, match=rf"{kind}\.safetensors: tensor names do not match the model"):
        load(tiny)
    assert built == ["meta"]
    built.clear()
    load()  # the shipped weights: their shapes compared on the meta device, then built and loaded
    assert built == ["meta", "cpu"]


@pytest.mark.parametrize(("kind", "field", "value", "expected"), [
    ("video", "exposure_lock", 5.0, "a value in [0.0, 1.0]"),
    ("video", "flow_window", 0, "a value in [1, 8192]"),
    ("video", "flow_smooth", 8, "an odd window width"),
    ("video", "flow_levels", 7, "at most 6: the smallest frame the filter takes (cell_px=32 a side) is 32 px"),
    ("video", "cell_px", 1, "a value in [2, 8192]"),
    ("video", "eps", -1.0, "a value in [1e-06, 1.0]"),
    ("video", "cut_corr", 1e300, "a value in [-1.0, 1.0]"),
    ("video", "blend_gain", 1e30, "a value in [0.0, 100.0]"),
    ("video", "ghost_res", -1.0, "0 (off) or a value in [0.001, 1000]"),
    ("video", "still_px", 1e-30, "0 (off) or a value in [0.001, 1000]"),
    ("video", "fade_follow", -0.5, "a value in [0.0, 1.0]"),
    ("video", "headdim", 0, "an integer in [1, 8192]"),
    ("video", "headdim", 7, "a divisor of d_model * expand = 64"),
    ("pose", "headdim", 0, "an integer in [1, 8192]"),
    ("pose", "d_state", 0, "an integer in [1, 8192]"),
])
def test_config_values_the_model_cannot_run_with_are_refused_at_load(tmp_path, kind, field, value, expected):
    """Config values were checked for their type only: exposure_lock=5.0 loaded and every step then raised an error
    naming neither the file nor the field, flow_window=0 failed in OpenCV at the second step, headdim=0 was a bare
    ZeroDivisionError, and eps=-1, ghost_res=-1, cut_corr=1e300 or blend_gain=1e30 were taken. Each field is
    range-checked at load now, the file, the field and the values it may take named."""
    from streamssm.pose.filter import load_pose_model
    from streamssm.video.filter import load_video_model

    path = _with_config(tmp_path, kind, **{field: value})
    load = load_video_model if kind == "video" else load_pose_model
    with pytest.raises(ValueError) as e:
        load(path)
    assert str(e.value).startswith(f"{path}: config field {field!r} is {value!r}, expected ")
    assert expected in str(e.value)


def test_the_shipped_weights_and_the_default_configs_are_in_range(tmp_path):
    """The range checks refuse nothing the package ships or trains by default."""
    from streamssm.pose.filter import load_pose_model
    from streamssm.pose.model import POSE_PRESETS, PoseSSMConfig
    from streamssm.video.filter import load_video_model
    from streamssm.video.model import VideoSSMConfig
    from streamssm.weights import build_config

    load_video_model()
    load_pose_model()
    build_config(VideoSSMConfig, VideoSSMConfig().to_dict(), "default")
    for preset in POSE_PRESETS:
        build_config(PoseSSMConfig, PoseSSMConfig.preset(preset).to_dict(), preset)
