"""IdMap (string id -> embedding row) and ModelConfig validation."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from training.cli import ConfigError
from training.model import IdMap, IdMapError, ModelConfig, config_from_json

pytestmark = pytest.mark.unit


def test_idmap_assigns_from_one_in_first_seen_order_and_dedups():
    ids = IdMap(["b", "a", "b"])
    assert ids.ids == ["b", "a"]
    assert len(ids) == 3
    assert ids.add(["c", "a", "d", "c"]) == 2
    assert ids.ids == ["b", "a", "c", "d"]
    assert ids.lookup(["b", "a", "c", "d"]).tolist() == [1, 2, 3, 4]
    assert "c" in ids and "zz" not in ids and 1 not in ids
    assert ids.index_of("d") == 4 and ids.index_of("zz") == 0


def test_idmap_lookup_maps_unknown_none_and_nan_to_zero():
    ids = IdMap(["u1", "u2"])
    got = ids.lookup(np.array(["u2", "nope", None, "u1"], dtype=object))
    assert got.dtype == np.int64
    assert got.tolist() == [2, 0, 0, 1]
    series = pd.Series(["u1", None, float("nan"), "u2"])
    assert ids.lookup(series).tolist() == [1, 0, 0, 2]
    assert ids.lookup(pd.Series(["u2", None], dtype="string")).tolist() == [2, 0]
    assert ids.lookup([]).tolist() == []
    assert IdMap().lookup(["u1"]).tolist() == [0]


def test_idmap_lookup_sees_ids_added_later():
    ids = IdMap(["a"])
    assert ids.lookup(["b"]).tolist() == [0]
    ids.add(["b"])
    assert ids.lookup(["b", "a"]).tolist() == [2, 1]


def test_idmap_lookup_of_arrow_strings_matches_the_object_path_and_sees_new_ids():
    """A window's Arrow-backed id column is looked up in Arrow (no Python string per row):
    same indices as the object path, across chunks, missing values and ids added later."""
    ids = IdMap([f"u{i}" for i in range(50)])
    rng = np.random.default_rng(0)
    raw = [f"u{i}" for i in rng.integers(0, 80, 500)] + [None, "", " u1", "U1"]
    for dtype in ("str", "string[pyarrow]"):
        arrow = pd.concat([pd.Series(raw, dtype=dtype)] * 2, ignore_index=True)
        assert arrow.array._pa_array.num_chunks == 2 or dtype == "str"
        expected = ids.lookup(np.asarray(raw * 2, dtype=object))
        assert (expected[-4:] == 0).all() and (expected > 0).sum() > 300
        got = ids.lookup(arrow)
        assert got.dtype == np.int64 and got.tolist() == expected.tolist()
    ids.add(["u70", "u75"])
    arrow = pd.Series(["u75", "u70", "u1", "u79"], dtype="str")
    assert ids.lookup(arrow).tolist() == [52, 51, 2, 0]


def test_idmap_json_round_trip_and_bad_input():
    ids = IdMap(["x", "y", "z"])
    again = IdMap.from_json(json.loads(json.dumps(ids.to_json())))
    assert again == ids and again.ids == ["x", "y", "z"]
    with pytest.raises(IdMapError, match="duplicate"):
        IdMap.from_json(["x", "x"])
    with pytest.raises(IdMapError, match="list"):
        IdMap.from_json({"x": 1})
    with pytest.raises(IdMapError, match="non-empty strings"):
        IdMap([17850.0])  # type: ignore[list-item]
    with pytest.raises(IdMapError, match="non-empty strings"):
        IdMap([""])


@pytest.mark.parametrize(("overrides", "setting"), [
    ({"finetune_layers": -1}, "finetune_layers"),
    ({"max_title_tokens": 3}, "max_title_tokens"),
    ({"dim": 0}, "dim"),
    ({"fraud_features": ("f", "f")}, "fraud_features"),
    ({"fraud_features": ("amount",)}, "fraud_features"),
    ({"dropout": 1.0}, "dropout"),
    ({"temperature": 0.0}, "temperature"),
    ({"encoder_init": "random"}, "encoder_init"),
    ({"encoder_name": " "}, "encoder_name"),
    ({"text_cache_size": -1}, "text_cache_size"),
])
def test_config_rejects_bad_values_naming_the_setting(overrides, setting):
    with pytest.raises(ConfigError, match=f"^{setting}:"):
        ModelConfig(**overrides)


def test_config_json_round_trip_restores_tuples():
    cfg = ModelConfig(fraud_features=("v1", "v2"), dim=32, encoder_init="tiny_random")
    again = config_from_json(json.loads(json.dumps(asdict(cfg))))
    assert again == cfg
    assert again.fraud_features == ("v1", "v2")
    with pytest.raises(ConfigError, match="unknown setting"):
        config_from_json({"dim": 8, "bogus": 1})
