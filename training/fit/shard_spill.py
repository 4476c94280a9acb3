"""A worker's shard in mapped local files, for shards above its in-memory budget.

A Ray Train worker normally holds its shard of the examples in memory
(:mod:`training.fit.example_shards`), so its memory grows with the window. Above
``examples_memory_mib`` (ScalingConfig) it keeps the shard in files on its local disk instead,
mapped into the process: the engine's row gathers read them like arrays, the pages come from
the page cache (shared and reclaimable, not the worker's own memory), and :meth:`release`,
called after every step, unmaps what the step touched. A step's rows are a random draw,
so the next step would fault its own pages in anyway; a release cost ~1 ms against a
450 MB array (a step at 10x in benchmarks/data_scaling.py takes ~300 ms). The rows, batches
and numbers are the same either way; only where the bytes live changes.
"""

from __future__ import annotations

import mmap
import shutil
import tempfile
from pathlib import Path

import numpy as np

MIB = 1 << 20


class ShardSpill:
    """Arrays in files under a fresh temporary directory, mapped shared (read and write):
    filled once through the mapping, then gathered from by the engine."""

    def __init__(self, parent: str | None = None) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="shopstream-shard-", dir=parent))
        self.maps: list[mmap.mmap] = []

    def array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A zero-filled writable array of ``shape`` backed by a new mapped file."""
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if size == 0:
            return np.zeros(shape, dtype=dtype)
        path = self.directory / f"{len(self.maps)}.bin"
        with open(path, "w+b") as file:
            file.truncate(size)
            mapped = mmap.mmap(file.fileno(), size)
        # Random rows: no read-ahead and no fault-around, so a gather maps the pages it reads.
        mapped.madvise(mmap.MADV_RANDOM)
        self.maps.append(mapped)
        return np.frombuffer(mapped, dtype=dtype).reshape(shape)

    def release(self) -> None:
        """Unmap every page of the shard from this process (a shared file mapping loses no
        data: written pages stay in the page cache until written back)."""
        for mapped in self.maps:
            mapped.madvise(mmap.MADV_DONTNEED)

    def remove(self) -> None:
        """Delete the files (the space returns once the arrays are gone)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def spill_needed(shard_bytes: int, memory_mib: int) -> bool:
    """Whether a shard of ``shard_bytes`` goes to mapped files under a budget of
    ``memory_mib`` MiB."""
    return shard_bytes > memory_mib * MIB
