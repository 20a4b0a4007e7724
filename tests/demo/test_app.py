"""``streamssm demo`` as a process: what it prints at start and what it leaves behind when stopped."""

from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np

from streamssm.demo.app import local_url
from tests._media import env
from tests.demo.conftest import _free_port, need_gradio


def test_a_wildcard_host_prints_an_address_a_browser_opens():
    """--host 0.0.0.0 printed http://0.0.0.0:PORT, which some browsers cannot open."""
    assert local_url("0.0.0.0", 7860) == "http://127.0.0.1:7860 (listening on every interface, port 7860)"
    assert local_url("::", 80).startswith("http://127.0.0.1:80 (listening on every interface")
    assert local_url("127.0.0.1", 7860) == "http://127.0.0.1:7860"
    assert local_url("::1", 7860) == "http://[::1]:7860"


def test_sigterm_leaves_no_cache_behind(tmp_path):
    """After SIGTERM, Gradio's cache still held the served results and empty upload files (its shutdown deletes only
    the files it tracks, from <tmp>/gradio, shared by every Gradio app). The demo now keeps Gradio's cache in its own
    temporary root and removes it whole: the temporary folder it ran with is empty again."""
    need_gradio()
    from gradio_client import Client, handle_file

    from streamssm.io.pose_files import PoseData, write_pose

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    e = {k: v for k, v in env().items() if k != "GRADIO_TEMP_DIR"}
    e.update(TMPDIR=str(tmp), GRADIO_ANALYTICS_ENABLED="False")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamssm.demo.app", "--port", str(port), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=e)
    try:
        line = proc.stdout.readline()  # printed once the port is ours
        assert line.startswith(f"streamssm demo: http://127.0.0.1:{port} (Ctrl-C to stop)"), line
        pose = write_pose(tmp_path / "walk.csv",
                          PoseData(np.random.default_rng(0).random((12, 5, 2), np.float32), None, 30.0, {}))
        out = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            handle_file(str(pose)), False, "(most jitter)", 1.0, 8.0, 100.0, api_name="/smooth_pose")
        assert "Mean acceleration" in out[2]
        assert any(tmp.rglob("*.mp4")), "the served result should be in the demo's cache while it runs"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))
    assert left == [], left
