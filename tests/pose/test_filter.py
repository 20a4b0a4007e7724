"""PoseFilter: the streaming API over PoseSSM (shipped weights, CPU)."""
from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from streamssm.pose.filter import DEFAULT_WEIGHTS, PoseFilter
from tests.conftest import assert_rel_close

FPS = 24.0


def _poses(t=20, k=17, d=2, b=None, seed=0, size=100.0, offset=300.0) -> np.ndarray:
    """A jittery moving skeleton: (t, k, d) or (t, b, k, d) float32, pixel-like units."""
    rng = np.random.default_rng(seed)
    lead = () if b is None else (b,)
    base = rng.uniform(-0.5, 0.5, lead + (k, d)) * size + offset
    tt = np.arange(t).reshape((t,) + (1,) * (len(lead) + 2))
    phase = rng.uniform(0, 2 * np.pi, lead + (k, d))
    motion = 0.2 * size * np.sin(2 * np.pi * tt / 30.0 + phase)
    noise = rng.normal(0, 0.01 * size, (t,) + lead + (k, d))
    return (base + motion + noise).astype(np.float32)


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x))


def _filt(**kw) -> PoseFilter:
    return PoseFilter(device="cpu", fps=FPS, **kw)


# ----------------------------------------------------------------------------- scan == step

@pytest.mark.parametrize("d", [2, 3])
def test_filter_equals_repeated_step(d):
    x = _poses(t=20, d=d)
    f = _filt()
    y_scan = f.filter(x)
    f.reset()
    y_step = np.stack([f.step(p) for p in x])
    assert_rel_close(_t(y_step), _t(y_scan), what=f"step vs filter, {d}-D")


def test_compiled_step_equals_eager_step():
    """PoseFilter(compile=True) runs the same explicit step through torch.compile (the fast CPU path)."""
    x = _poses(t=12, d=2)
    x[5, 3] = np.nan  # a missing keypoint goes through the same masking
    eager, fast = _filt(backend="torch"), _filt(compile=True)
    y_e = np.stack([eager.step(p) for p in x])
    y_c = np.stack([fast.step(p) for p in x])
    assert np.isnan(y_c).sum() == np.isnan(y_e).sum()
    assert_rel_close(_t(np.nan_to_num(y_c)), _t(np.nan_to_num(y_e)), what="compiled vs eager step")
    for a, b in zip(fast.get_state(), eager.get_state()):
        assert_rel_close(a, b, what="compiled vs eager state")


def test_filter_equals_repeated_step_batched():
    x = _poses(t=16, b=3, k=12, d=2)
    f = _filt()
    y_scan = f.filter(x)
    assert y_scan.shape == x.shape
    f.reset()
    y_step = np.stack([f.step(p) for p in x])
    assert_rel_close(_t(y_step), _t(y_scan), what="(T,B,K,D) step vs filter")


def test_batched_streams_equal_each_alone():
    x = _poses(t=30, b=3, k=17, d=3, seed=1)
    x[:, 1] *= 0.01  # streams in different units must not influence each other
    y = _filt().filter(x)
    for i in range(x.shape[1]):
        assert_rel_close(_t(y[:, i]), _t(_filt().filter(x[:, i])), what=f"stream {i}")


def test_causal():
    x = _poses(t=30)
    y_full = _filt().filter(x)
    y_prefix = _filt().filter(x[:12])
    np.testing.assert_allclose(y_prefix, y_full[:12], rtol=1e-5, atol=1e-3)


# --------------------------------------------------------------------------------- types

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_in_numpy_out_dtype_preserved(dtype):
    x = _poses(t=5).astype(dtype)
    f = _filt()
    y = f.filter(x)
    assert isinstance(y, np.ndarray) and y.dtype == dtype and y.shape == x.shape
    y1 = f.step(x[0])
    assert isinstance(y1, np.ndarray) and y1.dtype == dtype and y1.shape == x[0].shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_in_torch_out(dtype):
    x = torch.from_numpy(_poses(t=5)).to(dtype)
    f = _filt()
    y = f.filter(x)
    assert isinstance(y, torch.Tensor) and y.dtype == dtype and y.shape == x.shape
    y1 = f.step(x[0])
    assert isinstance(y1, torch.Tensor) and y1.dtype == dtype and y1.shape == x[0].shape


