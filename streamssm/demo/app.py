"""The Gradio app: Video, Webcam and Pose tabs over :mod:`streamssm.demo.jobs`.

``streamssm demo [--host 127.0.0.1] [--port 7860] [--share]`` (:func:`main`) or, in Python::

    from streamssm.demo.app import build_app, serve
    app = build_app()                      # gr.Blocks, queue already bounded
    serve(app, port=7860)                  # blocks; Ctrl-C stops it

Endpoints (for ``gradio_client``): ``/deflicker`` (video tab), ``/smooth_pose`` (pose tab),
``/webcam_frame`` (one webcam frame through the per-session filter; the browser's stream event runs the same
step, left out of the API listing: ``gradio_client`` cannot consume a stream).

How the web layer keeps its promises:

* **Readable errors.** Every handler runs inside :func:`_page_errors`: a :class:`~streamssm.demo.jobs.DemoError`
  (bad input: not a video, too big, wrong columns ...) becomes ``gr.Error`` with its message, shown in
  the page; anything else is logged with its traceback and reported as a server-side failure. Either
  way the app keeps serving the next request.
* **Bounded work.** ``queue(default_concurrency_limit=..., max_size=...)`` bounds the jobs running and
  waiting; Gradio's upload route refuses files over ``Limits.max_upload_mb`` before they reach disk
  (``launch(max_file_size=...)``); the jobs check duration, resolution and frame caps by content.
* **Temporary files.** Each request works in its own folder under one app temporary root. The
  handlers are generators: they yield the result once, Gradio copies the output files into its
  cache while post-processing that yield, and when Gradio resumes the generator the ``with`` block
  ends and the request folder is deleted. Gradio's cache itself (uploads and served copies) is
  swept by ``delete_cache``; under ``streamssm demo`` (:func:`run_demo`) it lies in the app's temporary root
  (unless ``GRADIO_TEMP_DIR`` names another folder), removed whole at shutdown (Ctrl-C or SIGTERM). The handlers
  only read a path that lies inside Gradio's upload folder, the app's root or the package's assets
  (:func:`~streamssm.demo.jobs.check_upload`). That check comes after Gradio's own: an audit (session 16) found
  Gradio 6.31 copying a server path an API client named (``/etc/passwd``) into its cache before the handler ran,
  and the handler's refusal then told the client the file exists (a minimal Gradio app does the same). Keep
  ``--host`` on 127.0.0.1 and ``--share`` off on a machine with files a stranger must not probe.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from streamssm.demo.jobs import (
    ASSETS,
    DEMO_OPERATOR_NAMES,
    ONE_EURO_DEFAULTS,
    SAMPLE_POSE,
    SAMPLE_VIDEO,
    DemoError,
    Limits,
    TempSpace,
    WebcamSession,
    check_upload,
    luminance_figure,
    run_pose_job,
    iter_video_job,
    trajectory_figure,
)

log = logging.getLogger("streamssm")

__all__ = ["build_app", "serve", "main", "add_demo_parser", "run_demo"]

MODE_OPERATOR = "Apply a flicker-prone operator to my video"
MODE_PAIR = "I have the processed video and its original"
AUTO_JOINT = "(most jitter)"
ERROR_SECONDS = 30  # how long an error toast stays in the page
PROGRESS_SECONDS = 0.1  # a video job's progress line is sent this often: a cancelled job stops within it


def _gradio():
    try:
        import gradio as gr
    except ImportError:
        raise ValueError("the demo needs Gradio: pip install 'streamssm[demo]'") from None
    return gr


@contextlib.contextmanager
def _page_errors():
    """DemoError -> gr.Error(message); anything else -> logged, and a plain server-failure message."""
    gr = _gradio()
    try:
        yield
    except gr.Error:
        raise
    except DemoError as e:
        raise gr.Error(str(e), duration=ERROR_SECONDS, print_exception=False) from None
    except Exception as e:  # a bug or an input we did not foresee: say so, keep serving
        log.exception("streamssm demo: request failed")
        raise gr.Error(f"the server failed on this input ({type(e).__name__}: {e}); the app is still running, "
                       "try another file", duration=ERROR_SECONDS, print_exception=False) from None


def _upload_roots(space: TempSpace) -> list[Path]:
    """Where a file a client names may be read from: Gradio's upload folder (``GRADIO_TEMP_DIR``, default
    ``<tmp>/gradio``, read at call time as Gradio does), the app's root, the package's assets."""
    import tempfile

    folder = os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")
    return [Path(folder).resolve(), space.root, ASSETS.resolve()]


def _path(value: Any) -> str | None:
    """A component's file value as a path string (gr.File may hand over an object with ``.name``)."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        value = value.get("path") or value.get("name")
    return os.fspath(getattr(value, "name", value))


