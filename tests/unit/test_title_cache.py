"""The frozen encoder's title vectors kept in the store (training.store.title_vectors) and
taken by the next update in a new process (training.update.title_cache).

No Ray: ``trainer="local"``, a tiny random encoder (wholly frozen, the default), a tiny
synthetic shop on a local store. A new process is simulated by dropping the process-wide
title caches (``training.model.text_cache.drop_shared_caches``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.unit.tiny_shop import RUN_MODEL as MODEL
from tests.unit.tiny_shop import RUN_TRAIN as TRAIN
from tests.unit.tiny_shop import update_config
from training.data.synthetic import SyntheticShopConfig
from training.incremental_config import IncrementalConfig
from training.model import load_model
from training.model.text_cache import drop_shared_caches
from training.store import open_store
from training.store.title_vectors import (
    TITLE_AREA,
    TitleVectorError,
    pack_title_vectors,
    unpack_title_vectors,
)
from training.update.run import run_incremental

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]

SHOP = SyntheticShopConfig(n_windows=3, interactions_per_window=300,
                           transactions_per_window=150, n_users=60, n_items=40,
                           fraud_rate=0.1, new_items_per_window=6)


def catalogue_titles(model: Any) -> list[str]:
    return list(dict.fromkeys(model.item_titles))


def _update_in_new_process(inc: IncrementalConfig, model_cfg: Any = MODEL) -> dict[str, Any]:
    drop_shared_caches()
    return run_incremental(inc, TRAIN, model_cfg, SHOP)


def _latest_model(store: Path) -> Any:
    opened = open_store(str(store))
    info = opened.latest()
    assert info is not None
    with opened.opened(info.version) as (_, folder):
        return load_model(folder)


@pytest.fixture(scope="module")
def two_updates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    store = tmp_path_factory.mktemp("title-cache") / "store"
    first = _update_in_new_process(update_config(store))
    stored_first = open_store(str(store)).list_keys(f"{TITLE_AREA}/")
    second = _update_in_new_process(update_config(store))
    return {"store": store, "first": first, "second": second, "keys": stored_first}


def test_the_first_update_writes_its_catalogue(two_updates: dict[str, Any]) -> None:
    first = two_updates["first"]["titles"]
    assert len(two_updates["keys"]) == 1
    assert first["from_store"] == 0 and first["encoded"] > 0
    assert first["written"] > 0


def test_the_next_update_in_a_new_process_encodes_only_new_titles(
        two_updates: dict[str, Any]) -> None:
    first, second = two_updates["first"]["titles"], two_updates["second"]["titles"]
    assert second["from_store"] == first["written"]
    # Its window brought new items: their titles, and no stored one, were encoded.
    assert 0 < second["encoded"] < first["encoded"]
    assert second["written"] == first["written"] + second["encoded"]


def test_stored_vectors_are_the_encoders_own(two_updates: dict[str, Any]) -> None:
    """The latest model's catalogue is stored, each title with the vector a plain forward
    of the encoder gives (the empty title of item index 0 included)."""
    model = _latest_model(two_updates["store"])
    stored = open_store(str(two_updates["store"])).get_title_vectors(
        model.text.frozen_signature())
    assert set(catalogue_titles(model)) <= set(stored)
    titles = list(stored)
    with torch.no_grad():
        fresh = model.text.forward_uncached(titles).numpy()
    np.testing.assert_allclose(np.stack([stored[t] for t in titles]), fresh, atol=1e-5)


def test_title_cache_off_reads_and_writes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    summary = _update_in_new_process(update_config(store, title_cache=False))
    assert summary["titles"]["from_store"] == 0 and summary["titles"]["written"] == 0
    assert open_store(str(store)).list_keys(f"{TITLE_AREA}/") == []


def test_a_trained_encoder_layer_keeps_no_title_vectors(tmp_path: Path) -> None:
    """With a layer trained the cache holds per-token states, which are not stored."""
    store = tmp_path / "store"
    summary = _update_in_new_process(update_config(store),
                                     dataclasses.replace(MODEL, finetune_layers=1))
    assert summary["titles"]["written"] == 0
    assert open_store(str(store)).list_keys(f"{TITLE_AREA}/") == []


def test_a_damaged_object_is_encoded_again_and_replaced(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _update_in_new_process(update_config(store))
    key = open_store(str(store)).list_keys(f"{TITLE_AREA}/")[0]
    (store / key).write_bytes(b"\x00" * 40)
    summary = _update_in_new_process(update_config(store))
    assert summary["titles"]["from_store"] == 0 and summary["titles"]["written"] > 0
    assert unpack_title_vectors((store / key).read_bytes())


def _raw(titles: Any, array: np.ndarray) -> bytes:
    """An object with any header titles and array (to build broken ones)."""
    from safetensors.numpy import save

    return bytes(save({"vectors": array}, metadata={"titles": json.dumps(titles)}))


@pytest.mark.parametrize(("raw", "field"), [
    (b"not safetensors", "unreadable"),
    (_raw(["a", "a"], np.zeros((2, 3), np.float32)), "titles: a title appears twice"),
    (_raw(["a", 3], np.zeros((2, 3), np.float32)), "titles: expected a list"),
    (_raw({"a": 1}, np.zeros((1, 3), np.float32)), "titles: expected a list"),
    (_raw(["a", "b"], np.zeros((3, 3), np.float32)), "vectors: expected float32 [2, dim]"),
    (_raw(["a"], np.zeros((1, 3), np.float64)), "vectors: expected float32"),
    (_raw(["a"], np.full((1, 3), np.nan, np.float32)), "vectors: non-finite"),
])
def test_a_broken_object_names_its_field(raw: bytes, field: str) -> None:
    with pytest.raises(TitleVectorError, match=field.replace("[", r"\[")):
        unpack_title_vectors(raw)


def test_pack_and_unpack_round_trip() -> None:
    vectors = {"Tasse à thé": np.arange(3, dtype=np.float32), "mug": np.ones(3, np.float32)}
    back = unpack_title_vectors(pack_title_vectors(vectors))
    assert list(back) == list(vectors)
    assert all(np.array_equal(back[t], vectors[t]) for t in vectors)
    assert unpack_title_vectors(pack_title_vectors({})) == {}
