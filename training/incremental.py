"""Fine-tune the latest model on a new window across Ray Train workers, gate, publish.

    python -m training.incremental --source synthetic --store runs/store --num-workers 2
    ray job submit --working-dir . -- python -m training.incremental \
        --source windows --path /data/windows --store s3://bucket/shopstream --num-workers 8

What one update does: :mod:`training.update.run`. Parsing comes first and imports only
the settings, so ``--help`` and a bad flag answer at once.
"""

from __future__ import annotations

import sys

from training.cli import ConfigError, dataclass_from_args, setup_logging
from training.data.source_config import SourceError
from training.heap import TRAINING_MODULES, frozen_import_heap
from training.incremental_config import IncrementalConfig, explicit_settings
from training.stage_args import training_configs, training_parser
from training.store.errors import StoreError


def main(argv: list[str] | None = None) -> int:
    parser = training_parser("python -m training.incremental", __doc__, IncrementalConfig)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        inc = dataclass_from_args(IncrementalConfig, args)
        train_cfg, model_cfg, synthetic = training_configs(args)
        explicit = explicit_settings(args)
        from training.fit.ray_session import join_running_ray
        from training.update.run import run_incremental, summary_line

        # A running Ray is joined now (default_env set first); none is started for an
        # update trained in-process.
        join_running_ray(inc.scaling.ray_address)
        with frozen_import_heap(TRAINING_MODULES):
            summary = run_incremental(inc, train_cfg, model_cfg, synthetic, explicit)
    except (ConfigError, SourceError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("SUMMARY " + summary_line(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
