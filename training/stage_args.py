"""The flags every training stage shares: its own config, then train, model and
synthetic-shop settings (``training.train``, ``training.incremental``, ``tuning.sweep``,
``cluster.pipeline``).

Only settings modules are imported here, so a stage parses (and answers ``--help``) before
it loads torch, pandas or Ray.
"""

from __future__ import annotations

import argparse

from training.cli import add_dataclass_args, dataclass_from_args
from training.config import TrainConfig
from training.data.synthetic_config import SyntheticShopConfig
from training.model.config import ModelConfig


def training_parser(prog: str, doc: str | None, *stages: type) -> argparse.ArgumentParser:
    """Flags of a training stage: its own configs (``stages``, in order), then train, model
    and synthetic-shop."""
    parser = argparse.ArgumentParser(prog=prog, description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for stage in stages:
        add_dataclass_args(parser, stage)
    add_dataclass_args(parser, TrainConfig)
    add_dataclass_args(parser, ModelConfig, prefix="model-")
    add_dataclass_args(parser, SyntheticShopConfig, prefix="synth-")
    return parser


def training_configs(args: argparse.Namespace
                     ) -> tuple[TrainConfig, ModelConfig, SyntheticShopConfig]:
    return (dataclass_from_args(TrainConfig, args),
            dataclass_from_args(ModelConfig, args, prefix="model-"),
            dataclass_from_args(SyntheticShopConfig, args, prefix="synth-"))
