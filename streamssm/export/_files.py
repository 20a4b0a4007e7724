"""The exporters' output files: checked before any work, written under a hidden name of their own, then moved in.

* The output must be a regular file or a new name; a device, a named pipe or a socket is refused even with
  ``overwrite`` (``--overwrite`` once made ``/dev/null`` a regular file).
* An existing output is refused unless ``overwrite``. A symbolic link counts as an existing output and, with
  ``overwrite``, is itself replaced by the new file, its target left as it is: what ``streamssm video`` does
  (:func:`streamssm.io.video._move_into_place` renames over the link).
* The output's folder must exist and take a new file: the hidden file the export writes is created there at once
  (``O_EXCL``: never a file already there, a user's included), so an unwritable folder is refused before the
  export or the TensorRT build, naming the output the user gave.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from streamssm.io.video import VideoIOError, _new_beside, special_file


def check_output_path(out_path: str | Path, *inputs: str | Path | None, overwrite: bool = False,
                      what: str = "the file to write") -> Path:
    """``out_path`` as a Path, or an error naming it: ValueError when it is a directory, a device, a named pipe or a
    socket, one of ``inputs`` (the weights or graph the export reads: writing there would destroy them), or in a
    folder that does not exist; FileExistsError when it exists (a file or a symbolic link) and not ``overwrite``.
    ``what``: what the output is, for the messages."""
    out_path = Path(out_path)
    try:
        st = os.lstat(out_path)
    except (FileNotFoundError, NotADirectoryError):  # new; or its folder is a file (said below)
        st = None
    except OSError as e:  # a loop of links, a folder that cannot be searched
        raise ValueError(f"{out_path}: cannot be written ({e.strerror}); expected {what}") from None
    if out_path.is_dir():  # a folder, or a link to one
        raise ValueError(f"{out_path}: is a directory; expected {what}")
    for src in inputs:
        if src is not None and out_path.exists() and Path(src).exists() and os.path.samefile(out_path, src):
            raise ValueError(f"{out_path}: is the input file ({src}); refusing to overwrite it, name another output")
    kind = special_file(out_path)  # a device, a pipe, a socket, or a link to one
    if kind is None and st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        kind = "an unknown kind of file"
    if kind is not None:
        raise ValueError(f"{out_path}: is {kind}, not a regular file; expected {what} (--overwrite replaces only a "
                         "regular file or a symbolic link to one)")
    if st is not None and not overwrite:
        link = f" (a symbolic link to {os.readlink(out_path)})" if stat.S_ISLNK(st.st_mode) else ""
        also = "; the link itself is replaced, not what it points to" if link else ""
        raise FileExistsError(f"{out_path}: already exists{link}; pass --overwrite (in Python: overwrite=True) to "
                              f"replace it{also}")
    folder = out_path.parent
    if not folder.is_dir():
        why = "is not a directory" if folder.exists() else "does not exist"
        raise ValueError(f"{out_path}: its folder {folder} {why}; expected {what} in an existing folder")
    return out_path


def claim_temp(out_path: Path) -> Path:
    """A new, empty hidden file beside ``out_path`` (``.<stem>.partial<ext>``, ``.<stem>.partial-2<ext>``, ...),
    created with ``O_EXCL``: never a file already there (a user's, or another run's). Raises ValueError naming
    ``out_path`` when its folder does not take a new file (read-only, ``/proc``)."""
    try:
        return _new_beside(out_path)
    except VideoIOError as e:
        raise ValueError(str(e)) from None
    except OSError as e:
        raise ValueError(f"{out_path}: cannot write a file in {out_path.parent} ({e.strerror})") from None


def move_into_place(tmp: Path, out_path: Path, overwrite: bool) -> None:
    """Rename the finished ``tmp`` onto ``out_path``, after checking the output again (a device or a file may have
    appeared there while the export or the build ran)."""
    check_output_path(out_path, overwrite=overwrite)
    os.replace(tmp, out_path)
