"""Optimizer state by parameter name: exact round trip, growth padding, fresh fallbacks."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from training.config import TrainConfig
from training.fit.loop import build_optimizer
from training.fit.objective import TrainingObjective
from training.fit.optim_state import (
    OptimizerStateError,
    load_optimizer,
    optimizer_state_tensors,
    restore_optimizer_state,
    save_optimizer,
)
from training.model import (
    FraudBatch,
    IdMap,
    ModelConfig,
    MultiTaskBatch,
    RecBatch,
    ShopStreamModel,
    item_title_list,
    model_from_state,
    model_state,
)

pytestmark = pytest.mark.unit

TITLES = {"i1": "red shoe", "i2": "blue shoe", "i3": "wireless earbuds", "i4": "train set"}
CFG = TrainConfig(lr=1e-2, encoder_lr=1e-3, device="cpu")
MOMENTS = ("exp_avg", "exp_avg_sq")


def make_model() -> ShopStreamModel:
    cfg = ModelConfig(encoder_init="tiny_random", finetune_layers=1, dim=8, fraud_hidden=8,
                      fraud_features=("v1",), max_title_tokens=8)
    items = IdMap(TITLES)
    return ShopStreamModel(cfg, IdMap(["u1", "u2", "u3"]), items,
                           item_title_list(items, TITLES))


def batch(users: tuple[int, ...] = (1, 2, 3), items: tuple[int, ...] = (2, 3, 4)
          ) -> MultiTaskBatch:
    rec = RecBatch(torch.tensor(users), torch.tensor([[1, 0], [0, 0], [2, 3]]),
                   torch.tensor(items), torch.tensor([1]))
    fraud = FraudBatch(torch.tensor([[0.5], [-1.0]]), torch.tensor([9.0, 100.0]),
                       torch.tensor([users[0], 0]), torch.tensor([[1, 2], [0, 0]]),
                       torch.tensor([items[0], 0]), torch.tensor([1.0, 0.0]), torch.zeros(2, 2))
    return MultiTaskBatch(rec, fraud)


def step(model: ShopStreamModel, optimizer: torch.optim.Optimizer,
         data: MultiTaskBatch | None = None) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = model(data or batch(), CFG.task_weights)["loss"]
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@pytest.fixture(scope="module")
def trained() -> tuple[ShopStreamModel, torch.optim.Optimizer]:
    model = make_model().eval()  # eval: no dropout, so restored runs can be compared exactly
    optimizer = build_optimizer(model, CFG)
    for _ in range(3):
        step(model, optimizer)
    return model, optimizer


def copy_of(model: ShopStreamModel) -> ShopStreamModel:
    return model_from_state(*model_state(model))


def state_of(optimizer: torch.optim.Optimizer, model: ShopStreamModel) -> dict[str, dict]:
    return {name: optimizer.state[param] for name, param in model.named_parameters()
            if param in optimizer.state}


def test_round_trip_restores_every_moment_and_training_continues_identically(trained):
    model, optimizer = trained
    tensors, meta = optimizer_state_tensors(optimizer, model)
    snapshot = {key: value.clone() for key, value in tensors.items()}
    meta = json.loads(json.dumps(meta))
    n_params = sum(len(g["params"]) for g in optimizer.param_groups)
    assert len(tensors) == 3 * n_params and "user_emb.weight/exp_avg" in tensors
    assert meta["state"]["user_emb.weight"]["step"] == 3.0
    heads, encoder = meta["param_groups"]
    assert (heads["name"], heads["lr"], encoder["name"], encoder["lr"]) == \
        ("heads", 1e-2, "encoder", 1e-3)
    assert "fraud_mlp.0.weight" in heads["param_names"] and "params" not in heads
    assert all(n.startswith("text.bert.encoder.layer.1.") for n in encoder["param_names"])
    twin = copy_of(model).eval()
    fresh = build_optimizer(twin, CFG)
    counts = restore_optimizer_state(fresh, twin, tensors, meta)
    assert counts == {"restored": n_params, "padded": 0, "fresh": 0, "unused": 0}
    want, got = state_of(optimizer, model), state_of(fresh, twin)
    assert set(got) == set(want) and len(got) == n_params
    for name in want:
        for key in ("step", *MOMENTS):
            assert torch.equal(got[name][key], want[name][key]), (name, key)
    # the same next step: bias correction and moments carried over exactly
    original = copy_of(model).eval()
    again = build_optimizer(original, CFG)
    restore_optimizer_state(again, original, tensors, meta)
    step(original, again)
    step(twin, fresh)
    for (name, a), b in zip(original.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), name
    # restored optimizers own their state: stepping them changed nothing they were given
    assert all(torch.equal(tensors[key], snapshot[key]) for key in tensors)
    assert fresh.state[twin.user_emb.weight]["step"].item() == 4.0


def test_file_round_trip_and_wrapped_models_use_the_same_names(trained, tmp_path):
    model, optimizer = trained
    wrapped = TrainingObjective(model, CFG.task_weights)
    tensors, meta = optimizer_state_tensors(optimizer, wrapped)
    assert set(tensors) == set(optimizer_state_tensors(optimizer, model)[0])
    meta_saved = save_optimizer(tmp_path / "optimizer.safetensors", optimizer, wrapped)
    assert meta_saved == meta
    twin = copy_of(model)
    for given in (None, json.loads(json.dumps(meta))):
        fresh = build_optimizer(twin, TrainConfig(lr=5e-4, device="cpu"))
        counts = load_optimizer(tmp_path / "optimizer.safetensors", fresh, twin, given)
        assert counts["restored"] == len(meta["state"])
        # hyperparameters stay those of the new optimizer (the new window's settings)
        assert fresh.param_groups[0]["lr"] == 5e-4
    with pytest.raises(OptimizerStateError, match="file is missing"):
        load_optimizer(tmp_path / "nope.safetensors", fresh, twin)


def test_grown_tables_keep_old_rows_moments_and_new_rows_start_at_zero(trained):
    model, optimizer = trained
    tensors, meta = optimizer_state_tensors(optimizer, model)
    grown = copy_of(model).eval()
    grown.extend_vocab(["u9"], ["i8", "i9"], {"i8": "green hat", "i9": "blue hat"})
    fresh = build_optimizer(grown, CFG)
    counts = restore_optimizer_state(fresh, grown, tensors, meta)
    n_params = sum(len(g["params"]) for g in fresh.param_groups)
    assert counts == {"restored": n_params - 2, "padded": 2, "fresh": 0, "unused": 0}
    for table, old_rows, new_rows in (("user_emb", 4, 1), ("item_emb", 5, 2)):
        param = grown.get_parameter(f"{table}.weight")
        state = fresh.state[param]
        assert state["step"].item() == 3.0
        for key in MOMENTS:
            assert state[key].shape == (old_rows + new_rows, 8)
            assert torch.equal(state[key][:old_rows], tensors[f"{table}.weight/{key}"])
            assert not state[key][old_rows:].any()
    before = grown.item_emb.weight.detach().clone()
    loss = step(grown, fresh, batch(users=(4, 1, 2), items=(5, 6, 2)))
    assert torch.isfinite(torch.tensor(loss))
    assert not torch.equal(grown.item_emb.weight[5:], before[5:])  # new rows train


def test_unfit_or_missing_state_starts_fresh_with_a_warning(trained, caplog):
    model, optimizer = trained
    tensors, meta = optimizer_state_tensors(optimizer, model)
    tensors = dict(tensors)
    tensors["fraud_mlp.0.weight/exp_avg"] = torch.zeros(8, 3)  # dim 1 changed
    del meta["state"]["fraud_mlp.0.bias"]
    meta["state"]["gone.weight"] = {"shape": [2], "tensors": [], "values": {}}
    twin = copy_of(model)
    fresh = build_optimizer(twin, CFG)
    with caplog.at_level(logging.WARNING, logger="training.fit.optim_state"):
        counts = restore_optimizer_state(fresh, twin, tensors, meta)
    n_params = sum(len(g["params"]) for g in fresh.param_groups)
    assert counts == {"restored": n_params - 2, "padded": 0, "fresh": 2, "unused": 1}
    assert "fraud_mlp.0.weight/exp_avg has shape (8, 3)" in caplog.text
    assert twin.fraud_mlp[0].weight not in fresh.state
    assert twin.fraud_mlp[0].bias not in fresh.state
    step(twin, fresh)  # fresh params initialise lazily, the rest go on
    assert fresh.state[twin.fraud_mlp[0].weight]["step"].item() == 1.0
    assert fresh.state[twin.user_emb.weight]["step"].item() == 4.0


def test_mismatched_optimizer_or_model_is_named(trained):
    model, optimizer = trained
    tensors, meta = optimizer_state_tensors(optimizer, model)
    other = make_model()
    with pytest.raises(OptimizerStateError, match="^meta: state of a AdamW cannot go into a SGD"):
        restore_optimizer_state(torch.optim.SGD(other.parameters(), lr=0.1), other, tensors, meta)
    with pytest.raises(OptimizerStateError, match="not in the model's named_parameters"):
        optimizer_state_tensors(optimizer, other)
    with pytest.raises(OptimizerStateError, match=r"^tensors: lack \['user_emb.weight/exp_avg'"):
        restore_optimizer_state(build_optimizer(other, CFG), other,
                                {k: v for k, v in tensors.items()
                                 if k != "user_emb.weight/exp_avg"}, meta)
