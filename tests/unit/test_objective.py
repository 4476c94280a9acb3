"""TrainingObjective: exact zero terms, distillation from a frozen teacher, FGM/PGD, DDP."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.nn.functional as F

from training.fit.objective import (
    ObjectiveError,
    TrainingObjective,
    adversarial_delta,
    fraud_distill_loss,
    rec_distill_loss,
    teacher_view,
    unwrap_model,
)
from training.model import (
    BatchError,
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
from training.model.item_table import FrozenItemTables, ItemTable
from training.model.outputs import fraud_bce

pytestmark = pytest.mark.unit

TITLES = {"i1": "red shoe", "i2": "blue shoe", "i3": "wireless earbuds",
          "i4": "bluetooth headphones", "i5": "wooden train set", "i6": "green hat"}
FEATURES = ("v1", "v2", "v3")
WEIGHTS = {"rec": 1.0, "fraud": 0.5}
POS_WEIGHT = 3.0


def make_model() -> ShopStreamModel:
    cfg = ModelConfig(encoder_init="tiny_random", finetune_layers=1, dim=16,
                      fraud_features=FEATURES, fraud_hidden=8, max_title_tokens=8)
    items = IdMap(TITLES)
    return ShopStreamModel(cfg, IdMap(["u1", "u2", "u3"]), items,
                           item_title_list(items, TITLES))


def copy_of(model: ShopStreamModel) -> ShopStreamModel:
    return model_from_state(*model_state(model))


def rec_batch() -> RecBatch:
    return RecBatch(user_idx=torch.tensor([1, 2, 3, 0]),
                    hist_idx=torch.tensor([[1, 2, 0], [3, 0, 0], [0, 0, 0], [4, 5, 6]]),
                    target_idx=torch.tensor([2, 4, 2, 1]), neg_idx=torch.tensor([6, 3]))


def fraud_batch(rows: int = 8) -> FraudBatch:
    gen = torch.Generator().manual_seed(0)
    return FraudBatch(features=torch.randn(rows, 3, generator=gen),
                      amount=torch.rand(rows, generator=gen) * 100,
                      user_idx=torch.arange(rows) % 4, hist_idx=torch.arange(rows * 2)
                      .reshape(rows, 2) % 7, item_idx=torch.arange(rows) % 7,
                      label=(torch.arange(rows) % 3 == 0).float(), bought=torch.zeros(rows, 2))


def batch() -> MultiTaskBatch:
    return MultiTaskBatch(rec_batch(), fraud_batch())


@pytest.fixture(scope="module")
def base() -> ShopStreamModel:
    return make_model()


def test_switched_off_terms_are_exact_zeros_and_the_teacher_is_not_run(base):
    model = copy_of(base)
    teacher = copy_of(base)
    off = [TrainingObjective(model, WEIGHTS, POS_WEIGHT),
           TrainingObjective(model, WEIGHTS, POS_WEIGHT, teacher=teacher, distill_weight=0.0),
           TrainingObjective(model, WEIGHTS, POS_WEIGHT, teacher=None, distill_weight=1.0)]
    for objective in off:
        for mode in (False, True):
            objective.train(mode)
            torch.manual_seed(7)  # the same dropout masks for both forwards
            got = objective(batch())
            torch.manual_seed(7)
            want = model(batch(), WEIGHTS, fraud_pos_weight=POS_WEIGHT)
            for key in ("loss", "rec", "fraud"):
                assert torch.equal(got[key], want[key]), key
            assert got["distill"].item() == 0.0 and got["adv"].item() == 0.0
            assert not got["distill"].requires_grad and not got["adv"].requires_grad
    assert teacher.text.cache_misses == 0  # never encoded a title: no teacher compute


def test_identical_teacher_gives_zero_distillation_and_a_changed_student_does_not(base):
    student, teacher = copy_of(base), copy_of(base)
    objective = TrainingObjective(student, WEIGHTS, POS_WEIGHT, teacher=teacher,
                                  distill_weight=0.5, distill_temperature=2.0).eval()
    out = objective(batch())
    assert abs(out["distill_rec"].item()) < 1e-6 and abs(out["distill_fraud"].item()) < 1e-6
    with torch.no_grad():
        student.fraud_mlp[-1].bias.add_(1.0)
        student.item_emb.weight[1:].add_(0.3)
    out = objective(batch())
    assert out["distill_rec"].item() > 1e-3 and out["distill_fraud"].item() > 1e-3
    torch.testing.assert_close(out["distill"], out["distill_rec"] + out["distill_fraud"])
    plain = student(batch(), WEIGHTS, fraud_pos_weight=POS_WEIGHT)["loss"]
    torch.testing.assert_close(out["loss"], plain + 0.5 * out["distill"])
    # the rec term is the textbook KL over the same candidates, by hand
    student_logits = student.rec_logits(rec_batch())
    teacher_logits = teacher.rec_logits(rec_batch()).logits
    valid = student_logits.valid
    p = F.softmax(teacher_logits.masked_fill(~valid, -torch.inf) / 2, dim=1)
    log_q = F.log_softmax(student_logits.masked() / 2, dim=1)
    kl = torch.where(valid, p * (p.clamp(min=1e-30).log() - log_q), 0.0).sum(1).mean() * 4
    torch.testing.assert_close(out["distill_rec"], kl)


def test_distillation_gradients_reach_the_student_only(base):
    student, teacher = copy_of(base).train(), copy_of(base).train()
    objective = TrainingObjective(student, {"rec": 0.0, "fraud": 0.0}, teacher=teacher,
                                  distill_weight=1.0)
    objective.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        student.fraud_mlp[-1].bias.add_(1.0)
        student.user_emb.weight[1:].add_(0.3)
    objective(batch())["loss"].backward()
    for name in ("item_emb.weight", "user_emb.weight", "user_mlp.0.weight",
                 "fraud_mlp.0.weight", "item_text_proj.weight"):
        grad = student.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert all(p.grad is None for p in teacher.parameters())
    assert list(objective.parameters()) == list(student.parameters())
    assert list(objective.state_dict()) == [f"model.{k}" for k in student.state_dict()]


def test_teacher_sees_ids_added_after_it_as_unknown(base):
    student, teacher = copy_of(base).eval(), copy_of(base)
    student.extend_vocab(["u4"], ["i7", "i8"], {"i7": "blue hat", "i8": "red train"})
    rec = RecBatch(torch.tensor([4, 1]), torch.tensor([[7, 1], [8, 0]]), torch.tensor([8, 3]),
                   torch.tensor([7, 2]))
    fraud = FraudBatch(torch.zeros(2, 3), torch.tensor([5.0, 50.0]), torch.tensor([4, 2]),
                       torch.tensor([[8, 2], [0, 7]]), torch.tensor([7, 1]),
                       torch.tensor([1.0, 0.0]), torch.zeros(2, 2))
    view = teacher_view(MultiTaskBatch(rec, fraud), len(teacher.users), len(teacher.items))
    assert view.rec is not None and view.fraud is not None
    assert view.rec.user_idx.tolist() == [0, 1] and view.rec.target_idx.tolist() == [0, 3]
    assert view.rec.hist_idx.tolist() == [[0, 1], [0, 0]] and view.rec.neg_idx is not None
    assert view.rec.neg_idx.tolist() == [0, 2]
    assert view.fraud.user_idx.tolist() == [0, 2] and view.fraud.item_idx.tolist() == [0, 1]
    assert view.fraud.hist_idx.tolist() == [[0, 2], [0, 0]]
    objective = TrainingObjective(student, WEIGHTS, teacher=teacher, distill_weight=1.0)
    out = objective(MultiTaskBatch(rec, fraud))
    # the student's mask (targets 8 and 3 differ) applies, not the teacher's (both 0 / 3)
    want = rec_distill_loss(student.rec_logits(rec), teacher.rec_logits(view.rec).logits, 2.0)
    torch.testing.assert_close(out["distill_rec"], want)
    assert torch.isfinite(out["distill_fraud"]) and out["distill_fraud"].item() >= -1e-6
    stranger = copy_of(base)
    stranger.extend_vocab([], ["zz"], {"zz": "x"})
    with pytest.raises(ObjectiveError, match="^teacher: its items vocabulary"):
        TrainingObjective(make_model(), WEIGHTS, teacher=stranger, distill_weight=1.0)


def _trained_fraud_model(base: ShopStreamModel) -> ShopStreamModel:
    model = copy_of(base).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(15):
        optimizer.zero_grad()
        model(MultiTaskBatch(None, fraud_batch(16)), {"rec": 0.0}, POS_WEIGHT)["loss"].backward()
        optimizer.step()
    return model.eval()


def test_fgm_moves_each_row_by_epsilon_and_raises_the_loss(base):
    model = _trained_fraud_model(base)
    data = MultiTaskBatch(None, fraud_batch(16))
    clean = TrainingObjective(model, WEIGHTS, POS_WEIGHT)(data)
    objective = TrainingObjective(model, WEIGHTS, POS_WEIGHT, adv_epsilon=0.5).eval()
    model.zero_grad(set_to_none=True)
    out = objective(data)
    assert all(p.grad is None for p in model.parameters())  # autograd.grad, no .backward
    assert torch.equal(out["fraud"], clean["fraud"])
    torch.testing.assert_close(out["loss"], clean["loss"] + 0.5 * out["adv"])
    inputs = model.step_outputs(data).fraud
    assert inputs is not None
    delta = adversarial_delta(model, inputs, POS_WEIGHT, 0.5)
    torch.testing.assert_close(delta.norm(dim=1), torch.full((16,), 0.5))
    perturbed = fraud_bce(model.fraud_head(inputs, inputs.numeric + delta), inputs.label,
                          POS_WEIGHT)
    torch.testing.assert_close(out["adv"], perturbed)
    assert out["adv"].item() > clean["fraud"].item() + 0.01
    with torch.no_grad():  # e.g. a validation loss: same value, no graph
        torch.testing.assert_close(objective(data)["adv"], out["adv"])
    pgd = TrainingObjective(model, WEIGHTS, POS_WEIGHT, adv_epsilon=0.5, adv_steps=4)(data)
    assert pgd["adv"].item() >= out["adv"].item() - 1e-4
    pgd_delta = adversarial_delta(model, inputs, POS_WEIGHT, 0.5, steps=4)
    assert pgd_delta.norm(dim=1).max().item() <= 0.5 + 1e-5
    assert not torch.allclose(pgd_delta, delta)
    # normalised units: a raw feature moves by delta * fraud_std
    assert model.fraud_std.shape == (4,) and delta.shape == (16, 4)


def test_adversarial_term_is_zero_without_fraud_rows(base):
    model = copy_of(base).eval()
    out = TrainingObjective(model, WEIGHTS, adv_epsilon=0.5)(MultiTaskBatch(rec_batch(), None))
    assert out["adv"].item() == 0.0 and out["fraud"].item() == 0.0
    torch.testing.assert_close(out["loss"], model.rec_loss(rec_batch()))


@pytest.mark.parametrize(("kwargs", "setting"), [
    ({"weights": {"recs": 1.0}}, "weights"), ({"weights": {"rec": -1.0}}, "weights"),
    ({"fraud_pos_weight": 0.0}, "fraud_pos_weight"), ({"distill_weight": -1.0}, "distill_weight"),
    ({"distill_temperature": 0.0}, "distill_temperature"), ({"adv_epsilon": -0.1}, "adv_epsilon"),
    ({"adv_steps": 0}, "adv_steps")])
def test_bad_settings_are_named(base, kwargs, setting):
    args = {"weights": WEIGHTS, **kwargs}
    with pytest.raises(ObjectiveError, match=f"^{setting}:"):
        TrainingObjective(base, **args)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_wrapped_in_ddp_it_gives_the_plain_gradients_and_trains(base):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    def make(model: ShopStreamModel) -> TrainingObjective:
        return TrainingObjective(model, WEIGHTS, POS_WEIGHT, teacher=copy_of(base),
                                 distill_weight=0.5, adv_epsilon=0.3, adv_steps=2)

    plain, wrapped = copy_of(base), copy_of(base)
    with torch.no_grad():  # the teacher must differ for distillation to have a gradient
        for model in (plain, wrapped):
            model.fraud_mlp[-1].bias.add_(0.5)
    dist.init_process_group("gloo", rank=0, world_size=1,
                            init_method=f"tcp://127.0.0.1:{_free_port()}")
    try:
        ddp = DistributedDataParallel(make(wrapped))
        assert unwrap_model(ddp) is wrapped
        make(plain).eval()(batch())["loss"].backward()
        ddp.eval()
        ddp(batch())["loss"].backward()
        for (name, a), b in zip(plain.named_parameters(), wrapped.parameters()):
            if a.requires_grad:
                assert a.grad is not None and b.grad is not None, name
                torch.testing.assert_close(b.grad, a.grad, msg=name)
        ddp.train()
        optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-2)
        before = wrapped.fraud_mlp[0].weight.detach().clone()
        steps = [batch(), MultiTaskBatch(rec_batch(), None), MultiTaskBatch(None, None), batch()]
        for data in steps:
            optimizer.zero_grad(set_to_none=True)
            out = ddp(data)
            out["loss"].backward()
            optimizer.step()
            assert torch.isfinite(out["loss"])
        assert not torch.equal(wrapped.fraud_mlp[0].weight, before)
    finally:
        dist.destroy_process_group()


def test_teacher_item_rows_are_computed_once_and_equal_the_uncached_ones(base):
    student, teacher = copy_of(base), copy_of(base)
    objective = TrainingObjective(student, WEIGHTS, POS_WEIGHT, teacher=teacher,
                                  distill_weight=1.0).eval()
    tables = objective.teacher_tables
    assert tables is not None and tables.rows == len(TITLES) + 1 and tables.computed == 0
    first = MultiTaskBatch(RecBatch(torch.tensor([1, 2]), torch.tensor([[1, 0], [2, 0]]),
                                    torch.tensor([3, 4])), None)
    objective(first)
    assert tables.computed == 5  # items 0..4: what the first batch needs, no more
    for _ in range(3):
        out = objective(batch())
        torch.testing.assert_close(out["distill_rec"], rec_distill_loss(
            student.rec_logits(rec_batch()), teacher.rec_logits(rec_batch()).logits, 2.0))
        mine, theirs = student.step_outputs(batch()), teacher.step_outputs(batch())
        assert mine.fraud is not None and theirs.fraud is not None
        torch.testing.assert_close(out["distill_fraud"], fraud_distill_loss(
            student.fraud_head(mine.fraud), teacher.fraud_head(theirs.fraud)))
    assert tables.computed == 7


def test_frozen_item_tables_compute_each_item_once_and_keep_the_models_errors(base):
    model = copy_of(base)
    calls: list[list[int]] = []

    def compute(idx: torch.Tensor) -> ItemTable:
        calls.append(idx.tolist())
        return model.item_table(idx)

    tables = FrozenItemTables(compute, len(TITLES) + 1)
    for idx, computed in (([3, 1, 3], [[1, 3]]), ([1, 2, 3], [[1, 3], [2]]),
                          ([2, 1], [[1, 3], [2]])):
        got = tables(torch.tensor(idx))
        want = model.item_table(torch.tensor(idx))
        assert calls == computed and torch.equal(got.uniq, want.uniq)
        torch.testing.assert_close(got.vectors, want.vectors)
        torch.testing.assert_close(got.text, want.text)
    with pytest.raises(BatchError, match="item index out of range"):
        tables(torch.tensor([1, 99]))  # the model's own error, not a zero row
