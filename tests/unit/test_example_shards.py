"""Each Ray Train rank's examples, written to storage and read back by that rank alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.fs
import pyarrow.ipc
import pytest
import torch

from tests.unit.tiny_shop import TINY, tiny_examples, tiny_window
from training.data.schema import WindowData
from training.features import examples as example_module
from training.features import profile as profiles
from training.features.examples import RecExamples, WindowExamples
from training.features.history import PurchaseHistory
from training.features.repeat_plan import RepeatPlan
from training.fit import example_shards
from training.fit.engine import global_steps, rows_steps
from training.fit.example_shards import (
    ExampleShardError,
    read_example_shard,
    read_manifest,
    write_example_shards,
)
from training.fit.loop import init_model
from training.fit.shard_spill import ShardSpill

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def examples() -> WindowExamples:
    return tiny_examples(20)


def _same(a: WindowExamples, b: WindowExamples) -> None:
    for task in ("rec", "fraud"):
        left, right = getattr(a, task), getattr(b, task)
        for name, value in vars(left).items():
            other = getattr(right, name)
            assert other.dtype == value.dtype and other.shape == value.shape, (task, name)
            np.testing.assert_array_equal(other, value, err_msg=f"{task}.{name}")


@pytest.mark.parametrize(("world", "block_rows"), [(1, 65_536), (2, 65_536), (3, 65_536),
                                                    (2, 7), (3, 1)])
def test_each_rank_reads_back_exactly_its_shard(examples: WindowExamples, tmp_path: Path,
                                                world: int, block_rows: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(example_shards, "BLOCK_ROWS", block_rows)
    fs = pyarrow.fs.LocalFileSystem()
    root = str(tmp_path / "examples")
    write_example_shards(examples, world, root, fs)
    manifest = read_manifest(root, fs)
    shards = [read_example_shard(root, fs, rank, world, manifest) for rank in range(world)]
    for rank, shard in enumerate(shards):
        _same(shard, examples.shard(rank, world))
        # Written (and read back) a block of rows at a time.
        with pyarrow.OSFile(str(Path(root, f"rec-{rank}.arrow"))) as file:
            batches = pyarrow.ipc.open_file(file).num_record_batches
        assert batches == -(-len(shard.rec) // block_rows)
    assert sum(len(s.rec) for s in shards) == len(examples.rec) > 0
    assert sum(len(s.fraud) for s in shards) == len(examples.fraud) > 0
    # A rank steps as many times as a rank that held every example would have counted.
    assert rows_steps(manifest["rec_rows"], manifest["fraud_rows"], world, 8) == \
        global_steps(examples, world, 8)
    # A rank's files hold its rows only: the largest file is about 1/world of the whole.
    sizes = [Path(root, f"rec-{rank}.arrow").stat().st_size for rank in range(world)]
    assert max(sizes) < 1.5 * sum(sizes) / world


def test_a_shard_cut_for_another_worker_count_is_refused(examples: WindowExamples,
                                                         tmp_path: Path) -> None:
    fs = pyarrow.fs.LocalFileSystem()
    write_example_shards(examples, 2, str(tmp_path), fs)
    with pytest.raises(ExampleShardError, match="num_workers=2, this run has 3"):
        read_example_shard(str(tmp_path), fs, 0, 3, read_manifest(str(tmp_path), fs))


def test_a_truncated_shard_is_refused(examples: WindowExamples, tmp_path: Path) -> None:
    fs = pyarrow.fs.LocalFileSystem()
    write_example_shards(examples, 2, str(tmp_path), fs)
    write_example_shards(WindowExamples(examples.rec.take(np.arange(3)), examples.fraud), 2,
                         str(tmp_path / "other"), fs)
    (tmp_path / "rec-1.arrow").write_bytes((tmp_path / "other" / "rec-1.arrow").read_bytes())
    with pytest.raises(ExampleShardError, match="rank 1's examples"):
        read_example_shard(str(tmp_path), fs, 1, 2, read_manifest(str(tmp_path), fs))


@pytest.mark.parametrize("change", [-2, 2])
def test_a_shard_with_other_row_counts_is_refused(examples: WindowExamples, tmp_path: Path,
                                                  change: int) -> None:
    """More rows in the file than the manifest names, or fewer: never a silent cut."""
    fs = pyarrow.fs.LocalFileSystem()
    manifest = write_example_shards(examples, 2, str(tmp_path), fs)
    manifest["fraud_rows"] += change  # rank 0 now expects one row fewer, or one more
    with pytest.raises(ExampleShardError, match="rank 0's examples.*fraud-0.arrow"):
        read_example_shard(str(tmp_path), fs, 0, 2, manifest)


@pytest.fixture(scope="module")
def deferred() -> tuple[WindowExamples, WindowExamples]:
    """(examples built at once, the same with their repeat features deferred) of a window
    after a first one: fresh rows with repeat features, and replayed rows older than the
    snapshot (zeros) mixed in."""
    first = tiny_window()
    later = first.interactions.assign(ts=first.interactions["ts"] + pd.Timedelta(days=3))
    later = pd.concat([later, later.assign(ts=later["ts"] + pd.Timedelta(days=1))])
    mixed = pd.concat([first.interactions.iloc[:6], later], ignore_index=True)
    window = WindowData("w1", first.items, mixed, first.transactions)
    model = init_model(TINY, window)
    history = PurchaseHistory(TINY.history_len).update(first.interactions)
    return (WindowExamples.build(model, window, history),
            WindowExamples.build(model, window, history, defer_repeat=True))


def test_deferred_repeat_features_build_the_same_examples(
        deferred: tuple[WindowExamples, WindowExamples]) -> None:
    eager, lazy = deferred
    assert len(lazy.repeat) == 1 and lazy.rec.rep_feats.shape[1] == 0
    assert lazy.nbytes == eager.nbytes
    assert eager.rec.rep_items.any()  # fresh rows have own items
    assert not eager.rec.rep_items[lazy.repeat[0].positions.min() - 1].any()  # replayed
    _same(lazy.materialized(), eager)
    with pytest.raises(ValueError, match="repeat features not built"):
        lazy.shard(0, 2)


@pytest.mark.parametrize(("world", "block_rows", "merge_rows"), [(1, 65_536, 2_000_000),
                                                                 (2, 5, 40), (3, 4, 1)])
def test_deferred_examples_stream_into_the_same_shards(
        deferred: tuple[WindowExamples, WindowExamples], tmp_path: Path, world: int,
        block_rows: int, merge_rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Written a group of users at a time (several groups, blocks that cut through them),
    never built whole, and read back as the examples built at once."""
    eager, lazy = deferred
    monkeypatch.setattr(example_shards, "BLOCK_ROWS", block_rows)
    monkeypatch.setattr(profiles, "MERGE_ROWS", merge_rows)
    groups = sum(1 for _ in lazy.repeat[0].parts())
    assert groups > 1 if merge_rows < 100 else groups == 1

    build = example_module.with_repeat

    def whole(rec: RecExamples, plans: Sequence[RepeatPlan]) -> RecExamples:
        if len(rec):
            raise AssertionError("the writer built every repeat feature at once")
        return build(rec, plans)

    monkeypatch.setattr(example_module, "with_repeat", whole)
    fs = pyarrow.fs.LocalFileSystem()
    write_example_shards(lazy, world, str(tmp_path), fs)
    manifest = read_manifest(str(tmp_path), fs)
    for rank in range(world):
        _same(read_example_shard(str(tmp_path), fs, rank, world, manifest),
              eager.shard(rank, world))


