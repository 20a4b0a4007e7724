"""``streamssm train video`` options reach the training config (the training itself is not run here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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


@pytest.mark.parametrize(("model", "args", "says"), [("video", ["--batch", "0"], "--batch must be at least 1"),
                                                     ("video", ["--steps", "-5"], "--steps must be at least 1"),
                                                     ("video", ["--minutes", "-1"], "--minutes must be above 0"),
                                                     ("video", ["--p-fade", "7"], "--p-fade must be in [0, 1]"),
                                                     ("pose", ["--conf-mix", "0.5,0.6,0"],
                                                      "--conf-mix must be NONE,SCALED,NOISE"),
                                                     ("pose", ["--conf-mix", "0.5,x"],
                                                      "three shares >= 0 adding up to at most 1"),
                                                     ("pose", ["--p-flip", "2"], "--p-flip must be in [0, 1]")])
def test_train_numbers_are_checked_before_any_work(monkeypatch, tmp_path, capsys, model, args, says):
    import streamssm.train.pose as tp

    monkeypatch.setattr(tv, "train_video", lambda *a, **k: pytest.fail("trained despite a bad argument"))
    monkeypatch.setattr(tp, "train_pose", lambda *a, **k: pytest.fail("trained despite a bad argument"))
    assert cli.main(["train", model, "-o", str(tmp_path / "w.safetensors"), *args]) == 2
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


def _pose_data(tmp_path, shared_data, names, folder="mine"):
    """A pose data folder of one's own: some of the real CMU clips under other names."""
    d = tmp_path / folder
    d.mkdir()
    src = sorted((shared_data / "pose" / "cmu").glob("*.bvh.gz"))
    for name, f in zip(names, src):
        (d / name).write_bytes(f.read_bytes())
    return d


