"""The one rule for every path fgtool writes, and for every file it reads by name.

* An output is resolved first (``~``, ``..`` and symlinks), so the checks see the real place.
* An output never lies inside an input (``--data``, a reference image, a checkpoint), and a
  folder output never holds an input: fgtool would write over what it reads.
* A name taken from a data file or a CSV (``images.txt``, a ``--batch`` row) stays inside the
  folder it is meant for: no ``..``, no absolute path, no symlink that leads out of it.
* Only regular files are replaced: a device node, a FIFO, a socket, a symlink or a folder at
  an output's place is refused, never swapped for a file.
* Only regular files are opened for reading: a FIFO would block forever, a device never ends.

Every refusal is a one-line :class:`FgtoolError` (exit 2), raised before anything is written.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable

from ..errors import FgtoolError


def resolved(p) -> Path:
    """``p`` with ``~`` expanded, made absolute, ``..`` and symlinks resolved (a missing tail is
    kept as written)."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(p)))).resolve()


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def check_replaceable(path, what: str = "output") -> None:
    """``path`` may be (re)written: absent, or a regular file (not followed through a symlink)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise FgtoolError(f"{what} {path}: a parent of it is a file, not a folder") from None
    except OSError:
        return  # the write itself will report it
    if not stat.S_ISREG(st.st_mode):
        raise FgtoolError(f"{what} {path} is {_kind(st.st_mode)}; fgtool replaces only regular files")


def check_folder_output(path, what: str = "--out") -> None:
    """``path`` may be an output folder: absent or a folder (a symlink to a folder is read through)."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return
    except OSError:
        return
    if not stat.S_ISDIR(st.st_mode):
        raise FgtoolError(f"{what} {path} is {_kind(st.st_mode) if not stat.S_ISREG(st.st_mode) else 'a file'}, "
                          "not a folder")


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output(out, inputs: Iterable = (), what: str = "--out", folder: bool = False,
                 holds: bool = True, suffix: str | None = None) -> Path:
    """The resolved ``out`` after every rule for an output: it does not lie inside an input (nor
    is one), a folder output holds no input (``holds``: for a folder whose file names come from
    the inputs' names; a folder of fixed names such as ``samples.png`` may sit beside the
    checkpoint it samples), a file output is replaceable, and its name ends in ``suffix`` when
    one is given (a file's name says what it holds: a GIF named .mp4 is a broken video).
    ``inputs`` are paths fgtool reads in the same command (None entries are ignored)."""
    o = resolved(out)
    for inp in inputs:
        if inp is None or str(inp) == "":
            continue
        i = resolved(inp)
        if _inside(o, i):
            raise FgtoolError(f"{what} {out} lies inside the input {inp}; fgtool never writes over what "
                              "it reads: choose an output outside it")
        if folder and holds and _inside(i, o):
            raise FgtoolError(f"{what} {out} holds the input {inp}; fgtool never writes over what it "
                              "reads: choose an output folder that does not contain it")
    if folder:
        check_folder_output(out, what)
    else:
        check_replaceable(out, what)
    if suffix and o.suffix.lower() != suffix:
        raise FgtoolError(f"{what} {out}: the file is written as {suffix}; give it a name ending in {suffix}")
    return o


def member(folder, name, what: str, links: bool = True) -> Path:
    """``folder / name`` for a ``name`` read from a data file or a CSV; refused when the name is
    absolute or climbs out with ``..``, and (``links``: a name fgtool writes to) when it leads
    out of ``folder`` through a symlink. Inputs may be symlinks to anywhere (``links=False``)."""
    n = Path(name)
    if n.is_absolute() or ".." in n.parts or not n.parts:
        raise FgtoolError(f"{what} {str(name)!r}: a name must stay inside {folder} (no '..', no absolute path)")
    if not links:
        return Path(folder) / n
    base = resolved(folder)
    target = resolved(base / n)
    if not _inside(target, base) or target == base:
        raise FgtoolError(f"{what} {str(name)!r} leads out of {folder} (through a symlink); refused")
    return Path(folder) / n


def check_regular_input(p, what: str) -> None:
    """``p`` is a regular file (following symlinks), so opening it cannot block or never end."""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise FgtoolError(f"{what} {p}: no such file") from None
    except OSError as e:
        raise FgtoolError(f"{what} {p}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise FgtoolError(f"{what} {p} is {_kind(st.st_mode)}, not a regular file")


def is_regular(p) -> bool:
    try:
        return stat.S_ISREG(os.stat(p).st_mode)
    except OSError:
        return False


def is_special(p) -> bool:
    """A FIFO, device or socket (following symlinks): opening it may block or never end."""
    try:
        mode = os.stat(p).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode)