def build_app(limits: Limits = Limits(), *, device: str = "auto", default_frames: int = 48,
              temp_root: str | os.PathLike | None = None, concurrency: int = 2, queue_size: int = 16):
    """The demo as a ``gr.Blocks`` (queue configured). Launch it with :func:`serve`.

    ``limits``: caps on uploads and work (:class:`~streamssm.demo.jobs.Limits`). ``default_frames``:
    the frames slider's start value. ``temp_root``: the folder the per-request folders go in
    (default: a fresh temporary folder, removed at exit). ``concurrency``: jobs run at once per
    event; ``queue_size``: requests that may wait (more get a "queue full" message).
    """
    gr = _gradio()
    space = TempSpace(temp_root)
    default_frames = max(2, min(int(default_frames), limits.max_frames))

    def video_fn(video, processed, use_sample, mode, operator, strength, frames):
        with _page_errors(), space.request() as work:
            roots = _upload_roots(space)
            pair = mode == MODE_PAIR
            if pair:
                if _path(video) is None or _path(processed) is None:
                    raise DemoError("pair mode needs two uploads: the processed video and the original it was made from")
                orig = check_upload(_path(video), what="original video", limits=limits, roots=roots)
                proc = check_upload(_path(processed), what="processed video", limits=limits, roots=roots)
            else:
                proc = None
                if _path(video) is not None:  # an upload always wins: no race with the checkbox
                    orig = check_upload(_path(video), what="video", limits=limits, roots=roots)
                elif use_sample:
                    orig = (SAMPLE_VIDEO, SAMPLE_VIDEO.name)
                else:
                    raise DemoError("upload a video, or tick 'use the bundled sample clip'")
            job = iter_video_job(work, video=orig, processed=proc, operator=operator, strength=strength,
                                 max_frames=int(frames or default_frames), limits=limits, device=device)
            # The job yields after every frame; this handler passes a progress line on to the page at most every
            # PROGRESS_SECONDS. Each of its yields is where Gradio can close it (a cancelled request): the job is
            # closed then too (closing(): before its folder goes), and stops at the frame it is on.
            shown = 0.0
            with contextlib.closing(job):
                while True:
                    try:
                        msg = next(job)
                    except StopIteration as done:
                        res = done.value
                        break
                    if time.monotonic() - shown >= PROGRESS_SECONDS:
                        shown = time.monotonic()
                        yield gr.update(), gr.update(), f"*{msg} ...*", gr.update()
            yield str(res.video), luminance_figure(res.luma), res.summary, res.metrics

    def pose_fn(pose_file, use_sample, joint, strength, min_cutoff, beta):
        with _page_errors(), space.request() as work:
            background = None
            if _path(pose_file) is not None:
                pose = check_upload(_path(pose_file), what="pose file", limits=limits, roots=_upload_roots(space))
            elif use_sample:
                pose, background = (SAMPLE_POSE, SAMPLE_POSE.name), SAMPLE_VIDEO
            else:
                raise DemoError("upload a pose file (.npz / .csv / .json), or tick 'use the bundled sample'")
            if min_cutoff is None or beta is None:
                raise DemoError("One Euro's min_cutoff and beta need numbers (the boxes are empty)")
            res = run_pose_job(work, pose=pose, joint=None if joint == AUTO_JOINT else joint, strength=strength,
                               min_cutoff=float(min_cutoff), beta=float(beta), limits=limits, device=device,
                               background=background)
            choices = [AUTO_JOINT] + res.joint_names
            yield (trajectory_figure(res), str(res.video), res.summary, res.metrics,
                   gr.update(choices=choices, value=joint if joint in choices else AUTO_JOINT))

    def webcam_fn(frame, operator, strength, session):
        with _page_errors():
            if session is None:
                session = WebcamSession(device=device)
            return session.step(frame, operator, strength, limits), session

    with gr.Blocks(title="streamssm demo", analytics_enabled=False, delete_cache=(600, 3600)) as app:
        gr.Markdown(
            "# streamssm: causal streaming temporal consistency\n"
            "A selective state-space model removes the **flicker** of per-frame video operators and the "
            "**jitter** of per-frame pose estimators, one frame at a time, with no look-ahead.  \n"
            f"Limits here: uploads up to {limits.max_upload_mb:g} MB; videos up to {limits.max_seconds:g} s and "
            f"{limits.max_resolution[0]}x{limits.max_resolution[1]}, of which the first {limits.max_frames} frames "
            f"at most are filtered at {limits.work_px} px on the long side (the full-size path is `streamssm video`)."
        )
        with gr.Tab("Video", id="video"):
            with gr.Row():
                with gr.Column():
                    mode = gr.Radio([MODE_OPERATOR, MODE_PAIR], value=MODE_OPERATOR, label="What to filter")
                    use_sample = gr.Checkbox(value=True, label="Use the bundled sample clip when nothing is uploaded")
                    video_in = gr.Video(sources=["upload"], label="Video (the original, unprocessed frames)", elem_id="video-in")
                    processed_in = gr.Video(sources=["upload"], label="Processed video (per-frame output of your operator)",
                                            visible=False, elem_id="processed-in")
                    operator = gr.Dropdown(list(DEMO_OPERATOR_NAMES), value=DEMO_OPERATOR_NAMES[0],
                                           label="Per-frame operator that makes the flicker")
                    strength = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Filter strength (0 = off, 1 = trained)")
                    frames = gr.Slider(2, limits.max_frames, value=default_frames, step=1, label="Frames to filter",
                                       elem_id="frames")
                    run_video = gr.Button("Filter", variant="primary", elem_id="run-video")
                with gr.Column():
                    # show_label=False: the panels carry their titles in the picture, where the label would cover them
                    video_out = gr.Video(label="[processed | filtered]", show_label=False, autoplay=True, loop=True,
                                         interactive=False, elem_id="video-out")
                    luma_plot = gr.Plot(label="Per-frame mean luminance", elem_id="luma-plot")
                    video_summary = gr.Markdown(elem_id="video-summary")
                    with gr.Accordion("Numbers (JSON)", open=False):
                        video_metrics = gr.JSON(label="metrics")
            mode.change(lambda m: (gr.update(visible=m == MODE_PAIR), gr.update(visible=m != MODE_PAIR),
                                   gr.update(visible=m != MODE_PAIR),
                                   gr.update(label="Original video (what the operator saw)" if m == MODE_PAIR
                                             else "Video (the original, unprocessed frames)")),
                        mode, [processed_in, operator, use_sample, video_in], queue=False, api_name=False)
            run_video.click(video_fn, [video_in, processed_in, use_sample, mode, operator, strength, frames],
                            [video_out, luma_plot, video_summary, video_metrics], api_name="deflicker")

        with gr.Tab("Webcam", id="webcam"):
            gr.Markdown("Your camera's frames go through the operator and the filter live; each browser session "
                        f"has its own filter state. A stream stops after {limits.webcam_seconds} s (start it again).")
            with gr.Row():
                cam_op = gr.Dropdown(["none", *DEMO_OPERATOR_NAMES], value=DEMO_OPERATOR_NAMES[0],
                                     label="Per-frame operator ('none': filter the camera as it is)")
                cam_strength = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Filter strength")
            with gr.Row():
                cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Camera", elem_id="cam")
                cam_out = gr.Image(type="numpy", label="[processed | filtered]", interactive=False, elem_id="cam-out")
            session = gr.State(None, time_to_live=limits.webcam_seconds * 5)
            cam.stream(webcam_fn, [cam, cam_op, cam_strength, session], [cam_out, session], api_name="webcam",
                       stream_every=0.2, time_limit=limits.webcam_seconds, concurrency_limit=concurrency,
                       api_visibility="undocumented")  # the browser's; gradio_client cannot consume a stream
            # The same step as a plain event: gradio_client cannot consume stream events (it has no
            # 'process_streaming' message), so API users send frames one call at a time here.
            one_frame = gr.Button("Filter one frame", visible=False)
            one_frame.click(webcam_fn, [cam, cam_op, cam_strength, session], [cam_out, session], api_name="webcam_frame",
                            concurrency_limit=concurrency)

        with gr.Tab("Pose", id="pose"):
            with gr.Row():
                with gr.Column():
                    pose_sample = gr.Checkbox(value=True, label="Use the bundled MediaPipe sample when nothing is uploaded")
                    pose_in = gr.File(label="Pose file: .npz (MediaPipe landmarks_raw or points), .csv "
                                            "(frame,joint,x,y[,z][,confidence]) or .json", file_count="single",
                                      elem_id="pose-in")
                    joint = gr.Dropdown([AUTO_JOINT], value=AUTO_JOINT, allow_custom_value=True, label="Joint to plot")
                    pose_strength = gr.Slider(0.0, 2.0, value=1.0, step=0.05,
                                              label="streamssm strength (1 = trained; above 1 overshoots, it does "
                                                    "not smooth more)")
                    with gr.Accordion("One Euro baseline", open=False):
                        min_cutoff = gr.Number(ONE_EURO_DEFAULTS["min_cutoff"], label="min_cutoff (Hz)")
                        beta = gr.Number(ONE_EURO_DEFAULTS["beta"], label="beta")
                    run_pose = gr.Button("Smooth", variant="primary", elem_id="run-pose")
                with gr.Column():
                    traj_plot = gr.Plot(label="Joint trajectory", elem_id="pose-plot")
                    skeleton = gr.Video(label="[raw | One Euro | streamssm]", show_label=False, autoplay=True, loop=True,
                                        interactive=False, elem_id="pose-video")
                    pose_summary = gr.Markdown(elem_id="pose-summary")
                    with gr.Accordion("Numbers (JSON)", open=False):
                        pose_metrics = gr.JSON(label="metrics")
            run_pose.click(pose_fn, [pose_in, pose_sample, joint, pose_strength, min_cutoff, beta],
                           [traj_plot, skeleton, pose_summary, pose_metrics, joint], api_name="smooth_pose")

    app.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    app.streamssm_limits = limits  # serve() reads the upload cap from here
    app.streamssm_space = space
    return app