def test_pose_resume_is_the_uninterrupted_run(tmp_path, shared_data):
    """A run stopped by Ctrl-C (it saves after the step under way) and resumed gives the very weights of the run
    that was never stopped: the checkpoint holds the random streams (a resumed run used to draw new batches: +0.7%
    validation loss, weights 3.6% apart)."""
    import os
    import signal

    from streamssm.pose.model import PoseSSMConfig
    from streamssm.train.pose import PoseTrainConfig, train_pose
    from streamssm.weights import read_weights

    cfg = lambda: PoseTrainConfig(steps=6, batch=4, length=32, val_every=2)  # noqa: E731
    model = lambda: PoseSSMConfig.preset("tiny", backend="torch")  # noqa: E731
    whole, pieces = tmp_path / "whole.safetensors", tmp_path / "pieces.safetensors"
    train_pose(whole, cfg(), model(), data_dir=shared_data, progress=False, log=lambda m: None)

    def ctrl_c(msg):
        if msg.startswith("step 2:"):
            os.kill(os.getpid(), signal.SIGINT)  # during step 2's validation: it stops when the step is done

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (CI may ignore SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            train_pose(pieces, cfg(), model(), data_dir=shared_data, progress=False, log=ctrl_c)
    finally:
        signal.signal(signal.SIGINT, before)
    assert read_weights(pieces, "pose")[2]["step"] == 2
    train_pose(pieces, cfg(), model(), resume=pieces, data_dir=shared_data, progress=False, log=lambda m: None)
    a, b = read_weights(whole, "pose")[1], read_weights(pieces, "pose")[1]
    assert read_weights(pieces, "pose")[2]["step"] == 6
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_pose_data_of_ones_own_and_its_validation_split(tmp_path, shared_data, capsys):
    """Clips not named after CMU's held-out subjects: the last subject is held out (said), or --val-subjects picks;
    one subject alone is refused naming the folder and the naming rule; output folders are made."""
    d = _pose_data(tmp_path, shared_data, ["walk_01.bvh.gz", "walk_02.bvh.gz", "run_01.bvh.gz"])
    out = tmp_path / "new" / "sub" / "p.safetensors"  # a folder that does not exist yet
    assert cli.main(["train", "pose", "--tiny", "--steps", "2", "--data", str(d), "-o", str(out), "--no-progress"]) == 0
    assert out.exists() and out.with_suffix(".opt.pt").exists()
    assert "validation on subject walk" in capsys.readouterr().out
    out2 = tmp_path / "p2.safetensors"
    argv = ["train", "pose", "--tiny", "--steps", "2", "--data", str(d), "-o", str(out2), "--no-progress"]
    assert cli.main(argv + ["--val-subjects", "run"]) == 0
    assert cli.main(argv + ["--val-subjects", "jump", "--overwrite"]) == 2
    assert "--val-subjects jump: no clip of the data is named so" in capsys.readouterr().err
    one = _pose_data(tmp_path, shared_data, ["walk_01.bvh.gz"], folder="one")
    assert cli.main(["train", "pose", "--tiny", "--data", str(one), "-o", str(tmp_path / "p3.safetensors")]) == 2
    err = capsys.readouterr().err
    assert str(one) in err and "at least two subjects" in err


@pytest.mark.parametrize(("args", "says"), [
    (["video", "--speed", "1,2"], "--speed: for `streamssm train pose`, not video"),
    (["video", "--preset", "base"], "--preset: for `streamssm train pose`"),
    (["pose", "--p-fade", "0.2", "--workers", "2"], "--workers, --p-fade: for `streamssm train video`, not pose"),
    (["pose", "--seed", "-1"], "--seed must be at least 0"),
    (["pose", "--lr", "1e38"], "--lr must be in (0, 1]"),
    (["pose", "--speed", "1"], "--speed must be MIN,MAX"),
    (["pose", "--init", "nowhere.safetensors"], "--init nowhere.safetensors: no such weights file"),
    (["video", "--device", "foo"], "device must be 'auto', 'cpu' or 'cuda[:N]'"),
])
def test_train_options_are_checked_naming_them(tmp_path, capsys, args, says):
    """An option for the other model is refused, not silently ignored; numbers and devices are checked with a
    message (--device foo was a RuntimeError traceback for video), exit 2."""
    assert cli.main(["train", *args[:1], "--tiny", "-o", str(tmp_path / "w.safetensors"), *args[1:],
                     "--data", str(tmp_path), "--no-progress"]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "w.safetensors").exists()


def test_overwrite_never_replaces_a_training_input(tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"my footage")
    assert cli.main(["train", "video", "--tiny", "--data", str(tmp_path), "-o", str(clip), "--overwrite"]) == 2
    assert "would write over the training input" in capsys.readouterr().err and clip.read_bytes() == b"my footage"


def test_pose_refuses_torchrun(monkeypatch, tmp_path, shared_data, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["train", "pose", "--tiny", "--data", str(shared_data), "-o", str(tmp_path / "p.safetensors"),
                     "--no-progress"]) == 2
    assert "pose training runs in one process" in capsys.readouterr().err


def test_a_diverged_run_stops_and_keeps_its_checkpoint(tmp_path, shared_data, capsys):
    """A non-finite weight (or loss) stops training with a one-line message before any save: nothing NaN is saved
    over the checkpoint (an all-NaN pose model scored a perfect 0 loss and was saved); the message says what is
    kept."""
    from streamssm.train._checkpoint import Diverged, check_finite, finite

    m = torch.nn.Linear(2, 2)
    assert bool(finite(m, torch.tensor(1.0)))
    assert not bool(finite(m, torch.tensor(float("nan"))))
    with torch.no_grad():
        m.weight[0, 0] = float("inf")
    with pytest.raises(Diverged, match="diverged at step 7 .* keeps this run's checkpoint of step 5"):
        check_finite(finite(m, torch.tensor(1.0)), 7, tmp_path / "w.safetensors", 5)
    out = tmp_path / "p.safetensors"
    argv = ["train", "pose", "--tiny", "--data", str(shared_data), "-o", str(out), "--no-progress"]
    assert cli.main(argv + ["--steps", "2"]) == 0
    before = out.read_bytes()
    assert cli.main(argv + ["--steps", "30", "--resume", "--lr", "1", "--w-pos", "1e38"]) == 2
    err = capsys.readouterr().err
    assert "training diverged at step" in err and "Traceback" not in err
    assert out.read_bytes() == before or "keeps this run's checkpoint" in err


def test_stop_request_waits_for_the_step_and_a_second_ctrl_c_does_not():
    import os
    import signal

    from streamssm.train._checkpoint import StopRequest

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (CI may ignore SIGINT)
    try:
        with StopRequest() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.requested == "SIGTERM"
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)  # a second signal: Ctrl-C now stops at once
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with StopRequest():  # a SIGINT ignored by whoever started the process stays ignored
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_video_init_undoes_the_finishing_exactly(tmp_path):
    """--init starts from the shipped weights as training left them: finishing them again gives the shipped file
    back (the calibration and processed-only records are what it undoes)."""
    from streamssm.train.video import calibrate_blend, finish_processed_only, undo_finishing
    from streamssm.video.filter import DEFAULT_WEIGHTS
    from streamssm.weights import read_weights, save_weights

    shipped_conf, shipped, extra = read_weights(DEFAULT_WEIGHTS, "video")
    model, conf = undo_finishing(DEFAULT_WEIGHTS)
    raw = save_weights(tmp_path / "raw.safetensors", model, "video", conf, {})
    cal = extra["calibration"]
    again = calibrate_blend(raw, tmp_path / "c.safetensors", cal["conf_shift"], cal["gain"], cal["still_px"])
    po = extra["processed_only"]
    again = finish_processed_only(again, tmp_path / "f.safetensors", po["correction"], po["gate_width"])
    conf2, tensors2, _ = read_weights(again, "video")
    assert conf2 == shipped_conf
    for k, v in shipped.items():
        assert torch.allclose(tensors2[k], v, atol=1e-6), k
    model3, conf3 = undo_finishing(again)  # and undone once more: the trained model, still_px included
    assert conf3 == conf and all(torch.allclose(a, b, atol=1e-6) for a, b in
                                 zip(model3.state_dict().values(), model.state_dict().values()))


