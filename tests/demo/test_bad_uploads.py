"""Bad input through the API: a readable message, and the app still serves the next good request.

The same cases through the page (toasts in headless Chromium) are in ``test_browser.py``; the checks
themselves (by content, caps, paths outside the upload folder) are unit-tested in ``test_jobs.py``.
"""

from __future__ import annotations

import os

import pytest

from streamssm.demo.jobs import SAMPLE_VIDEO
from tests.demo.conftest import MODE_OPERATOR, TEST_FRAMES, TEST_LIMITS


def _good_video_request(client):
    """The follow-up that proves the app still serves: the bundled sample, ticked."""
    _, _, summary, metrics = client.predict(None, None, True, MODE_OPERATOR, "gamma_jitter", 1.0, 4,
                                            api_name="/deflicker")
    assert "E_warp" in summary


def _app_error(client, *args, api_name):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as e:
        client.predict(*args, api_name=api_name)
    return str(e.value)


def test_text_file_renamed_mp4(client, tmp_path):
    from gradio_client import handle_file

    fake = tmp_path / "holiday.mp4"
    fake.write_text("this is a shopping list, not a video\n" * 50)
    msg = _app_error(client, handle_file(str(fake)), None, False, MODE_OPERATOR, "gamma_jitter", 1.0, TEST_FRAMES,
                     api_name="/deflicker")
    assert "holiday.mp4: looks like a text file, not a video" in msg
    assert str(tmp_path) not in msg and "/gradio/" not in msg  # no server paths in what the user sees
    _good_video_request(client)


def test_corrupt_video_bytes(client, tmp_path):
    from gradio_client import handle_file

    junk = tmp_path / "clip.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(20_000))
    msg = _app_error(client, handle_file(str(junk)), None, False, MODE_OPERATOR, "gamma_jitter", 1.0, TEST_FRAMES,
                     api_name="/deflicker")
    assert msg.startswith("clip.mp4: ") and "video" in msg
    _good_video_request(client)


def test_oversized_upload_refused_before_it_lands(client, demo_server, tmp_path):
    """Over the cap (1 MB here): gradio_client refuses to send it, and the server's upload route refuses
    it too (a client that skips the check gets HTTP 413, and nothing reaches a handler)."""
    import httpx
    from gradio_client import handle_file

    big = tmp_path / "big.mp4"
    big.write_bytes(SAMPLE_VIDEO.read_bytes() * 8)  # ~2 MB of a real video
    assert big.stat().st_size > TEST_LIMITS.max_upload_bytes
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(handle_file(str(big)), None, False, MODE_OPERATOR, "gamma_jitter", 1.0, TEST_FRAMES,
                       api_name="/deflicker")
    url = demo_server[1].rstrip("/") + "/gradio_api/upload"
    with open(big, "rb") as f:
        r = httpx.post(url, files={"files": ("big.mp4", f, "video/mp4")}, timeout=30)
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert "maximum" in r.text.lower() or "size" in r.text.lower()
    _good_video_request(client)


def test_pose_csv_with_wrong_columns(client, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "keypoints.csv"
    bad.write_text("frame,joint,u,v\n0,0,1.0,2.0\n1,0,1.5,2.5\n2,0,1.0,2.0\n")
    msg = _app_error(client, handle_file(str(bad)), False, "(most jitter)", 1.0, 8.0, 100.0, api_name="/smooth_pose")
    assert ("keypoints.csv: expected header 'frame,joint,x,y[,z][,confidence or visibility]', got 'frame,joint,u,v'"
            in msg)
    _, _, summary, _, _ = client.predict(None, True, "(most jitter)", 1.0, 8.0, 100.0, api_name="/smooth_pose")
    assert "Mean acceleration" in summary


def test_pose_npz_without_landmarks_and_binary_junk(client, tmp_path):
    import numpy as np
    from gradio_client import handle_file

    npz = tmp_path / "scores.npz"
    np.savez(npz, scores=np.zeros(5))
    msg = _app_error(client, handle_file(str(npz)), False, "(most jitter)", 1.0, 8.0, 100.0, api_name="/smooth_pose")
    assert "scores.npz: expected key 'landmarks_raw' (MediaPipe layout) or 'points'" in msg
    junk = tmp_path / "pose.json"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(256)) * 4)
    msg = _app_error(client, handle_file(str(junk)), False, "(most jitter)", 1.0, 8.0, 100.0, api_name="/smooth_pose")
    assert msg.startswith("pose.json: not a pose file")


def test_no_input_at_all(client):
    msg = _app_error(client, None, None, False, MODE_OPERATOR, "gamma_jitter", 1.0, TEST_FRAMES, api_name="/deflicker")
    assert "upload a video, or tick" in msg


def test_an_unexpected_failure_is_reported_and_the_app_goes_on(client, monkeypatch):
    """A bug (here: an injected RuntimeError) is logged server-side and shown as a plain message."""
    import streamssm.demo.app as demo_app

    def boom(*args, **kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(demo_app, "iter_video_job", boom)
    msg = _app_error(client, None, None, True, MODE_OPERATOR, "gamma_jitter", 1.0, TEST_FRAMES, api_name="/deflicker")
    assert "the server failed on this input (RuntimeError: injected failure); the app is still running" in msg
    monkeypatch.undo()
    _good_video_request(client)