def serve(app, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False, block: bool = True,
          quiet: bool = False):
    """Launch ``app`` (from :func:`build_app`) with its upload cap; ``block=False`` returns at once
    (tests). Returns Gradio's ``(app, local_url, share_url)``."""
    limits: Limits = getattr(app, "streamssm_limits", Limits())
    try:
        return app.launch(server_name=host, server_port=port, share=share, max_file_size=limits.max_upload_bytes,
                          prevent_thread_lock=not block, quiet=quiet, show_error=True)
    except OSError as e:  # port taken, say
        raise ValueError(f"cannot serve the demo on {host}:{port} ({e}); check that --host {host} is an address of "
                         "this machine and pick another --port") from None


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
def add_demo_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``demo`` on the ``streamssm`` sub-parsers (imports nothing heavy)."""
    s = subparsers.add_parser("demo", help="the browser demo (Gradio): video, webcam and pose tabs",
                              description="Serve the streamssm demo in the browser (needs streamssm[demo]).")
    _add_options(s)
    s.set_defaults(func=run_demo)
    return s


def _add_options(s: argparse.ArgumentParser) -> None:
    d = Limits()
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every interface)")
    s.add_argument("--port", type=int, default=7860)
    s.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    s.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda[:N]")
    s.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb)
    s.add_argument("--max-seconds", type=float, default=d.max_seconds, help="longest uploaded video accepted")
    s.add_argument("--max-frames", type=int, default=d.max_frames, help="most frames one video request filters")
    s.add_argument("--work-px", type=int, default=d.work_px, help="long side videos are filtered at")
    s.add_argument("--concurrency", type=int, default=2, help="jobs running at once per tab")
    s.add_argument("--queue-size", type=int, default=16, help="requests that may wait")


def run_demo(args: argparse.Namespace) -> int:
    for name in ("max_upload_mb", "max_seconds", "max_frames", "work_px", "concurrency", "queue_size"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.max_frames < 2:
        raise ValueError("--max-frames must be at least 2")
    if args.work_px < 64:
        raise ValueError(f"--work-px must be at least 64 (the video filter needs frames of 32 px a side), got "
                         f"{args.work_px}")
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be a TCP port, 1 to 65535, got {args.port}")
    from streamssm._device import resolve_device

    resolve_device(args.device)  # at start, not as every request's failure
    limits = Limits(max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds, max_frames=args.max_frames,
                    work_px=args.work_px)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    space = TempSpace()
    # Gradio's cache (uploads, the copies of the results it serves) in the app's own temporary root, unless the
    # user named one: removed with the root at shutdown. Gradio's own shutdown deletes only the files it still
    # tracks, and its default <tmp>/gradio is shared with every Gradio app on the machine.
    ours = not os.environ.get("GRADIO_TEMP_DIR")
    if ours:
        os.environ["GRADIO_TEMP_DIR"] = str(space.root / "gradio")
    try:
        app = build_app(limits, device=args.device, default_frames=min(48, args.max_frames),
                        temp_root=space.root / "requests", concurrency=args.concurrency, queue_size=args.queue_size)
        with _sigterm_as_ctrl_c():
            _, _, share_url = serve(app, host=args.host, port=args.port, share=args.share, block=False, quiet=True)
            # said once the port is ours (a port in use raised above, before any address was printed)
            public = f", public link {share_url}" if share_url else ""
            print(f"streamssm demo: {local_url(args.host, args.port)}{public} (Ctrl-C to stop)", flush=True)
            app.block_thread()
    finally:
        space.close()  # also at exit; explicit so a caller that goes on gets the disk back
        if ours:  # a caller that goes on (tests, a notebook) must not be left pointing at the folder removed
            os.environ.pop("GRADIO_TEMP_DIR", None)
    return 0


def local_url(host: str, port: int) -> str:
    """The address to open in a browser on this machine: a wildcard host (0.0.0.0, ::) is no address a browser
    can open everywhere, so it reads as the loopback one, with a word that the demo listens on every interface."""
    if host in ("0.0.0.0", "::", ""):
        return f"http://127.0.0.1:{port} (listening on every interface, port {port})"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.contextmanager
def _sigterm_as_ctrl_c():
    """SIGTERM (``kill``, a service manager) ends the demo as Ctrl-C does: Gradio closes its server and the
    app's temporary root (Gradio's cache within it) is removed, instead of the process dying with both left
    behind."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """``python -m streamssm.demo.app`` / ``python demo/app.py``: the same options as ``streamssm demo``."""
    p = argparse.ArgumentParser(prog="streamssm demo", description="Serve the streamssm demo in the browser.")
    _add_options(p)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        return run_demo(p.parse_args(argv))
    except ValueError as e:
        print(f"streamssm demo: error: {e}")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