def test_training_videos_of_one_stem_both_count_and_a_bad_one_is_left_out(tmp_path, caplog):
    from streamssm.train.video import load_training_videos
    from tests._media import make_clip

    make_clip(tmp_path / "clip.mp4", n=4)
    make_clip(tmp_path / "clip.mov", n=5)
    (tmp_path / "notes.mp4").write_text("not a video")
    with caplog.at_level("WARNING"):
        vids = load_training_videos(tmp_path, short_side=32)
    assert sorted(vids) == ["clip.mov", "clip.mp4"] and len(vids["clip.mov"]) == 5
    assert "notes.mp4" in caplog.text
    (tmp_path / "clip.mp4").unlink()
    (tmp_path / "clip.mov").unlink()
    with pytest.raises(OSError, match="no training video decodes: .*notes.mp4"):
        load_training_videos(tmp_path, short_side=32)


def test_a_resume_with_other_settings_says_which(tmp_path, shared_data, capsys):
    out = tmp_path / "p.safetensors"
    argv = ["train", "pose", "--tiny", "--data", str(shared_data), "-o", str(out), "--no-progress"]
    assert cli.main(argv + ["--steps", "2"]) == 0
    assert cli.main(argv + ["--steps", "4", "--resume", "--lr", "1e-3", "--save-every", "1"]) == 0
    said = capsys.readouterr().out
    assert "other settings than it was trained with: lr 0.005 -> 0.001" in said and "steps" not in said.split(
        "trained with:")[1].splitlines()[0]


