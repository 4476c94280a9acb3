"""training.fit.local: the Ray worker's training loop in this process (``trainer="local"``)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from tests.unit.tiny_shop import CFG, TINY, tiny_window
from training.cli import ConfigError
from training.features.examples import WindowExamples
from training.features.history import PurchaseHistory
from training.fit.local import fit_local
from training.fit.loop import build_optimizer, init_model
from training.fit.optim_state import restore_optimizer_state
from training.fit.raytrain import choose_trainer, fit_window
from training.fit.result import FitResult
from training.fit.worker import WorkerSettings, global_steps
from training.incremental_config import IncrementalConfig
from training.model import ShopStreamModel, model_from_state, model_state

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]

NO_DISTILL = WorkerSettings()


@pytest.fixture(scope="module")
def setup() -> tuple[ShopStreamModel, WindowExamples]:
    window = tiny_window()
    model = init_model(TINY, window)
    examples = WindowExamples.build(model, window, PurchaseHistory(3))
    assert (len(examples.rec), len(examples.fraud)) == (20, 12)
    return model, examples


@pytest.fixture(scope="module")
def fitted(setup) -> tuple[dict[str, torch.Tensor], FitResult]:
    """The input's weights before the fit, and the fit."""
    model, examples = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    return before, fit_local(CFG, NO_DISTILL, model, None, None, examples, "w0")


def _same_weights(a: ShopStreamModel, b: ShopStreamModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fit_runs_every_step_on_a_copy_and_leaves_the_input_alone(setup, fitted) -> None:
    model, examples = setup
    before, result = fitted
    assert global_steps(examples, 1, 8) == 3  # ceil(20 / 8) rec rows lead
    assert result.steps == 3 * CFG.epochs == 6
    assert result.model is not model
    assert not result.model.training and result.use_gpu is False
    assert result.resumed_from is None
    assert result.seconds > 0 and result.samples_per_s > 0
    assert math.isfinite(result.loop_seconds) and result.loop_seconds <= result.seconds
    now = model.state_dict()
    assert all(torch.equal(before[k], now[k]) for k in before)
    trained = result.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], trained[k])]
    assert "item_emb.weight" in changed and "fraud_mlp.0.weight" in changed
    assert result.model.items.ids == model.items.ids


def test_max_steps_caps_the_run(setup) -> None:
    model, examples = setup
    result = fit_local(dataclasses.replace(CFG, max_steps=4), NO_DISTILL, model, None, None,
                       examples, "w0")
    assert result.steps == 4
    longer = fit_local(dataclasses.replace(CFG, max_steps=50), NO_DISTILL, model, None, None,
                       examples, "w0")
    assert longer.steps == 6  # never more than epochs * steps per epoch


def test_same_seed_same_weights_other_seed_other_weights(setup, fitted) -> None:
    model, examples = setup
    _, first = fitted
    again = fit_local(CFG, NO_DISTILL, model, None, None, examples, "w0")
    assert _same_weights(first.model, again.model)
    other = fit_local(dataclasses.replace(CFG, seed=1), NO_DISTILL, model, None, None,
                      examples, "w0")
    assert not _same_weights(first.model, other.model)


def test_optimizer_state_restores_into_a_fresh_optimizer_and_resumes(setup, fitted) -> None:
    model, examples = setup
    _, result = fitted
    tensors, meta = result.optimizer
    copy = model_from_state(*model_state(result.model))
    fresh = build_optimizer(copy, CFG)
    n_params = sum(len(g["params"]) for g in fresh.param_groups)
    counts = restore_optimizer_state(fresh, copy, tensors, meta)
    assert counts == {"restored": n_params, "padded": 0, "fresh": 0, "unused": 0}
    held = [(name, p) for name, p in copy.named_parameters() if p.requires_grad]
    assert len(held) == n_params
    for name, param in held:
        state = fresh.state[param]
        assert torch.equal(state["exp_avg"], tensors[f"{name}/exp_avg"])
        assert float(state["step"]) == 6.0
    # Continuing from the saved moments differs from a cold optimizer on the same weights.
    warm = fit_local(CFG, NO_DISTILL, result.model, None, result.optimizer, examples, "w0")
    cold = fit_local(CFG, NO_DISTILL, result.model, None, None, examples, "w0")
    assert warm.steps == cold.steps == 6
    assert not _same_weights(warm.model, cold.model)
    assert float(warm.optimizer[0]["item_emb.weight/exp_avg"].abs().sum()) > 0


