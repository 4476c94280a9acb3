"""Checkpoints: safetensors + JSON round trip, and named errors for broken files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from training.model import (
    FraudBatch,
    IdMap,
    ModelConfig,
    ModelFormatError,
    RecBatch,
    ShopStreamModel,
    item_title_list,
    load_model,
    model_from_state,
    model_state,
    save_model,
)

pytestmark = pytest.mark.unit

TITLES = {"i1": "red shoe", "i2": "blue shoe", "i3": "wireless earbuds", "i4": "train set"}


def make_model() -> ShopStreamModel:
    cfg = ModelConfig(encoder_init="tiny_random", dim=8, fraud_features=("v1", "v2"),
                      fraud_hidden=8, finetune_layers=1)
    items = IdMap(TITLES)
    model = ShopStreamModel(cfg, IdMap(["u1", "u2"]), items, item_title_list(items, TITLES))
    # a model that has changed since construction: grown vocab, stats, trained weights
    model.extend_vocab(["u3"], ["i5"], {"i5": "green hat"})
    model.set_fraud_stats(np.array([1.0, 0.5, -2.0]), np.array([2.0, 1.5, 3.0]))
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.01)
    return model.eval()


def outputs(model: ShopStreamModel) -> list[torch.Tensor]:
    rec = RecBatch(torch.tensor([1, 3, 0]), torch.tensor([[1, 5], [2, 0], [0, 0]]),
                   torch.tensor([5, 3, 4]), torch.tensor([1]))
    fraud = FraudBatch(torch.tensor([[0.5, -1.0], [2.0, 0.0]]), torch.tensor([9.0, 1.0]),
                       torch.tensor([3, 0]), torch.tensor([[1, 5], [0, 0]]),
                       torch.tensor([5, 0]), torch.tensor([1.0, 0.0]), torch.zeros(2, 2))
    with torch.no_grad():
        return [model.catalogue_matrix(), model.rec_loss(rec), model.fraud_logits(fraud),
                model.item_vectors_from_titles(["never seen before"])]


@pytest.fixture(scope="module")
def model() -> ShopStreamModel:
    return make_model()


def test_save_load_reproduces_identical_outputs(model, tmp_path):
    paths = save_model(model, tmp_path / "ckpt")
    assert [p.name for p in paths] == ["model.safetensors", "model.json"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["model.json",
                                                                   "model.safetensors"]
    loaded = load_model(tmp_path / "ckpt")
    assert not loaded.training
    for got, want in zip(outputs(loaded), outputs(model)):
        assert torch.equal(got, want)
    assert loaded.users == model.users and loaded.items == model.items
    assert loaded.item_titles == model.item_titles and loaded.item_titles[5] == "green hat"
    assert loaded.cfg == model.cfg
    assert torch.equal(loaded.fraud_std, torch.tensor([2.0, 1.5, 3.0]))
    meta = json.loads((tmp_path / "ckpt" / "model.json").read_text())
    assert meta["format_version"] == 1
    assert meta["encoder_name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["model_config"]["fraud_features"] == ["v1", "v2"]
    assert meta["users"] == ["u1", "u2", "u3"]


def test_model_state_tensors_are_independent_contiguous_cpu_copies(model):
    tensors, meta = model_state(model)
    assert set(tensors) == set(model.state_dict())
    assert all(t.is_contiguous() and t.device.type == "cpu" for t in tensors.values())
    pointers = [t.untyped_storage().data_ptr() for t in tensors.values()]
    assert len(set(pointers)) == len(pointers)
    json.dumps(meta)  # JSON-able
    rebuilt = model_from_state(tensors, meta).eval()
    for got, want in zip(outputs(rebuilt), outputs(model)):
        assert torch.equal(got, want)


def test_truncated_weights_are_a_named_format_error(model, tmp_path):
    save_model(model, tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelFormatError, match="model.safetensors"):
        load_model(tmp_path)


def test_missing_meta_and_unknown_version_are_named(model, tmp_path):
    save_model(model, tmp_path)
    meta_path = tmp_path / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 2
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="model.json: format_version 2"):
        load_model(tmp_path)
    meta_path.write_text("{not json")
    with pytest.raises(ModelFormatError, match="model.json: not valid JSON"):
        load_model(tmp_path)
    meta_path.unlink()
    with pytest.raises(ModelFormatError, match="model.json: file is missing"):
        load_model(tmp_path)


def test_weights_that_do_not_fit_the_vocab_are_named(model):
    tensors, meta = model_state(model)
    meta = dict(meta, users=meta["users"][:-1])
    with pytest.raises(ModelFormatError, match="do not fit"):
        model_from_state(tensors, meta)
