"""``streamssm train video`` options reach the training config (the training itself is not run here)."""

from __future__ import annotations

import pytest

import streamssm.train.video as tv
from streamssm import cli


@pytest.mark.parametrize(("extra", "workers"), [([], 8), (["--tiny"], 0), (["--tiny", "--workers", "2"], 2),
                                                (["--workers", "3"], 3)])
def test_video_workers_option(monkeypatch, tmp_path, extra, workers):
    """``--workers`` applies with or without ``--tiny`` (``--tiny`` used to force 0 whatever was asked)."""
    seen = {}
    monkeypatch.setattr(tv, "train_video", lambda out, videos, cfg, **kw: seen.update(cfg=cfg))
    assert cli.main(["train", "video", "-o", str(tmp_path / "v.safetensors"), "--data", str(tmp_path), *extra]) == 0
    assert seen["cfg"].workers == workers
    assert (seen["cfg"].batch == 2) == ("--tiny" in extra)  # the tiny preset's other settings still hold
