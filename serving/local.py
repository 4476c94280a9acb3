"""The same HTTP API without Ray: one uvicorn process answering from an in-process replica.

    python -m serving.local --store runs/store --port 8001

It serves the same routes, validation, auth, hot reload and model code as the Serve app
(:func:`serving.api.create_api` over a :class:`~serving.replica.ModelReplica`), one request at
a time and without batching. ``benchmarks/serve_latency.py`` runs it as the bare
FastAPI/uvicorn baseline; it is also a quick way to try a store during development.
"""

from __future__ import annotations

import argparse
import sys

from fastapi import FastAPI

from serving.api import api_for
from serving.config import ServeConfig
from serving.errors import ErrorInfo
from serving.replica import ModelReplica
from serving.schemas import (
    FraudListResponse,
    FraudRequest,
    FraudResponse,
    RecommendRequest,
    RecommendResponse,
    ReplicaStatus,
)
from training.cli import ConfigError, add_dataclass_args, dataclass_from_args, setup_logging

LOCAL = "local"


class LocalBackend:
    """:class:`serving.api.Backend` over one in-process :class:`ModelReplica`."""

    def __init__(self, replica: ModelReplica) -> None:
        self.replica = replica

    async def recommend(self, request: RecommendRequest) -> RecommendResponse:
        (answer,) = self.replica.recommend([request])
        if isinstance(answer, ErrorInfo):
            raise answer.to_exception()
        return answer

    async def fraud(self, request: FraudRequest) -> FraudResponse | FraudListResponse:
        (answer,) = self.replica.fraud([request])
        if isinstance(answer, ErrorInfo):
            raise answer.to_exception()
        return answer

    async def statuses(self) -> dict[str, ReplicaStatus]:
        return {LOCAL: self.replica.status()}


def local_app(config: ServeConfig) -> FastAPI:
    """The API over a replica that starts watching ``config.store`` now."""
    return api_for(LocalBackend(ModelReplica(config, LOCAL)), config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving.local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, ServeConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        config = dataclass_from_args(ServeConfig, args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import uvicorn

    uvicorn.run(local_app(config), host=config.host, port=config.port, log_level="warning",
                access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