def test_shipped_weights_load_offline(monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("PoseFilter tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert DEFAULT_WEIGHTS.is_file()
    f = PoseFilter(device="cpu")
    assert f.model.head.weight.abs().sum() > 0, "shipped weights look untrained (zero head = identity filter)"
    assert np.isfinite(f.step(_poses(t=1)[0])).all()


# ------------------------------------------------------------------------ missing samples

def test_strength_zero_returns_input_exactly():
    x = _poses(t=20)
    x[5, 2] = np.nan
    x[7, 4, 1] = np.inf
    y = _filt(strength=0.0).filter(x)
    fin = np.isfinite(x).all(-1)  # one non-finite coordinate marks the whole keypoint missing (held)
    np.testing.assert_array_equal(y[fin], x[fin])
    np.testing.assert_array_equal(y[7, 4], y[6, 4])


def _corrupt(x):
    """NaN/inf in a few samples (whole joints, single coordinates, a whole frame) and the confidence
    that marks the same samples missing instead."""
    bad = x.copy()
    conf = np.ones(x.shape[:-1], np.float32)
    for t, k, c, v in [(4, 3, slice(None), np.nan), (6, 5, 0, np.inf), (7, 7, 1, -np.inf), (8, 0, slice(None), np.nan)]:
        bad[t, k, c] = v
        conf[t, k] = 0
    bad[10] = np.nan
    conf[10] = 0
    return bad, conf


def test_nan_inf_do_not_poison_later_outputs():
    x = _poses(t=20)
    bad, conf = _corrupt(x)
    f = _filt()
    y_bad = f.filter(bad)
    assert np.isfinite(y_bad).all(), "every joint was seen at frame 0, so every output must be finite"
    f.reset()
    y_conf = f.filter(x, confidence=conf)
    np.testing.assert_array_equal(y_bad, y_conf)
    f.reset()
    y_step = np.stack([f.step(p) for p in bad])
    assert_rel_close(_t(y_step), _t(y_bad), what="step vs filter with NaN/inf")


def test_joint_never_seen_is_nan_until_seen():
    x = _poses(t=10)
    x[:4, 2] = np.nan
    y = _filt().filter(x)
    assert np.isnan(y[:4, 2]).all()
    assert np.isfinite(y[4:]).all() and np.isfinite(np.delete(y, 2, axis=1)).all()


def test_all_missing_frame_returns_previous_output():
    x = _poses(t=12)
    x[6] = np.nan
    y = _filt().filter(x)
    np.testing.assert_array_equal(y[6], y[5])
    f = _filt()
    ys = [f.step(p) for p in x[:6]]
    np.testing.assert_array_equal(f.step(x[6]), ys[-1])
    np.testing.assert_array_equal(f.step(x[6], confidence=np.zeros(x.shape[1])), ys[-1])


# --------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("shape, match", [
    ((33,), r"shape \(K, D\) or \(B, K, D\), got \(33,\)"),
    ((5, 33, 4), r"D = 2 or 3 .*\(5, 33, 4\)"),
    ((33, 1), r"D = 2 or 3 .*\(33, 1\)"),
])
def test_step_wrong_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        _filt().step(np.zeros(shape, np.float32))


def test_filter_wrong_shape():
    with pytest.raises(ValueError, match=r"\(T, K, D\) or \(T, B, K, D\), got \(33, 2\)"):
        _filt().filter(np.zeros((33, 2), np.float32))


def test_keypoint_count_change_needs_reset():
    x = _poses(t=3, k=17)
    f = _filt()
    f.step(x[0])
    with pytest.raises(ValueError, match="reset"):
        f.step(x[1, :12])
    with pytest.raises(ValueError, match="reset"):
        f.filter(x[1:, :12])
    f.reset()
    assert f.step(x[1, :12]).shape == (12, 2)


# ------------------------------------------------------------------------- state handling

def test_reset_mask_resets_only_masked_streams():
    x = _poses(t=20, b=3, k=12)
    f, ref = _filt(), _filt()
    f.filter(x[:10])
    ref.filter(x[:10])
    f.reset(np.array([False, True, False]))
    y = f.filter(x[10:])
    y_ref = ref.filter(x[10:])  # no reset
    fresh = _filt().filter(x[10:, 1])
    assert_rel_close(_t(y[:, 1]), _t(fresh), what="reset stream vs fresh filter")
    np.testing.assert_allclose(y[:, [0, 2]], y_ref[:, [0, 2]], rtol=1e-6, atol=1e-4)
    assert not np.allclose(y[:, 1], y_ref[:, 1], rtol=1e-6, atol=1e-4), "reset made no difference"


