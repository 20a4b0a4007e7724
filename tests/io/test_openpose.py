"""OpenPose output folders (per-frame ``*_keypoints.json``): read one person, filter, write the folder back."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamssm.io.openpose import BODY_25
from streamssm.io.pose_files import read_pose

T, K = 60, 25


def _track(seed: int, offset) -> np.ndarray:
    """(T, K, 2) a jittered body moving right, in pixels."""
    rng = np.random.default_rng(seed)
    body = rng.uniform(0, 200, (K, 2))
    path = np.linspace(0, 120, T)[:, None, None] * [1, 0]
    return body + path + np.asarray(offset, float) + rng.normal(0, 3, (T, K, 2))


def _people(a: np.ndarray, conf: np.ndarray, **extra) -> dict:
    return {"person_id": [-1], "pose_keypoints_2d": np.column_stack([a, conf]).ravel().tolist(), **extra}


@pytest.fixture
def openpose(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A folder like OpenPose's --write_json: person A all along (its feet undetected: 0, 0, 0), nobody in frames 10
    and 11, and from frame 30 a second, more confident person B listed first (OpenPose keeps no identities)."""
    a, b = _track(0, (100, 100)), _track(1, (700, 120))
    rng = np.random.default_rng(2)
    folder = tmp_path / "op"
    folder.mkdir()
    for t in range(T):
        people = []
        if t not in (10, 11):
            conf = rng.uniform(0.3, 0.9, K)
            pts = a[t].copy()
            pts[19:], conf[19:] = 0, 0
            people.append(_people(pts, conf, face_keypoints_2d=[]))
        if t >= 30:
            people.insert(0, _people(b[t], np.full(K, 0.95)))
        doc = {"version": 1.3, "people": people}
        (folder / f"clip_{t:012d}_keypoints.json").write_text(json.dumps(doc))
    return folder, a, b


def _cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamssm.cli", "pose", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_reader_follows_one_person_through_gaps_and_newcomers(openpose):
    folder, a, _ = openpose
    d = read_pose(folder)
    assert d.points.shape == (T, K, 2) and d.meta["joint_names"] == list(BODY_25)
    assert np.isnan(d.points[[10, 11]]).all() and (d.confidence[[10, 11]] == 0).all()  # nobody: missing
    assert np.isnan(d.points[:, 19:]).all()  # undetected keypoints (0, 0, 0) are missing, not points at the origin
    # person A throughout, though B is more confident and listed first from frame 30
    np.testing.assert_allclose(d.points[:, :19][~np.isnan(d.points[:, :19, 0])],
                               a[:, :19][~np.isnan(d.points[:, :19, 0])], atol=1e-3)
    assert d.meta["chosen"][29] == 0 and d.meta["chosen"][30] == 1
    # everyone is followed: A's track (the main one) and B's from frame 30, each on its own
    a_track, b_track = d.meta["tracks"][d.meta["main"]], d.meta["tracks"][1 - d.meta["main"]]
    assert len(d.meta["tracks"]) == 2 and a_track == d.meta["chosen"]
    assert a_track[10:12] == [-1, -1] and b_track[:30] == [-1] * 30 and b_track[30:] == [0] * 30


