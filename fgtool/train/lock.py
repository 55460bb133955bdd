"""One writer per run folder: an exclusive ``flock`` on ``RUN/.lock`` while a run trains.

The lock file holds the PID of the process that trains the folder. The operating system
releases the lock when that process ends, however it ends (a crash, SIGKILL, a power cut
leaves a file whose lock nobody holds), so a stale lock file never blocks the next run: only
a lock that a live process holds does.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..data.layouts import RUN_LOCK
from ..errors import FgtoolError


class RunLock:
    def __init__(self, run: Path):
        self.path = Path(run) / RUN_LOCK
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise FgtoolError(f"run folder {self.path.parent} is being written by another fgtool process "
                              f"(PID {holder}); wait for it to end, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