def test_distillation_from_a_teacher_changes_the_result(setup, fitted) -> None:
    model, examples = setup
    _, plain = fitted
    teacher = model_from_state(*model_state(plain.model))
    distil = WorkerSettings(distill_weight=1.0, distill_temperature=2.0)
    taught = fit_local(CFG, distil, model, teacher, None, examples, "w0")
    assert not _same_weights(taught.model, plain.model)
    # No teacher: the distillation weight is ignored.
    alone = fit_local(CFG, distil, model, None, None, examples, "w0")
    assert _same_weights(alone.model, plain.model)


def test_fit_window_local_dispatches_to_fit_local_without_ray(setup, fitted, monkeypatch
                                                              ) -> None:
    model, examples = setup
    _, plain = fitted

    def no_ray(*args, **kwargs):
        raise AssertionError("trainer=local must not touch Ray")

    # A Ray started by other tests of the session may be up: assert Ray is never used.
    import training.fit.raytrain

    monkeypatch.setattr(training.fit.raytrain, "TorchTrainer", no_ray)
    monkeypatch.setattr(training.fit.raytrain, "resolve_use_gpu", no_ray)
    monkeypatch.setattr(training.fit.raytrain.ray, "put", no_ray)
    inc = IncrementalConfig.of(trainer="local", distill_weight=0.7, distill_temperature=3.0)
    result = fit_window(inc, CFG, model, None, None, examples, "w0")
    assert isinstance(result, FitResult) and result.steps == 6
    assert _same_weights(result.model, plain.model)  # no teacher: no distillation
    teacher = model_from_state(*model_state(plain.model))
    taught = fit_window(inc, CFG, model, teacher, None, examples, "w0")
    direct = fit_local(CFG, WorkerSettings(distill_weight=0.7, distill_temperature=3.0),
                       model, teacher, None, examples, "w0")
    assert _same_weights(taught.model, direct.model)
    assert not _same_weights(taught.model, plain.model)


def test_unknown_trainer_is_a_config_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="trainer"):
        IncrementalConfig.of(trainer="bogus")
    with pytest.raises(ConfigError, match="ray_min_steps"):
        IncrementalConfig.of(ray_min_steps=-1)
    with pytest.raises(ConfigError, match="start_retries"):
        IncrementalConfig.of(start_retries=-2)
    assert IncrementalConfig().scaling.trainer == "auto"
    # Ray Train's own default retries a start that cannot be placed forever.
    assert IncrementalConfig().scaling.start_retries == 5


def test_auto_takes_ray_train_only_when_the_update_repays_its_start_up(setup) -> None:
    _, examples = setup  # 6 one-process steps at CFG's batch size and epochs
    auto = IncrementalConfig.of(use_gpu="false")
    assert choose_trainer(auto.with_settings(ray_min_steps=7), CFG, examples) == (
        "local", "auto: 6 steps < ray_min_steps 7")
    assert choose_trainer(auto.with_settings(ray_min_steps=6), CFG, examples) == (
        "ray", "auto: 6 steps >= ray_min_steps 6")
    # Only Ray Train has GPUs off the driver and mid-run checkpoints, whatever the size.
    assert choose_trainer(auto.with_settings(use_gpu="true"), CFG, examples)[0] == "ray"
    assert choose_trainer(auto.with_settings(checkpoint_every=2), CFG, examples) == (
        "ray", "auto: mid-run checkpoints need Ray Train")
    assert choose_trainer(auto.with_settings(trainer="ray", ray_min_steps=10**6), CFG,
                          examples) == ("ray", "trainer=ray")
    assert choose_trainer(auto.with_settings(trainer="local", checkpoint_every=2), CFG,
                          examples) == ("local", "trainer=local")


def test_fit_window_on_auto_says_which_trainer_ran_and_why(setup, fitted, monkeypatch) -> None:
    model, examples = setup
    _, plain = fitted
    import training.fit.raytrain

    def no_ray(*args, **kwargs):
        raise AssertionError("a small update on auto must not start Ray Train")

    monkeypatch.setattr(training.fit.raytrain, "TorchTrainer", no_ray)
    result = fit_window(IncrementalConfig.of(use_gpu="false"), CFG, model, None, None,
                        examples, "w0")
    assert (result.trainer, result.trainer_reason) == ("local", "auto: 6 steps < "
                                                       "ray_min_steps 400")
    assert _same_weights(result.model, plain.model)
