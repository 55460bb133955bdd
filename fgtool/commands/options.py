"""Option domains shared by the commands: counts, seeds, and the progress callback type."""

from __future__ import annotations

from typing import Callable

from .. import config as C
from ..errors import FgtoolError

Progress = Callable[[str, int, int], None] | None  # (task, done, total)


def check_count(value, option: str, lo: int = 1, hi: int | None = None) -> None:
    """A count option (``--n``, ``--frames``, ``--k`` ...) inside its domain, before any work."""
    if value is None:
        return
    if value < lo or (hi is not None and value > hi):
        rng = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise FgtoolError(f"{option} must be {rng}, got {value}")


def check_seed(seed: int, option: str = "--seed") -> None:
    check_count(seed, option, 0, C.SEED_MAX)