def test_cli_writes_the_folder_back_with_everyone_filtered(openpose, tmp_path):
    """Folder to folder: every person followed is filtered as a stream of its own (A throughout, B from frame 30,
    each smoother, each with its confidences and undetected keypoints as they were), all else in the files kept."""
    folder, a, _ = openpose
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    out = tmp_path / "smoothed"
    r = _cli(folder, "-o", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "60 frames, 25 keypoints, 2-D" in r.stdout and "2 people followed" in r.stdout
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before, "the input folder was modified"
    assert sorted(p.name for p in out.iterdir()) == sorted(before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["op", "smoothed"], "a temporary folder was left"
    tracks = {"A": ([], []), "B": ([], [])}
    for t in range(T):
        src = json.loads((folder / f"clip_{t:012d}_keypoints.json").read_text())
        got = json.loads((out / f"clip_{t:012d}_keypoints.json").read_text())
        assert len(got["people"]) == len(src["people"]) and got["version"] == 1.3
        for i, (p, q) in enumerate(zip(src["people"], got["people"])):
            who = "B" if t >= 30 and i == 0 else "A"
            assert set(q) == set(p)  # face_keypoints_2d and the rest kept
            p, q = np.reshape(p["pose_keypoints_2d"], (K, 3)), np.reshape(q["pose_keypoints_2d"], (K, 3))
            np.testing.assert_array_equal(q[:, 2], p[:, 2])  # confidences kept
            if who == "A":
                np.testing.assert_array_equal(q[19:], 0)  # undetected stays 0, 0, 0
            tracks[who][0].append(p[:19, :2])
            tracks[who][1].append(q[:19, :2])
    acc = lambda x: np.abs(np.diff(np.asarray(x), 2, axis=0)).mean()  # noqa: E731
    for who, (raw, smooth) in tracks.items():
        assert acc(smooth) < 0.7 * acc(raw), f"person {who} was not smoothed"

    again = _cli(folder, "-o", out, cwd=tmp_path)
    assert again.returncode == 2 and "already exists; pass --overwrite" in again.stderr
    mark = out / "clip_000000000000_keypoints.json"
    mark.write_text("{}")
    assert _cli(folder, "-o", out, "--overwrite", cwd=tmp_path).returncode == 0
    assert json.loads(mark.read_text())["people"], "--overwrite did not replace the folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["op", "smoothed"]


def test_cli_converts_openpose_to_csv_with_joint_names(openpose, tmp_path):
    folder, _, _ = openpose
    r = _cli(folder, "-o", tmp_path / "o.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = read_pose(tmp_path / "o.csv")
    assert d.points.shape == (T, K, 2) and d.meta["joint_names"] == list(BODY_25)
    assert d.meta["frame_numbers"] == list(range(T))
    assert np.isnan(d.points[10:12]).all()


def test_hand_keypoints_by_key(tmp_path):
    folder = tmp_path / "op"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for t in range(8):
        hand = np.column_stack([rng.uniform(0, 50, (21, 2)), np.ones(21)]).ravel().tolist()
        person = {"pose_keypoints_2d": [0.0] * 75, "hand_right_keypoints_2d": hand}
        (folder / f"x_{t:012d}_keypoints.json").write_text(json.dumps({"people": [person]}))
    d = read_pose(folder, key="hand_right_keypoints_2d")
    assert d.points.shape == (8, 21, 2) and "joint_names" not in d.meta


def test_a_frame_without_the_person_is_missing_not_a_switch(tmp_path):
    """Person A is missed in frame 5 while B is there: frame 5 is missing and A is followed again after it (the
    nearest person without a bound took B for good)."""
    a, b = _track(0, (100, 100)), _track(1, (700, 120))
    folder = tmp_path / "op"
    folder.mkdir()
    for t in range(12):
        people = [_people(b[t], np.full(K, 0.6))] + ([] if t == 5 else [_people(a[t], np.full(K, 0.9))])
        (folder / f"c_{t:012d}_keypoints.json").write_text(json.dumps({"people": people}))
    d = read_pose(folder)
    assert np.isnan(d.points[5]).all()
    np.testing.assert_allclose(d.points[[4, 6, 11]], a[[4, 6, 11]], atol=1e-3)


@pytest.mark.parametrize("bad", [[[1, 2, 1]] * 25, [{"x": 1}] * 75, ["a"] * 75, [10 ** 400] * 75])
def test_odd_keypoint_lists_are_named(tmp_path, bad):
    folder = tmp_path / "op"
    folder.mkdir()
    (folder / "c_000000000000_keypoints.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": bad}]}))
    with pytest.raises(ValueError, match="c_000000000000_keypoints.json: expected 'pose_keypoints_2d' as a flat list"):
        read_pose(folder)


