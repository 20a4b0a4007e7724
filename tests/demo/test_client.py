"""Each tab's endpoint called with ``gradio_client``, as an API user would, against a live server."""

from __future__ import annotations

import json

import numpy as np

from streamssm.demo.jobs import SAMPLE_POSE, SAMPLE_VIDEO
from tests.demo.conftest import MODE_OPERATOR, TEST_FRAMES


def _metrics(value) -> dict:
    return value if isinstance(value, dict) else json.loads(value)


def _frames(path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_deflicker_uploaded_sample(client, demo_server):
    from gradio_client import handle_file

    video, plot, summary, metrics = client.predict(
        handle_file(str(SAMPLE_VIDEO)), None, False, MODE_OPERATOR, "gamma_jitter", 1.0, TEST_FRAMES,
        api_name="/deflicker")
    m = _metrics(metrics)
    frames = _frames(video)
    assert len(frames) == TEST_FRAMES == m["frames"]
    assert frames[0].shape == (m["height"], 2 * m["width"], 3)  # [processed | filtered]
    assert m["width"] == 320 and m["height"] == 180  # 640x360 sample at the 320 px working size
    assert m["ewarp_filtered"] < 0.5 * m["ewarp_processed"], m  # the filter removes most of the flicker
    assert m["psnr_filtered_vs_consistent_db"] > m["psnr_processed_vs_consistent_db"], m
    assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image/")
    assert "E_warp" in summary and "PSNR" in summary
    # the request folder is gone once the answer has been sent (its files were copied to Gradio's cache)
    assert demo_server[0].streamssm_space.requests_in_flight() == []


def test_deflicker_uploaded_pair(client, tmp_path):
    """Pair mode: the processed video and its original, both uploaded; guided by the original."""
    from gradio_client import handle_file

    from streamssm.io import open_sink
    from streamssm.video.operators import make_demo_operator

    src = _frames(SAMPLE_VIDEO)[:6]
    op = make_demo_operator("autocontrast")
    orig, proc = tmp_path / "original.mp4", tmp_path / "processed.mp4"
    for path, frames in ((orig, src), (proc, [op.apply(f, i) for i, f in enumerate(src)])):
        with open_sink(path, fps=24, width=640, height=360) as sink:
            for f in frames:
                sink.write(f)
    _, _, summary, metrics = client.predict(
        handle_file(str(orig)), handle_file(str(proc)), False, "I have the processed video and its original",
        "gamma_jitter", 1.0, TEST_FRAMES, api_name="/deflicker")
    m = _metrics(metrics)
    assert m["mode"] == "pair" and m["frames"] == 6
    assert np.isfinite(m["ewarp_processed"]) and np.isfinite(m["ewarp_filtered"])


def test_smooth_pose_bundled_sample(client):
    plot, video, summary, metrics, joint = client.predict(
        None, True, "(most jitter)", 1.0, 8.0, 100.0, api_name="/smooth_pose")
    m = _metrics(metrics)
    assert m["frames"] == 96 and m["keypoints"] == 33 and m["dims"] == 2
    # streamssm is smoother than the raw MediaPipe track (the pose benchmark's claim, on this clip)
    assert m["accel_streamssm_pct_body"] < m["accel_raw_pct_body"], m
    frames = _frames(video)
    assert len(frames) == 48  # TEST_LIMITS.max_anim_frames
    h, w = frames[0].shape[:2]
    assert w % 3 == 0 and max(w // 3, h) == 240  # [raw | One Euro | streamssm], 240 px panels (TEST_LIMITS)
    assert plot["type"] == "matplotlib"
    assert "Mean acceleration" in summary


def test_smooth_pose_csv_named_txt(client, tmp_path):
    """A CSV pose file is recognised by its content, whatever its extension; a chosen joint is plotted."""
    from gradio_client import handle_file

    from streamssm.io.pose_files import PoseData, read_pose, write_pose

    d = read_pose(SAMPLE_POSE)
    csv = write_pose(tmp_path / "walk.csv", PoseData(d.points[:40, :, :2] * 100, None, 30.0, {}))
    renamed = csv.rename(tmp_path / "walk.txt")
    _, _, summary, metrics, joint = client.predict(
        handle_file(str(renamed)), False, "left_wrist", 1.0, 8.0, 100.0, api_name="/smooth_pose")
    m = _metrics(metrics)
    assert m["frames"] == 40 and m["keypoints"] == 33 and m["fps"] == 30.0
    assert m["joint"] == "left_wrist"


def test_webcam_frames_share_a_session(client, tmp_path):
    """``/webcam_frame`` runs the webcam tab's step; consecutive calls of one client share its filter.

    The same camera frame, four times, through gamma_jitter: the processed half flickers, the filtered
    half stays put -- which it can only do if the filter state survives from call to call (a fresh
    filter's first output is close to its input).
    """
    from gradio_client import handle_file
    from PIL import Image

    frame = Image.fromarray(_frames(SAMPLE_VIDEO)[0]).resize((160, 90))
    cam = tmp_path / "cam.png"
    frame.save(cam)
    outs = [np.asarray(Image.open(client.predict(handle_file(str(cam)), "gamma_jitter", 1.0,
                                                 api_name="/webcam_frame")).convert("RGB")) for _ in range(4)]
    assert all(o.shape == (90, 320, 3) for o in outs)  # [processed | filtered]; 160 px is under the work size
    luma_p = np.array([o[:, :160].mean() for o in outs])
    luma_o = np.array([o[:, 160:].mean() for o in outs])
    assert np.abs(np.diff(luma_p)).mean() > 5 * np.abs(np.diff(luma_o)).mean(), (luma_p, luma_o)
