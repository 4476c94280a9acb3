"""Checkpoints: safetensors + JSON round trip, and named errors for broken files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from training.model import (
    FraudBatch,
    IdMap,
    ModelConfig,
    ModelFormatError,
    RecBatch,
    ShopStreamModel,
    copy_model,
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
    assert meta["format_version"] == 2
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
    meta["format_version"] = 3
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="model.json: format_version 3"):
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


def pretrained_model(finetune_layers: int) -> ShopStreamModel:
    cfg = ModelConfig(dim=8, fraud_features=("v1", "v2"), fraud_hidden=8,
                      finetune_layers=finetune_layers)
    items = IdMap(TITLES)
    model = ShopStreamModel(cfg, IdMap(["u1", "u2"]), items, item_title_list(items, TITLES))
    model.extend_vocab(["u3"], ["i5"], {"i5": "green hat"})
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.01)
    return model.eval()


@pytest.mark.parametrize("finetune_layers", [0, 1])
def test_frozen_package_weights_are_left_to_the_package_and_load_back(tmp_path,
                                                                      finetune_layers):
    model = pretrained_model(finetune_layers)
    save_model(model, tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["format_version"] == 2
    assert meta["encoder_weights"] == {"frozen": "package",
                                       "frozen_signature": model.text.frozen_signature()}
    stored = set(load_file(str(tmp_path / "model.safetensors")))
    frozen = {"text.bert." + name for name in model.text.frozen_names()}
    assert frozen and not stored & frozen and stored | frozen == set(model.state_dict())
    # MiniLM's frozen part is nearly all of a version: 91 MB -> under 8 MB (one trained layer)
    size = (tmp_path / "model.safetensors").stat().st_size
    assert size < (8e6 if finetune_layers else 1e6)
    loaded = load_model(tmp_path)
    assert loaded.text.frozen_from_package
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    for got, want in zip(outputs(loaded), outputs(model)):
        torch.testing.assert_close(got, want)
    assert copy_model(loaded).text.frozen_from_package  # a trained copy saves as small


def test_other_frozen_weights_are_stored_whole_and_a_changed_package_is_refused(tmp_path):
    model = pretrained_model(1)
    other = pretrained_model(1)
    with torch.no_grad():
        state = {k: v + 0.5 for k, v in other.text.state_dict().items()}
    other.text.load_state_dict(state)  # frozen weights that are not the package's
    assert not other.text.frozen_from_package
    save_model(other, tmp_path / "whole")
    assert "encoder_weights" not in json.loads((tmp_path / "whole" / "model.json").read_text())
    loaded = load_model(tmp_path / "whole")
    assert not loaded.text.frozen_from_package
    assert loaded.text.frozen_signature() == other.text.frozen_signature()
    # a checkpoint trained on other package weights than the installed ones
    save_model(model, tmp_path / "small")
    meta_path = tmp_path / "small" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["encoder_weights"]["frozen_signature"] = "0" * 32
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="encoder_weights: the checkpoint was trained "
                                               "on frozen encoder weights 0000"):
        load_model(tmp_path / "small")
    meta["encoder_weights"] = {"frozen": "elsewhere"}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="encoder_weights must be"):
        load_model(tmp_path / "small")


def test_a_format_1_checkpoint_with_every_tensor_still_loads(tmp_path):
    model = pretrained_model(1)
    tensors, meta = model_state(model)
    assert "encoder_weights" not in meta
    (tmp_path / "old").mkdir()
    save_file(tensors, str(tmp_path / "old" / "model.safetensors"))
    (tmp_path / "old" / "model.json").write_text(json.dumps(dict(meta, format_version=1)))
    loaded = load_model(tmp_path / "old")
    for got, want in zip(outputs(loaded), outputs(model)):
        torch.testing.assert_close(got, want)
    # its frozen weights hash as the package's: its next checkpoint leaves them out
    assert loaded.text.frozen_from_package
    save_model(loaded, tmp_path / "new")
    assert "encoder_weights" in json.loads((tmp_path / "new" / "model.json").read_text())