def test_get_set_state_snapshot_restore():
    x = _poses(t=24)
    f = _filt()
    f.filter(x[:12])
    snap = f.get_state()
    a = f.filter(x[12:])
    f.set_state(snap)
    b = f.filter(x[12:])
    np.testing.assert_array_equal(a, b)
    g = _filt()
    g.set_state(snap)  # a snapshot moves to another filter
    np.testing.assert_array_equal(g.filter(x[12:]), a)


def test_a_restored_snapshot_keeps_the_stream_timeline():
    """A snapshot carries the last timestamp and D: after a restore the next frame is checked against them (a
    9 s gap starts over as it would have in the original filter; a time going back or a new D is refused)."""
    x = _poses(t=31)
    f = _filt()
    for i in range(30):
        f.step(x[i], timestamp=i / 30)
    snap = f.get_state()
    assert snap.last_timestamp == pytest.approx(29 / 30) and snap.dims == x.shape[-1]
    g = _filt()
    g.set_state(snap)
    np.testing.assert_array_equal(g.step(x[30], timestamp=10.0), f.step(x[30], timestamp=10.0))
    np.testing.assert_allclose(g.step(x[30], timestamp=10.0 + 1 / 30), _filt().filter(x[30:31].repeat(2, 0))[1],
                               rtol=1e-5, atol=1e-3)  # started over at 10 s
    g.set_state(snap)
    with pytest.raises(ValueError, match="does not come after"):
        g.step(x[30], timestamp=0.5)
    with pytest.raises(ValueError, match="dimension cannot change"):
        g.step(np.concatenate([x[30], x[30][:, :1]], -1))
    g.set_state(tuple(snap))  # a plain tuple of the tensors: the timeline starts at the next frame
    g.step(x[30], timestamp=0.5)


# ------------------------------------------------------------------------------- units

@pytest.mark.parametrize("d", [2, 3])
def test_scale_invariance(d):
    x = _poses(t=30, d=d, size=1.0, offset=0.5)  # metres / normalised
    y = _filt().filter(x)
    y_mm = _filt().filter(x * 1000)
    assert_rel_close(_t(y_mm), _t(1000 * y), tol=1e-4, what="points*1000")


def test_translation_invariance():
    x = _poses(t=30)
    y = _filt().filter(x)
    shift = np.array([250.0, -120.0], np.float32)
    assert_rel_close(_t(_filt().filter(x + shift)), _t(y + shift), what="points + c")


def test_pixels_vs_normalised_coordinates():
    norm = _poses(t=30, size=0.4, offset=0.5)  # MediaPipe-like, in [0, 1]
    w = 1280.0
    px = norm * w + np.float32(7.0)  # isotropic scale (square pixels) and an offset
    y_norm = _filt().filter(norm)
    y_px = _filt().filter(px)
    assert_rel_close(_t(y_px), _t(y_norm * w + 7.0), what="pixels vs normalised")


def test_units_invariance_when_stream_starts_with_one_keypoint():
    # Regression: the body size used to start at 1.0 (in the caller's units) until a frame had two
    # valid joints, so normalised and millimetre inputs were filtered differently, even afterwards.
    x = _poses(t=20, size=0.4, offset=0.5)
    x[:8, 1:] = np.nan
    y = _filt().filter(x)
    y_mm = _filt().filter(x * 1000)
    np.testing.assert_array_equal(y[:8, 0], x[:8, 0])  # no body size yet: no correction
    assert_rel_close(_t(y_mm[8:]), _t(1000 * y[8:]), tol=1e-4, what="points*1000 after a one-keypoint start")


def test_implausible_fps_is_logged(caplog):
    """A frame rate far outside what the weights were trained on (24-60 fps) runs, with a log line saying so; one
    inside does not log."""
    with caplog.at_level("WARNING", logger="streamssm"):
        PoseFilter(device="cpu", fps=30)
        assert "fps" not in caplog.text
        f = PoseFilter(device="cpu", fps=1e-9)
        assert "fps 1e-09 is far outside the 24-60 fps" in caplog.text
        caplog.clear()
        f.fps = 30000
        assert "fps 30000 is far outside" in caplog.text


