"""Ray Tune sweep over task weights, learning-rate schedules, distillation and replay; the
best config goes to the store as ``configs/best.json`` for the next incremental run.

    python -m tuning.sweep --source synthetic --store runs/store --num-samples 8
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m tuning.sweep --source synthetic --store "$PWD/runs/store" \
        --results-path "$PWD/runs/tune" --num-samples 8 --scheduler asha

Each trial runs the update ``training.incremental`` would run next (same
``prepare_update``: latest version, held-out tail, replay mix, distillation) with its
sampled config, and is scored on the FOLLOWING window: rec_weight·NDCG@k +
fraud_weight·AUC-PR. ASHA (default) stops weak trials after each epoch; PBT perturbs
``--pbt-mutate`` (learning rate, task weights) from the best trials' checkpoints.
Results: a printed trial table, the rec/fraud Pareto front, ``sweep.png`` and
``sweep_summary.json`` in the report folder, Tune's TensorBoard logs under
``<results-path>/<sweep id>``, and ``configs/best.json`` in the store.

What a sweep does: :mod:`tuning.run`; this module parses first and imports only the
settings, so ``--help`` and a bad flag answer before Ray loads.
"""

from __future__ import annotations

import argparse
import os
import sys

from training.cli import (
    ConfigError,
    dataclass_from_args,
    default_env,
    setup_logging,
)
from training.config import TrainConfig
from training.data.source_config import SourceError
from training.incremental_config import IncrementalConfig
from training.stage_args import training_configs, training_parser
from training.store.errors import StoreError
from tuning.config import SweepConfig
from tuning.space import SearchSpace


def build_parser() -> argparse.ArgumentParser:
    return training_parser("python -m tuning.sweep", __doc__, SweepConfig, IncrementalConfig)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        sweep = dataclass_from_args(SweepConfig, args)
        inc = dataclass_from_args(IncrementalConfig, args)
        train_cfg, model_cfg, synthetic = training_configs(args)
        space = SearchSpace.from_file(sweep.space_file) if sweep.space_file else SearchSpace()
        space.check_flags({k for k in vars(args) if k in TrainConfig.__dataclass_fields__
                           or k in IncrementalConfig.__dataclass_fields__})
        import ray

        from tuning.run import run_sweep, summary_line

        if not ray.is_initialized():
            default_env()
            ray.init(address=inc.scaling.ray_address or os.environ.get("RAY_ADDRESS") or None)
        result = run_sweep(sweep, space, inc, train_cfg, model_cfg, synthetic)
    except (ConfigError, SourceError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.table)
    front = [(r.trial_id, round(r.value("rec_ndcg"), 4), round(r.value("fraud_auc_pr"), 4))
             for r in result.pareto]
    print(f"\nPareto front (trial, rec NDCG, fraud AUC-PR): {front}")
    print(f"plot: {result.plot_path}\nTensorBoard: tensorboard --logdir {result.experiment_path}")
    print("SWEEP " + summary_line(result, sweep.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
