"""What a model replica does, without Ray: watch the store, answer batches, report status.

:class:`ModelReplica` is used by both Serve model deployments (``serving.app``) and the
in-process backend of ``serving.local``. Each batch takes the holder's current version once,
so every answer in it (and every field of each answer) comes from that one version.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from serving.canary import CanaryRouter, bucket, canary_log, fraud_key
from serving.config import ServeConfig
from serving.errors import ErrorInfo, NoRecommenderError, NotReadyError
from serving.holder import VersionHolder
from serving.loading import make_holder
from serving.predictor import Predictor
from serving.schemas import (
    FraudListResponse,
    FraudRequest,
    FraudResponse,
    RecommendRequest,
    RecommendResponse,
    ReplicaStatus,
)
from training.store.canary import CanarySpec

logger = logging.getLogger(__name__)

FraudAnswer = FraudResponse | FraudListResponse | ErrorInfo
RecommendAnswer = RecommendResponse | ErrorInfo


def rss_mib() -> float | None:
    """Resident memory of this process in MiB (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


class ModelReplica:
    """One replica's model state: a started :class:`VersionHolder` over ``config.store``."""

    def __init__(self, config: ServeConfig, deployment: str, replica_id: str | None = None,
                 holder: VersionHolder[Predictor] | None = None,
                 canary: CanaryRouter | None = None) -> None:
        self.config = config
        self.deployment = deployment
        self.replica_id = replica_id or f"{socket.gethostname()}:{os.getpid()}"
        self.holder = holder or make_holder(config, deployment)
        # A replica built on a given holder (tests) follows no canary unless given one.
        self.canary = canary if holder is not None or not config.follow_canary \
            else CanaryRouter(config, deployment)
        logger.info("%s replica %s serving from %s (poll every %.2f s)", deployment,
                    self.replica_id, config.store, config.poll_interval_s)
        # The first load happens before the constructor returns: Serve routes traffic to a
        # replica (and, in a rolling update, stops the old ones) once it is constructed, so
        # a replica must not count as started while it has no model. An empty store or a
        # bad latest version does not block: the watcher keeps trying.
        self.holder.check()
        self.holder.start()
        if self.canary is not None:
            self.canary.holder.check()
            self.canary.holder.start()

    def _predictor(self) -> Predictor:
        loaded = self.holder.current
        if loaded is None:
            raise NotReadyError(f"{self.deployment}: no model version loaded yet from "
                                f"{self.config.store}")
        return loaded.value

    def recommend(self, requests: Sequence[RecommendRequest]) -> list[RecommendAnswer]:
        try:
            predictor = self._predictor()
        except NotReadyError as err:
            return [ErrorInfo.of(err)] * len(requests)
        if predictor.n_items == 0:  # a fraud-only version (e.g. trained on card data alone)
            missing = NoRecommenderError(f"version {predictor.version} was trained without "
                                         "items or purchases: it answers /fraud only")
            return [ErrorInfo.of(missing)] * len(requests)
        router = self.canary
        route = router.active(predictor.version) if router else None
        if router is None or route is None or route[1].n_items == 0:  # fraud-only candidate
            return list(predictor.recommend(requests))
        candidate = route[1]
        return self._with_canary(requests, router, route[0],
                                 lambda part: list(predictor.recommend(part)),
                                 lambda part: list(candidate.recommend(part)),
                                 lambda r: r.user_id, router.compare_rec)

    def fraud(self, requests: Sequence[FraudRequest]) -> list[FraudAnswer]:
        try:
            predictor = self._predictor()
        except NotReadyError as err:
            return [ErrorInfo.of(err)] * len(requests)
        router = self.canary
        route = router.active(predictor.version) if router else None
        if router is None or route is None:
            return predictor.fraud(requests)
        return self._with_canary(requests, router, route[0], predictor.fraud, route[1].fraud,
                                 fraud_key, router.compare_fraud)

    def _with_canary(self, requests: Sequence[Any], router: CanaryRouter, spec: CanarySpec,
                     latest: Callable[[list[Any]], list[Any]],
                     candidate: Callable[[list[Any]], list[Any]],
                     key: Callable[[Any], str | None],
                     compare: Callable[[list[Any], list[Any]], None]) -> list[Any]:
        """Answer beside an active canary: shadow (latest answers; ``compare`` gets both
        answer lists) or split by the stable hash of ``key``."""
        if spec.mode == "shadow":
            served = latest(list(requests))
            self._shadow(lambda: compare(served, candidate(list(requests))))
            return served
        picks = [bucket(key(r)) < spec.fraction for r in requests]
        return _merge(picks, latest, candidate, requests, router)

    def _shadow(self, compare: Callable[[], None]) -> None:
        """Run a shadow comparison; its failure never reaches the client."""
        try:
            compare()
        except Exception:
            logger.warning("%s: shadow comparison failed", self.deployment, exc_info=True)

    def status(self) -> ReplicaStatus:
        """``ready`` means a version is loaded and answering; a broken store pointer does not
        unset it (the replica keeps serving) but is listed under ``skipped["latest.json"]``
        and carried as ``pointer_error``, so the ingress can report the deployment degraded."""
        loaded = self.holder.current
        predictor = loaded.value if loaded else None
        health = self.holder.health()
        return ReplicaStatus(
            deployment=self.deployment, replica=self.replica_id, ready=loaded is not None,
            version=loaded.version if loaded else None,
            loaded_at=loaded.loaded_at if loaded else None,
            window=predictor.window if predictor else None,
            n_items=predictor.n_items if predictor else None,
            fraud_features=list(predictor.fraud_features) if predictor else None,
            skipped=health.skipped, poll_interval_s=self.holder.poll_interval_s,
            rss_mib=rss_mib(), pointer_error=health.pointer_error,
            error_counts=health.error_counts,
            canary=self.canary.status() if self.canary else None)

    def reconfigure(self, user_config: Mapping[str, Any] | None) -> None:
        self.holder.apply_user_config(user_config)

    def shutdown(self) -> None:
        self.holder.stop()
        if self.canary is not None:
            self.canary.holder.stop()


def _merge(picks: Sequence[bool], latest: Callable[[list[Any]], list[Any]],
           candidate: Callable[[list[Any]], list[Any]], requests: Sequence[Any],
           router: CanaryRouter) -> list[Any]:
    """Answer the picked requests with the candidate, the rest with latest, in order."""
    mine = [r for r, p in zip(requests, picks) if p]
    rest = [r for r, p in zip(requests, picks) if not p]
    from_candidate = iter(candidate(mine) if mine else [])
    from_latest = iter(latest(rest) if rest else [])
    router.count(canary_answers=len(mine), latest_answers=len(rest))
    answers = [next(from_candidate) if p else next(from_latest) for p in picks]
    for request, answer in zip(requests, answers):
        canary_log.info("canary %s key=%s answered by %s", type(request).__name__,
                        getattr(request, "user_id", None) or fraud_key(request),
                        getattr(answer, "model_version", "error"))
    return answers
