"""ShopStream's main job: walk the windows, test-then-train every method, report, serve.

    python -m cluster.pipeline --once                       # synthetic shop, local Ray + store
    python -m cluster.pipeline --source online_retail --path ../shared/data/online_retail.csv \
        --freq week --store runs/retail-store --report-dir runs/report-retail --once
    ray job submit --working-dir . -- python -m cluster.pipeline \
        --store s3://bucket/shopstream --storage-path s3://bucket/shopstream-ray --num-workers 8

For every window, oldest first: score the live model (``latest``) and every comparison
method on it before anything trains on it (prequential), then run the incremental update
(Ray Train, replay + distillation, promotion gate, publish) and update the comparison arms
(no replay/distillation, full retrain, frozen first model; popularity, repeat-then-popular
and HistGradientBoosting need no training run), re-score the neural methods on the earlier
windows (forgetting), and every ``--sweep-every`` windows run a Ray Tune sweep whose best
config feeds the next updates. Then write the report (metrics.json, summary.md, PNGs),
start or update the Serve app on the store, wait until it serves the last published
version and query both endpoints. Rerun on the same store to resume where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from cluster.pipeline_config import PipelineConfig
from serving.config import SERVE_START_ENV
from serving.loopback import haproxy_env
from training.cli import (
    ConfigError,
    add_dataclass_args,
    dataclass_from_args,
    default_env,
    setup_logging,
)
from training.data.source_config import SourceError
from training.heap import TRAINING_MODULES, frozen_import_heap
from training.incremental_config import IncrementalConfig, explicit_settings
from training.stage_args import training_configs, training_parser
from training.store import StoreError

logger = logging.getLogger(__name__)



def build_parser() -> argparse.ArgumentParser:
    parser = training_parser("python -m cluster.pipeline", __doc__, IncrementalConfig)
    add_dataclass_args(parser, PipelineConfig)
    parser.add_argument("--once", action="store_true",
                        help="exit after the sample queries instead of serving until Ctrl-C")
    return parser


def run(cfg: PipelineConfig, inc: IncrementalConfig, argv_configs: tuple[Any, Any, Any],
        explicit: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The whole job on the connected Ray; returns the results dict (report written).
    ``explicit``: the settings given as flags, which configs/best.json may not change."""
    from cluster.comparison.report import write_report
    from cluster.runner import Pipeline

    train_cfg, model_cfg, synthetic = argv_configs
    pipeline = Pipeline(cfg, inc, train_cfg, model_cfg, synthetic, explicit)
    result = pipeline.run()
    write_report(result, Path(cfg.report_dir))
    if cfg.serve:
        from cluster.serve_step import serve_and_query

        last = pipeline.windows[-1]
        # Users who bought before the last window: the served model knows them.
        known = set(map(str, pipeline.contexts[-1].history.users()))
        result["served"] = serve_and_query(inc.store.uri, inc.store.endpoint_url, cfg.port,
                                           pipeline.last_published(), last, known,
                                           cfg.serve_timeout_s)
        pipeline.save()
        write_report(result, Path(cfg.report_dir))
    return result


def print_outcome(result: dict[str, Any], cfg: PipelineConfig) -> None:
    from cluster.comparison.tables import summary_table, text_table

    print(text_table(*summary_table(result)))
    report = Path(cfg.report_dir)
    print(f"\nreport: {report / 'summary.md'} (metrics.json and PNG plots beside it)")
    served = result.get("served")
    if served:
        print(f"serving version {served['version']} at {served['url']}; try:")
        for line in served["curl"]:
            print("  " + line)


def serve_forever() -> None:
    from ray import serve

    print("Serve is answering; Ctrl-C stops it.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    default_env(SERVE_START_ENV)
    from cluster.runner import PipelineStateError
    from cluster.serve_step import SERVE_HOST, ServeStepError

    try:
        cfg = dataclasses.replace(dataclass_from_args(PipelineConfig, args), once=args.once)
        inc = dataclass_from_args(IncrementalConfig, args)
        configs = training_configs(args)
    except (ConfigError, SourceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if cfg.serve:  # before Ray starts: its HAProxy reads it (serving.loopback)
        os.environ.update(haproxy_env(SERVE_HOST))
    import ray

    if not ray.is_initialized():
        ray.init(address=inc.scaling.ray_address or os.environ.get("RAY_ADDRESS") or None)
    with frozen_import_heap(TRAINING_MODULES):
        try:
            result = run(cfg, inc, configs, explicit_settings(args))
        except (ConfigError, SourceError, StoreError, PipelineStateError, ServeStepError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print_outcome(result, cfg)
        if cfg.serve and not cfg.once:
            serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
