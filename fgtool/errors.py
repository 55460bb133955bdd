"""User-facing errors.

A :class:`FgtoolError` is a user mistake (bad path, corrupt image, wrong checkpoint,
unknown recipe key). The CLI prints its message as one line and exits with code 2.
Anything else that escapes is a bug and exits with code 1.
"""

import re


def printable(text: str) -> str:
    """``text`` with undecodable file-name bytes shown as ``\\xNN`` (a non-UTF-8 name on Linux
    arrives as surrogate escapes, which no UTF-8 stream can print) and other unprintable
    code points escaped, so a message can always be written to any terminal or log."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeError:  # lone surrogates that are not escaped bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class FgtoolError(Exception):
    """A user error: printed as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        # keep it one line and printable, whatever the caller passed
        super().__init__(printable(" ".join(str(message).split())))


class NonFiniteLoss(FgtoolError):
    """Training produced NaN/inf; the last good checkpoint is kept."""


class OutOfMemory(FgtoolError):
    """The machine's memory (RAM or the accelerator's) could not hold the work, usually from a
    size or batch too large for it. Not a bug: one line, exit code 2."""


_ALLOC = re.compile(r"allocate (?:(\d+) bytes|([\d.]+ ?[KMGT]i?B))", re.I)


def out_of_memory(e: BaseException) -> str | None:
    """``None`` unless ``e`` is an out-of-memory error: Python's :class:`MemoryError`, torch's
    ``OutOfMemoryError`` (CUDA) or the ``RuntimeError`` of its CPU or MPS allocator. Then the
    amount the failed allocation asked for, such as ``"512 MiB"``, or ``""`` when it names none."""
    text = str(e)
    if not (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or (isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower()))):
        return None
    m = _ALLOC.search(text)
    if m is None:
        return ""
    if m.group(2):
        return m.group(2)
    n = int(m.group(1))
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"


def failed_allocation(amount: str) -> str:
    """`` (an allocation of 512 MiB failed)`` for an amount from :func:`out_of_memory`, or ``""``."""
    return f" (an allocation of {amount} failed)" if amount else ""


class WriteFailed(FgtoolError, OSError):
    """A file could not be written (disk full, read-only or vanished folder, no permission).

    The previous version of the file is intact. Also an :class:`OSError`, so code that
    tolerates failed writes (grids, plots) keeps tolerating them.
    """

    def __str__(self) -> str:  # the one-line message, not OSError's "[Errno N] ...: 'path'"
        return str(self.args[0]) if self.args else ""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM. The message, when there is one, says where the work stopped
    and how to continue; the CLI prints it as one line and exits with 128 + the signal number."""

    last: "Interrupted | None" = None  # the newest one: the CLI's parser turns it into a bare exit code

    def __init__(self, message: str = "", signum: int = 2):
        super().__init__(printable(" ".join(str(message).split())))
        self.signum = signum
        Interrupted.last = self