def test_millisecond_timestamps_are_named_not_silently_unsmoothed(caplog):
    """MediaPipe's timestamp_ms given as seconds: every step is a gap over max_gap, so the filter starts over at every
    frame (output == input), silently before. filter() says so; step() after three such frames."""
    x = _poses(t=12)
    ms = np.arange(12) * 1000 / FPS
    with caplog.at_level("WARNING", logger="streamssm"):
        y = PoseFilter(device="cpu", fps=FPS).filter(x, timestamps=ms)
    acc = lambda a: np.abs(np.diff(a, 2, axis=0)).mean()  # noqa: E731
    assert acc(y) > 0.9 * acc(x)  # nothing smoothed, and said so (sparse keyframes may mean it)
    assert "11 of the 11 steps between frames are gaps over max_gap" in caplog.text and "milliseconds?" in caplog.text
    caplog.clear()
    f = PoseFilter(device="cpu", fps=FPS)
    with caplog.at_level("WARNING", logger="streamssm"):
        for i in range(2):
            f.step(x[i], timestamp=ms[i])
        assert "milliseconds" not in caplog.text  # one long gap is a pause, not a unit
        for i in range(2, 5):
            f.step(x[i], timestamp=ms[i])
    assert caplog.text.count("milliseconds? divide by 1000") == 1
    # seconds, with one real pause over max_gap, are fine
    s = np.arange(12) / FPS
    s[6:] += 3.0
    caplog.clear()
    with caplog.at_level("WARNING", logger="streamssm"):
        PoseFilter(device="cpu", fps=FPS).filter(x, timestamps=s)
    assert "milliseconds" not in caplog.text


def test_one_keypoint_is_passed_through_with_a_warning(caplog):
    x = _poses(t=6, k=1)
    with caplog.at_level("WARNING", logger="streamssm"):
        y = PoseFilter(device="cpu", fps=FPS).filter(x)
    np.testing.assert_array_equal(y, x)
    assert "one keypoint per frame has no body size" in caplog.text


def test_coordinates_that_would_overflow_are_refused():
    f = PoseFilter(device="cpu", fps=FPS)
    x = _poses(t=4)
    y = f.filter(x * np.float32(1e15))  # large, but within float32 arithmetic: filtered
    assert np.isfinite(y).all()
    for big in (x * np.float32(1e17), torch.from_numpy(x * np.float32(1e17))):
        with pytest.raises(ValueError, match="coordinates up to .* beyond 1e\\+18"):
            PoseFilter(device="cpu", fps=FPS).filter(big)


# ----------------------------------------------------------------------------- one fps per stream

@pytest.mark.parametrize("native", [True, False])
def test_one_fps_per_stream_is_each_stream_at_its_own_rate(native):
    """fps=(24, 60, 30): stream i filtered as it would be alone at its rate, stepping (native C step or PyTorch)
    and scanning alike; the rate matters (60 differs from 24)."""
    rates = (24.0, 60.0, 30.0)
    x = _poses(t=18, b=3, k=12, d=2, seed=3)
    f = PoseFilter(device="cpu", fps=rates, native=native)
    assert f.fps == rates
    y_step = np.stack([f.step(p) for p in x])
    y_scan = PoseFilter(device="cpu", fps=list(rates)).filter(x)
    assert_rel_close(_t(y_step), _t(y_scan), what="per-stream fps: step vs filter")
    for i, r in enumerate(rates):
        alone = PoseFilter(device="cpu", fps=r).filter(x[:, i])
        assert_rel_close(_t(y_scan[:, i]), _t(alone), what=f"stream {i} at {r} fps")
    assert not np.allclose(y_scan[:, 1], PoseFilter(device="cpu", fps=24.0).filter(x[:, 1]))


def test_one_fps_per_stream_follows_added_and_dropped_streams():
    x = _poses(t=6, b=2, k=12, d=2, seed=4)
    f = PoseFilter(device="cpu", fps=30.0)
    f.step(x[0])
    with pytest.raises(ValueError, match="fps has 2 value\\(s\\) for 1 new stream"):
        f.add_streams(1, fps=[60, 50])
    f.add_streams(1, fps=60)  # a different rate makes the rates per stream
    assert f.fps == (30.0, 30.0, 60.0)
    with pytest.raises(ValueError, match="one fps per stream; give the new streams' fps="):
        f.add_streams(1)
    f.step(np.concatenate([x[1], x[1][:1]]))
    f.drop_streams(0)
    assert f.fps == (30.0, 60.0)
    f.step(x[2])


