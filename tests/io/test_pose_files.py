"""Pose file readers and writers."""
import json
from pathlib import Path

import numpy as np
import pytest

from streamssm.io.pose_files import PoseData, read_pose, write_pose

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture(scope="module")
def mp_file():
    p = DATA / "pose" / "mp_edgetam_juggle.npz"
    if not p.exists():
        pytest.skip(f"shared data not found at {p} (expected ../shared/data next to the repo)")
    return p


def _data(t=6, k=4, d=2, conf=True, fps=25.0):
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 100, (t, k, d)).astype(np.float32)
    pts[2, 1] = np.nan
    c = rng.uniform(0, 1, (t, k)).astype(np.float32) if conf else None
    return PoseData(pts, c, fps)


def _same(a: PoseData, b: PoseData):
    np.testing.assert_array_equal(a.points, b.points)
    if a.confidence is None:
        assert b.confidence is None
    else:
        np.testing.assert_array_equal(a.confidence, b.confidence)
    assert a.fps == b.fps


@pytest.mark.parametrize("ext", [".npz", ".csv", ".json"])
@pytest.mark.parametrize("d, conf", [(2, True), (3, True), (2, False), (3, False)])
def test_round_trip(tmp_path, ext, d, conf):
    data = _data(d=d, conf=conf)
    p1 = write_pose(tmp_path / f"a{ext}", data)
    back = read_pose(p1)
    _same(data, back)
    # write again "like" the first file: same layout, same content
    p2 = write_pose(tmp_path / f"b{ext}", back)
    assert p2.read_bytes() == p1.read_bytes()
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted([f"a{ext}", f"b{ext}"])  # no temp files left


def test_csv_named_joints_and_frames_preserved(tmp_path):
    p = tmp_path / "in.csv"
    p.write_text("frame,joint,x,y,confidence\n10,nose,1,2,0.5\n10,wrist,3,4,1\n11,nose,5,,0.2\n11,wrist,7,8,0.9\n")
    d = read_pose(p)
    assert d.points.shape == (2, 2, 2) and np.isnan(d.points[1, 0, 1])
    np.testing.assert_allclose(d.confidence, [[0.5, 1], [0.2, 0.9]])
    d.points[:] = 0.0
    out = write_pose(tmp_path / "out.csv", d)
    lines = out.read_text().splitlines()
    assert lines[0] == "frame,joint,x,y,confidence" and lines[1].startswith("10,nose,0.0,0.0")
    assert lines[4].startswith("11,wrist")


