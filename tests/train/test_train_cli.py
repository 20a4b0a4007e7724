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


def test_train_refuses_an_existing_output_unless_resume_or_overwrite(monkeypatch, tmp_path):
    """A previous checkpoint, or any file of the user's, is not replaced by a new run unless asked."""
    seen = []
    monkeypatch.setattr(tv, "train_video", lambda out, videos, cfg, **kw: seen.append(kw["resume"]))
    out = tmp_path / "v.safetensors"
    out.write_bytes(b"step 121 of a run")
    argv = ["train", "video", "-o", str(out), "--data", str(tmp_path)]
    assert cli.main(argv) == 2 and not seen
    assert out.read_bytes() == b"step 121 of a run"
    assert cli.main(argv + ["--resume"]) == 0 and cli.main(argv + ["--overwrite"]) == 0
    assert seen == [True, False]


@pytest.mark.parametrize(("args", "says"), [(["--batch", "0"], "--batch must be at least 1"),
                                            (["--steps", "-5"], "--steps must be at least 1"),
                                            (["--minutes", "-1"], "--minutes must be above 0"),
                                            (["--p-fade", "7"], "--p-fade must be in [0, 1]")])
def test_train_numbers_are_checked_before_any_work(monkeypatch, tmp_path, capsys, args, says):
    monkeypatch.setattr(tv, "train_video", lambda *a, **k: pytest.fail("trained despite a bad argument"))
    assert cli.main(["train", "video", "-o", str(tmp_path / "v.safetensors"), *args]) == 2
    assert says in capsys.readouterr().err


def test_pose_resume_of_a_finished_run_trains_nothing(tmp_path, shared_data):
    """Resuming a run already at --steps leaves it as it was (the step count used to grow by one each time), and
    the optimiser is saved beside the weights so a resumed run continues it."""
    from streamssm.weights import read_weights

    out = tmp_path / "p.safetensors"
    argv = ["train", "pose", "--tiny", "--steps", "3", "-o", str(out), "--data", str(shared_data), "--no-progress"]
    assert cli.main(argv) == 0
    assert read_weights(out, "pose")[2]["step"] == 3 and (tmp_path / "p.opt.pt").exists()
    before = out.read_bytes()
    assert cli.main(argv + ["--resume"]) == 0
    assert out.read_bytes() == before


def test_video_data_that_is_not_videos_is_named(tmp_path, capsys):
    """--data that does not exist, or an .npz that is not a cache of training videos (a pose file), is refused
    naming it, before any training (it used to fail with 'not enough values to unpack')."""
    import numpy as np

    pose = tmp_path / "pose.npz"
    np.savez(pose, points=np.zeros((5, 17, 2), np.float32))
    for data, says in [(tmp_path / "missing", "no such file or folder"), (pose, "not a cache of training videos")]:
        assert cli.main(["train", "video", "--tiny", "-o", str(tmp_path / "v.safetensors"), "--data", str(data)]) == 2
        err = capsys.readouterr().err
        assert str(data) in err and says in err
    assert not (tmp_path / "v.safetensors").exists()
