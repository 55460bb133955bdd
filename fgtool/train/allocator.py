"""Keep freed memory for reuse on a CPU (glibc): fewer page faults in the training step.

A training step allocates and frees the same large activation buffers every iteration. glibc
serves blocks above its mmap threshold (which it raises as it goes, up to 32 MB) with a fresh
``mmap`` and returns them to the system on ``free``, so every step faults every page of them in
again, and the kernel zeroes each page. On FineGAN's paper step (fp32, batch 8, 128 px, one
thread) that was 450k to 750k page faults and 0.9 to 2.2 s of system time in an 8.3 to 9.7 s
step (docs/benchmarks.md).

``keep_freed_memory`` tells glibc to serve every block under 128 MB from its heap
(``M_MMAP_THRESHOLD``) and never to hand the heap's free top back (``M_TRIM_THRESHOLD`` = -1,
mallopt(3)): after the first steps those blocks reuse the same pages (that step ran 7.5 s with
every block in the heap, the setting's first form). Blocks of 128 MB and more are still mapped
for each use. Kept in the heap as well, they fragmented it: FineGAN's fp32 paper step at
batch 16 held up to 2.8 GiB more than it ever had in use, and peaked anywhere from 5.3 to
6.9 GiB from run to run, against the authors' 6.5 GiB; with them mapped it peaked at 5.4 GiB
(docs/benchmarks.md). The recipes that run on a CPU (32 to 64 px) have no blocks that large.
Threads other than the main one keep their own arenas and use ``mmap`` as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
LARGE = 128 << 20  # blocks from this size on are mapped for each use, as glibc does by default
_done = False
threshold = 0  # the size from which blocks are mapped, once set


def keep_freed_memory() -> bool:
    """Set the two glibc options once per process; False where there is no glibc (macOS,
    Windows, musl), where nothing changes."""
    global _done, threshold
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not hasattr(libc, "gnu_get_libc_version"):
            return False
        # glibc before 2.35 caps the threshold at 32 MB: then that is where blocks are mapped
        for thr in (LARGE, 32 << 20):
            if libc.mallopt(M_MMAP_THRESHOLD, thr) == 1:
                threshold = thr
                break
        ok = threshold > 0 and libc.mallopt(M_TRIM_THRESHOLD, -1) == 1
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