def test_repeat_groups_out_of_row_order_are_refused(
        deferred: tuple[WindowExamples, WindowExamples]) -> None:
    _, lazy = deferred
    plan = lazy.repeat[0]
    backwards = replace(plan, positions=plan.positions[::-1].copy())
    with pytest.raises(RuntimeError, match="out of row order"):
        list(replace(lazy, repeat=(backwards,)).rec_blocks(4))
    # Two plans whose rows overlap (a second window's plan not shifted past the first's).
    with pytest.raises(RuntimeError, match="out of row order"):
        list(replace(lazy, repeat=(plan, plan)).rec_blocks(4))


def test_a_full_retrain_defers_every_window_and_builds_the_same_rows(
        deferred: tuple[WindowExamples, WindowExamples], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    first = tiny_window()
    later = WindowData("w1", first.items, first.interactions.assign(
        ts=first.interactions["ts"] + pd.Timedelta(days=3)), first.transactions)
    model = init_model(TINY, later)
    history = PurchaseHistory(TINY.history_len)
    eager = WindowExamples.build_over(model, [first, later], history)
    lazy = WindowExamples.build_over(model, [first, later], history, defer_repeat=True)
    assert len(lazy.repeat) == 2 and eager.rec.rep_items[len(first.interactions):].any()
    _same(lazy.materialized(), eager)
    monkeypatch.setattr(example_shards, "BLOCK_ROWS", 3)
    fs = pyarrow.fs.LocalFileSystem()
    write_example_shards(lazy, 2, str(tmp_path), fs)
    manifest = read_manifest(str(tmp_path), fs)
    for rank in range(2):
        _same(read_example_shard(str(tmp_path), fs, rank, 2, manifest), eager.shard(rank, 2))


@pytest.mark.parametrize("fraud_rows", [0, 5])
@pytest.mark.parametrize("spilled", [False, True])
def test_arrays_with_empty_rows_round_trip(examples: WindowExamples, tmp_path: Path,
                                           fraud_rows: int, spilled: bool) -> None:
    """A source without fraud features (Online Retail: no transactions, so features are
    [rows, 0]) writes and reads its shards like any other; Arrow has no fixed-size list of
    width 0 to build from values, and the full retrain on the Ray trainer once failed here."""
    fraud = examples.fraud.take(np.arange(fraud_rows))
    fraud = replace(fraud, features=np.zeros((fraud_rows, 0), dtype=np.float32))
    bare = WindowExamples(examples.rec, fraud)
    fs = pyarrow.fs.LocalFileSystem()
    root = str(tmp_path / "examples")
    manifest = write_example_shards(bare, 2, root, fs)
    assert manifest["shapes"]["features"] == [0]
    for rank in range(2):
        spill = ShardSpill(str(tmp_path)) if spilled else None
        _same(read_example_shard(root, fs, rank, 2, manifest, spill), bare.shard(rank, 2))


INDEX_FIELDS = {"rec": ("user_idx", "hist_idx", "target_idx", "rep_items"),
                "fraud": ("user_idx", "hist_idx", "item_idx")}


def test_index_arrays_are_int32_and_batches_widen_them_to_the_same_int64_values() -> None:
    examples = tiny_examples(5)  # later purchases see earlier ones: repeat items are set
    for task, names in INDEX_FIELDS.items():
        for name in names:
            assert getattr(getattr(examples, task), name).dtype == np.int32, (task, name)
    assert examples.rec.rep_items.any() and examples.rec.hist_idx.any()
    batch = next(example_module.iter_batches(examples, 1, 8, 2, np.random.default_rng(0)))
    assert batch.rec is not None and batch.fraud is not None
    rng = np.random.default_rng(0)  # one step: every row, in iter_batches' shuffled order
    rec_rows, fraud_rows = rng.permutation(len(examples.rec)), rng.permutation(len(examples.fraud))
    for task, rows, names in (("rec", rec_rows, INDEX_FIELDS["rec"]),
                              ("fraud", fraud_rows, INDEX_FIELDS["fraud"])):
        for name in names:
            tensor = getattr(getattr(batch, task), name)
            assert tensor.dtype == torch.int64, (task, name)
            np.testing.assert_array_equal(tensor.numpy(),
                                          getattr(getattr(examples, task), name)[rows])


def test_an_index_past_the_int32_range_is_refused() -> None:
    from training.features.repeat_plan import as_index

    assert as_index(np.asarray([0, 2 ** 31 - 1])).dtype == np.int32
    with pytest.raises(ValueError, match="vocabulary: index 2147483648 exceeds"):
        as_index(np.asarray([1, 2 ** 31]))