@pytest.mark.parametrize(("fps", "call", "says"), [
    ((30, 60), lambda f, x: f.step(x[0], timestamp=0.0), "one clock cannot run at several frame rates"),
    ((30, 60), lambda f, x: f.filter(x, timestamps=np.arange(len(x)) / 30), "one clock cannot run"),
    ((30, 60, 25), lambda f, x: f.step(x[0]), "fps has 3 value\\(s\\), one per stream, but the frame has 2"),
    ((30, -1), None, "fps\\[1\\] must be a positive number"),
    ([[30, 60]], None, "1-D sequence"),
    ([True, 30], None, "a bool among them"),
])
def test_one_fps_per_stream_misuse_is_named(fps, call, says):
    x = _poses(t=4, b=2, k=12, d=2)
    with pytest.raises(ValueError, match=says):
        call(PoseFilter(device="cpu", fps=fps), x) if call else PoseFilter(device="cpu", fps=fps)


@pytest.mark.parametrize("order", ["one at a time", "together"])
def test_dropping_every_stream_puts_fps_back_to_the_value_given(order):
    """PoseFilter(fps=[24, 60]): dropping both streams one at a time left fps (60.0,), so a new unrelated stream ran
    at 60 fps without a word, while drop_streams([0, 1]) left (24.0, 60.0). Either way the filter now starts over
    with the fps it was given, and a stream of another count is told to set its own."""
    x = _poses(t=3, b=2, k=12, d=2, seed=5)
    f = PoseFilter(device="cpu", fps=[24, 60])
    f.step(x[0])
    if order == "together":
        f.drop_streams([0, 1])
    else:
        f.drop_streams(0)
        assert f.fps == (60.0,)  # the remaining stream keeps its own rate
        f.step(x[1][1:])
        f.drop_streams(0)
    assert f.fps == (24.0, 60.0) and f.state is None
    with pytest.raises(ValueError, match="fps has 2 value\\(s\\), one per stream, but the frame has 1 stream\\(s\\): "
                                         "set the filter's fps"):
        f.step(x[2][0])
    f.step(x[2])  # two streams again: at the rates given
    # a rate set since the constructor is the one given; rates added with streams go with them
    g = PoseFilter(device="cpu", fps=24)
    g.step(x[0][:1])
    g.fps = 30
    g.add_streams(1, fps=60)
    assert g.fps == (30.0, 60.0)
    g.drop_streams([1, 0])
    assert g.fps == 30.0
    g.step(x[0][:1])  # reset() of every stream likewise
    g.add_streams(1, fps=60)
    g.reset()
    assert g.fps == 30.0 and g.state is None


def test_model_step_checks_its_inputs_up_front():
    """PoseSSM.step on numpy points, a (K, D) frame, integer points, a confidence of the wrong shape, or fps 0: an
    error naming the argument and the expected (B, K, D) float tensor or positive fps, where it used to fail
    inside (AttributeError, "not enough values to unpack"), return int32, or make the state NaN for good."""
    model = PoseFilter(device="cpu").model
    x = torch.rand(2, 17, 2) * 500
    with pytest.raises(TypeError, match="points must be a torch tensor \\(B, K, D\\)"):
        model.step(x.numpy())
    with pytest.raises(ValueError, match="points must be \\(B, K, D\\) with D = 2 or 3, got shape \\(17, 2\\): one "
                                         "stream's frame is points\\[None\\]"):
        model.step(x[0])
    with pytest.raises(ValueError, match="points must be a floating-point tensor, got torch.int32"):
        model.step(x.int())
    with pytest.raises(ValueError, match="confidence must be None or a tensor of shape \\(B, K\\)=\\(2, 17\\)"):
        model.step(x, torch.ones(2, 16))
    for fps in (0, -30.0, float("nan"), torch.tensor([30.0, 0.0]), [30.0, 0.0]):
        with pytest.raises(ValueError, match="fps must be a positive number"):
            model.step(x, fps=fps)
    with pytest.raises(ValueError, match="fps must be one rate or one per stream \\(2\\)"):
        model.step(x, fps=torch.tensor([30.0, 60.0, 24.0]))
    y, st = model.step(x, fps=torch.tensor([30.0, 60.0]))  # valid: one rate per stream
    assert y.dtype == torch.float32 and all(torch.isfinite(s).all() for s in st)
