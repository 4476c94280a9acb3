"""A worker's shard above its memory budget: in mapped local files, same rows, bounded RSS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.fs
import pytest
import torch

from tests.unit.tiny_shop import CFG, TINY, tiny_examples, tiny_window
from training.cli import ConfigError
from training.features.examples import WindowExamples
from training.fit import example_shards
from training.fit.engine import WorkerSettings, fit
from training.fit.example_shards import (
    read_example_shard,
    read_manifest,
    shard_bytes,
    write_example_shards,
)
from training.fit.loop import init_model
from training.fit.shard_spill import MIB, ShardSpill, spill_needed
from training.scaling_config import ScalingConfig

pytestmark = pytest.mark.unit


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def examples() -> WindowExamples:
    return tiny_examples(10)


def test_a_spilled_shard_reads_back_the_same_rows_from_mapped_files(
        examples: WindowExamples, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(example_shards, "BLOCK_ROWS", 3)
    fs = pyarrow.fs.LocalFileSystem()
    write_example_shards(examples, 2, str(tmp_path / "shards"), fs)
    manifest = read_manifest(str(tmp_path / "shards"), fs)
    for rank in range(2):
        spill = ShardSpill(str(tmp_path))
        shard = read_example_shard(str(tmp_path / "shards"), fs, rank, 2, manifest, spill)
        want = examples.shard(rank, 2)
        arrays = {f"{task}.{k}": v for task in ("rec", "fraud")
                  for k, v in vars(getattr(shard, task)).items()}
        assert len(list(spill.directory.iterdir())) == len(spill.maps) >= 10  # one per array
        # The size the worker decides by is the bytes it then holds.
        assert shard_bytes(manifest, rank, 2) == sum(
            v.nbytes for k, v in arrays.items() if k not in ("rec.item_pop", "rec.item_freq"))
        spill.release()  # pages dropped from the process, values kept
        for task in ("rec", "fraud"):
            for name, value in vars(getattr(want, task)).items():
                np.testing.assert_array_equal(arrays[f"{task}.{name}"], value, err_msg=name)
        spill.remove()
        assert not spill.directory.exists()


def test_release_returns_the_touched_pages_of_a_spill() -> None:
    spill = ShardSpill()
    try:
        array = spill.array((64 * MIB // 8,), np.dtype(np.int64))
        array[:] = np.arange(len(array))  # written through the mapping: all resident
        touched = _rss()
        spill.release()
        released = _rss()
        assert touched - released > 48 * MIB
        # Read again: faulted back in from the page cache, the same values.
        assert int(array[::4096].sum()) == int(np.arange(len(array))[::4096].sum())
        assert array[-1] == len(array) - 1
    finally:
        spill.remove()


def test_the_budget_decides_and_is_validated() -> None:
    assert not spill_needed(1024 * MIB, 1024) and spill_needed(1024 * MIB + 1, 1024)
    assert spill_needed(1, 0)
    with pytest.raises(ConfigError, match="examples_memory_mib"):
        ScalingConfig(examples_memory_mib=-1)


def test_training_from_a_spilled_shard_gives_the_same_weights(
        examples: WindowExamples, tmp_path: Path) -> None:
    fs = pyarrow.fs.LocalFileSystem()
    write_example_shards(examples, 1, str(tmp_path / "shards"), fs)
    manifest = read_manifest(str(tmp_path / "shards"), fs)
    spill = ShardSpill(str(tmp_path))
    mapped = read_example_shard(str(tmp_path / "shards"), fs, 0, 1, manifest, spill)
    in_memory = read_example_shard(str(tmp_path / "shards"), fs, 0, 1, manifest)
    model = init_model(TINY, tiny_window())
    a = fit(model, in_memory, CFG, WorkerSettings()).model.state_dict()
    spill.release()
    b = fit(model, mapped, CFG, WorkerSettings()).model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
