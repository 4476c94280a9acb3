"""training.fit.engine: the one training loop behind every trainer."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.unit.tiny_shop import CFG, TINY, tiny_window
from training.data.schema import WindowData
from training.features.examples import WindowExamples
from training.features.history import PurchaseHistory
from training.fit.engine import (
    EngineRun,
    StepHooks,
    WorkerSettings,
    build_objective,
    build_optimizer,
    build_scheduler,
    run_epochs,
    share_text_cache,
    total_steps,
)
from training.fit.local import fit_local
from training.fit.loop import init_model, train_window
from training.fit.objective import TrainingObjective
from training.model import (
    MultiTaskBatch,
    ShopStreamModel,
    model_from_state,
    model_state,
)

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]

REPO = Path(__file__).resolve().parents[2]
THIN_WRAPPERS = ("training/fit/loop.py", "training/fit/local.py", "training/fit/worker.py",
                 "tuning/trial.py", "benchmarks/train_throughput.py")


class _Sized:
    """Examples of given sizes: the step count only looks at their lengths."""

    def __init__(self, n_rec: int, n_fraud: int) -> None:
        self.rec, self.fraud = range(n_rec), range(n_fraud)


def _sized(n_rec: int, n_fraud: int) -> WindowExamples:
    return _Sized(n_rec, n_fraud)  # type: ignore[return-value]


def _same_weights(a: ShopStreamModel, b: ShopStreamModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _called(tree: ast.AST, name: str) -> bool:
    return any(isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Name) and node.func.id == name)
        or (isinstance(node.func, ast.Attribute) and node.func.attr == name))
        for node in ast.walk(tree))


def test_the_engine_is_the_only_training_loop() -> None:
    sources = [p for folder in ("training", "tuning", "benchmarks")
               for p in sorted((REPO / folder).rglob("*.py"))]
    trees = {p.relative_to(REPO).as_posix(): ast.parse(p.read_text()) for p in sources}
    assert len(trees) > 20
    # Only the engine steps the optimizer over batches it draws (no second epoch loop).
    assert [path for path, tree in trees.items() if _called(tree, "train_step")] == \
        ["training/fit/engine.py"]
    assert [path for path, tree in trees.items() if _called(tree, "iter_batches")] == \
        ["training/fit/engine.py"]
    for path in THIN_WRAPPERS:
        imports = {node.module for node in ast.walk(trees[path])
                   if isinstance(node, ast.ImportFrom)}
        assert "training.fit.engine" in imports, path


def test_the_engine_does_not_import_ray() -> None:
    code = "import sys, training.fit.engine; print(sorted(m for m in sys.modules if m == 'ray' " \
           "or m.startswith('ray.')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=300)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("n_rec,n_fraud,world,batch,max_steps,expected", [
    (20, 12, 1, 8, None, (3, 6)),   # ceil(20 / 8) rec rows lead
    (20, 12, 1, 8, 4, (3, 4)),      # max_steps caps the run ...
    (20, 12, 1, 8, 50, (3, 6)),     # ... never above epochs * steps
    (21, 5, 2, 5, None, (3, 6)),    # largest shard 11 rec rows: 3 steps on both ranks
    (4, 40, 3, 5, None, (3, 6)),    # largest shard 14 fraud rows: fraud leads
    (20, 12, 3, 8, 1, (1, 1)),
    (0, 0, 2, 8, None, (1, 2)),     # an empty window still runs one (empty) step an epoch
])
def test_total_steps_is_equal_per_rank_and_capped(n_rec: int, n_fraud: int, world: int,
                                                  batch: int, max_steps: int | None,
                                                  expected: tuple[int, int]) -> None:
    cfg = dataclasses.replace(CFG, batch_size=batch, max_steps=max_steps)
    assert total_steps(_sized(n_rec, n_fraud), world, cfg) == expected


def test_a_rank_counting_its_own_shard_would_run_fewer_steps() -> None:
    # Rank 1 of 2 over 21 + 5 rows holds 10 + 2: alone it would count 2 steps, not 3.
    assert total_steps(_sized(10, 2), 1, dataclasses.replace(CFG, batch_size=5)) == (2, 4)


@pytest.fixture(scope="module")
def setup() -> tuple[ShopStreamModel, WindowData, WindowExamples]:
    window = tiny_window()
    model = init_model(TINY, window)
    examples = WindowExamples.build(model, window, PurchaseHistory(3))
    assert (len(examples.rec), len(examples.fraud)) == (20, 12)
    return model, window, examples


def test_train_window_and_fit_local_are_the_same_engine(setup) -> None:
    model, window, examples = setup
    local = fit_local(CFG, WorkerSettings(), model, None, None, examples, "w0")
    in_place = model_from_state(*model_state(model))
    stats = train_window(in_place, window, PurchaseHistory(3), CFG, progress=False)
    assert stats.steps == local.steps == 6 and len(stats.losses) == 6
    assert stats.samples == 2 * (20 + 12)
    assert _same_weights(in_place, local.model)
    assert not _same_weights(in_place, model)
    other = model_from_state(*model_state(model))
    train_window(other, window, PurchaseHistory(3), dataclasses.replace(CFG, seed=1),
                 progress=False)
    assert not _same_weights(other, in_place)


class _Record(StepHooks):
    """Every step's batch (as plain lists), every epoch's loss count; stops after ``stop``."""

    def __init__(self, stop: int | None = None) -> None:
        self.stop = stop
        self.batches: list[tuple[int, list[int], list[int], list[float]]] = []
        self.epochs: list[tuple[int, int]] = []

    def before_step(self, step: int, batch: MultiTaskBatch) -> None:
        assert batch.rec is not None and batch.rec.neg_idx is not None
        assert batch.fraud is not None
        self.batches.append((step, batch.rec.target_idx.tolist(), batch.rec.neg_idx.tolist(),
                             batch.fraud.amount.tolist()))

    def after_step(self, run: EngineRun) -> None:
        if run.step == self.stop:
            raise KeyboardInterrupt  # stands in for a worker lost mid-run

    def after_epoch(self, run: EngineRun, losses: list[dict[str, float]]) -> None:
        self.epochs.append((run.epoch, len(losses)))


def _trainer(state: tuple[dict[str, torch.Tensor], dict], optim: dict | None, start: int
             ) -> tuple[ShopStreamModel, torch.optim.Optimizer,
                        torch.optim.lr_scheduler.LambdaLR, TrainingObjective]:
    model = model_from_state(*state).train()
    share_text_cache(model, None, {})
    optimizer = build_optimizer(model, CFG)
    if optim is not None:
        optimizer.load_state_dict(optim)
    scheduler = build_scheduler(optimizer, 6, CFG, start=start)
    return model, optimizer, scheduler, build_objective(model, None, CFG, WorkerSettings())


@pytest.mark.parametrize("stop", [2, 4])
def test_resume_skips_exactly_k_steps_and_replays_the_batch_order(setup, stop: int) -> None:
    model, _, examples = setup
    # No dropout: a resumed run (fresh torch RNG) then matches the uninterrupted one exactly.
    tensors, meta = model_state(model)
    state = (tensors, {**meta, "model_config": {**meta["model_config"], "dropout": 0.0},
                       "encoder_config": {**meta["encoder_config"], "hidden_dropout_prob": 0.0,
                                          "attention_probs_dropout_prob": 0.0}})
    cpu = torch.device("cpu")
    full_model, opt, sched, objective = _trainer(state, None, 0)
    full = _Record()
    run = run_epochs(objective, full_model, opt, sched, examples, CFG, 3, 6, device=cpu,
                     hooks=full)
    assert (run.step, run.trained, run.epoch) == (6, 6, 1)
    assert [b[0] for b in full.batches] == list(range(6)) and full.epochs == [(0, 3), (1, 3)]
    # Epochs are seeded on their own: epoch 1 is not epoch 0 again.
    assert full.batches[3][1:] != full.batches[0][1:]

    part_model, opt, sched, objective = _trainer(state, None, 0)
    part = _Record(stop=stop)
    with pytest.raises(KeyboardInterrupt):
        run_epochs(objective, part_model, opt, sched, examples, CFG, 3, 6, device=cpu,
                   hooks=part)
    assert part.batches == full.batches[:stop]

    resumed_model, opt, sched, objective = _trainer(model_state(part_model), opt.state_dict(),
                                                    stop)
    assert opt.param_groups[0]["lr"] == pytest.approx(CFG.lr * 0.5 * (1 + np.cos(
        np.pi * stop / 6)))
    rest = _Record()
    run = run_epochs(objective, resumed_model, opt, sched, examples, CFG, 3, 6, device=cpu,
                     start=stop, hooks=rest)
    assert (run.start, run.step, run.trained) == (stop, 6, 6 - stop)
    assert rest.batches == full.batches[stop:]
    assert rest.epochs == [(e, n) for e, n in [(0, 3 - stop), (1, min(3, 6 - stop))] if n > 0]
    assert _same_weights(resumed_model, full_model)


def test_the_engine_replays_an_epoch_schedule_at_each_epochs_start(setup) -> None:
    # A PBT sweep's schedule: each epoch starts with its own peak learning rate, loss
    # weights and weight decay, on every trainer (they all run this engine).
    model, _, examples = setup
    schedule = [{"lr": 0.01, "alpha_fraud": 0.5},
                {"lr": 0.001, "alpha_fraud": 2.0, "weight_decay": 0.0}]
    cfg = dataclasses.replace(CFG, epoch_schedule=schedule)  # type: ignore[arg-type]
    assert cfg.epoch_schedule == ((("alpha_fraud", 0.5), ("lr", 0.01)),
                                  (("alpha_fraud", 2.0), ("lr", 0.001), ("weight_decay", 0.0)))
    trained = model_from_state(*model_state(model)).train()
    share_text_cache(trained, None, {})
    optimizer = build_optimizer(trained, cfg)
    scheduler = build_scheduler(optimizer, 6, cfg)
    objective = build_objective(trained, None, cfg, WorkerSettings())
    seen: list[tuple[float, float, float]] = []

    class Watch(StepHooks):
        def before_step(self, step: int, batch: MultiTaskBatch) -> None:
            group = optimizer.param_groups[0]
            peak = group["lr"] / scheduler.lr_lambdas[0](scheduler.last_epoch)
            seen.append((round(peak, 6), objective.alpha["fraud"], group["weight_decay"]))

    run_epochs(objective, trained, optimizer, scheduler, examples, cfg, 3, 6,
               device=torch.device("cpu"), hooks=Watch())
    assert seen == [(0.01, 0.5, CFG.weight_decay)] * 3 + [(0.001, 2.0, 0.0)] * 3
