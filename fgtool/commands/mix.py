"""``fgtool mix``: background, shape, texture and pose from reference photos."""

from __future__ import annotations

from ..loading import load


def mix(ckpt_path: str, out: str | None = None, **options) -> dict:
    """Background, shape, texture and pose from reference photos: one image, a ``grid``
    sheet or one image per ``batch`` CSV row (see :func:`fgtool.mixing.run_mix`)."""
    m = load(ckpt_path)
    m.backend.require("mix")
    from ..mixing import run_mix

    return run_mix(m, out, **options)
