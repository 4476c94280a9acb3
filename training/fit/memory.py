"""Give a long-lived process's freed memory back to the machine.

Freed memory does not leave the process by itself: glibc keeps freed heap pages for reuse,
Arrow's memory pool keeps its freed blocks, and torch modules hold reference cycles that
only the cyclic collector frees. A driver that has just built and written a large window's
rank files, or a serving replica that has just dropped a version, would otherwise carry
that high-water mark into what it does next (measured on the 10x window of
``benchmarks/data_scaling.py``: after the rank files were written the driver held 1915 MiB;
after Arrow's release 1798; after ``malloc_trim`` 1634).
"""

from __future__ import annotations

import ctypes
import gc

import pyarrow as pa


def release_memory() -> None:
    """Collect reference cycles, then return the freed pages of Arrow's default pool and of
    glibc's heap to the system (a no-op for an allocator without the call)."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the allocator keeps its pages
        pass
