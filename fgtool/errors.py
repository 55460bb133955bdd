"""User-facing errors.

A :class:`FgtoolError` is a user mistake (bad path, corrupt image, wrong checkpoint,
unknown recipe key). The CLI prints its message as one line and exits with code 2.
Anything else that escapes is a bug and exits with code 1.
"""


class FgtoolError(Exception):
    """A user error: printed as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        # keep it one line, whatever the caller passed
        super().__init__(" ".join(str(message).split()))


class NonFiniteLoss(FgtoolError):
    """Training produced NaN/inf; the last good checkpoint is kept."""