def test_json_three_numbers_need_dims(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('{"fps": 30, "dims": 2, "person": 7, "frames": [{"frame": 5, "keypoints": [[1, 2, 0.9], [3, null, 0.1]]}]}')
    d = read_pose(p)
    assert d.dims == 2 and d.fps == 30.0 and np.isnan(d.points[0, 1, 1])
    np.testing.assert_allclose(d.confidence, [[0.9, 0.1]])
    import json

    doc = json.loads(write_pose(tmp_path / "b.json", d).read_text())
    assert doc["person"] == 7 and doc["frames"][0]["frame"] == 5 and doc["frames"][0]["keypoints"][1][1] is None
    p.write_text('{"frames": [{"keypoints": [[1, 2, 3]]}]}')
    with pytest.raises(ValueError, match="a.json.*dims"):
        read_pose(p)


def test_mediapipe_npz(tmp_path, mp_file):
    d = read_pose(mp_file)
    with np.load(mp_file) as z:
        orig = {k: z[k] for k in z.files}
    assert d.points.shape == (orig["landmarks_raw"].shape[0], 33, 3) and d.fps == 24.0
    np.testing.assert_array_equal(d.points, orig["landmarks_raw"][..., :3])
    filtered = PoseData(d.points[..., :2] + 0.01, d.confidence, d.fps, d.meta)  # 2-D result: z kept
    out = write_pose(tmp_path / "filtered.npz", filtered)
    with np.load(out) as z:
        assert set(z.files) == set(orig) | {"landmarks_filtered", "filtered_from"}
        for k, v in orig.items():
            np.testing.assert_array_equal(z[k], v)  # everything copied through unchanged
        f = z["landmarks_filtered"]
        np.testing.assert_allclose(f[..., :2], orig["landmarks_raw"][..., :2] + 0.01, atol=1e-6)
        np.testing.assert_array_equal(f[..., 2:], orig["landmarks_raw"][..., 2:])
        assert str(z["filtered_from"]) == "landmarks_raw"
    again = read_pose(out, key="landmarks_filtered")
    np.testing.assert_allclose(again.points[..., :2], filtered.points, atol=1e-6)
    world = read_pose(mp_file, key="world_landmarks_raw")
    out_w = write_pose(tmp_path / "w.npz", world)
    with np.load(out_w) as z:
        assert "world_landmarks_filtered" in z.files


def test_refuses_to_overwrite_input(tmp_path, mp_file):
    d = read_pose(mp_file)
    with pytest.raises(ValueError, match="mp_edgetam_juggle.npz.*input"):
        write_pose(mp_file, d)
    p = write_pose(tmp_path / "x.csv", _data())
    with pytest.raises(ValueError, match="x.csv"):
        write_pose(p, read_pose(p))
    with pytest.raises(ValueError, match="x.csv"):
        write_pose(p, _data(), like=p)


@pytest.mark.parametrize("name, text, what", [
    ("e.csv", "", "empty"),
    ("e.json", "", "empty"),
    ("e.npz", "", "empty"),
    ("h.csv", "frame,joint,x\n0,0,1\n", "header"),
    ("h2.csv", "frame,joint,x,y\n", "no data"),
    ("c.csv", "frame,joint,x,y\n0,0,1,2\n0,1,1,2\n1,0,1,2\n", "inconsistent joint counts"),
    ("r.csv", "frame,joint,x,y\n0,0,1\n", "columns"),
    ("c.json", '{"frames": [{"keypoints": [[1, 2]]}, {"keypoints": [[1, 2], [3, 4]]}]}', "inconsistent joint counts"),
    ("m.json", '{"fps": 3}', "frames"),
    ("b.json", "{not json", "invalid json"),
    ("x.npz", "not a zip", "npz"),
    ("u.txt", "1 2 3", "extension"),
])
def test_malformed_files_raise_with_name(tmp_path, name, text, what):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(ValueError, match=name.replace(".", r"\.")) as e:
        read_pose(p)
    assert what in str(e.value).lower()


def test_npz_missing_keys_and_bad_write(tmp_path):
    p = tmp_path / "k.npz"
    np.savez(p, foo=np.zeros(3))
    with pytest.raises(ValueError, match=r"k\.npz.*landmarks_raw"):
        read_pose(p)
    with pytest.raises(ValueError, match=r"out\.xyz.*extension"):
        write_pose(tmp_path / "out.xyz", _data())
    with pytest.raises(ValueError, match=r"o\.npz.*shape"):
        write_pose(tmp_path / "o.npz", PoseData(np.zeros((3, 4), np.float32)))


def test_converting_keeps_frame_numbers_and_joint_names(tmp_path):
    """csv -> json -> csv and csv -> npz -> csv keep the frame numbers (with their gaps) and the joint names: a
    conversion used to renumber the frames 0, 1, 2 (so a re-filter saw no gap) and drop the names."""
    p = tmp_path / "in.csv"
    p.write_text("# fps=30\nframe,joint,x,y\n0,nose,1,2\n0,wrist,3,4\n5,nose,5,6\n5,wrist,7,8\n6,nose,9,1\n"
                 "6,wrist,2,3\n")
    d = read_pose(p)
    j = write_pose(tmp_path / "a.json", d)
    back = read_pose(j)
    assert back.meta["frame_numbers"] == [0, 5, 6] and back.meta["joint_names"] == ["nose", "wrist"]
    c = write_pose(tmp_path / "b.csv", back)
    key = lambda text: [ln.split(",")[:2] for ln in text.splitlines()[1:]]  # noqa: E731  (frame, joint) per row
    assert key(c.read_text()) == key(p.read_text())
    z = write_pose(tmp_path / "c.npz", d)
    with np.load(z) as a:
        np.testing.assert_array_equal(a["frames"], [0, 5, 6])
        assert a["joint_names"].tolist() == ["nose", "wrist"]
    zb = read_pose(z)
    assert zb.meta["frame_numbers"] == [0, 5, 6] and zb.meta["joint_names"] == ["nose", "wrist"]
    assert key(write_pose(tmp_path / "d.csv", zb).read_text()) == key(p.read_text())


def test_json_float_frame_numbers_convert_to_a_readable_csv(tmp_path):
    """A json's frame numbers 0.0, 2.0 are written to csv as 0, 2 (and a csv's 2.5 is read, as json's is)."""
    j = tmp_path / "a.json"
    j.write_text('{"frames": [{"frame": 0.0, "keypoints": [[1, 2]]}, {"frame": 2.0, "keypoints": [[3, 4]]},'
                 ' {"frame": 2.5, "keypoints": [[5, 6]]}]}')
    c = write_pose(tmp_path / "a.csv", read_pose(j))
    assert [ln.split(",")[0] for ln in c.read_text().splitlines()[1:]] == ["0", "2", "2.5"]
    assert read_pose(c).meta["frame_numbers"] == [0, 2, 2.5]


def test_mediapipe_visibility_stays_marked_across_formats(tmp_path, mp_file):
    """A MediaPipe npz converted to csv, json or a plain npz (through ``write_pose``'s own conversion, ``like=`` the
    MediaPipe file) marks its confidence as visibility (csv column name, json ``confidence_kind``, npz
    ``confidence_kind``), and each reads back marked, so the pose CLI treats it alike whatever the file."""
    d = read_pose(mp_file)
    assert d.meta["visibility"]
    small = PoseData(d.points[:5], d.confidence[:5], d.fps)
    like = PoseData(d.points[:5], d.confidence[:5], d.fps, dict(d.meta))
    c = write_pose(tmp_path / "v.csv", small, like=like)
    assert c.read_text().splitlines()[1] == "frame,joint,x,y,z,visibility"
    j = write_pose(tmp_path / "v.json", small, like=like)
    z = write_pose(tmp_path / "v.npz", small, like=read_pose(c))  # csv -> plain npz keeps it too
    for back in (read_pose(c), read_pose(j), read_pose(z)):
        assert back.meta["visibility"]
        np.testing.assert_allclose(back.confidence, small.confidence, rtol=1e-6)
    plain = write_pose(tmp_path / "p.csv", small)
    assert not read_pose(plain).meta["visibility"]


@pytest.mark.parametrize("ext, body", [
    (".json", '{"fps": [25], "frames": [{"keypoints": [[1, 2]]}]}'),
    (".json", '{"fps": {"a": 1}, "frames": [{"keypoints": [[1, 2]]}]}'),
    (".json", '{"fps": true, "frames": [{"keypoints": [[1, 2]]}]}'),
    (".json", '{"fps": -3, "frames": [{"keypoints": [[1, 2]]}]}'),
    (".csv", "# fps=0\nframe,joint,x,y\n0,0,1,2\n"),
])
def test_a_files_bad_fps_reads_as_none_and_is_reported(tmp_path, ext, body):
    p = tmp_path / f"a{ext}"
    p.write_text(body)
    d = read_pose(p)
    assert d.fps is None and d.meta["bad_fps"]


def test_csv_with_a_byte_order_mark(tmp_path):
    p = tmp_path / "excel.csv"
    p.write_bytes(b"\xef\xbb\xbfframe,joint,x,y\n0,0,1,2\n1,0,3,4\n")
    np.testing.assert_array_equal(read_pose(p).points[:, 0], [[1, 2], [3, 4]])


@pytest.mark.parametrize("line,fps,size", [("# fps=25", 25.0, None), ("# FPS: 25", 25.0, None),
                                           ("#fps = 25.5 ", 25.5, None),
                                           ("# fps=24.0 width=1280 height=720", 24.0, (1280.0, 720.0)),
                                           ("# width=640, height=480", None, (640.0, 480.0)),
                                           ("# recorded by camera A", None, None),
                                           ("# height: 1.8m", None, None)])
def test_csv_first_line(tmp_path, line, fps, size):
    p = tmp_path / "a.csv"
    p.write_text(line + "\nframe,joint,x,y\n0,0,1,2\n0,1,3,4\n1,0,1,2\n1,1,3,4\n")
    d = read_pose(p)
    assert d.fps == fps and d.meta.get("image_size") == size


@pytest.mark.parametrize("line,says", [("# fps=25 (camera A)", "expected '# fps=<number>'"),
                                       ("# fps=25 width=640", "expected both width and height")])
def test_csv_first_line_refused(tmp_path, line, says):
    p = tmp_path / "a.csv"
    p.write_text(line + "\nframe,joint,x,y\n0,0,1,2\n")
    with pytest.raises(ValueError, match=says):
        read_pose(p)


def test_npz_key_names_plain_points_or_mediapipe_tasks(tmp_path):
    rng = np.random.default_rng(0)
    lift = rng.normal(size=(5, 17, 3)) * 100  # a 3-D lifter's (t, k, 3), float64, under its own name
    np.savez(tmp_path / "lift.npz", keypoints=lift, fps=50.0)
    d = read_pose(tmp_path / "lift.npz", key="keypoints")
    assert d.dims == 3 and d.confidence is None and d.fps == 50.0
    write_pose(tmp_path / "out.npz", PoseData(d.points + 1, None, d.fps, {}), like=d)
    with np.load(tmp_path / "out.npz") as z:
        assert "points" not in z.files  # written back under its own name
        np.testing.assert_allclose(z["keypoints"], lift + 1, rtol=1e-6)
    tasks = np.concatenate([rng.uniform(size=(5, 33, 3)), rng.uniform(size=(5, 33, 2))], -1)  # + visibility, presence
    np.savez(tmp_path / "tasks.npz", pose_landmarks=tasks, width=640, height=480)
    d = read_pose(tmp_path / "tasks.npz", key="pose_landmarks")
    assert d.dims == 3 and d.meta["visibility"] and d.meta["image_size"] == (640.0, 480.0)
    np.testing.assert_allclose(d.confidence, tasks[..., 3], rtol=1e-6)


def test_image_size_survives_conversions(mp_file, tmp_path):
    """MediaPipe image landmarks carry the image's size into csv, json and plain npz, so each is filtered in pixels."""
    d = read_pose(mp_file)
    assert d.meta["image_size"] == (1280.0, 720.0)
    assert "image_size" not in read_pose(mp_file, key="world_landmarks_raw").meta  # metres: no image
    like = d
    for name in ("a.csv", "b.json", "c.npz", "d.csv"):
        write_pose(tmp_path / name, PoseData(like.points, like.confidence, like.fps, {}), like=like)
        like = read_pose(tmp_path / name)
        assert like.meta["image_size"] == (1280.0, 720.0), name


def test_npz_that_is_not_a_zip_never_suggests_unsafe_loading(tmp_path):
    """Text in an .npz was read by numpy as a pickle and refused with its advice to load it unsafely; a real .npz
    holding object arrays is refused without that advice too."""
    garbage = tmp_path / "g.npz"
    garbage.write_text("garbage\n")
    with pytest.raises(ValueError, match=r"g\.npz: is not a valid \.npz \(zip\) file") as e:
        read_pose(garbage)
    objects = tmp_path / "o.npz"
    np.savez(objects, points=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"o\.npz: cannot read as \.npz") as e2:
        read_pose(objects)
    for err in (e, e2):
        assert "allow_pickle" not in str(err.value) and "unsafe" not in str(err.value), err.value


@pytest.mark.parametrize("shape", [(0, 17, 2), (10, 0, 2)])
def test_npz_without_frames_or_keypoints_is_named(tmp_path, shape):
    """(0, 17, 2) and (10, 0, 2) points: the error names the file (the filter's 'sequence is empty (T = 0 frames)'
    and 'points must have at least one keypoint' did not)."""
    p = tmp_path / "e.npz"
    np.savez(p, points=np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match=rf"e\.npz: no pose data: 'points' has shape \({shape[0]}, {shape[1]}, 2\)"):
        read_pose(p)


def test_npz_key_not_in_the_file_lists_its_keys(tmp_path):
    p = tmp_path / "p2d.npz"
    np.savez(p, points=np.zeros((3, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"p2d\.npz: key 'nope' \(--key\) is not in the file; it has \['points'\]$"):
        read_pose(p, key="nope")


@pytest.mark.parametrize("name, write, says", [
    ("f.npz", lambda p: np.savez(p, points=np.zeros((50, 17, 2), np.float32), frames=np.arange(49)),
     r"f\.npz: 'frames' has shape \(49,\) \(int64\) for the 50 frames of 'points'"),
    ("n.npz", lambda p: np.savez(p, points=np.zeros((5, 3, 2), np.float32), joint_names=np.array(["a", "b"])),
     r"n\.npz: 'joint_names' has shape \(2,\) .* for the 3 keypoints"),
    ("j.json", lambda p: p.write_text(json.dumps({"joints": ["a", "b"],
                                                  "frames": [{"keypoints": [[1, 2]] * 5} for _ in range(4)]})),
     r"j\.json: 'joints' has 2 entries for 5 keypoints"),
    ("s.json", lambda p: p.write_text(json.dumps({"joints": "nose", "frames": [{"keypoints": [[1, 2]]}]})),
     r"s\.json: 'joints' has str for 1 keypoints"),
])
def test_metadata_that_does_not_fit_the_points_is_refused(tmp_path, name, write, says):
    """Frame numbers or joint names of another count were dropped silently (the frames then placed by the index)."""
    p = tmp_path / name
    write(p)
    with pytest.raises(ValueError, match=says):
        read_pose(p)


def _peak_bytes(fn) -> int:
    """The most memory ``fn()`` allocated at once (numpy's arrays included: numpy reports them to tracemalloc)."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_npz_arrays_beside_the_points_are_not_read_with_them(tmp_path):
    """A 40 kB compressed .npz holding 40 MB of zeros beside its points made the reader allocate all of it (every
    array was loaded; an audit of the demo: 391 kB -> 400 MB). Only the points and what they use are read; writing
    the result back still copies every key, read from the input then."""
    p = tmp_path / "bomb.npz"
    np.savez_compressed(p, points=np.ones((50, 5, 2), np.float32), fps=np.float64(30),
                        junk=np.zeros(10_000_000, np.float32))
    assert p.stat().st_size < 200_000
    peak = _peak_bytes(lambda: read_pose(p))
    assert peak < 5_000_000, peak
    d = read_pose(p)
    assert d.points.shape == (50, 5, 2) and d.fps == 30.0 and sorted(d.meta["arrays"]) == ["fps", "junk", "points"]
    out = write_pose(tmp_path / "out.npz", d)
    with np.load(out) as z:
        assert z["junk"].shape == (10_000_000,)


def test_npz_side_arrays_come_from_the_file_the_points_came_from(tmp_path, monkeypatch):
    """The other arrays are read when the result is written: a chdir in between must not read another file's, and
    an input rewritten or removed meanwhile is refused, naming it (its arrays would not go with the points)."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        np.savez(tmp_path / name / "in.npz", points=np.ones((4, 3, 2), np.float32), extra=np.array([ord(name)]))
    monkeypatch.chdir(tmp_path / "a")
    d = read_pose("in.npz")
    monkeypatch.chdir(tmp_path / "b")
    with np.load(write_pose(tmp_path / "o1.npz", d)) as z:
        assert int(z["extra"][0]) == ord("a")
    for change in ("rewritten", "removed"):
        d = read_pose(tmp_path / "a" / "in.npz")
        if change == "rewritten":
            np.savez(tmp_path / "a" / "in.npz", points=np.zeros((9, 3, 2), np.float32), extra=np.array([0, 0]))
        else:
            (tmp_path / "a" / "in.npz").unlink()
        with pytest.raises(ValueError, match=r"in\.npz: changed or went away since it was read"):
            write_pose(tmp_path / f"o_{change}.npz", d)
        assert not (tmp_path / f"o_{change}.npz").exists()


def test_npz_points_over_the_limit_are_refused_by_their_header(tmp_path):
    """``limit`` (the demo's caps) is checked on the .npy header: 40 MB of compressed zeros as points are refused
    before their data is read; with no limit (the CLI) a large file reads."""
    from streamssm.io.pose_files import PoseLimitError

    p = tmp_path / "wide.npz"
    np.savez_compressed(p, points=np.zeros((50, 100_000, 2), np.float32))
    err = []

    def read():
        with pytest.raises(PoseLimitError, match=r"wide\.npz: 50 frames x 100000 keypoints, more than the 1000 "
                                                 r"frames and 256 keypoints read here") as e:
            read_pose(p, limit=(1000, 256))
        err.append(e.value)

    assert _peak_bytes(read) < 5_000_000
    assert isinstance(err[0], ValueError) and (err[0].frames, err[0].keypoints) == (50, 100_000)
    assert read_pose(p).points.shape == (50, 100_000, 2)
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"frames": [{"keypoints": [[1, 2]] * 3}] * 5}))
    with pytest.raises(PoseLimitError, match=r"small\.json: 5 frames x 3 keypoints"):
        read_pose(small, limit=(4, 256))
    assert read_pose(small, limit=(5, 3)).points.shape == (5, 3, 2)


