"""The browser demo behind ``streamssm demo``: deflicker and pose smoothing in three Gradio tabs.

Two modules, so the work can be tested (and reused) without Gradio:

- :mod:`streamssm.demo.jobs` -- what each tab computes, Gradio-free: input checks (by content, with
  size / duration / resolution / frame caps), the video job (operator or uploaded pair -> filtered
  side-by-side H.264 clip, luminance plot, E_warp and PSNR), the pose job (raw vs One Euro vs
  streamssm, trajectory plot, skeleton animation), the per-session webcam filter, and the app's
  temporary folder (one root, one folder per request, deleted after the answer is sent).
- :mod:`streamssm.demo.app` -- the Gradio UI over those jobs: :func:`~streamssm.demo.app.build_app`
  returns the ``gr.Blocks``, :func:`~streamssm.demo.app.serve` launches it with the upload cap and a
  bounded queue, :func:`~streamssm.demo.app.main` is ``streamssm demo``.

The app lives in the package (not only in the top-level ``demo/`` folder) because ``streamssm demo``
must work from an installed wheel; ``demo/app.py`` is a thin launcher for a checkout. Gradio and
matplotlib are imported here only when a function needs them (``pip install "streamssm[demo]"``).
"""
