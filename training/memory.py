"""Give a long-lived process's freed memory back to the machine.

Freed memory does not leave the process by itself: glibc keeps freed heap pages for reuse,
Arrow's memory pool keeps its freed blocks, and torch modules hold reference cycles that
only the cyclic collector frees. A driver that has just built and written a large window's
rank files, or a serving replica that has just dropped a version, would otherwise carry
that high-water mark into what it does next (measured on the 10x window of
``benchmarks/data_scaling.py``: after the rank files were written the driver held 1915 MiB;
after Arrow's release 1798; after ``malloc_trim`` 1634).

Which pool Arrow allocates from matters as much: the wheels' default, mimalloc, keeps the
pages that pandas' Arrow-backed copies free (a filtered copy, a sorted copy, a take) until
told, and glibc's numpy allocations cannot reuse them. Building the 10x window's examples
peaked ~100 MiB lower on Arrow's jemalloc pool (:func:`use_returning_pool`), as fast.
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


def release_arrow_pool() -> None:
    """Return the freed pages of Arrow's default pool only: cheap enough for every window
    read (no cyclic collection, no walk of glibc's heap)."""
    pa.default_memory_pool().release_unused()


def use_returning_pool() -> str:
    """Make Arrow's jemalloc pool this process's default (a build without jemalloc keeps
    its own); returns the backend in use. Idempotent; buffers already allocated go back to
    the pool they came from."""
    try:
        if pa.default_memory_pool().backend_name != "jemalloc":
            pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # pyarrow built without jemalloc
        pass
    return str(pa.default_memory_pool().backend_name)