def test_video_max_frames_reaches_the_loader(monkeypatch, tmp_path, capsys):
    seen = {}
    monkeypatch.setattr(tv, "train_video", lambda out, videos, cfg, **kw: seen.update(cfg=cfg))
    assert cli.main(["train", "video", "-o", str(tmp_path / "v.safetensors"), "--data", str(tmp_path),
                     "--max-frames", "40"]) == 0
    assert seen["cfg"].max_frames == 40
    assert cli.main(["train", "pose", "-o", str(tmp_path / "p.safetensors"), "--max-frames", "40"]) == 2
    assert "--max-frames: for `streamssm train video`" in capsys.readouterr().err


def test_video_frame_cache_reaches_the_loader_and_is_checked(monkeypatch, tmp_path, capsys):
    seen = {}
    monkeypatch.setattr(tv, "train_video", lambda out, videos, cfg, **kw: seen.update(cfg=cfg))
    argv = ["train", "video", "-o", str(tmp_path / "v.safetensors"), "--data", str(tmp_path)]
    assert cli.main(argv + ["--frame-cache", str(tmp_path / "frames")]) == 0
    assert seen["cfg"].frame_cache == str(tmp_path / "frames")
    (tmp_path / "notes.txt").write_text("mine")
    seen.clear()
    assert cli.main(argv + ["--frame-cache", str(tmp_path / "notes.txt")]) == 2 and not seen
    assert "--frame-cache" in capsys.readouterr().err and (tmp_path / "notes.txt").read_text() == "mine"
    assert cli.main(argv + ["--frame-cache", str(tmp_path / "notes.txt" / "sub")]) == 2 and not seen
    assert "is a file, not a folder" in capsys.readouterr().err


def test_video_training_reads_its_frames_from_the_cache(tmp_path):
    """A tiny run with --frame-cache decodes each video once into the folder; its resume reuses the files."""
    from tests._media import make_clip

    data = tmp_path / "videos"
    data.mkdir()
    make_clip(data / "clip.mp4", n=8, size=(160, 128))
    frames = tmp_path / "frames"
    argv = ["train", "video", "--tiny", "--data", str(data), "-o", str(tmp_path / "v.safetensors"), "--no-progress",
            "--frame-cache", str(frames)]
    assert cli.main(argv + ["--steps", "1"]) == 0
    (npy,) = frames.glob("*.npy")
    made = npy.stat().st_mtime_ns
    assert cli.main(argv + ["--steps", "2", "--resume"]) == 0
    assert [f.name for f in frames.glob("*.npy")] == [npy.name] and npy.stat().st_mtime_ns == made
    assert np.load(npy).shape[0] == 8


def test_video_resume_is_the_uninterrupted_run(tmp_path):
    """Video training stopped (its --minutes ran out after step 1) and resumed, with another number of data-loader
    workers, gives the very weights of the run never stopped: step k's clips and coin flips come from k alone (a
    resumed run used to draw new ones: weights 6e-4 apart)."""
    from streamssm.data.video_clips import load_videos
    from streamssm.train.video import VideoTrainConfig, train_video
    from streamssm.weights import read_weights
    from tests._media import make_clip

    vids = load_videos([make_clip(tmp_path / "clip.mp4", n=10, size=(160, 128))], short_side=96)
    cfg = lambda **kw: VideoTrainConfig(**{**dict(steps=4, batch=2, length=5, sizes=(64,), workers=0,  # noqa: E731
                                                  save_every=100, p_unguided=0.5, p_no_blend=0.5), **kw})
    whole, pieces = tmp_path / "whole.safetensors", tmp_path / "pieces.safetensors"
    quiet = dict(progress=False, log=lambda m: None, device="cpu")
    train_video(whole, vids, cfg(), resume=False, **quiet)
    train_video(pieces, vids, cfg(minutes=1e-6), resume=False, **quiet)
    assert read_weights(pieces, "video")[2]["step"] == 1
    train_video(pieces, vids, cfg(workers=2), resume=True, **quiet)
    (_, a, ea), (_, b, eb) = read_weights(whole, "video"), read_weights(pieces, "video")
    assert ea["step"] == eb["step"] == 4
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_video_training_error_with_loader_workers_exits(tmp_path):
    """An error in training with data-loader workers ends the process: the workers ignore SIGTERM (a stop is the
    trainer's), so Python's exit used to wait on them forever after the traceback."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "boom.py"
    script.write_text(f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from streamssm.data.video_clips import load_videos
from streamssm.train.video import VideoTrainConfig, train_video
from tests._media import make_clip

vids = load_videos([make_clip({str(tmp_path / 'clip.mp4')!r}, n=10, size=(160, 128))], short_side=96)

def log(m):
    if m.startswith("step 2"):
        raise RuntimeError("boom at the checkpoint")

cfg = VideoTrainConfig(steps=4, batch=2, length=5, sizes=(64,), workers=2, save_every=2)
train_video({str(tmp_path / 'v.safetensors')!r}, vids, cfg, resume=False, progress=False, log=log, device="cpu")
""")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "boom at the checkpoint" in r.stderr, r.stderr[-2000:]


