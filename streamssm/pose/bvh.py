"""BVH motion-capture reader, forward kinematics and body-keypoint selection.

Shapes use the project's letters: ``t`` frames, ``j`` skeleton joints, ``k`` selected keypoints,
``c`` motion channels.

The BVH format (Biovision Hierarchy; see M. Meredith and S. Maddock, "Motion capture file formats
explained", Univ. of Sheffield, 2001) has two parts:

* ``HIERARCHY``: nested ``ROOT``/``JOINT`` blocks, each with an ``OFFSET`` (x y z, in the parent's
  frame) and ``CHANNELS n name...``; ``End Site`` blocks carry an ``OFFSET`` only.
* ``MOTION``: ``Frames: T``, ``Frame Time: dt`` then ``T`` lines of all channel values in the
  depth-first order of the hierarchy. Rotations are in degrees.

Forward kinematics follows the usual BVH convention: a joint's local transform is the translation
``OFFSET + position channels`` followed by the rotations in the order they are *listed* (``CHANNELS 3
Zrotation Xrotation Yrotation`` means ``R = Rz @ Rx @ Ry`` acting on column vectors), so

    R_world[j] = R_world[parent] @ R_local[j]
    p_world[j] = p_world[parent] + R_world[parent] @ (offset[j] + translation[j])

Where a file gives a joint position channels *and* a non-zero OFFSET (PyMO exports do this for the
root), the channels are taken as the absolute local position and the OFFSET is ignored for those axes;
this is what Blender and most exporters write (the first frame's root position equals the OFFSET) and it
is the same as ``OFFSET + channels`` whenever the OFFSET is zero, as in the CMU files.

Positions come out in the file's units (centimetres for the iClone CMU conversion ``CC_Base_*``,
CMU ASF units for ``131_01``) and its axes (Y up for all files in ``shared/data/pose``).

Note on the shared CMU data: the iClone ``CC_Base`` files say ``Frame Time: 0.016667`` (60 fps) even
though the source capture was 120 fps; ``131_01`` is 120 fps. Always use :attr:`BvhClip.fps`.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "BvhClip",
    "parse_bvh",
    "load_bvh",
    "forward_kinematics",
    "joint_table",
    "bone_lengths",
    "BODY17",
    "BODY17_PARENTS",
    "MEDIAPIPE33_NAMES",
    "MEDIAPIPE_SUBSET",
    "MEDIAPIPE_BODY12",
    "keypoint_names",
    "keypoint_parents",
    "mirror_permutation",
    "select_keypoints",
]

_ROT = {"Xrotation": 0, "Yrotation": 1, "Zrotation": 2}
_POS = {"Xposition": 0, "Yposition": 1, "Zposition": 2}


@dataclass
class BvhClip:
    """A parsed BVH file.

    Attributes:
        names: joint names, depth-first order; End Sites are named ``<parent>_End``.
        parents: (j,) int, parent index, -1 for the root; parents always precede children.
        offsets: (j, 3) float64 rest offsets in the parent's frame.
        channels: per joint, tuple of channel names (empty for End Sites).
        is_end_site: (j,) bool.
        motion: (t, c) float64 raw channel values.
        frame_time: seconds per frame.
        source: file name (for messages).

    >>> clip = parse_bvh("HIERARCHY\\nROOT a\\n{\\nOFFSET 0 0 0\\nCHANNELS 3 Xposition Yposition Zposition\\n"
    ...                  "End Site\\n{\\nOFFSET 0 1 0\\n}\\n}\\nMOTION\\nFrames: 2\\nFrame Time: 0.5\\n0 0 0\\n1 0 0\\n")
    >>> forward_kinematics(clip, end_sites=True)[:, 1].tolist()
    [[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]
    """

    names: list[str]
    parents: np.ndarray
    offsets: np.ndarray
    channels: list[tuple[str, ...]]
    is_end_site: np.ndarray
    motion: np.ndarray
    frame_time: float
    source: str = "<string>"
    _channel_start: np.ndarray = field(default=None, repr=False)

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])


def _bad(source: str, what: str) -> ValueError:
    return ValueError(f"{source}: malformed BVH, expected {what}")


def parse_bvh(text: str, source: str = "<string>") -> BvhClip:
    """Parse BVH text. Raises ``ValueError`` naming ``source`` and what was expected."""
    head, sep, motion_txt = text.partition("MOTION")
    if not sep:
        raise _bad(source, "a 'MOTION' section")
    tok = head.split()
    if not tok or tok[0] != "HIERARCHY":
        raise _bad(source, "the file to start with 'HIERARCHY'")
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[tuple[str, ...]] = []
    is_end: list[bool] = []
    stack: list[int] = []
    pending: int | None = None  # joint declared, waiting for its '{'
    i = 1
    n = len(tok)
    try:
        while i < n:
            w = tok[i]
            if w in ("ROOT", "JOINT"):
                if w == "ROOT" and (stack or names):
                    raise _bad(source, "a single ROOT")
                parent = stack[-1] if stack else -1
                if w == "JOINT" and parent < 0:
                    raise _bad(source, "JOINT inside a ROOT block")
                names.append(tok[i + 1])
                parents.append(parent)
                offsets.append([0.0, 0.0, 0.0])
                channels.append(())
                is_end.append(False)
                pending = len(names) - 1
                i += 2
            elif w == "End":
                if not stack or tok[i + 1] != "Site":
                    raise _bad(source, "'End Site' inside a joint block")
                parent = stack[-1]
                names.append(f"{names[parent]}_End")
                parents.append(parent)
                offsets.append([0.0, 0.0, 0.0])
                channels.append(())
                is_end.append(True)
                pending = len(names) - 1
                i += 2
            elif w == "{":
                if pending is None:
                    raise _bad(source, "'{' only after ROOT/JOINT/End Site")
                stack.append(pending)
                pending = None
                i += 1
            elif w == "}":
                if not stack:
                    raise _bad(source, "balanced braces")
                stack.pop()
                i += 1
            elif w == "OFFSET":
                if not stack:
                    raise _bad(source, "OFFSET inside a joint block")
                offsets[stack[-1]] = [float(x) for x in tok[i + 1:i + 4]]
                i += 4
            elif w == "CHANNELS":
                if not stack or is_end[stack[-1]]:
                    raise _bad(source, "CHANNELS inside a ROOT/JOINT block")
                m = int(tok[i + 1])
                ch = tuple(tok[i + 2:i + 2 + m])
                if len(ch) != m or any(c not in _ROT and c not in _POS for c in ch):
                    raise _bad(source, f"{m} channel names among X/Y/Z position/rotation, got {ch}")
                channels[stack[-1]] = ch
                i += 2 + m
            else:
                raise _bad(source, f"a hierarchy keyword, got {w!r}")
    except (IndexError, ValueError) as e:
        if isinstance(e, ValueError) and str(e).startswith(source):
            raise
        raise _bad(source, f"a well-formed HIERARCHY ({e})") from None
    if not names:
        raise _bad(source, "at least one ROOT joint")
    if stack or pending is not None:
        raise _bad(source, "balanced braces in HIERARCHY")

    mtok = motion_txt.split(None, 5)
    # mtok: ['Frames:', T, 'Frame', 'Time:', dt, rest]
    if len(mtok) < 5 or mtok[0] != "Frames:" or mtok[2] != "Frame" or mtok[3] != "Time:":
        raise _bad(source, "'Frames: T' and 'Frame Time: dt' after MOTION")
    try:
        t = int(mtok[1])
        dt = float(mtok[4])
    except ValueError:
        raise _bad(source, "integer Frames and float Frame Time") from None
    if t <= 0 or not dt > 0:
        raise _bad(source, f"Frames > 0 and Frame Time > 0, got {t} and {dt}")
    nch = sum(len(c) for c in channels)
    body = mtok[5] if len(mtok) > 5 else ""
    try:
        values = np.array(body.split(), dtype=np.float64)
    except ValueError:
        raise _bad(source, "numeric motion data") from None
    if values.size != t * nch:
        raise _bad(source, f"{t} frames x {nch} channels = {t * nch} motion values, got {values.size}")
    starts = np.cumsum([0] + [len(c) for c in channels[:-1]])
    return BvhClip(
        names=names,
        parents=np.asarray(parents, dtype=np.int64),
        offsets=np.asarray(offsets, dtype=np.float64),
        channels=channels,
        is_end_site=np.asarray(is_end, dtype=bool),
        motion=values.reshape(t, max(nch, 0)),
        frame_time=dt,
        source=source,
        _channel_start=starts,
    )


def load_bvh(path: str | os.PathLike) -> BvhClip:
    """Read a ``.bvh`` or gzip ``.bvh.gz`` file.

    >>> clip = load_bvh("../shared/data/pose/cmu/002_01.bvh.gz")  # doctest: +SKIP
    >>> forward_kinematics(clip).shape  # doctest: +SKIP
    (171, 101, 3)
    """
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
                text = f.read()
        else:
            text = path.read_text(encoding="utf-8", errors="replace")
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read BVH ({e})") from None
    if not text.strip():
        raise ValueError(f"{path}: empty file, expected a BVH 'HIERARCHY ... MOTION ...' text")
    return parse_bvh(text, source=str(path))


def _axis_rot(axis: int, ang: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices about a principal axis, ``ang`` in radians."""
    c, s = np.cos(ang), np.sin(ang)
    o, z = np.ones_like(ang), np.zeros_like(ang)
    if axis == 0:
        m = [o, z, z, z, c, -s, z, s, c]
    elif axis == 1:
        m = [c, z, s, z, o, z, -s, z, c]
    else:
        m = [c, -s, z, s, c, z, z, z, o]
    return np.stack(m, axis=-1).reshape(ang.shape + (3, 3))


def forward_kinematics(clip: BvhClip, end_sites: bool = False) -> np.ndarray:
    """World positions (t, j, 3) float64 of every joint, in file units.

    Vectorised: local rotations are built for all joints sharing a channel order at once, and the
    chain is composed one tree depth at a time (about 15 batched matmuls for the CC_Base skeleton).
    With ``end_sites=False`` End Sites are dropped; :func:`joint_table` gives the matching names
    and parents.
    """
    t = clip.num_frames
    j = len(clip.names)
    starts = clip._channel_start
    if starts is None:
        starts = np.cumsum([0] + [len(c) for c in clip.channels[:-1]])
    rot_local = np.broadcast_to(np.eye(3), (t, j, 3, 3)).copy()
    trans = np.broadcast_to(clip.offsets, (t, j, 3)).copy()
    # Group joints by rotation order so each group is one batched product.
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for jj, ch in enumerate(clip.channels):
        if not ch:
            continue
        s = int(starts[jj])
        rcols = [s + i for i, c in enumerate(ch) if c in _ROT]
        order = tuple(_ROT[c] for c in ch if c in _ROT)
        for i, c in enumerate(ch):
            if c in _POS:
                trans[:, jj, _POS[c]] = clip.motion[:, s + i]
        if order:
            groups.setdefault(order, []).append((jj, rcols))
    for order, items in groups.items():
        idx = [it[0] for it in items]
        cols = np.asarray([it[1] for it in items])  # (jg, n_rot)
        ang = np.deg2rad(clip.motion[:, cols])  # (t, jg, n_rot)
        r = _axis_rot(order[0], ang[..., 0])
        for a in range(1, len(order)):
            r = r @ _axis_rot(order[a], ang[..., a])
        rot_local[:, idx] = r
    parents = clip.parents
    depth = np.zeros(j, dtype=np.int64)
    for jj in range(1, j):
        depth[jj] = depth[parents[jj]] + 1 if parents[jj] >= 0 else 0
    rot_world = np.empty_like(rot_local)
    pos = np.empty((t, j, 3))
    for d in range(int(depth.max()) + 1):
        idx = np.nonzero(depth == d)[0]
        par = parents[idx]
        if d == 0:
            rot_world[:, idx] = rot_local[:, idx]
            pos[:, idx] = trans[:, idx]
            continue
        rp = rot_world[:, par]
        rot_world[:, idx] = rp @ rot_local[:, idx]
        pos[:, idx] = pos[:, par] + np.einsum("tjab,tjb->tja", rp, trans[:, idx])
    if not end_sites:
        pos = pos[:, ~clip.is_end_site]
    return pos


def joint_table(clip: BvhClip, end_sites: bool = False) -> tuple[list[str], np.ndarray]:
    """Joint names and parent indices matching :func:`forward_kinematics`'s joint axis."""
    keep = np.ones(len(clip.names), bool) if end_sites else ~clip.is_end_site
    new_index = np.cumsum(keep) - 1
    names = [n for n, k in zip(clip.names, keep) if k]
    parents = np.array([new_index[p] if p >= 0 else -1 for p, k in zip(clip.parents, keep) if k], np.int64)
    return names, parents



def bone_lengths(positions: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """(t, j) distance of each joint to its parent (0 for roots)."""
    par = np.where(parents < 0, np.arange(len(parents)), parents)
    return np.linalg.norm(positions - positions[:, par], axis=-1)


# --------------------------------------------------------------------------------------------------
# Body keypoints.
#
# BODY17 is a COCO-17-sized set of *major body joints* that every skeleton in shared/data provides.
# COCO's face points (nose, eyes, ears) have no counterpart in the CMU ASF/PyMO skeletons, so they are
# replaced by pelvis, neck, head and toes. "left" is the subject's left (as in COCO and MediaPipe).
# Candidate BVH names per keypoint, first match wins:
#   keypoint     CC_Base (iClone CMU)        CMU ASF->BVH (131_01)   PyMO / Mixamo-like
#   pelvis       CC_Base_Hip                 Hips                    Hips
#   neck         CC_Base_NeckTwist01         Neck (lowerneck)        Spine1/Neck (Head)
#   head         CC_Base_Head                Head                    Head
#   *_shoulder   CC_Base_*_Upperarm          *Shoulder               *Arm (tried before *Shoulder,
#                                                                    which is the clavicle there)
#   *_elbow      CC_Base_*_Forearm           *Elbow                  *ForeArm
#   *_wrist      CC_Base_*_Hand              *Wrist                  *Hand
#   *_hip        CC_Base_*_Thigh             *Hip                    *UpLeg
#   *_knee       CC_Base_*_Calf              *Knee                   *Leg
#   *_ankle      CC_Base_*_Foot              *Ankle                  *Foot
#   *_toe        CC_Base_*_ToeBase           *Toe                    *ToeBase
# --------------------------------------------------------------------------------------------------

BODY17 = (
    "pelvis", "neck", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_toe", "right_toe",
)
# Kinematic tree over BODY17 (for bone-length losses and drawing).
BODY17_PARENTS = (-1, 0, 1, 1, 1, 3, 4, 5, 6, 0, 0, 9, 10, 11, 12, 13, 14)

_SIDE = {"left": ("L", "Left", "l"), "right": ("R", "Right", "r")}


def _candidates(kp: str) -> list[str]:
    if kp == "pelvis":
        return ["CC_Base_Hip", "Hips", "Hip", "hip", "pelvis"]
    if kp == "neck":
        return ["CC_Base_NeckTwist01", "Neck", "neck", "lowerneck", "Neck1", "Spine1", "Head"]
    if kp == "head":
        return ["CC_Base_Head", "Head", "head"]
    side, part = kp.split("_", 1)
    cc, long, _ = _SIDE[side]
    table = {
        "shoulder": [f"CC_Base_{cc}_Upperarm", f"{long}Arm", f"{long}UpperArm", f"{long}Shoulder"],
        "elbow": [f"CC_Base_{cc}_Forearm", f"{long}Elbow", f"{long}ForeArm", f"{long}LowerArm"],
        "wrist": [f"CC_Base_{cc}_Hand", f"{long}Wrist", f"{long}Hand"],
        "hip": [f"CC_Base_{cc}_Thigh", f"{long}Hip", f"{long}UpLeg", f"{long}UpperLeg"],
        "knee": [f"CC_Base_{cc}_Calf", f"{long}Knee", f"{long}Leg", f"{long}LowerLeg"],
        "ankle": [f"CC_Base_{cc}_Foot", f"{long}Ankle", f"{long}Foot"],
        "toe": [f"CC_Base_{cc}_ToeBase", f"{long}Toe", f"{long}ToeBase", f"{long}Toe_End"],
        # MediaPipe-only extras (CC_Base provides them; others usually do not).
        "eye": [f"CC_Base_{cc}_Eye"],
        "pinky": [f"CC_Base_{cc}_Pinky1"],
        "index": [f"CC_Base_{cc}_Index1"],
        "thumb": [f"CC_Base_{cc}_Thumb1", f"{long}HandThumb1", f"{long[0]}Thumb"],
        "heel": [],
    }
    return table[part]


# MediaPipe Pose landmark names, index = landmark id.
MEDIAPIPE33_NAMES = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_pinky", "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
# MediaPipe landmarks that the CC_Base skeleton provides (eyes, body, hand bases, toes); face contour,
# ears, mouth and heels have no joint. ``foot_index`` maps to the toe base.
MEDIAPIPE_SUBSET = (2, 5, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32)
# MediaPipe's 12 body landmarks (shoulders..ankles) exist in every skeleton here.
MEDIAPIPE_BODY12 = tuple(range(11, 17)) + tuple(range(23, 29))



def keypoint_names(layout: str = "body17") -> tuple[str, ...]:
    """Names of the keypoints for ``layout`` in ``{'body17', 'mediapipe', 'mediapipe_body12'}``."""
    if layout == "body17":
        return BODY17
    if layout == "mediapipe":
        return tuple(MEDIAPIPE33_NAMES[i] for i in MEDIAPIPE_SUBSET)
    if layout == "mediapipe_body12":
        return tuple(MEDIAPIPE33_NAMES[i] for i in MEDIAPIPE_BODY12)
    raise ValueError(f"unknown keypoint layout {layout!r}, expected 'body17', 'mediapipe' or 'mediapipe_body12'")


def keypoint_parents(layout: str = "body17") -> tuple[int, ...]:
    """Parent index per keypoint (-1 root), a tree used for bone-length terms."""
    names = keypoint_names(layout)
    if layout == "body17":
        return BODY17_PARENTS
    pref = {
        "left_eye": "left_shoulder", "right_eye": "right_shoulder", "left_shoulder": None,
        "right_shoulder": "left_shoulder", "left_elbow": "left_shoulder", "right_elbow": "right_shoulder",
        "left_wrist": "left_elbow", "right_wrist": "right_elbow", "left_pinky": "left_wrist",
        "right_pinky": "right_wrist", "left_index": "left_wrist", "right_index": "right_wrist",
        "left_thumb": "left_wrist", "right_thumb": "right_wrist", "left_hip": "left_shoulder",
        "right_hip": "right_shoulder", "left_knee": "left_hip", "right_knee": "right_hip",
        "left_ankle": "left_knee", "right_ankle": "right_knee", "left_foot_index": "left_ankle",
        "right_foot_index": "right_ankle",
    }
    return tuple(-1 if pref[n] is None else names.index(pref[n]) for n in names)


def mirror_permutation(names: tuple[str, ...] | list[str]) -> np.ndarray:
    """Index array that swaps left/right keypoints (for mirroring augmentation)."""
    names = list(names)
    out = []
    for n in names:
        if n.startswith("left_"):
            out.append(names.index("right_" + n[5:]))
        elif n.startswith("right_"):
            out.append(names.index("left_" + n[6:]))
        else:
            out.append(names.index(n))
    return np.asarray(out, dtype=np.int64)


def _mp_bvh_name(mp_name: str, available: set[str]) -> str | None:
    base = mp_name.replace("foot_index", "toe")
    for cand in _candidates(base):
        if cand in available:
            return cand
    return None


def select_keypoints(
    positions: np.ndarray, names: list[str], layout: str = "body17"
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Pick a body-keypoint subset from full-skeleton positions.

    Args:
        positions: (t, j, 3) from :func:`forward_kinematics`.
        names: the j joint names (from :func:`joint_table`).
        layout: ``'body17'`` (K=17, see the mapping table above), ``'mediapipe'`` (K=22 MediaPipe
            landmarks ``MEDIAPIPE_SUBSET``, CC_Base skeletons only) or ``'mediapipe_body12'`` (K=12).

    Returns:
        (t, k, 3) positions and the k keypoint names. Raises ``ValueError`` when the skeleton lacks
        a keypoint.
    """
    kp = keypoint_names(layout)
    avail = set(names)
    index = {n: i for i, n in enumerate(names)}
    cols = []
    for k in kp:
        name = _mp_bvh_name(k, avail) if layout.startswith("mediapipe") else next(
            (c for c in _candidates(k) if c in avail), None)
        if name is None:
            raise ValueError(f"skeleton has no joint for keypoint {k!r} (layout {layout!r})")
        cols.append(index[name])
    return positions[:, cols], kp
