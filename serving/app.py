"""Builds and runs ShopStream's Ray Serve application (deployments: :mod:`serving.deployments`).

    python -m serving.app --store runs/store --port 8000   # a local Ray on 127.0.0.1
    serve run serving.app:build_app store=s3://bucket/shopstream endpoint_url=http://...
    serve run serving/config.yaml                     # or: serve deploy serving/config.yaml

All three start the same application: :func:`build_app` with the fields of
:class:`~serving.config.ServeConfig` as its typed arguments. Replica counts, autoscaling and
``max_ongoing_requests`` are per-deployment options in ``config.yaml``;
``user_config: {poll_interval_s: ...}`` changes the watch interval live and triggers a check.
"""

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from serving.config import SERVE_START_ENV, AppArgs, ServeConfig
from serving.loopback import haproxy_env
from training.cli import (
    ConfigError,
    add_dataclass_args,
    dataclass_from_args,
    default_env,
    setup_logging,
)

if TYPE_CHECKING:
    from ray.serve import Application

logger = logging.getLogger(__name__)



def build_app(args: AppArgs) -> "Application":
    """The application ``serve run serving.app:build_app key=value ...`` starts; ``args`` is
    :class:`~serving.config.ServeConfig`'s fields (a dict or a ServeConfig works too)."""
    from serving.deployments import application

    given: Any = args
    if isinstance(given, ServeConfig):
        config = given
    else:
        try:
            config = AppArgs.model_validate(given).root
        except ValidationError as exc:
            raise ConfigError(f"build_app args: {exc}") from exc
    logger.info("building the ShopStream app: %s", config.public_dict())
    return application(config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving.app", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, ServeConfig)
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to deploy to (default: RAY_ADDRESS, else a new "
                             "local Ray on 127.0.0.1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        config = dataclass_from_args(ServeConfig, args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    default_env(SERVE_START_ENV)
    os.environ.update(haproxy_env(config.host))
    import ray
    from ray import serve

    address = args.ray_address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, include_dashboard=False)
    serve.start(http_options={"host": config.host, "port": config.port})
    logger.info("serving on http://%s:%d (docs at /docs)", config.host, config.port)
    serve.run(build_app(AppArgs(config)), name=config.app_name, route_prefix="/", blocking=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
