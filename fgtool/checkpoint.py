"""Self-describing checkpoints.

One file holds everything ``sample``/``cluster``/``resume`` need: the resolved config
(plain JSON-able values), the model's state dicts, EMA, optimisers, RNG states and step.
It loads with ``torch.load(weights_only=True)``: no pickled classes, so a checkpoint
never breaks when code moves. Writes are atomic (tmp file + fsync + ``os.replace``), so a
kill mid-write leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import tempfile
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable

import torch

from .errors import FgtoolError, WriteFailed
from .io.paths import check_regular_input, check_replaceable
from .migrations import CONFIG_VERSION, migrate

FORMAT = "fgtool-checkpoint"
VERSION = 1

# mkstemp makes 0600 files; give checkpoints the mode any other file would get (umask)
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def signals_held():
    """Ctrl-C and SIGTERM that arrive inside the block are delivered when it ends. An
    interrupt raised inside ``torch.save`` leaves its zip writer half-closed, which then fails
    with "RuntimeError: unexpected pos ..." in place of the interrupt; held, the write
    finishes and the interrupt ends the run right after, with that checkpoint kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if got:
            handler = old[got[0]]
            if callable(handler):
                handler(got[0], None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), got[0])


def atomic_write(path: str | Path, write: Callable[[IO], None], binary: bool = True) -> Path:
    """Write through ``write(file)`` to a temp file beside ``path``, fsync, then rename and fsync
    the folder: a reader (or a resumed run) sees the old file or the new one, never half of one,
    even after a power cut. A failed write (disk full, read-only folder ...) removes the temp
    file, leaves the old ``path`` as it was and raises :class:`WriteFailed` naming ``path``.
    Ctrl-C and SIGTERM wait for the write to end (:func:`signals_held`)."""
    with signals_held():
        return _atomic_write(path, write, binary)


def _atomic_write(path: str | Path, write: Callable[[IO], None], binary: bool) -> Path:
    path = Path(path)
    check_replaceable(path)  # a device, FIFO, socket or symlink is never swapped for a file
    tmp = None
    rec = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb" if binary else "w") as f:
            rec = _WriteErrors(f)
            write(rec)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except BaseException as exc:
        # the real cause, whatever the writer made of it
        cause = rec.error if rec is not None and rec.error is not None else exc
        if tmp is not None and os.path.exists(tmp):
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(cause, OSError) and not isinstance(cause, WriteFailed):
            reason = cause.strerror or str(cause) or type(cause).__name__
            err = WriteFailed(f"cannot write {path}: {reason}; the previous version (if any) is intact")
            err.errno, err.strerror, err.filename = cause.errno, cause.strerror, str(path)
            raise err from cause
        raise
    return path


class _WriteErrors:
    """File proxy that remembers the first ``OSError`` of ``write``: ``torch.save`` swallows it
    (a full disk then surfaces as "RuntimeError: unexpected pos ..."), so atomic_write would
    otherwise not know that the disk, not fgtool, failed."""

    def __init__(self, f: IO):
        self._f = f
        self.error: OSError | None = None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as e:
            if self.error is None:
                self.error = e
            raise

    def __getattr__(self, name: str):
        return getattr(self._f, name)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable. Best effort: some file systems cannot fsync a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def share(src: str | Path, dst: str | Path) -> Path:
    """Give ``dst`` the content of ``src`` without a second copy on disk: a hard link, made at
    a temp name and renamed over ``dst`` (a reader sees the old ``dst`` or the new one). Files
    are only ever replaced, never written in place, so the two names stay equal until one is
    replaced. Where the file system has no hard links, an atomic copy."""
    src, dst = Path(src), Path(dst)
    with signals_held():
        check_replaceable(dst)
        tmp = str(dst.parent / f".{dst.name}.{os.urandom(4).hex()}.tmp")
        try:
            os.link(src, tmp)
        except OSError:  # FAT, some network shares: no hard links
            return atomic_write(dst, lambda f: _copy_into(src, f))
        try:
            os.replace(tmp, dst)
        except BaseException:
            os.unlink(tmp)
            raise
        _fsync_dir(dst.parent)
    return dst


def _copy_into(src: Path, f: IO) -> None:
    with open(src, "rb") as s:
        while chunk := s.read(1 << 22):
            f.write(chunk)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), binary=False)


