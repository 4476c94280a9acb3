"""The Serve deployments of the ShopStream application (built by :mod:`serving.app`).

Two topologies (``ServeConfig.topology``):

* ``fused`` (default): a ``ShopStream`` deployment (two replicas unless configured) serves
  the FastAPI app (see :mod:`serving.api`) from an in-process model: HAProxy -> replica, one
  hop and one serialisation fewer, and a replica's /recommend and /fraud always answer from
  the same version. A replica that dies mid-request has its request resent to another by
  HAProxy (``serving.config.HAPROXY_RETRY_ON``); hence two replicas.
* ``split``: ``Ingress`` validates requests and calls ``Recommender`` (POST /recommend) and
  ``FraudScorer`` (POST /fraud) through deployment handles, with a time budget, resends
  and hedging (:mod:`serving.calls`): each model scales apart, at the cost of a hop.

Each model replica watches the store and hot-swaps newer versions (:mod:`serving.holder`);
its ``@serve.batch`` methods answer a whole batch from one version. The options given here
are defaults: ``deployments:`` in ``serving/config.yaml`` overrides them per deployment.
"""

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from fastapi import FastAPI
from ray import serve
from ray.serve import Application, Deployment
from ray.serve.handle import DeploymentHandle

from serving.api import api_for
from serving.calls import ModelCaller
from serving.config import (
    FRAUD_SCORER,
    FUSED,
    FUSED_TOPOLOGY,
    INGRESS,
    RECOMMENDER,
    ServeConfig,
    deployment_names,
)
from serving.errors import ErrorInfo, ServingError, UnavailableError
from serving.loopback import keep_replica_grpc_on_loopback
from serving.schemas import (
    FraudListResponse,
    FraudRequest,
    FraudResponse,
    RecommendRequest,
    RecommendResponse,
    ReplicaStatus,
)
from training.cli import setup_logging

if TYPE_CHECKING:  # torch is imported by model replicas only, never by the ingress
    from serving.replica import FraudAnswer, RecommendAnswer

logger = logging.getLogger(__name__)

# A redeploy starts every replacement replica (and waits until its model is loaded) before
# it stops the old one: Serve's default (0) stops the old replica first, and with one
# replica the deployment then answers nothing until the new one has loaded (measured: ~10 s
# of failed requests on a 2-core machine).
SURGE = 100

def _set_batching(method: Any, config: ServeConfig) -> None:
    """Apply the configured batch size and wait to a ``@serve.batch`` method."""
    method.set_max_batch_size(config.max_batch_size)
    method.set_batch_wait_timeout_s(config.batch_wait_timeout_s)


class _ModelDeployment:
    """Shared by the two model deployments: a :class:`ModelReplica` and its status."""

    def __init__(self, config: ServeConfig, name: str) -> None:
        setup_logging()
        keep_replica_grpc_on_loopback()
        from serving.replica import ModelReplica

        tag = serve.get_replica_context().replica_tag
        self._replica: ModelReplica = ModelReplica(config, name, replica_id=tag)

    async def status(self) -> ReplicaStatus:
        return self._replica.status()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self._replica.reconfigure(user_config)

    def __del__(self) -> None:
        replica = getattr(self, "_replica", None)
        if replica is not None:
            replica.shutdown()


@serve.deployment(name=RECOMMENDER, max_ongoing_requests=64, max_queued_requests=256,
                  max_surge_percent=SURGE, ray_actor_options={"num_cpus": 0.5})
class Recommender(_ModelDeployment):
    """Top-k items per user, batched."""

    def __init__(self, config: ServeConfig) -> None:
        super().__init__(config, RECOMMENDER)
        _set_batching(self._batch, config)

    async def recommend(self, request: RecommendRequest) -> "RecommendAnswer":
        answer: RecommendAnswer = await self._batch(request)
        return answer

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def _batch(self, requests: list[RecommendRequest]) -> list["RecommendAnswer"]:
        # A worker thread keeps this replica's loop free (status calls, batch building).
        return await asyncio.to_thread(self._replica.recommend, requests)


@serve.deployment(name=FRAUD_SCORER, max_ongoing_requests=64, max_queued_requests=256,
                  max_surge_percent=SURGE, ray_actor_options={"num_cpus": 0.5})
class FraudScorer(_ModelDeployment):
    """Fraud probability and decision per transaction, batched."""

    def __init__(self, config: ServeConfig) -> None:
        super().__init__(config, FRAUD_SCORER)
        _set_batching(self._batch, config)

    async def fraud(self, request: FraudRequest) -> "FraudAnswer":
        answer: FraudAnswer = await self._batch(request)
        return answer

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def _batch(self, requests: list[FraudRequest]) -> list["FraudAnswer"]:
        return await asyncio.to_thread(self._replica.fraud, requests)


# The ingress only awaits (bodies, model calls): many slots cost nothing, so slow clients
# cannot fill them (bodies time out after body_timeout_s); the work itself is bounded by
# max_inflight (load shedding) and the model deployments' queues.
@serve.deployment(name=INGRESS, max_ongoing_requests=1024, max_queued_requests=1024,
                  max_surge_percent=SURGE, ray_actor_options={"num_cpus": 0.25})
