"""A replica's canary: the store's candidate version (``configs/canary.json``, see
:mod:`training.store.canary`) loaded beside ``latest`` and the rule that routes to it.

:class:`CanaryRouter` follows the canary pointer with its own
:class:`~serving.holder.VersionHolder` (same load, verification and skip rules as
``latest``), and :meth:`ModelReplica.recommend` / ``fraud`` ask it per batch:

* mode ``canary``: a request goes to the candidate when a stable hash of its user id falls
  under ``fraction`` (so a user sees one version throughout); a fraud request without a user
  id is routed by its first txn id, or at random;
* mode ``shadow``: ``latest`` answers everyone; the candidate answers the same batch after
  it, and the two are compared (top-k overlap, fraud decision agreement and probability
  gap) and logged on the ``serving.shadow`` logger, never returned.

In canary mode every answer is logged with the version that gave it (``serving.canary_answers``
logger). Counts (answers by the candidate, shadow comparisons) are in the replica's status,
and so in ``GET /version`` and ``GET /metrics``.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Sequence
from typing import Any

from serving.config import ServeConfig
from serving.holder import VersionHolder
from serving.loading import make_holder
from serving.predictor import Predictor
from serving.schemas import FraudListResponse, FraudRequest, FraudResponse, RecommendResponse
from training.store import CheckpointStore, open_store
from training.store.canary import CANARY_CONFIG, CanarySpec, read_canary

logger = logging.getLogger(__name__)
shadow_log = logging.getLogger("serving.shadow")
canary_log = logging.getLogger("serving.canary_answers")

POINTER_KEY = f"configs/{CANARY_CONFIG}.json"


def bucket(key: str | None) -> float:
    """A stable number in [0, 1) per key (sha256), random for no key."""
    if key is None:
        return random.random()
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64


class CanaryRouter:
    """The canary version of one replica and its routing rule; see the module docstring."""

    def __init__(self, config: ServeConfig, name: str,
                 store: CheckpointStore | None = None) -> None:
        self.store = store or open_store(config.store, config.endpoint_url)
        self.spec: CanarySpec | None = None
        self.holder: VersionHolder[Predictor] = make_holder(
            config, f"{name}-canary", pointer=self._pointer, pointer_key=POINTER_KEY,
            store=self.store)
        self._lock = threading.Lock()
        self.counts: dict[str, float] = {}

    def _pointer(self) -> str | None:
        self.spec = read_canary(self.store)
        if self.spec is None and self.holder.current is not None:
            self.holder.clear()  # the canary ended: free its memory
        return self.spec.version if self.spec else None

    def active(self, latest: str) -> tuple[CanarySpec, Predictor] | None:
        """The spec and candidate when a canary is set, loaded, and not ``latest`` itself."""
        spec, loaded = self.spec, self.holder.current
        if spec is None or loaded is None or loaded.version != spec.version \
                or spec.version == latest:
            return None
        return spec, loaded.value

    def count(self, **increments: float) -> None:
        with self._lock:
            for key, value in increments.items():
                self.counts[key] = self.counts.get(key, 0.0) + value

    def status(self) -> dict[str, Any] | None:
        """The canary as the replica reports it (None without one)."""
        spec, loaded = self.spec, self.holder.current
        if spec is None:
            return None
        with self._lock:
            counts = dict(self.counts)
        return {**spec.to_json(), "loaded": loaded is not None and loaded.version == spec.version,
                "counts": counts, "skipped": self.holder.health().skipped}

    def compare_rec(self, served: Sequence[RecommendResponse],
                    shadow: Sequence[RecommendResponse]) -> None:
        """Log and count the shadow's recommendations against the served ones."""
        overlap = 0.0
        for a, b in zip(served, shadow):
            ids_a, ids_b = [i.item_id for i in a.items], [i.item_id for i in b.items]
            share = len(set(ids_a) & set(ids_b)) / max(1, len(ids_a))
            overlap += share
            shadow_log.info("shadow /recommend user=%s %s=%s %s=%s overlap=%.2f", a.user_id,
                            a.model_version, ids_a[:10], b.model_version, ids_b[:10], share)
        self.count(shadow_recommend=len(served), shadow_recommend_overlap=overlap)

    def compare_fraud(self, served: Sequence[Any], shadow: Sequence[Any]) -> None:
        """Log and count the shadow's fraud answers against the served ones."""
        agree = gap = 0.0
        n = 0
        for a, b in zip(served, shadow):
            if not isinstance(a, (FraudResponse, FraudListResponse)) or \
                    not isinstance(b, (FraudResponse, FraudListResponse)):
                continue
            results = zip(_results(a), _results(b))
            for x, y in results:
                n += 1
                agree += float(x.decision == y.decision)
                gap += abs(x.fraud_probability - y.fraud_probability)
                shadow_log.info("shadow /fraud txn=%s %s=%.4f/%s %s=%.4f/%s", x.txn_id,
                                a.model_version, x.fraud_probability, x.decision,
                                b.model_version, y.fraud_probability, y.decision)
        self.count(shadow_fraud=n, shadow_fraud_agree=agree, shadow_fraud_gap=gap)


def _results(answer: FraudResponse | FraudListResponse) -> list[Any]:
    return list(answer.results) if isinstance(answer, FraudListResponse) else [answer]


def fraud_key(request: FraudRequest) -> str | None:
    """What routes a fraud request: its first user id, else its first txn id."""
    first = request.transactions[0] if request.transactions else None
    if first is None:
        return None
    return first.user_id or first.txn_id
