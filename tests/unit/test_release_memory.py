"""training.memory.release_memory: freed heap pages go back to the machine."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from training.memory import release_memory, use_returning_pool

pytestmark = pytest.mark.unit


def rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc's malloc_trim")
def test_freed_pages_inside_the_heap_are_returned() -> None:
    """Every other 64 KiB block freed: the holes sit inside the heap, so glibc does not trim
    them by itself (only a free top is trimmed); release_memory returns their pages."""
    blocks = [bytearray(65536) for _ in range(3_000)]  # ~190 MiB through malloc
    del blocks[::2]
    before = rss_mib()
    release_memory()
    after = rss_mib()
    assert before - after > 60, (before, after)
    assert len(blocks) == 1_500 and all(len(b) == 65536 for b in blocks[:10])


def test_the_returning_pool_becomes_arrows_default_and_still_allocates() -> None:
    """use_returning_pool makes jemalloc Arrow's default pool (kept on a build without it),
    is idempotent, and Arrow-backed pandas work allocates from it."""
    import pandas as pd
    import pyarrow as pa

    before = pa.default_memory_pool()
    try:
        backend = use_returning_pool()
        assert backend == pa.default_memory_pool().backend_name
        available = True
        try:
            pa.jemalloc_memory_pool()
        except NotImplementedError:
            available = False
        assert backend == ("jemalloc" if available else before.backend_name)
        assert use_returning_pool() == backend
        allocated = pa.default_memory_pool().bytes_allocated()
        ids = pd.Series([f"user-{i}" for i in range(50_000)], dtype="str")
        assert pa.default_memory_pool().bytes_allocated() > allocated
        assert ids.str.len().sum() > 0
    finally:
        pa.set_memory_pool(before)
