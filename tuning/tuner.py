"""Building the Tune run (trainable, resources, scheduler, search) and reading it back.

Resource split (Ray 2.60, Train V2, where a Tune trial builds any TorchTrainer itself):

* ``loop`` backend: a trial IS the training process and reserves ``cpus_per_trial`` CPUs
  (default 1) and ``gpus_per_trial`` GPUs. On a 2-core laptop two trials run at once; on a
  GPU node ``--gpus-per-trial 1`` runs one trial per GPU (``0.5`` packs two per GPU).
* ``ray_train`` backend: the trial only coordinates (0.1 CPU); its TorchTrainer's workers
  reserve ``num_workers × cpus_per_worker`` CPUs (+1 GPU each with ``use_gpu``). Trials
  run at most as many at once as the cluster has room for their workers, so small trial
  reservations can never starve the workers they wait for.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining, TrialScheduler
from ray.tune.search import BasicVariantGenerator

from training.cli import ConfigError
from training.config import TrainConfig
from training.data.synthetic import SyntheticShopConfig
from training.fit.raytrain import resolve_use_gpu, storage
from training.incremental_config import IncrementalConfig
from training.model import ModelConfig
from tuning.config import RAY_TRAIN_TRIAL_CPU, SweepConfig, ray_train_concurrency
from tuning.report import TrialRow, trial_id_of
from tuning.snapshot import SnapshotStore
from tuning.space import SearchSpace
from tuning.trial import TrialContext, loop_trial, plain, ray_train_trial

# More than 2 so PBT never loses a checkpoint another trial is about to exploit.
PBT_CHECKPOINTS_KEPT = 4


def build_scheduler(sweep: SweepConfig, space: SearchSpace) -> TrialScheduler:
    if sweep.scheduler == "pbt":
        return PopulationBasedTraining(
            time_attr="training_iteration", perturbation_interval=sweep.perturbation_interval,
            synch=sweep.pbt_synch,
            hyperparam_mutations=space.pbt_mutations(sweep.pbt_mutate))
    return ASHAScheduler(time_attr="training_iteration", max_t=sweep.max_epochs,
                         grace_period=sweep.grace_period,
                         reduction_factor=sweep.reduction_factor)


def build_search(sweep: SweepConfig, concurrency: int) -> Any:
    """The search algorithm, capped at ``concurrency`` trials at once (0: no cap).

    The cap goes into the algorithm: Tune ignores ``max_concurrent_trials`` for the
    default random search (a ``SearchGenerator``, not a ``Searcher``).
    """
    if sweep.search == "optuna":
        if importlib.util.find_spec("optuna") is None:
            raise ConfigError("search: optuna is not installed; "
                              "pip install 'shopstream[tune-optuna]'")
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch(seed=sweep.search_seed)
        return ConcurrencyLimiter(searcher, concurrency) if concurrency else searcher
    return BasicVariantGenerator(random_state=sweep.search_seed, max_concurrent=concurrency)


def trial_resources(sweep: SweepConfig, inc: IncrementalConfig) -> tuple[dict[str, float], int]:
    """(resources of one trial, trials at once: 0 lets Tune fill the cluster)."""
    if sweep.trial_backend == "loop":
        resources = {"CPU": sweep.cpus_per_trial}
        if sweep.gpus_per_trial:
            resources["GPU"] = sweep.gpus_per_trial
        return resources, sweep.max_concurrent_trials
    total = ray.cluster_resources()
    limit = ray_train_concurrency(float(total.get("CPU", 0)), float(total.get("GPU", 0)),
                                  inc, resolve_use_gpu(inc.scaling.use_gpu),
                                  sweep.max_concurrent_trials)
    return {"CPU": RAY_TRAIN_TRIAL_CPU}, limit


def build_tuner(sweep: SweepConfig, space: SearchSpace, inc: IncrementalConfig,
                train_cfg: TrainConfig, model_cfg: ModelConfig,
                synthetic: SyntheticShopConfig | None, snapshot: SnapshotStore,
                sweep_id: str) -> tune.Tuner:
    ctx = TrialContext(inc=inc, train=train_cfg, model=model_cfg, synthetic=synthetic,
                       store=snapshot, rec_weight=sweep.rec_weight,
                       fraud_weight=sweep.fraud_weight, max_epochs=sweep.max_epochs,
                       checkpoints=sweep.checkpoints,
                       mutable=sweep.pbt_mutate if sweep.scheduler == "pbt" else ())
    fn = loop_trial if sweep.trial_backend == "loop" else ray_train_trial
    resources, concurrency = trial_resources(sweep, inc)
    trainable = tune.with_resources(tune.with_parameters(fn, ctx=ctx), resources)
    path, fs = storage(sweep.results_path, inc.store.endpoint_url)
    keep = PBT_CHECKPOINTS_KEPT if sweep.checkpoints else None
    return tune.Tuner(
        trainable, param_space=space.to_tune(),
        tune_config=tune.TuneConfig(
            metric=sweep.metric, mode="max", num_samples=sweep.num_samples,
            scheduler=build_scheduler(sweep, space),
            search_alg=build_search(sweep, concurrency),
            # Off (Ray's default since ray#42951): with actor reuse the number of live trial
            # actors is not deterministic and a cached one can outlive the sweep, holding
            # its CPUs, which left a later Ray Train run waiting for workers (seen once in
            # the integration tier). Each trial pays its own start-up instead.
            reuse_actors=False),
        run_config=tune.RunConfig(
            name=sweep_id, storage_path=path, storage_filesystem=fs,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=keep)))


def rows_from_grid(grid: Any) -> list[TrialRow]:
    """One :class:`TrialRow` per trial of a finished ``ResultGrid``."""
    rows = []
    for result in grid:
        metrics = dict(result.metrics or {})
        config = metrics.pop("config", None) or {}
        frame = result.metrics_dataframe
        history = [] if frame is None or "score" not in frame else \
            [float(x) for x in frame["score"].tolist()]
        trial_id = trial_id_of(result.path)
        rows.append(TrialRow(
            trial_id=trial_id, params={k: plain(v) for k, v in config.items()},
            metrics={k: float(v) for k, v in metrics.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool)},
            epochs=int(metrics.get("epoch", 0) or 0),
            schedule=json.loads(metrics["schedule"])
            if isinstance(metrics.get("schedule"), str) else [],
            error=None if result.error is None else f"{type(result.error).__name__}: "
                                                     f"{result.error}",
            history=history))
    return rows
