"""`streamssm train video` runs unchanged under torchrun: 2 CPU processes (gloo), a few steps, then resume."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from streamssm.weights import read_weights


@pytest.mark.slow
def test_train_video_two_process_gloo_and_resume(tmp_path, shared_data):
    if shutil.which("torchrun") is None and subprocess.run([sys.executable, "-c", "import torch.distributed.run"]).returncode:
        pytest.skip("torch.distributed.run is not available in this torch build")
    clip = shared_data / "videos" / "edgetam_21_biker.mp4"
    out = tmp_path / "video.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           "-m", "streamssm.cli", "train", "video", "--tiny", "--steps", "4", "--data", str(clip),
           "-o", str(out), "--device", "cpu", "--no-progress",
           "--p-no-blend", "0.5"]  # steps 1 and 2 train without the blend: its parameters get no gradient there
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    _, tensors, extra = read_weights(out, "video")
    assert extra["step"] == 4
    assert (tmp_path / "video.opt.pt").exists()
    # resume: continues from step 4 to 6
    cmd[cmd.index("4")] = "6"
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "resumed" in r.stdout + r.stderr
    assert read_weights(out, "video")[2]["step"] == 6
    assert read_weights(out, "video")[2]["processes"] == 2  # recorded: a resume by another count is said
    # resumed in one process: allowed, but no longer the run that was started, and said with both counts
    one = cmd[cmd.index("-m", cmd.index("--master_port=29517")):]
    one[one.index("6")] = "7"
    r = subprocess.run([sys.executable, *one, "--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "trained by 2 processes, resumed by 1" in r.stdout + r.stderr
    assert read_weights(out, "video")[2]["step"] == 7


@pytest.mark.slow
def test_train_video_two_process_time_budget_stops_every_rank(tmp_path, shared_data):
    """With --minutes each rank reads its own clock: they must agree on the step to stop at, or the rank still
    training waits forever in the next gradient all-reduce for the one that left (it hung 4 times in 4)."""
    clip = shared_data / "videos" / "edgetam_21_biker.mp4"
    out = tmp_path / "video.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29519",
           "-m", "streamssm.cli", "train", "video", "--tiny", "--steps", "100000", "--minutes", "0.05",
           "--data", str(clip), "-o", str(out), "--device", "cpu", "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "time budget of 0.05 min reached" in r.stdout + r.stderr
    step = read_weights(out, "video")[2]["step"]
    assert 0 < step < 100000
