"""Keep freed memory for reuse on a CPU (glibc): no page faults in the training step.

A training step allocates and frees the same large activation buffers every iteration. glibc
serves blocks above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and returns them
to the system on ``free``, so every step faults every page of them in again, and the kernel
zeroes each page. On FineGAN's paper step (fp32, batch 8, 128 px, one thread) that was 450k to
750k page faults and 0.9 to 2.2 s of system time in an 8.3 to 9.7 s step (docs/benchmarks.md).

``keep_freed_memory`` tells glibc to serve every block from its heap (``M_MMAP_MAX`` = 0) and never
to hand the heap's free top back (``M_TRIM_THRESHOLD`` = -1, mallopt(3)): after the first steps the same
pages are reused, the faults drop to about zero, and the step ran 7.5 s. The price is that
the process keeps its peak memory until it exits (+11% peak RSS on that step), as a caching
allocator on a GPU does. Threads other than the main one keep their own arenas and still fall
back to ``mmap`` for blocks their heaps cannot hold, so nothing that worked stops working.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_done = False


def keep_freed_memory() -> bool:
    """Set the two glibc options once per process; False where there is no glibc (macOS,
    Windows, musl), where nothing changes."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not hasattr(libc, "gnu_get_libc_version"):
            return False
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, -1) == 1
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
