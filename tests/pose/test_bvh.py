"""BVH parsing, forward kinematics and keypoint selection."""
from pathlib import Path

import numpy as np
import pytest

from streamssm.pose.bvh import (
    BODY17, bone_lengths, forward_kinematics, joint_table, keypoint_names, keypoint_parents, load_bvh,
    mirror_permutation, parse_bvh, select_keypoints,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
ATOL = 1e-9


@pytest.fixture(scope="module")
def pose_dir():
    d = DATA / "pose"
    if not (d / "cmu").is_dir():
        pytest.skip(f"shared data not found at {d} (expected ../shared/data next to the repo)")
    return d


def _bvh(order_root="Zrotation Yrotation Xrotation", order_child="Zrotation Xrotation Yrotation", frames="0 0 0 0 0 0 0 0 0"):
    return f"""HIERARCHY
ROOT hips
{{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition {order_root}
  JOINT arm
  {{
    OFFSET 1 0 0
    CHANNELS 3 {order_child}
    End Site
    {{
      OFFSET 0 2 0
    }}
  }}
}}
MOTION
Frames: {len(frames.splitlines())}
Frame Time: 0.04
{frames}
"""


def _rot(axis, deg):
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return {"X": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "Y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "Z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def test_fk_matches_explicit_matrices_and_channel_order():
    angles_root, angles_child = (30.0, -20.0, 50.0), (10.0, 70.0, -40.0)
    line = " ".join(map(str, (1.0, 2.0, 3.0) + angles_root + angles_child))
    clip = parse_bvh(_bvh(frames=line))
    assert clip.names == ["hips", "arm", "arm_End"] and clip.fps == pytest.approx(25.0)
    pos = forward_kinematics(clip, end_sites=True)[0]
    r_root = _rot("Z", 30) @ _rot("Y", -20) @ _rot("X", 50)
    r_child = _rot("Z", 10) @ _rot("X", 70) @ _rot("Y", -40)
    root = np.array([1.0, 2.0, 3.0])
    arm = root + r_root @ [1, 0, 0]
    end = arm + r_root @ r_child @ [0, 2, 0]
    np.testing.assert_allclose(pos, [root, arm, end], atol=ATOL)
    # another channel order gives the matching product
    clip2 = parse_bvh(_bvh(order_child="Xrotation Yrotation Zrotation", frames=line))
    end2 = arm + r_root @ (_rot("X", 10) @ _rot("Y", 70) @ _rot("Z", -40)) @ [0, 2, 0]
    np.testing.assert_allclose(forward_kinematics(clip2, end_sites=True)[0, 2], end2, atol=ATOL)
    names, parents = joint_table(clip)
    assert names == ["hips", "arm"] and parents.tolist() == [-1, 0]
    assert forward_kinematics(clip).shape == (1, 2, 3)


@pytest.mark.parametrize("text, what", [
    ("", "empty"),
    ("HIERARCHY\nROOT a\n{\nOFFSET 0 0 0\nCHANNELS 3 Xposition Yposition Zposition\n}\n", "MOTION"),
    (_bvh(frames="0 0 0 0 0 0 0 0"), "motion values"),
    (_bvh().replace("CHANNELS 3 Zrotation", "CHANNELS 3 Wrotation"), "channel"),
    (_bvh().replace("  }\n}\nMOTION", "  }\nMOTION"), "brace"),
])
def test_malformed_raises_with_file_name(tmp_path, text, what):
    p = tmp_path / "bad_file.bvh"
    p.write_text(text)
    with pytest.raises(ValueError, match="bad_file.bvh") as e:
        load_bvh(p)
    assert what.lower() in str(e.value).lower()


def test_gz_and_plain_agree(tmp_path, pose_dir):
    import gzip

    src = pose_dir / "cmu" / "002_03.bvh.gz"
    plain = tmp_path / "x.bvh"
    plain.write_bytes(gzip.decompress(src.read_bytes()))
    a, b = forward_kinematics(load_bvh(src)), forward_kinematics(load_bvh(plain))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["cmu/002_01.bvh.gz", "cmu/131_01.bvh.gz", "pymo_AV_8Walk_Meredith_HVHA_Rep1.bvh.gz"])
def test_real_files_bone_lengths_constant(pose_dir, name):
    clip = load_bvh(pose_dir / name)
    pos = forward_kinematics(clip, end_sites=True)
    names, parents = joint_table(clip, end_sites=True)
    assert pos.shape == (clip.num_frames, len(names), 3) and np.isfinite(pos).all()
    lengths = bone_lengths(pos, parents)
    rest = np.linalg.norm(clip.offsets, axis=-1)
    rest[0] = 0.0
    # rigid skeleton: every bone keeps its rest length in every frame
    np.testing.assert_allclose(lengths, np.broadcast_to(rest, lengths.shape), atol=1e-6 * rest.max())
    assert lengths.std(axis=0).max() < 1e-8 * rest.max()


@pytest.mark.parametrize("name", ["cmu/002_01.bvh.gz", "cmu/131_01.bvh.gz", "pymo_AV_8Walk_Meredith_HVHA_Rep1.bvh.gz"])
def test_body17_is_anatomically_plausible(pose_dir, name):
    clip = load_bvh(pose_dir / name)
    names, _ = joint_table(clip)
    kp, kn = select_keypoints(forward_kinematics(clip), names, "body17")
    assert kn == BODY17 and kp.shape == (clip.num_frames, 17, 3)
    y = kp[..., 1].mean(axis=0)  # Y up
    i = {n: j for j, n in enumerate(kn)}
    assert y[i["head"]] > y[i["left_shoulder"]] > y[i["left_elbow"]] > y[i["left_knee"]] > y[i["left_ankle"]]
    assert y[i["pelvis"]] > y[i["right_knee"]] > y[i["right_ankle"]]
    # shoulders are distinct points, wider apart than zero and narrower than the leg
    sw = np.linalg.norm(kp[:, i["left_shoulder"]] - kp[:, i["right_shoulder"]], axis=-1).mean()
    leg = np.linalg.norm(kp[:, i["left_hip"]] - kp[:, i["left_ankle"]], axis=-1).mean()
    assert 0.2 * leg < sw < leg


def test_mediapipe_layout_on_cc_base(pose_dir):
    clip = load_bvh(pose_dir / "cmu" / "002_01.bvh.gz")
    names, _ = joint_table(clip)
    kp, kn = select_keypoints(forward_kinematics(clip), names, "mediapipe")
    assert kp.shape[1] == len(kn) == 22 and "left_foot_index" in kn
    assert len(keypoint_parents("mediapipe")) == 22


@pytest.mark.parametrize("layout", ["body17", "mediapipe", "mediapipe_body12"])
def test_mirror_permutation_is_an_involution(layout):
    names = keypoint_names(layout)
    perm = mirror_permutation(names)
    np.testing.assert_array_equal(perm[perm], np.arange(len(names)))
    for j, n in enumerate(names):
        assert names[perm[j]] == n.replace("left_", "#").replace("right_", "left_").replace("#", "right_")
