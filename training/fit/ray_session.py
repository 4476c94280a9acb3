"""Which Ray an update uses, and when this process joins it.

A stage that always needs Ray (the pipeline, a sweep, Serve) joins at start. One update does
not: with ``--trainer auto`` most windows train in this process (docs/trainer.md), and
starting a local Ray instance and stopping it again took 7-9 s of a 20 s standalone
``training.incremental`` run. So ``training.incremental`` joins at start only a Ray that is
already running (:func:`join_running_ray`: ``--ray-address``, ``RAY_ADDRESS``, or a
``ray start`` on this machine, which is how ``ray.init()`` finds one) and otherwise starts a
local instance only when the update takes Ray Train (:func:`ensure_ray`, from
``training.fit.raytrain.fit_ray``).
"""

from __future__ import annotations

import logging

import ray
import torch

from training.cli import default_env

logger = logging.getLogger(__name__)


def join_running_ray(address: str | None) -> bool:
    """Join ``address``, or else the Ray ``ray.init()`` would find running (``RAY_ADDRESS``,
    a ``ray start`` on this machine); whether this process is now in a Ray cluster. Starts
    nothing: with no Ray running, :func:`ensure_ray` starts one if an update needs it."""
    if ray.is_initialized():
        return True
    default_env()
    if address:
        ray.init(address=address)
        return True
    try:
        ray.init(address="auto")  # "auto": as address=None, but never starts an instance
    except ConnectionError:
        logger.info("no running Ray cluster: an in-process update starts none (a local "
                    "instance starts if the update takes Ray Train)")
        return False
    return True


def ensure_ray(address: str | None) -> None:
    """Join ``address`` or a running Ray, else start a local instance (as ``ray.init()``)."""
    if not ray.is_initialized():
        default_env()
        ray.init(address=address or None)


def gpus_for_auto() -> bool:
    """Whether ``use_gpu=auto`` finds GPUs: the joined cluster's, or before this process has
    joined one, this machine's (what the local instance :func:`ensure_ray` starts would
    have: no cluster was running when the stage started)."""
    if ray.is_initialized():
        return float(ray.cluster_resources().get("GPU", 0)) > 0
    return torch.cuda.is_available()
