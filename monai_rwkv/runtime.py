"""
Process-level settings that make CPU inference of large images faster.

PyTorch's CPU tensors come from the C library's ``malloc``. With glibc's defaults every buffer above a dynamic
threshold (at most 32 MiB) is a fresh ``mmap`` that the kernel zero-fills page by page on first touch and that
``free`` unmaps again, and freed heap memory is trimmed back to the system. A network forward on a 512 x 512 or
larger image allocates and frees hundreds of such feature maps, so much of its time goes into page faults (measured
on this project's machine, light preset, 512 x 512, one thread: 2.6 million minor faults and 5.1 s of system time
for 17.6 s of user time; with :func:`reuse_freed_memory` 0.3 million faults and 0.9 s).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

__all__ = ["reuse_freed_memory"]

logger = logging.getLogger(__name__)

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_done: bool | None = None


def reuse_freed_memory(mmap_threshold: int = 2**30, top_pad: int = 64 * 2**20) -> bool:
    """
    Make glibc's ``malloc`` keep freed memory for reuse instead of returning it to the system at once.

    Buffers below ``mmap_threshold`` bytes come from the heap, freed heap memory is not trimmed, and the heap grows
    in steps of ``top_pad``: repeated forwards reuse already mapped pages. The process's resident memory then stays
    near its peak instead of dropping between calls (it does not grow beyond it). Applies to the whole process and
    only once; a no-op (returning False) where the C library is not glibc.

    Returns:
        True when the settings are in effect.
    """
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    settings = ((_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, 2 * mmap_threshold), (_M_TOP_PAD, top_pad))
    _done = all(mallopt(param, int(value)) == 1 for param, value in settings)
    logger.debug("malloc tuned for reuse of freed memory: %s", _done)
    return _done
