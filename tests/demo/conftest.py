"""One demo server for the whole tests/demo folder: small caps so every request takes a few seconds.

The server runs in this process (``serve(block=False)``) on a free localhost port. Tests that need it
skip only when Gradio (or, for the browser tests, Playwright / Debian's Chromium) is not installed.
"""

from __future__ import annotations

import os
import socket

import pytest

from streamssm.demo.jobs import Limits

# 1 MB upload cap: the 0.24 MB sample passes, a 2 MB file is "oversized". 320 px keeps the screenshot
# readable; 8 frames keep a request at a few seconds on 2 CPU cores.
TEST_LIMITS = Limits(max_upload_mb=1.0, max_frames=24, work_px=320, max_anim_frames=48, anim_panel_px=240)
TEST_FRAMES = 8
MODE_OPERATOR = "Apply a flicker-prone operator to my video"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need_gradio():
    try:
        import gradio  # noqa: F401
        import gradio_client  # noqa: F401
    except ImportError as e:
        pytest.skip(f"the demo extra is not installed ({e.name} missing): pip install -e '.[demo]'")


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory):
    """(app, url) of a running demo; closed at the end of the session."""
    need_gradio()
    # Gradio's upload/cache folder under pytest's tmp, so test runs leave nothing in /tmp/gradio
    saved = {k: os.environ.get(k) for k in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED")}
    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio-cache"))
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from streamssm.demo.app import build_app, serve

    app = build_app(TEST_LIMITS, device="cpu", default_frames=TEST_FRAMES,
                    temp_root=tmp_path_factory.mktemp("demo-root"))
    try:
        _, url, _ = serve(app, host="127.0.0.1", port=_free_port(), block=False, quiet=True)
        yield app, url
    finally:
        app.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def client(demo_server):
    from gradio_client import Client

    return Client(demo_server[1], verbose=False)


def pytest_collection_modifyitems(items):
    # Gradio's queue calls pandas APIs that pandas 3 deprecates: not ours to fix, hide the noise.
    for item in items:
        if "tests/demo" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.filterwarnings("ignore::Warning:gradio.*"))