def test_output_folder_is_replaced_only_when_it_is_openpose_output(openpose, tmp_path):
    folder, _, _ = openpose
    (tmp_path / "notes.txt").write_text("mine")
    r = _cli(folder, "-o", tmp_path, "--overwrite", cwd=tmp_path)  # the folder holding the input
    assert r.returncode == 2 and "holds or lies inside the input" in r.stderr, r.stderr
    r = _cli(folder, "-o", folder / "sub", cwd=tmp_path)
    assert r.returncode == 2 and "holds or lies inside the input" in r.stderr, r.stderr
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    r = _cli(folder, "-o", other, "--overwrite", cwd=tmp_path)
    assert r.returncode == 2 and "not this clip's OpenPose frames (keep.txt)" in r.stderr, r.stderr
    raw = tmp_path / "another_clip"  # raw OpenPose output of another clip: not an earlier output of this one
    raw.mkdir()
    (raw / "other_000000000000_keypoints.json").write_text("{}")
    r = _cli(folder, "-o", raw, "--overwrite", cwd=tmp_path)
    assert r.returncode == 2 and "other_000000000000_keypoints.json" in r.stderr, r.stderr
    assert (other / "keep.txt").read_text() == "mine" and (tmp_path / "notes.txt").read_text() == "mine"
    assert len(list(folder.iterdir())) == T


def test_nulls_and_missing_hands_do_not_split_people(tmp_path):
    """A ``null`` coordinate with a positive confidence is not seen (it made the distance NaN and started a new track
    every time: 14 tracks for 2 people); a person whose hand array is ``[]`` or all undetected is still one person,
    followed by the body (one track a frame, 5333 tracks, for 8 people over 2000 frames)."""
    a, b = _track(0, (100, 100)), _track(1, (700, 120))
    folder = tmp_path / "op"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for t in range(40):
        people = []
        for who, pts in (("a", a[t]), ("b", b[t])):
            body = np.column_stack([pts, np.full(K, 0.9)]).ravel().tolist()
            if t % 5 == 0 and who == "a":
                body[0] = body[1] = None  # the nose's x, y null, its confidence 0.9
            hand = [] if (who == "b" and t % 2) else np.column_stack(
                [pts[4] + rng.normal(0, 5, (21, 2)), np.full(21, 0.0 if t % 3 == 0 else 0.7)]).ravel().tolist()
            people.append({"pose_keypoints_2d": body, "hand_left_keypoints_2d": hand})
        (folder / f"c_{t:012d}_keypoints.json").write_text(json.dumps({"people": people}))
    assert len(read_pose(folder).meta["tracks"]) == 2
    hands = read_pose(folder, key="hand_left_keypoints_2d")
    assert len(hands.meta["tracks"]) == 2 and hands.points.shape == (40, 21, 2)
    out = tmp_path / "out"
    r = _cli(folder, "-o", out, "--key", "hand_left_keypoints_2d", cwd=tmp_path)
    assert r.returncode == 0 and "2 people followed" in r.stdout, r.stderr
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # not mkdtemp's 0700
    for t in range(40):
        src = json.loads((folder / f"c_{t:012d}_keypoints.json").read_text())
        got = json.loads((out / f"c_{t:012d}_keypoints.json").read_text())
        if t % 2:
            assert got["people"][1]["hand_left_keypoints_2d"] == []  # [] stays []
        assert got["people"][0]["pose_keypoints_2d"] == src["people"][0]["pose_keypoints_2d"]  # not the key's


def _umask() -> int:
    import os

    m = os.umask(0)
    os.umask(m)
    return m


def test_output_folder_name_may_hold_a_dot(openpose, tmp_path):
    """From an OpenPose folder, any output name not ending in .npz/.csv/.json is a folder: ``-o out_v1.2`` used to be
    refused with "unknown output extension '.2'" (and ``write_pose`` refused it alike)."""
    folder, _, _ = openpose
    r = _cli(folder, "-o", "out_v1.2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out_v1.2").iterdir()) == sorted(p.name for p in folder.iterdir())
    from streamssm.io.pose_files import write_pose

    assert write_pose(tmp_path / "again.v2", read_pose(folder)).is_dir()
    r = _cli(folder, "-o", "out.CSV", cwd=tmp_path)  # a pose file extension, any case, is still a file
    assert r.returncode == 0 and (tmp_path / "out.CSV").is_file(), r.stderr