def save(path: str | Path, *, config: dict, step: int, nets: dict, ema: dict | None = None,
         optim: dict | None = None, rng: dict | None = None, extra: dict | None = None) -> None:
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": config["model"]["name"],
        "config_version": CONFIG_VERSION,  # the layout of config (fgtool.migrations)
        # config as a JSON string: plain str survives weights_only whatever the values
        "config": json.dumps(config),
        "step": int(step),
        "nets": {k: _cpu(v) for k, v in nets.items()},
        "ema": {k: _cpu(v) for k, v in (ema or {}).items()},
        "optim": optim or {},
        "rng": rng or {},
        "extra": extra or {},
    }
    atomic_torch_save(payload, path)


def _cpu(sd: dict) -> dict:
    return {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in sd.items()}


def load(path: str | Path) -> dict:
    """Load and validate a checkpoint; every failure is one line for the user naming the file.

    ``weights_only=True``: tensors and plain containers only, so a crafted file cannot run
    code when it is read."""
    p = Path(path)
    if p.is_dir():
        p = p / "last.pt"
    if not p.exists():
        raise FgtoolError(f"checkpoint not found: {path}")
    check_regular_input(p, "checkpoint")
    with open(p, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # a zip (torch.save) or a pickle
        raise FgtoolError(f"{p} is not a readable fgtool checkpoint: not a file torch.save wrote (a .pt "
                          "from `fgtool train`, or a .safetensors from `fgtool export`)")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": not for the user
            warnings.simplefilter("ignore")
            ck = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own text suggests weights_only=False, i.e. running the file's code: never
        raise FgtoolError(f"{p} is not a readable fgtool checkpoint (it holds pickled objects other than "
                          "tensors and plain data, possibly code; fgtool refuses to unpickle it)") from None
    except Exception as e:  # truncated zip, random bytes, unreadable file ...
        reason = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
        raise FgtoolError(f"{p} is not a readable fgtool checkpoint, damaged or cut short ({reason[:160]})") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise FgtoolError(f"{p} is not an fgtool checkpoint (no '{FORMAT}' header)")
    version = ck.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > VERSION:
        raise FgtoolError(
            f"{p} has checkpoint format version {version}; this fgtool reads up to {VERSION}: upgrade fgtool"
        )
    try:
        ck["config"] = json.loads(ck["config"])
        if not isinstance(ck["config"], dict) or not isinstance(ck["config"].get("model"), dict):
            raise ValueError("no [model] section")
    except (KeyError, TypeError, ValueError):
        raise FgtoolError(f"{p} is an fgtool checkpoint with a damaged config") from None
    upgrade_config(p, ck)
    step = ck.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise FgtoolError(f"{p} is an fgtool checkpoint with a damaged step counter ({step!r})")
    for key in ("nets", "ema", "optim", "rng", "extra"):
        if not isinstance(ck.setdefault(key, {}), dict):
            raise FgtoolError(f"{p} is an fgtool checkpoint with a damaged '{key}' entry")
    check_model(p, ck)
    return ck


def upgrade_config(p: Path, ck: dict) -> None:
    """Bring the stored config of an older fgtool to this one's layout (fgtool.migrations)."""
    try:
        ck["config"] = migrate(ck["config"], ck.get("config_version"))
    except FgtoolError as e:
        raise FgtoolError(f"{p}: {e}") from None
    ck["config_version"] = CONFIG_VERSION


def check_model(p: Path, ck: dict) -> None:
    """The checkpoint's backend must exist here, and its config must resolve (no unknown keys)."""
    from . import config as C
    from . import registry

    name, cfg_name = ck.get("model"), ck["config"]["model"].get("name")
    for n in (cfg_name, name):  # the config rebuilds the model; the header names it
        if not isinstance(n, str) or n not in registry.names():
            raise FgtoolError(f"{p} holds a {n!r} model, which this fgtool does not have "
                              f"(available: {', '.join(registry.names())})")
    if name != cfg_name:
        raise FgtoolError(f"{p} is a damaged fgtool checkpoint: header says model {name!r}, "
                          f"its config says {cfg_name!r}")
    try:
        C.validate(C.from_dict(ck["config"]))  # the same domains as --dry-run and training
    except FgtoolError as e:
        raise FgtoolError(f"{p}: the config stored in this checkpoint does not fit this fgtool ({e})") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise FgtoolError(f"{p} is an fgtool checkpoint with a damaged config ({e})") from None
