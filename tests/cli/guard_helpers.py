"""Helpers shared by the disk-safety tests: tiny checkpoints made once per session, tree
snapshots and a FIFO that cannot hang a test."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

from conftest import TINY

_CKPTS: dict[str, Path] = {}


def tiny_ckpt(model: str, synth_dir: Path, base: Path) -> Path:
    """last.pt of a 4-step tiny run of ``model`` (GANSeg's segmenter trains in steps 2-3), made
    once per test session."""
    if model not in _CKPTS or not _CKPTS[model].is_file():
        from fgtool import api

        run = base / f"run-{model}"
        shutil.rmtree(run, ignore_errors=True)
        api.train(model, str(synth_dir), str(TINY), ["train.sample_every=100"], str(run), progress=False)
        _CKPTS[model] = run / "last.pt"
    return _CKPTS[model]


def tree(folder: Path) -> dict:
    """relative path -> (kind, sha1 of a regular file's bytes) of everything under ``folder``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = None
            if p.is_file() and not p.is_symlink() and (st.st_mode & 0o170000) == 0o100000:
                digest = hashlib.sha1(p.read_bytes()).hexdigest()
            out[str(p.relative_to(folder))] = (st.st_mode & 0o170000, digest)
    return out


class Fifo:
    """A FIFO at ``path``; if fgtool ever opens it for reading, a writer opens (and closes) the
    other end within ``every`` seconds and ``opened`` turns true, so the test fails on its
    assertions instead of hanging."""

    def __init__(self, path: Path, every: float = 5.0):
        self.path = Path(path)
        os.mkfifo(self.path)
        self._stop = threading.Event()
        self.opened = False
        self._t = threading.Thread(target=self._unblock, args=(every,), daemon=True)
        self._t.start()

    def _unblock(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader: nobody is blocked on it
                continue
            self.opened = True
            os.close(fd)

    def close(self) -> None:
        self._stop.set()
