"""A window's training examples as one Arrow file per Ray Train rank, in Ray Train storage.

The driver builds a fit's :class:`~training.features.examples.WindowExamples` once and writes
rank ``r``'s rows (every ``world``-th row from ``r``, :meth:`WindowExamples.shard`) to its own
files beside the run (local directory or S3). Each worker reads only its own files: no
object-store payload that every worker fetches whole, so a worker holds its shard and
adding workers (or nodes) divides the memory each one needs. Same rows per rank as
before, so the engine's equal-steps guarantee and its resume (same batch order after a
restart) are unchanged.

The files are Arrow IPC, uncompressed, in record batches of at most :data:`BLOCK_ROWS` rows:
the driver copies out one block of a rank's rows at a time (not the rank's whole shard, and
a second time as a table), and a worker fills its arrays batch by batch, so a shard costs
about its own size plus one block on either side, with no decode buffers (a Parquet reader
held about 3.5 times the shard at its peak)::

    examples/
      manifest.json                 {"world", "rec_rows", "fraud_rows", "shapes", "row_bytes"}
      items.safetensors             item_pop, item_freq (indexed by item, shared by ranks)
      rec-<rank>.arrow              that rank's rec rows, one column per array
      fraud-<rank>.arrow            that rank's fraud rows

Arrays with trailing dimensions are stored as fixed-size list columns of their flattened
rows; ``shapes`` restores them. Why not ``ray.data.read_parquet`` into
``get_dataset_shard``: Ray Data's read runs as tasks that need a free CPU (2.60's
``ListFiles`` always asks for one), and a worker group that takes every CPU of the
cluster (CI's 2 cores, 2 workers) then waits forever (ray#44687); reading a rank's own file
in the worker needs no scheduling at all. See docs/trainer.md.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from training.features.examples import FraudExamples, RecExamples, WindowExamples
from training.fit.shard_spill import ShardSpill

MANIFEST_FILE = "manifest.json"
# Rows per record batch: what the writer copies out, and the reader holds about twice, at
# a time (~22 MB of rec rows at ~1.3 kB a row; at 65,536 a worker's peak was 200 MB higher).
BLOCK_ROWS = 16_384
ITEMS_FILE = "items.safetensors"
# RecExamples' arrays indexed by item rather than by row: shared by every rank.
ITEM_ARRAYS: tuple[str, ...] = ("item_pop", "item_freq")


class ExampleShardError(ValueError):
    """The example files do not match their manifest (a partial upload, another run's)."""


def row_arrays(examples: RecExamples | FraudExamples) -> dict[str, np.ndarray]:
    """The per-row arrays of one task's examples, by field name."""
    return {f.name: getattr(examples, f.name) for f in fields(examples)
            if f.name not in ITEM_ARRAYS}


def to_table(arrays: dict[str, np.ndarray]) -> pa.Table:
    """Rows as a table: 1-D arrays as columns, wider ones as fixed-size lists."""
    columns = {}
    for name, array in arrays.items():
        if array.ndim == 1:
            columns[name] = pa.array(array)
            continue
        width = int(np.prod(array.shape[1:]))
        flat = pa.array(np.ascontiguousarray(array).reshape(-1))
        if width == 0:  # rows of nothing (no fraud features): from_arrays cannot count them
            columns[name] = pa.Array.from_buffers(pa.list_(flat.type, 0), len(array), [None],
                                                  children=[flat])
            continue
        columns[name] = pa.FixedSizeListArray.from_arrays(flat, width)
    return pa.table(columns)


def from_table(table: pa.Table, shapes: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """The arrays :func:`to_table` stored, with their trailing shapes restored (views of
    the table's buffers where Arrow allows: one chunk, no nulls)."""
    out = {}
    for name in table.column_names:
        chunks = table.column(name)
        column = chunks.chunk(0) if chunks.num_chunks == 1 else chunks.combine_chunks()
        if name in shapes and shapes[name]:
            values = column.flatten().to_numpy(zero_copy_only=False)
            out[name] = values.reshape(len(column), *shapes[name])
        else:
            out[name] = column.to_numpy(zero_copy_only=False)
    return out


def write_example_shards(examples: WindowExamples, world: int, root: str,
                         fs: pyarrow.fs.FileSystem) -> dict[str, Any]:
    """Write each of ``world`` ranks' shard of ``examples`` under ``root`` on ``fs``; returns
    the manifest. Rows go out in order, a block at a time (:meth:`WindowExamples.rec_blocks`:
    repeat features still to build are built a group of users at a time), so the driver
    never holds a second copy of the examples, nor, when they are deferred, their repeat
    arrays at all."""
    if world < 1:
        raise ValueError(f"num_workers: must be >= 1, got {world}")
    fs.create_dir(root, recursive=True)
    rec_head = examples.rec_head()
    shapes = {name: list(array.shape[1:]) for task in (rec_head, examples.fraud)
              for name, array in row_arrays(task).items()}
    row_bytes = {task: sum(a.dtype.itemsize * int(np.prod(a.shape[1:], dtype=np.int64))
                           for a in row_arrays(head).values())
                 for task, head in (("rec", rec_head), ("fraud", examples.fraud))}
    manifest = {"world": world, "rec_rows": len(examples.rec),
                "fraud_rows": len(examples.fraud), "shapes": shapes, "row_bytes": row_bytes}
    fraud = examples.fraud
    fraud_blocks = (fraud.take(np.arange(at, min(len(fraud), at + BLOCK_ROWS)))
                    for at in range(0, len(fraud), BLOCK_ROWS))
    for task, head, blocks in (("rec", rec_head, examples.rec_blocks(BLOCK_ROWS)),
                               ("fraud", fraud.take(np.arange(0)), fraud_blocks)):
        with RankWriters([f"{root}/{shard_file(task, rank)}" for rank in range(world)],
                         to_table(row_arrays(head)).schema, fs) as writers:
            for block in blocks:
                writers.append(row_arrays(block))
    items = save_arrays({name: np.ascontiguousarray(getattr(examples.rec, name))
                         for name in ITEM_ARRAYS})
    with fs.open_output_stream(f"{root}/{ITEMS_FILE}") as out:
        out.write(items)
    # The manifest last: a reader that finds it finds every file it names.
    with fs.open_output_stream(f"{root}/{MANIFEST_FILE}") as out:
        out.write(json.dumps(manifest).encode())
    return manifest


class RankWriters:
    """One Arrow IPC file per rank, fed rows in their global order: row ``i`` goes to rank
    ``i % world`` (:meth:`WindowExamples.shard`'s rows), written as record batches of
    :data:`BLOCK_ROWS` rows (the last one shorter; a file with no batch when a rank has no
    row)."""

    def __init__(self, paths: list[str], schema: pa.Schema,
                 fs: pyarrow.fs.FileSystem) -> None:
        self.paths, self.schema, self.fs = paths, schema, fs
        self.rows = 0
        self.pending: list[list[dict[str, np.ndarray]]] = [[] for _ in paths]
        self.stack = contextlib.ExitStack()
        self.writers: list[pa.ipc.RecordBatchFileWriter] = []

    def __enter__(self) -> RankWriters:
        for path in self.paths:
            out = self.stack.enter_context(self.fs.open_output_stream(path))
            self.writers.append(self.stack.enter_context(pa.ipc.new_file(out, self.schema)))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                for rank in range(len(self.paths)):
                    self.flush(rank, final=True)
        finally:
            self.stack.close()

    def append(self, arrays: dict[str, np.ndarray]) -> None:
        """The next rows, in global order, to their ranks."""
        world = len(self.paths)
        n = len(next(iter(arrays.values())))
        for rank in range(world):
            mine = np.arange((rank - self.rows) % world, n, world)
            if len(mine):
                self.pending[rank].append({k: v[mine] for k, v in arrays.items()})
                self.flush(rank)
        self.rows += n

    def flush(self, rank: int, final: bool = False) -> None:
        """Write rank ``rank``'s whole blocks held (and, ``final``, the rest)."""
        held = self.pending[rank]
        count = sum(len(next(iter(part.values()))) for part in held)
        if not held or (count < BLOCK_ROWS and not final):
            return
        joined = {k: np.concatenate([part[k] for part in held]) for k in held[0]}
        whole = count if final else count - count % BLOCK_ROWS
        for at in range(0, whole, BLOCK_ROWS):
            block = {k: v[at:min(whole, at + BLOCK_ROWS)] for k, v in joined.items()}
            self.writers[rank].write_table(to_table(block))
        self.pending[rank] = [] if whole == count else \
            [{k: v[whole:] for k, v in joined.items()}]


def read_rows(root: str, fs: pyarrow.fs.FileSystem, name: str, n_rows: int,
              shapes: dict[str, list[int]], spill: ShardSpill | None = None
              ) -> dict[str, np.ndarray]:
    """The arrays of ``root/name`` (:class:`RankWriters`), filled one record batch at a time
    into arrays of ``n_rows`` rows (its whole table is never held beside them), in memory
    or, with ``spill``, in its mapped files; ExampleShardError when the file holds another
    number of rows."""
    allocate = pool_array if spill is None else spill.array
    with fs.open_input_file(f"{root}/{name}") as stream:
        reader = pa.ipc.open_file(stream)
        empty = from_table(reader.schema.empty_table(), shapes)
        out = {k: allocate((n_rows, *v.shape[1:]), v.dtype) for k, v in empty.items()}
        at = 0
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            if at + batch.num_rows > n_rows:
                break
            for key, values in from_table(pa.Table.from_batches([batch]), shapes).items():
                out[key][at:at + batch.num_rows] = values
            at += batch.num_rows
            if spill is not None:
                spill.release()
        else:
            if at == n_rows:
                return out
    raise ExampleShardError(f"{root}/{name} does not hold the {n_rows} rows expected")


def pool_array(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A writable, uninitialised array in Arrow's memory pool rather than from malloc: the
    pool hands out 2 MB-aligned blocks that transparent huge pages can back, and the engine's
    random-row gathers ran 15-25% faster from them (a malloc'd shard cost the 1x loop ~10% of
    its samples/s in benchmarks/data_scaling.py)."""
    size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return np.frombuffer(pa.allocate_buffer(size), dtype=dtype).reshape(shape)


def read_manifest(root: str, fs: pyarrow.fs.FileSystem) -> dict[str, Any]:
    with fs.open_input_stream(f"{root}/{MANIFEST_FILE}") as stream:
        return dict(json.loads(stream.read()))


def shard_file(task: str, rank: int) -> str:
    return f"{task}-{rank}.arrow"


def shard_bytes(manifest: dict[str, Any], rank: int, world: int) -> int:
    """The bytes of rank ``rank``'s arrays (the item arrays aside)."""
    return sum(len(range(rank, manifest[f"{task}_rows"], world)) * manifest["row_bytes"][task]
               for task in ("rec", "fraud"))


def read_example_shard(root: str, fs: pyarrow.fs.FileSystem, rank: int, world: int,
                       manifest: dict[str, Any], spill: ShardSpill | None = None
                       ) -> WindowExamples:
    """Rank ``rank``'s shard as :func:`write_example_shards` wrote it for ``world`` ranks, in
    memory or in ``spill``'s mapped files; ``manifest`` is :func:`read_manifest`'s (the
    caller also needs its row counts)."""
    if manifest["world"] != world:
        raise ExampleShardError(
            f"examples at {root} were cut for num_workers={manifest['world']}, "
            f"this run has {world}")
    with fs.open_input_stream(f"{root}/{ITEMS_FILE}") as stream:
        items = load_arrays(stream.read())
    # Into memory unless the caller spills (a shard above the worker's budget): training
    # gathers random rows every step, and from mapped file pages it ran at 0.84x the
    # samples/s (benchmarks/data_scaling.py).
    parts = {}
    for task in ("rec", "fraud"):
        expected = len(range(rank, manifest[f"{task}_rows"], world))
        try:
            parts[task] = read_rows(root, fs, shard_file(task, rank), expected,
                                    manifest["shapes"], spill)
        except ExampleShardError as err:
            raise ExampleShardError(f"rank {rank}'s examples: {err}") from err
    return WindowExamples(RecExamples(**parts["rec"], **items), FraudExamples(**parts["fraud"]))
