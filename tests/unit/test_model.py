"""ShopStreamModel: shapes, gradients, empty tasks, cold start, vocabulary growth, losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.model import (
    BatchError,
    FraudBatch,
    IdMap,
    ModelConfig,
    MultiTaskBatch,
    RecBatch,
    ShopStreamModel,
    fraud_stats,
    item_title_list,
)

pytestmark = pytest.mark.unit

TITLES = {"i1": "red shoe", "i2": "blue shoe", "i3": "wireless earbuds",
          "i4": "bluetooth headphones", "i5": "wooden train set", "i6": "red shoe"}
FEATURES = ("v1", "v2", "v3")


def make_model(finetune_layers: int = 1, **overrides: object) -> ShopStreamModel:
    cfg = ModelConfig(encoder_init="tiny_random", finetune_layers=finetune_layers, dim=16,
                      fraud_features=FEATURES, fraud_hidden=8, **overrides)  # type: ignore[arg-type]
    users = IdMap(["u1", "u2", "u3"])
    items = IdMap(TITLES)
    return ShopStreamModel(cfg, users, items, item_title_list(items, TITLES))


def rec_batch(rows: int = 4) -> RecBatch:
    return RecBatch(user_idx=torch.tensor([1, 2, 3, 0])[:rows],
                    hist_idx=torch.tensor([[1, 2, 0], [3, 0, 0], [0, 0, 0], [4, 5, 6]])[:rows],
                    target_idx=torch.tensor([2, 4, 5, 1])[:rows],
                    neg_idx=torch.tensor([6, 3]))


def fraud_batch(rows: int = 3) -> FraudBatch:
    gen = torch.Generator().manual_seed(0)
    return FraudBatch(features=torch.randn(3, 3, generator=gen)[:rows],
                      amount=torch.tensor([12.5, -3.0, 0.0])[:rows],
                      user_idx=torch.tensor([1, 0, 2])[:rows],
                      hist_idx=torch.tensor([[1, 0], [0, 0], [2, 3]])[:rows],
                      item_idx=torch.tensor([1, 0, 3])[:rows],
                      label=torch.tensor([1.0, 0.0, 0.0])[:rows],
                      bought=torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])[:rows])


WEIGHTS = {"rec": 1.0, "fraud": 0.5}


def test_output_shapes():
    model = make_model().eval()
    assert model.item_vectors(torch.tensor([1, 2, 2, 0])).shape == (4, 16)
    users = model.user_vectors(torch.tensor([1, 0]), torch.tensor([[1, 2, 0], [0, 0, 0]]))
    assert users.shape == (2, 16)
    torch.testing.assert_close(users.norm(dim=1), torch.ones(2))
    assert model.item_vectors_from_titles(["new thing"]).shape == (1, 16)
    catalogue = model.catalogue_matrix(batch_size=3)
    assert catalogue.shape == (7, 16)
    assert model.pool_scores(users, catalogue).shape == (2, 7)
    assert model.fraud_logits(fraud_batch()).shape == (3,)
    out = model(MultiTaskBatch(rec_batch(), fraud_batch()), WEIGHTS)
    assert set(out) == {"loss", "rec", "fraud"} and all(v.shape == () for v in out.values())
    torch.testing.assert_close(out["loss"], out["rec"] + 0.5 * out["fraud"])


def test_one_step_encodes_each_distinct_title_once_across_both_tasks():
    model = make_model()
    model(MultiTaskBatch(rec_batch(), fraud_batch()), WEIGHTS)
    # items 0..6 are all used; items 1 and 6 share "red shoe": 6 distinct titles
    assert (model.text.cache_misses, model.text.cache_hits) == (6, 0)
    model(MultiTaskBatch(rec_batch(), fraud_batch()), WEIGHTS)
    assert (model.text.cache_misses, model.text.cache_hits) == (6, 6)


def test_duplicate_items_are_encoded_once_and_share_a_vector():
    model = make_model().eval()
    vecs = model.item_vectors(torch.tensor([3, 3, 1]))
    assert torch.equal(vecs[0], vecs[1])
    assert model.text.cache_misses == 2
    # items 1 and 6 share a title but not an id embedding
    assert not torch.allclose(model.item_vectors(torch.tensor([1]))[0],
                              model.item_vectors(torch.tensor([6]))[0])
    torch.testing.assert_close(model.catalogue_matrix(), model.item_vectors(torch.arange(7)))


@pytest.mark.parametrize(("finetune_layers", "trained_layers"), [(0, set()), (1, {1}),
                                                                  (2, {0, 1})])
def test_gradients_reach_exactly_the_configured_layers(finetune_layers, trained_layers):
    torch.manual_seed(0)  # dropout
    model = make_model(finetune_layers).train()
    model(MultiTaskBatch(rec_batch(), fraud_batch()), WEIGHTS)["loss"].backward()
    for name, param in model.text.bert.named_parameters():
        parts = name.split(".")
        trained = parts[:2] == ["encoder", "layer"] and int(parts[2]) in trained_layers
        assert param.requires_grad is trained, name
        assert (param.grad is not None) is trained, name
        if trained and name.endswith("dense.weight"):
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    for name in ("item_text_proj.weight", "item_emb.weight", "user_emb.weight",
                 "user_mlp.0.weight", "fraud_mlp.0.weight", "fraud_mlp.6.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    for table in (model.item_emb, model.user_emb):
        assert table.weight.grad is not None
        assert torch.equal(table.weight.grad[0], torch.zeros(16))


@pytest.mark.parametrize("empty_rec", [None, "zero_rows"])
def test_a_task_without_rows_contributes_exactly_zero(empty_rec):
    model = make_model().eval()
    rec = None if empty_rec is None else rec_batch(0)
    out = model(MultiTaskBatch(rec, fraud_batch()), WEIGHTS)
    assert out["rec"].item() == 0.0
    assert out["loss"].item() == 0.5 * out["fraud"].item()
    torch.testing.assert_close(out["fraud"], model.fraud_loss(fraud_batch()), atol=0, rtol=0)
    out["loss"].backward()
    grad = model.get_parameter("fraud_mlp.0.weight").grad
    assert grad is not None and grad.abs().sum() > 0
    # the rec-only user MLP is reached through the fraud head's user vector too
    out2 = make_model()(MultiTaskBatch(rec_batch(), fraud_batch(0)), WEIGHTS)
    assert out2["fraud"].item() == 0.0 and out2["rec"].item() > 0


def test_both_tasks_empty_gives_zero_loss_that_backpropagates_zeros():
    model = make_model().train()
    for batch in (MultiTaskBatch(None, None), MultiTaskBatch(rec_batch(0), fraud_batch(0))):
        model.zero_grad(set_to_none=True)
        out = model(batch, WEIGHTS)
        assert [out[k].item() for k in ("loss", "rec", "fraud")] == [0.0, 0.0, 0.0]
        out["loss"].backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert grads and all(g is not None and not g.any() for g in grads)
    assert model.rec_loss(rec_batch(0)).item() == 0.0
    assert model.fraud_loss(fraud_batch(0)).item() == 0.0


def test_rec_loss_masks_duplicate_targets_and_matches_a_hand_computation():
    model = make_model().eval()
    batch = RecBatch(torch.tensor([1, 2, 3]), torch.tensor([[1, 0], [0, 0], [4, 5]]),
                     target_idx=torch.tensor([2, 2, 3]), neg_idx=torch.tensor([6, 2]))
    users = model.user_vectors(batch.user_idx, batch.hist_idx)
    cand = model.item_vectors(torch.tensor([2, 2, 3, 6, 2]))
    logits = users @ cand.T / 0.05
    keep = [[0, 2, 3], [1, 2, 3], [0, 1, 2, 3, 4]]  # positive + true negatives only
    expected = torch.stack([torch.logsumexp(logits[i, keep[i]], 0) - logits[i, i]
                            for i in range(3)]).mean()
    torch.testing.assert_close(model.rec_loss(batch), expected, atol=1e-5, rtol=1e-5)


def test_fraud_loss_is_bce_with_pos_weight_and_normalisation_is_applied():
    model = make_model().eval()
    batch = fraud_batch()
    logits = model.fraud_logits(batch)
    expected = F.binary_cross_entropy_with_logits(logits, batch.label,
                                                  pos_weight=torch.tensor(4.0))
    torch.testing.assert_close(model.fraud_loss(batch, pos_weight=4.0), expected)
    out = model(MultiTaskBatch(None, batch), {"fraud": 2.0}, fraud_pos_weight=4.0)
    torch.testing.assert_close(out["loss"], 2.0 * expected)
    amount = np.array([0.0, math.e - 1.0, -(math.e - 1.0)])
    mean, std = fraud_stats(amount, np.ones((3, 3)))
    np.testing.assert_allclose(mean, [0.0, 1.0, 1.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(std, [math.sqrt(2 / 3), 1e-6, 1e-6, 1e-6], rtol=1e-6)
    model.set_fraud_stats(np.array([1.0, 0.0, 0.0, 0.0]), np.array([2.0, 1.0, 1.0, 0.0]))
    assert model.fraud_std.tolist() == [2.0, 1.0, 1.0, pytest.approx(1e-6)]
    assert not torch.allclose(model.fraud_logits(batch), logits)
    with pytest.raises(ValueError, match="fraud_mean: expected 4 values"):
        model.set_fraud_stats(np.zeros(3), np.ones(4))


def test_cold_start_items_and_users_get_finite_scores():
    model = make_model().eval()
    cold = model.item_vectors_from_titles(["brand new gadget never seen", ""])
    unknown = model.item_vectors(torch.tensor([0]))
    user = model.user_vectors(torch.tensor([0]), torch.zeros(1, 3, dtype=torch.long))
    assert torch.isfinite(user).all() and user.norm() > 0.99
    scores = model.pool_scores(user, torch.cat([cold, unknown]))
    assert scores.shape == (1, 3) and torch.isfinite(scores).all()
    # item 0 has no id embedding: its vector is the text-only vector of the empty title
    torch.testing.assert_close(unknown[0], cold[1])
    assert torch.equal(model.item_emb.weight[0], torch.zeros(16))


def test_extend_vocab_keeps_old_rows_and_adds_nonzero_new_ones():
    model = make_model()
    old_items, old_users = model.item_emb.weight.detach().clone(), model.user_emb.weight.detach()
    old_users = old_users.clone()
    counts = model.extend_vocab(["u2", "u9", "u8"], ["i7", "i1", "i8"],
                                {"i7": "green hat", "i1": "red shoes (new title)"})
    assert counts == {"users": 2, "items": 2, "titles_updated": 1}
    assert model.users.ids[-2:] == ["u9", "u8"] and len(model.items) == 9
    assert model.item_titles[1] == "red shoes (new title)"
    assert model.item_titles[7:] == ["green hat", ""]
    assert model.item_emb.weight.shape == (9, 16) and model.user_emb.weight.shape == (6, 16)
    assert torch.equal(model.item_emb.weight[:7], old_items)
    assert torch.equal(model.user_emb.weight[:4], old_users)
    assert model.item_emb.weight[7:].abs().min() > 0 and model.user_emb.weight[4:].any()
    assert torch.equal(model.item_emb.weight[0], torch.zeros(16))
    assert model.item_emb.weight.requires_grad and model.item_emb.num_embeddings == 9
    vec = model.item_vectors(torch.tensor([7, 8]))
    assert torch.isfinite(vec).all() and vec.norm(dim=1).min() > 0.99
    twin = make_model()
    twin.extend_vocab(["u2", "u9", "u8"], ["i7", "i1", "i8"], {})
    assert torch.equal(twin.item_emb.weight, model.item_emb.weight)  # same on every rank
    out = model(MultiTaskBatch(RecBatch(torch.tensor([5, 4]), torch.tensor([[7, 8], [0, 0]]),
                                        torch.tensor([8, 7])), None), WEIGHTS)
    assert torch.isfinite(out["rec"]) and out["rec"].item() > 0


def test_bad_batches_and_weights_are_named():
    model = make_model()
    with pytest.raises(BatchError, match="^features:"):
        model.fraud_logits(FraudBatch(torch.zeros(2, 2), torch.zeros(2), torch.zeros(2).long(),
                                      torch.zeros(2, 1).long(), torch.zeros(2).long(),
                                      torch.zeros(2), torch.zeros(2, 2)))
    with pytest.raises(BatchError, match="item index out of range"):
        model.item_vectors(torch.tensor([7]))
    with pytest.raises(ValueError, match="weights: unknown task"):
        model(MultiTaskBatch(None, None), {"recs": 1.0})
    with pytest.raises(ValueError, match="^item_titles:"):
        ShopStreamModel(model.cfg, model.users, model.items, ["", "a"])
    model.users.add(["u_direct"])  # bypassing extend_vocab: no embedding row yet
    with pytest.raises(BatchError, match=r"^user_idx: .*need extend_vocab"):
        model.user_vectors(torch.tensor([4]), torch.zeros(1, 1, dtype=torch.long))


def test_same_config_same_initial_weights():
    a, b = make_model(), make_model()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                   b.state_dict().values()))
    c = make_model(seed=1)
    assert not torch.equal(a.item_text_proj.weight, c.item_text_proj.weight)


def test_batch_to_moves_every_tensor():
    batch = MultiTaskBatch(rec_batch(), fraud_batch()).to("cpu")
    assert batch.rec is not None and batch.fraud is not None
    assert len(batch.rec) == 4 and len(batch.fraud) == 3
    assert MultiTaskBatch(None, None).to("cpu") == MultiTaskBatch(None, None)


def test_ddp_without_find_unused_parameters_survives_missing_tasks(tmp_path):
    # World size 1 is enough: DDP's reducer fails on the step after one in which a
    # trainable parameter got no gradient, which an absent task would cause.
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        model = DistributedDataParallel(make_model())
        steps = [MultiTaskBatch(rec_batch(), None), MultiTaskBatch(None, fraud_batch()),
                 MultiTaskBatch(None, None), MultiTaskBatch(rec_batch(), fraud_batch())]
        losses = []
        for batch in steps:
            out = model(batch, WEIGHTS)
            out["loss"].backward()
            losses.append(out["loss"].item())
        assert losses[2] == 0.0 and all(math.isfinite(x) and x > 0 for x in losses[:2])
        assert model.module.item_emb.weight.grad is not None
    finally:
        dist.destroy_process_group()


def test_float32_extreme_fraud_inputs_give_finite_probabilities():
    """Standardised inputs are bounded (MAX_ABS_Z): the largest float32-finite amount or
    feature, of either sign, cannot overflow the MLP to NaN; ordinary rows are untouched."""
    model = make_model(finetune_layers=0).eval()
    model.set_fraud_stats(np.zeros(4), np.full(4, 0.05))  # a binary-like feature's spread
    batch = fraud_batch()
    with torch.no_grad():
        ordinary = model.fraud_logits(batch)
        for value in (3.39e38, -3.39e38):
            extreme = fraud_batch()
            extreme.features[0, 1] = value
            extreme.amount[1] = value
            logits = model.fraud_logits(extreme)
            assert torch.isfinite(logits).all()
            assert torch.equal(logits[2], ordinary[2])


def test_every_public_model_name_resolves_from_the_lazy_package() -> None:
    import importlib

    package = importlib.import_module("training.model")
    missing = [name for name in package.__all__ if getattr(package, name, None) is None]
    assert not missing
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        package.Nope  # noqa: B018
