"""User-facing errors.

A :class:`FgtoolError` is a user mistake (bad path, corrupt image, wrong checkpoint,
unknown recipe key). The CLI prints its message as one line and exits with code 2.
Anything else that escapes is a bug and exits with code 1.
"""


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
