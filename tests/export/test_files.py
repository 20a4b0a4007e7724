"""The exporters' output files (:mod:`streamssm.export._files`): what ``export onnx`` and ``export tensorrt`` may
write over, where, and under which temporary name, in Python and on the command line.

No test writes to a real device: a FIFO in ``tmp_path`` stands for one (``--overwrite`` once made ``/dev/null`` a
regular file), and an unwritable folder is simulated (the tests may run as root, which writes anywhere).
"""

from __future__ import annotations

import errno
import json
import os
import stat

import pytest

pytestmark = pytest.mark.export
pytest.importorskip("onnx", reason="ONNX export tests need onnx: pip install 'streamssm[export]'")
pytest.importorskip("onnxruntime", reason="ONNX export tests need onnxruntime: pip install 'streamssm[export]'")

import streamssm.export._onnx as exporter  # noqa: E402
from streamssm import cli  # noqa: E402
from streamssm.export import build_engine, export_onnx  # noqa: E402


def _no_work(monkeypatch):
    """Make loading the model (the first work of an export) fail the test: a refusal must come before it."""
    def fail(*a, **k):
        raise AssertionError("the export started before its output was checked")

    monkeypatch.setattr(exporter, "load_model", fail)


def _is_fifo(path) -> bool:
    return stat.S_ISFIFO(os.lstat(path).st_mode)


@pytest.fixture(scope="module")
def pose_graph(tmp_path_factory):
    return export_onnx("pose", tmp_path_factory.mktemp("graph") / "pose.onnx", check=False)


# ------------------------------------------------------------------------------ devices, pipes, links
def test_overwrite_never_replaces_a_fifo_with_a_file(tmp_path, monkeypatch, capsys):
    """--overwrite replaces a regular file only: a named pipe (as a device, /dev/null) is refused before any work,
    named, in Python and on the command line; it stays a pipe."""
    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)
    _no_work(monkeypatch)
    with pytest.raises(ValueError, match=r"out.onnx: is a named pipe \(FIFO\), not a regular file; expected the "
                                         r"file to write"):
        export_onnx("pose", fifo, overwrite=True)
    assert cli.main(["export", "onnx", "--model", "pose", "-o", str(fifo), "--overwrite"]) == 2
    assert "is a named pipe (FIFO), not a regular file" in capsys.readouterr().err
    assert _is_fifo(fifo) and sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


def test_tensorrt_overwrite_never_replaces_a_fifo(trt, pose_graph, tmp_path, capsys):
    """The engine and its settings file beside it: neither may be a pipe, --overwrite or not."""
    engine, meta = tmp_path / "e.engine", tmp_path / "e.engine.json"
    os.mkfifo(engine)
    with pytest.raises(ValueError, match="e.engine: is a named pipe"):
        build_engine(pose_graph, engine, overwrite=True)
    assert cli.main(["export", "tensorrt", "--onnx", str(pose_graph), "-o", str(engine), "--overwrite"]) == 2
    assert "e.engine: is a named pipe (FIFO)" in capsys.readouterr().err
    engine.unlink()
    os.mkfifo(meta)
    with pytest.raises(ValueError, match=r"e.engine.json: is a named pipe .*the engine's settings"):
        build_engine(pose_graph, engine, overwrite=True)
    assert cli.main(["export", "tensorrt", "--onnx", str(pose_graph), "-o", str(engine), "--overwrite"]) == 2
    assert "e.engine.json: is a named pipe (FIFO)" in capsys.readouterr().err
    assert _is_fifo(meta) and sorted(p.name for p in tmp_path.iterdir()) == ["e.engine.json"]


def test_a_symbolic_link_output_is_replaced_as_streamssm_video_does(tmp_path):
    """A link is an existing output: refused without overwrite (the message says what --overwrite would do); with it
    the link itself is replaced by the graph and what it pointed to is left as it was (streamssm video's rename)."""
    target = tmp_path / "target.txt"
    target.write_text("the user's")
    link = tmp_path / "link.onnx"
    link.symlink_to(target)
    with pytest.raises(FileExistsError, match="link.onnx: already exists .a symbolic link to .*target.txt.*the link "
                                              "itself is replaced, not what it points to"):
        export_onnx("pose", link, check=False)
    assert export_onnx("pose", link, check=False, overwrite=True) == link
    assert not link.is_symlink() and link.stat().st_size > 10_000 and target.read_text() == "the user's"