def test_npz_side_arrays_are_checked_by_their_header(tmp_path):
    """A huge fps, confidence of the wrong shape or names of absurd length are refused (or ignored) without
    reading them."""
    pts = np.zeros((4, 3, 2), np.float32)
    p = tmp_path / "fps.npz"
    np.savez_compressed(p, points=pts, fps=np.zeros(5_000_000))
    d = read_pose(p)
    assert d.fps is None and "shape (5000000,)" in d.meta["bad_fps"]
    np.savez_compressed(p, points=pts, confidence=np.zeros((4, 1_000_000), np.float32))
    with pytest.raises(ValueError, match=r"expected 'confidence' of shape \(4, 3\), got \(4, 1000000\)"):
        read_pose(p)
    np.savez_compressed(p, points=pts, joint_names=np.array(["a" * 5000] * 3))
    with pytest.raises(ValueError, match=r"'joint_names' has shape \(3,\) \(<U5000\)"):
        read_pose(p)


def test_json_nested_too_deeply_is_named(tmp_path):
    """'[[[[...' 200000 deep raised RecursionError from the parser (the demo: 'the server failed')."""
    p = tmp_path / "deep.json"
    p.write_text('{"frames":' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(ValueError, match=r"deep\.json: JSON nested too deeply"):
        read_pose(p)


def test_numeric_joint_ids_survive_conversions(tmp_path):
    """A csv's joint IDs 0, 5, 11, 12 (joints picked out of a larger set) come back as 0, 5, 11, 12 after csv ->
    json -> csv and csv -> npz -> csv; they used to come back as 0, 1, 2, 3. IDs 0, 1, 2, ... add no joint names."""
    p = tmp_path / "in.csv"
    p.write_text("frame,joint,x,y\n" + "".join(f"{f},{j},{f + j},{2 * j}\n" for f in range(3) for j in (0, 5, 11, 12)))
    ids = lambda path: [ln.split(",")[1] for ln in path.read_text().splitlines()[1:5]]  # noqa: E731
    d = read_pose(p)
    for mid in ("a.json", "a.npz"):
        back = read_pose(write_pose(tmp_path / mid, d))
        assert back.meta["joint_names"] == ["0", "5", "11", "12"], mid
        out = write_pose(tmp_path / f"{mid}.csv", back)
        assert ids(out) == ["0", "5", "11", "12"], mid
        np.testing.assert_array_equal(read_pose(out).points, d.points)
    plain = tmp_path / "plain.csv"
    plain.write_text("frame,joint,x,y\n0,1,1,2\n0,0,3,4\n")
    assert read_pose(plain).meta["joint_names"] is None
    assert "joints" not in json.loads(write_pose(tmp_path / "plain.json", read_pose(plain)).read_text())