def _clip(tmp_path):
    from tests._media import make_clip

    return make_clip(tmp_path / "clip.mp4", n=10, size=(160, 128))


def test_video_resume_of_a_fine_tuned_run(tmp_path, capsys):
    """A run started with --init (the shipped weights: guided correction off) resumes with --resume alone: the
    checkpoint's model config is the run's (it was refused: 'guided_correction: file False, this run True')."""
    from streamssm.video.filter import DEFAULT_WEIGHTS
    from streamssm.weights import read_weights

    out = tmp_path / "ft.safetensors"
    argv = ["train", "video", "--tiny", "--data", str(_clip(tmp_path)), "-o", str(out), "--no-progress"]
    assert cli.main(argv + ["--steps", "1", "--init", str(DEFAULT_WEIGHTS)]) == 0
    conf = read_weights(out, "video")[0]
    assert conf["guided_correction"] is False
    assert cli.main(argv + ["--steps", "2", "--resume"]) == 0, capsys.readouterr().err
    assert "resumed" in capsys.readouterr().out
    conf2, _, extra = read_weights(out, "video")
    assert extra["step"] == 2 and conf2 == conf


def test_video_resume_with_another_process_count_warns(tmp_path, capsys):
    """The checkpoint records how many processes trained it; a resume by another number (a 2-process torchrun run
    resumed in one process) says both counts: it draws other batches from there on."""
    from streamssm.video.model import VideoSSM, VideoSSMConfig
    from streamssm.weights import load_into, read_weights, save_weights

    out = tmp_path / "v.safetensors"
    argv = ["train", "video", "--tiny", "--data", str(_clip(tmp_path)), "-o", str(out), "--no-progress"]
    assert cli.main(argv + ["--steps", "1"]) == 0
    conf, tensors, extra = read_weights(out, "video")
    assert extra["processes"] == 1
    assert cli.main(argv + ["--steps", "2", "--resume"]) == 0
    assert "process" not in capsys.readouterr().out  # the same count: nothing to say
    model = VideoSSM(VideoSSMConfig(**conf))
    load_into(model, read_weights(out, "video")[1], out)
    save_weights(out, model, "video", conf, {**read_weights(out, "video")[2], "processes": 2})  # as torchrun's rank 0
    assert cli.main(argv + ["--steps", "3", "--resume"]) == 0
    said = capsys.readouterr().out
    assert "trained by 2 processes, resumed by 1" in said and "--nproc_per_node=2" in said, said