# ------------------------------------------------------------------------------ the output's folder
def test_an_unusable_folder_is_refused_up_front_naming_the_output(tmp_path, monkeypatch):
    """A missing folder, a file where the folder should be, or a folder that takes no new file: refused before the
    export, naming the output given (it named the hidden temporary, or 'File exists: existing.onnx', after the whole
    export)."""
    (tmp_path / "existing.onnx").write_bytes(b"a graph")
    ro = tmp_path / "ro"
    ro.mkdir()
    real_open = os.open

    def refusing_open(path, flags, *a, **k):  # a read-only folder, even for root
        if os.path.dirname(os.fspath(path)) == str(ro):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", refusing_open)
    _no_work(monkeypatch)
    for out, want in ((tmp_path / "existing.onnx" / "x.onnx", "its folder .*existing.onnx is not a directory"),
                      (tmp_path / "nodir" / "x.onnx", "its folder .*nodir does not exist"),
                      (ro / "x.onnx", r"cannot write a file in .*ro \(Permission denied\)")):
        with pytest.raises(ValueError, match=f"^{out}: {want}") as e:
            export_onnx("pose", out)
        assert "partial" not in str(e.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["existing.onnx", "ro"]


def test_tensorrt_unusable_folder_is_refused_before_the_build(trt, pose_graph, tmp_path, monkeypatch):
    real_open = os.open

    def refusing_open(path, flags, *a, **k):
        if os.path.dirname(os.fspath(path)) == str(tmp_path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", refusing_open)
    monkeypatch.setattr(trt, "Builder", lambda *a: pytest.fail("the build started before its output was checked"))
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'x.engine'}: cannot write a file in .*Permission denied"):
        build_engine(pose_graph, tmp_path / "x.engine")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ temporary names
def test_a_users_file_with_a_temporary_looking_name_is_never_taken(tmp_path):
    """The hidden file an export writes is one it creates (O_EXCL), never one that is there: a user's
    '.p.onnx.partial' (the old name) or '.p.partial.onnx' (the name tried first) is left as it was."""
    mine = {tmp_path / ".p.onnx.partial": b"mine 1", tmp_path / ".p.partial.onnx": b"mine 2"}
    for p, data in mine.items():
        p.write_bytes(data)
    export_onnx("pose", tmp_path / "p.onnx", check=False)
    assert {p: p.read_bytes() for p in mine} == mine
    assert sorted(p.name for p in tmp_path.iterdir()) == [".p.onnx.partial", ".p.partial.onnx", "p.onnx"]


def test_tensorrt_never_takes_a_users_file(trt, pose_graph, tmp_path):
    mine = {tmp_path / n: n.encode() for n in (".e.engine.partial", ".e.engine.json.partial", ".e.partial.engine",
                                                ".e.engine.partial.json")}
    for p, data in mine.items():
        p.write_bytes(data)
    build_engine(pose_graph, tmp_path / "e.engine")
    assert {p: p.read_bytes() for p in mine} == mine
    assert json.loads((tmp_path / "e.engine.json").read_text())["streamssm.model"] == "pose"
    assert len(list(tmp_path.iterdir())) == len(mine) + 2


# ------------------------------------------------------------------------------ the Python API
def test_the_python_api_refuses_an_existing_output_unless_overwrite(tmp_path, monkeypatch):
    """export_onnx(overwrite=False) by default, as the command line: an existing graph is refused before any work."""
    out = tmp_path / "api.onnx"
    out.write_bytes(b"the user's graph")
    with monkeypatch.context() as m:
        _no_work(m)
        with pytest.raises(FileExistsError, match="api.onnx: already exists; pass --overwrite .in Python: "
                                                  "overwrite=True"):
            export_onnx("pose", out)
    assert out.read_bytes() == b"the user's graph"
    export_onnx("pose", out, check=False, overwrite=True)
    assert out.stat().st_size > 10_000


def test_build_engine_refuses_an_existing_engine_or_settings_unless_overwrite(trt, pose_graph, tmp_path):
    engine, meta = tmp_path / "e.engine", tmp_path / "e.engine.json"
    for existing in (engine, meta):
        existing.write_bytes(b"the user's")
        with pytest.raises(FileExistsError, match=f"{existing.name}: already exists"):
            build_engine(pose_graph, engine)
        assert existing.read_bytes() == b"the user's"
        existing.unlink()
    engine.write_bytes(b"the user's")
    meta.write_bytes(b"the user's")
    build_engine(pose_graph, engine, overwrite=True)
    assert engine.stat().st_size > 10_000 and json.loads(meta.read_text())["streamssm.model"] == "pose"


# ------------------------------------------------------------------------------ the command line's words
@pytest.mark.parametrize("option, value, said", [("--ghost-res", "-1", "--ghost-res must be 0 (off)"),
                                                 ("--exposure-lock", "2", "--exposure-lock must be 0 (off)")])
def test_cli_names_the_option_not_the_keyword(tmp_path, capsys, option, value, said):
    out = tmp_path / "v.onnx"
    assert cli.main(["export", "onnx", "--model", "video", "-o", str(out), option, value]) == 2
    err = capsys.readouterr().err
    assert said in err and option.lstrip("-").replace("-", "_") not in err, err
    assert not out.exists()
