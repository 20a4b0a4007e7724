"""The demo driven in a real browser: Debian's headless Chromium through Playwright (no browser download).

``test_video_tab_in_the_browser`` uploads the sample, runs the filter, waits for the side-by-side video
to be playable and the luminance plot to be drawn, and saves a screenshot (``tmp_path/demo.png``; set
``STREAMSSM_DEMO_SCREENSHOT=docs/demo.png`` to refresh the README's picture -- not done by default, so
a test run leaves the checkout clean). Bad input shows a readable toast and the page keeps working;
the webcam tab streams Chromium's fake camera through the filter.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamssm.demo.jobs import SAMPLE_VIDEO

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_FRAMES = 24  # enough for the luminance plot to show the flicker


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright (the Python package) is not installed: pip install playwright")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: apt-get install chromium chromium-driver (Debian)")
    with sync_playwright() as p:
        # --no-sandbox: CI and containers run as root; the fake media flags give a camera for the webcam tab
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"])
        yield b
        b.close()


@pytest.fixture
def page(browser, demo_server):
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000}, permissions=["camera"])
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(demo_server[1])
    pg.wait_for_selector("#run-video")
    yield pg
    ctx.close()


VIDEO_PLAYABLE = """() => { const v = document.querySelector('#video-out video');
  return v !== null && v.readyState >= 2 && v.videoWidth > 0 && !v.error; }"""


def _wait_for_toast(page, text: str) -> str:
    loc = page.get_by_text(text).first
    loc.wait_for(state="visible", timeout=60_000)
    return loc.inner_text()


def test_video_tab_in_the_browser(page, tmp_path):
    page.locator("#video-in input[type=file]").set_input_files(str(SAMPLE_VIDEO))
    page.wait_for_selector("#video-in video")  # the upload landed and is previewed
    frames = page.locator("#frames input[type=number]")  # the "Frames to filter" slider's box
    frames.fill(str(SCREENSHOT_FRAMES))
    frames.press("Enter")
    page.click("#run-video")
    page.wait_for_function(VIDEO_PLAYABLE, timeout=120_000)
    page.wait_for_function("() => { const i = document.querySelector('#luma-plot img'); return i && i.naturalWidth > 0; }")
    w, h = page.evaluate("() => { const v = document.querySelector('#video-out video'); return [v.videoWidth, v.videoHeight]; }")
    assert (w, h) == (640, 180)  # [processed | filtered] at the 320 px working size
    summary = page.inner_text("#video-summary")
    assert "E_warp" in summary and "PSNR" in summary and f"{SCREENSHOT_FRAMES} of 96 frames" in summary
    page.wait_for_timeout(500)  # let the player paint a frame
    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    target = os.environ.get("STREAMSSM_DEMO_SCREENSHOT")
    if target:  # 256 colours: a third of the size, and the page is mostly flat colour anyway
        from PIL import Image

        dest = Path(target) if Path(target).is_absolute() else ROOT / target
        Image.open(shot).convert("RGB").quantize(colors=256).save(dest, optimize=True)


def test_bad_inputs_in_the_page(page, tmp_path):
    # a text file renamed .mp4
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video\n" * 100)
    page.locator("#video-in input[type=file]").set_input_files(str(fake))
    page.wait_for_selector("#video-in video", state="attached")  # uploaded (the preview cannot play it)
    page.click("#run-video")
    assert "notes.mp4: looks like a text file, not a video" in _wait_for_toast(page, "looks like a text file")

    # an oversized upload (the test server's cap is 1 MB): refused by the page before it is sent
    page.reload()
    page.wait_for_selector("#run-video")
    big = tmp_path / "big.mp4"
    big.write_bytes(SAMPLE_VIDEO.read_bytes() * 8)
    page.locator("#video-in input[type=file]").set_input_files(str(big))
    assert "big.mp4" in _wait_for_toast(page, "exceed the maximum allowed size")

    # a pose file with the wrong columns
    page.get_by_role("tab", name="Pose").click()
    bad = tmp_path / "keypoints.csv"
    bad.write_text("frame,joint,u,v\n0,0,1,2\n1,0,1,2\n2,0,1,2\n")
    page.locator("#pose-in input[type=file]").set_input_files(str(bad))
    page.locator("#pose-in").get_by_text("keypoints.csv").wait_for()  # uploaded
    page.click("#run-pose")
    _wait_for_toast(page, "expected header 'frame,joint,x,y[,z][,confidence or visibility]', got 'frame,joint,u,v'")

    # ... and the app still serves: the bundled pose sample in the same page (upload cleared)
    page.locator("#pose-in button[aria-label='Clear']").click()
    page.locator("#pose-in").get_by_text("keypoints.csv").wait_for(state="detached")
    page.click("#run-pose")
    page.wait_for_function("() => { const i = document.querySelector('#pose-plot img'); return i && i.naturalWidth > 0; }")
    page.wait_for_function("() => { const v = document.querySelector('#pose-video video'); return v && v.readyState >= 2; }")
    assert "Mean acceleration" in page.inner_text("#pose-summary")


def test_webcam_tab_streams_the_fake_camera(page):
    page.get_by_role("tab", name="Webcam").click()
    page.get_by_text("Click to Access Webcam").click()
    page.locator("#cam button[aria-label='capture photo']").click()  # starts the stream
    src = "() => { const i = document.querySelector('#cam-out img'); return i ? i.src : null; }"
    page.wait_for_function(f"() => ({src})() !== null", timeout=60_000)
    seen = {page.evaluate(src)}
    for _ in range(40):  # several distinct filtered frames arrive: it is a stream, not one shot
        page.wait_for_timeout(250)
        seen.add(page.evaluate(src))
        if len(seen) >= 3:
            break
    assert len(seen) >= 3, seen