@pytest.mark.parametrize("what", ["junk", "truncated", "not-a-state", "another-size"])
def test_a_bad_optimiser_file_is_refused_naming_it(tmp_path, what):
    """Junk, a truncated file, something else saved there, or the state of a model of another size beside the
    weights: one ValueError naming the .opt.pt and saying to delete it, before any step (a raw KeyError or
    RuntimeError from torch.load, or from Adam at its first step, before)."""
    from streamssm.train._checkpoint import load_optimizer, optimizer_path, save_optimizer

    weights = tmp_path / "w.safetensors"
    path = optimizer_path(weights)
    small = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(small.parameters())
    small(torch.ones(1, 3)).sum().backward()
    opt.step()
    if what == "junk":
        path.write_bytes(b"garbage\n")
    elif what == "truncated":
        save_optimizer(weights, opt, 5)
        path.write_bytes(path.read_bytes()[:300])
    elif what == "not-a-state":
        torch.save({"step": 5, "optimizer": [1, 2, 3]}, path)
    else:
        big = torch.nn.Linear(5, 4)  # as many parameters, of other shapes: load_state_dict alone takes it
        big_opt = torch.optim.AdamW(big.parameters())
        big(torch.ones(1, 5)).sum().backward()
        big_opt.step()
        save_optimizer(weights, big_opt, 5)
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters())
    with pytest.raises(ValueError, match=f"{path.name}.*delete it") as e:
        load_optimizer(weights, fresh, 5, None)
    assert str(path) in str(e.value)
    if what == "another-size":
        assert "another size" in str(e.value)


def test_train_pose_with_a_junk_optimiser_file_says_so(tmp_path, shared_data, capsys):
    out = tmp_path / "p.safetensors"
    argv = ["train", "pose", "--tiny", "--data", str(shared_data), "-o", str(out), "--no-progress"]
    assert cli.main(argv + ["--steps", "2"]) == 0
    before = out.read_bytes()
    (tmp_path / "p.opt.pt").write_bytes(b"garbage\n")
    assert cli.main(argv + ["--steps", "4", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "p.opt.pt: not a readable optimiser state" in err and "delete it" in err and "Traceback" not in err
    assert out.read_bytes() == before


def test_pose_resume_with_its_time_budget_spent_trains_nothing(tmp_path, shared_data, capsys):
    """--minutes is the whole run's: a resume whose earlier pieces spent it stops at once, saying so, and leaves the
    checkpoint as it was (it trained one step and rewrote the file)."""
    from streamssm.weights import read_weights

    out = tmp_path / "p.safetensors"
    argv = ["train", "pose", "--tiny", "--data", str(shared_data), "-o", str(out), "--no-progress"]
    assert cli.main(argv + ["--steps", "2"]) == 0
    opt_file = tmp_path / "p.opt.pt"
    saved = torch.load(opt_file, weights_only=True)
    torch.save({**saved, "elapsed": 120.0}, opt_file)  # the earlier pieces trained 2 minutes
    before = out.read_bytes()
    assert cli.main(argv + ["--steps", "20", "--minutes", "1", "--resume"]) == 0
    said = capsys.readouterr().out
    assert "the whole --minutes 1 budget: nothing to train" in said, said
    assert out.read_bytes() == before and read_weights(out, "pose")[2]["step"] == 2


@pytest.mark.parametrize("finish", ["calibrate_blend", "finish_processed_only", "without_guided_correction"])
def test_finishing_steps_refuse_to_write_over_their_input(tmp_path, finish):
    """calibrate_blend(src, src) and its sibling finishing steps refuse, as every other writer does, instead of
    replacing the weights they read (through a link to them too)."""
    import shutil

    import streamssm.train.video as tv
    from streamssm.video.filter import DEFAULT_WEIGHTS

    src = tmp_path / "w.safetensors"
    shutil.copyfile(DEFAULT_WEIGHTS, src)
    if finish == "calibrate_blend":  # the shipped file is calibrated already: a raw one to calibrate
        model, conf = tv.undo_finishing(src)
        from streamssm.weights import save_weights

        save_weights(src, model, "video", conf, {})
    (tmp_path / "link.safetensors").symlink_to(src)
    before = src.read_bytes()
    for out in (src, tmp_path / "link.safetensors"):
        with pytest.raises(ValueError, match="is the input weights file"):
            getattr(tv, finish)(src, out)
    assert src.read_bytes() == before