@serve.ingress()
class Ingress:
    """HTTP front: :func:`serving.api.create_api` over the two model deployments."""

    def __init__(self, recommender: DeploymentHandle, fraud_scorer: DeploymentHandle,
                 config: ServeConfig) -> None:
        setup_logging()
        keep_replica_grpc_on_loopback()
        self._models = {RECOMMENDER: recommender, FRAUD_SCORER: fraud_scorer}
        self._config = config
        self._caller = ModelCaller(config.request_timeout_s, config.hedge_after_s)
        # The token stays in this process: never logged (see application() for the models).
        logger.info("ingress for %s; bearer token %s", config.store,
                    "required" if config.bearer_token() else "not configured")

    def __serve_build_asgi_app__(self) -> FastAPI:
        return api_for(self, self._config)

    async def recommend(self, request: RecommendRequest) -> RecommendResponse:
        handle = self._models[RECOMMENDER]
        answer: RecommendResponse = await self._caller.call(
            RECOMMENDER, lambda: handle.recommend.remote(request))
        return answer

    async def fraud(self, request: FraudRequest) -> FraudResponse | FraudListResponse:
        handle = self._models[FRAUD_SCORER]
        answer: FraudResponse | FraudListResponse = await self._caller.call(
            FRAUD_SCORER, lambda: handle.fraud.remote(request))
        return answer

    async def _status(self, name: str) -> ReplicaStatus:
        try:
            status: ReplicaStatus = await self._caller.call(
                name, self._models[name].status.remote)
            return status
        except ServingError as exc:
            return ReplicaStatus(deployment=name, replica="?", ready=False, version=None,
                                 loaded_at=None, poll_interval_s=self._config.poll_interval_s,
                                 skipped={"error": str(exc) or type(exc).__name__})

    async def statuses(self) -> dict[str, ReplicaStatus]:
        names = list(self._models)
        found = await asyncio.gather(*(self._status(n) for n in names))
        return dict(zip(names, found))


# Two replicas: with one, a replica's death leaves nothing to resend to (measured: the
# slowest request waited 17 s, until Serve replaced it). 0.5 CPU each, so that a redeploy's
# surge (four replicas for a moment) fits a 2-CPU machine.
@serve.deployment(name=FUSED, num_replicas=2, max_ongoing_requests=1024,
                  max_queued_requests=1024, max_surge_percent=SURGE,
                  ray_actor_options={"num_cpus": 0.5})
@serve.ingress()
class ShopStream(_ModelDeployment):
    """The fused topology: :func:`serving.api.create_api` over this replica's own model."""

    def __init__(self, config: ServeConfig) -> None:
        super().__init__(config, FUSED)
        self._config = config
        _set_batching(self._recommend_batch, config)
        _set_batching(self._fraud_batch, config)
        logger.info("fused replica for %s; bearer token %s", config.store,
                    "required" if config.bearer_token() else "not configured")

    def __serve_build_asgi_app__(self) -> FastAPI:
        return api_for(self, self._config)

    async def _within_budget(self, pending: Any) -> Any:
        """The batch's answer (an :class:`ErrorInfo` raised as its error), or 503 after
        ``request_timeout_s`` (the model thread finishes in the background)."""
        try:
            answer = await asyncio.wait_for(pending, self._config.request_timeout_s)
        except TimeoutError as exc:
            raise UnavailableError(f"{FUSED} did not answer within "
                                   f"{self._config.request_timeout_s} s") from exc
        if isinstance(answer, ErrorInfo):
            raise answer.to_exception()
        return answer

    async def recommend(self, request: RecommendRequest) -> RecommendResponse:
        answer: RecommendResponse = await self._within_budget(self._recommend_batch(request))
        return answer

    async def fraud(self, request: FraudRequest) -> FraudResponse | FraudListResponse:
        answer: FraudResponse | FraudListResponse = await self._within_budget(
            self._fraud_batch(request))
        return answer

    async def statuses(self) -> dict[str, ReplicaStatus]:
        return {FUSED: self._replica.status()}

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def _recommend_batch(self, requests: list[RecommendRequest]
                               ) -> list["RecommendAnswer"]:
        return await asyncio.to_thread(self._replica.recommend, requests)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def _fraud_batch(self, requests: list[FraudRequest]) -> list["FraudAnswer"]:
        return await asyncio.to_thread(self._replica.fraud, requests)


def application(config: ServeConfig,
                options: Mapping[str, Mapping[str, Any]] | None = None) -> Application:
    """The bound application of ``config.topology``: split, the ingress over one
    Recommender and one FraudScorer; fused, one ShopStream deployment.

    ``options`` maps a deployment name to ``Deployment.options`` overrides (num_replicas,
    autoscaling_config, max_ongoing_requests, ray_actor_options, ...), the programmatic
    twin of ``deployments:`` in config.yaml."""
    options = dict(options or {})
    names = list(deployment_names(config.topology))
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(f"options: unknown deployment(s) {unknown} for topology "
                         f"{config.topology!r}; expected {names}")

    def deployment(cls: Any, name: str) -> Deployment:
        found = cast(Deployment, cls)
        return found.options(**options[name]) if name in options else found

    if config.topology == FUSED_TOPOLOGY:
        return deployment(ShopStream, FUSED).bind(config)
    # Only the ingress checks the bearer token: the model replicas never receive it.
    model_config = dataclasses.replace(config, auth_token=None)
    models = [deployment(Recommender, RECOMMENDER).bind(model_config),
              deployment(FraudScorer, FRAUD_SCORER).bind(model_config)]
    return deployment(Ingress, INGRESS).bind(*models, config)
