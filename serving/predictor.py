"""A loaded version, ready to answer: model, precomputed item table, histories, thresholds.

Everything a request needs is computed when the version loads, never per request:

* the item table: for every item the version knows, its item-tower vector (title projection
  + id embedding, as ``ShopStreamModel.catalogue_matrix``) and its normalised title vector
  (the fraud head's item input); new items from the catalogue file are appended, scored from
  their titles alone (as ``item_vectors_from_titles``). Serving index ``i`` is table row
  ``i``; known items keep the model's own indices, so ids, histories and embeddings agree;
* each user's recent purchases (``history.parquet`` of the version), as table indices;
* the popularity baseline's list (purchases in the version's last update, equal counts by
  the smaller item id: the list an update's cold users get without evidence, see
  training.model.ranking), the answer for users with nothing to go on.

Requests then run only the small parts of the model: the user tower over table rows, one
matrix product against the table, and the fraud MLP. The text encoder is never called on
the request path (its title cache is not thread-safe; loading holds
``serving.item_table.ENCODER_LOCK``).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from serving.errors import (
    ErrorInfo,
    InvalidRequestError,
    UnscorableError,
    VersionRejectedError,
)
from serving.item_cache import ItemVectorCache
from serving.item_table import drop_item_side, item_table
from serving.schemas import (
    Decision,
    FraudListResponse,
    FraudRequest,
    FraudResponse,
    FraudResult,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    Strategy,
)
from serving.schemas import Thresholds as ThresholdsBody
from training.features.bought_before import BoughtBefore
from training.features.history import PurchaseHistory, history_matrix
from training.model import FraudBatch, ShopStreamModel
from training.model.item_table import ItemTable
from training.model.ranking import id_ranks

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class Thresholds:
    """Fraud decisions: ``p >= decline`` declines, ``p >= review`` goes to review."""

    review: float
    decline: float
    basis: str

    def __post_init__(self) -> None:
        for name in ("review", "decline"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or not 0.0 <= value <= 1.0:
                raise VersionRejectedError(
                    f"meta fraud_thresholds.{name}: expected a number in [0, 1], got {value!r}")
        if self.review > self.decline:
            raise VersionRejectedError(
                f"meta fraud_thresholds: review {self.review} is above decline {self.decline}")

    @classmethod
    def from_meta(cls, meta: dict[str, Any], default: dict[str, float]) -> Thresholds:
        found = meta.get("fraud_thresholds")
        if found is None:
            logger.warning("version has no fraud_thresholds; using the defaults %s", default)
            return cls(default["review"], default["decline"],
                       "default (the version records no thresholds)")
        if not isinstance(found, dict):
            raise VersionRejectedError(f"meta fraud_thresholds: expected an object, got "
                                       f"{type(found).__name__}")
        return cls(found.get("review"), found.get("decline"),  # type: ignore[arg-type]
                   str(found.get("basis", "")))

    def decide(self, probability: float) -> Decision:
        if probability >= self.decline:
            return "decline"
        if probability >= self.review:
            return "review"
        return "approve"

    def body(self) -> ThresholdsBody:
        return ThresholdsBody(review=self.review, decline=self.decline, basis=self.basis)


@dataclass
class _Query:
    user_idx: int
    history: list[int]
    exclude: set[int]
    strategy: Strategy


class Predictor:
    """Answers /recommend and /fraud batches with one loaded version (read-only after
    construction, so any thread may use it)."""

    def __init__(self, version: str, model: ShopStreamModel, thresholds: Thresholds,
                 history: PurchaseHistory, new_items: tuple[list[str], list[str]],
                 cache: ItemVectorCache, window: str | None = None,
                 published: Tensor | None = None) -> None:
        self.version = version
        self.window = window
        self.model = model.eval()
        self.thresholds = thresholds
        self.fraud_features = tuple(model.cfg.fraud_features)
        self.history_len = model.cfg.history_len
        new_ids, new_titles = new_items
        self.item_ids = [""] + model.items.ids + list(new_ids)
        self.titles = list(model.item_titles) + list(new_titles)
        self.index = {item: i for i, item in enumerate(self.item_ids) if i}
        vectors, text = item_table(model, list(new_titles), cache, published)
        self.table = ItemTable(torch.arange(len(self.item_ids)), vectors, text)
        self.candidates = vectors[1:]
        drop_item_side(model)
        self.histories = self._purchases(history)
        self.profile = history.profile
        # The fraud trees' history flags, as of this version (built once: requests read it).
        self.bought = BoughtBefore.of(history.profile)
        self.item_pop = torch.from_numpy(self.profile.item_popularity(self.item_ids[1:]))
        self.item_rank = id_ranks(self.item_ids[1:])
        bought = self.profile.item_counts(self.item_ids[1:])[:, 0]
        # Table indices, most bought in the last update first, equal counts by item id.
        self.popular = np.lexsort((self.item_rank.numpy(), -bought)) + 1
        self.popular_share = np.r_[0.0, bought / max(float(bought.sum()), 1.0)]
        self._positions = pd.Index(self.item_ids[1:], dtype=object)
        # Once per version, so a request gathers its user's rows instead of a pandas pass.
        self.repeats = self.profile.repeat_index(model.cfg.repeat_items, self._table_index)

    @property
    def n_items(self) -> int:
        return len(self.item_ids) - 1

    def _purchases(self, history: PurchaseHistory) -> dict[str, list[int]]:
        """Each user's recent purchases as table indices, oldest first."""
        frame = history.frame
        idx = pd.Index(self.item_ids[1:], dtype=object).get_indexer(
            frame["item_id"].to_numpy(dtype=object)) + 1  # -1 (unknown) becomes 0
        users = frame["user_id"].to_numpy(dtype=object)[idx > 0]
        idx = idx[idx > 0].astype(np.int64)
        histories: dict[str, list[int]] = {}
        if len(idx):
            # A stable sort by user keeps each user's purchases in time order, in one run.
            order = np.argsort(users.astype(str), kind="stable")
            users, runs = users[order], idx[order]
            starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]).tolist()
            ids, items = users.tolist(), runs.tolist()
            for start, stop in zip(starts, starts[1:] + [len(items)]):
                histories[str(ids[start])] = items[max(start, stop - self.history_len):stop]
        return histories

    # ---- recommendation -------------------------------------------------------------------

    def _query(self, req: RecommendRequest) -> _Query:
        user_idx = self.model.users.index_of(req.user_id)
        past = self.histories.get(req.user_id, []) if user_idx else []
        recent = [self.index[i] for i in req.recent_item_ids if i in self.index]
        history = (past + recent)[-self.history_len:]
        exclude = set(past) | set(recent) if req.exclude_purchased else set()
        strategy: Strategy = "personal" if user_idx else (
            "recent_items" if history else "popularity")
        return _Query(user_idx, history, exclude, strategy)

    @torch.inference_mode()
    def recommend(self, requests: Sequence[RecommendRequest]) -> list[RecommendResponse]:
        queries = [self._query(r) for r in requests]
        ranked: dict[int, list[tuple[int, float]]] = {}
        rows = [i for i, q in enumerate(queries) if q.strategy != "popularity"]
        if rows:
            users = torch.tensor([queries[i].user_idx for i in rows], dtype=torch.long)
            hist = torch.from_numpy(history_matrix([queries[i].history for i in rows],
                                                   self.history_len))
            vec = self.model.user_vectors(users, hist, self.table)
            rep = self.repeats.lookup(
                [requests[i].user_id if queries[i].user_idx else "" for i in rows])
            # The same ranking score as evaluation (training.evaluation.evaluate.rank_pool).
            scores = self.model.pool_scores(vec, self.candidates, self.item_pop,
                                            torch.from_numpy(rep.items - 1),
                                            torch.from_numpy(rep.features), self.item_rank)
            for row, i in enumerate(rows):
                excluded = [j - 1 for j in queries[i].exclude]
                if excluded:
                    scores[row, excluded] = -math.inf
            width = min(max(requests[i].k for i in rows), self.n_items)
            top = torch.topk(scores, width, dim=1)
            for row, i in enumerate(rows):
                pairs = zip(top.indices[row].tolist(), top.values[row].tolist())
                ranked[i] = [(j + 1, s) for j, s in pairs if s != -math.inf][:requests[i].k]
        out = []
        for i, (req, q) in enumerate(zip(requests, queries)):
            items = ranked[i] if i in ranked else self._popular(req.k, q.exclude)
            out.append(RecommendResponse(
                user_id=req.user_id, strategy=q.strategy, model_version=self.version,
                items=[RecommendedItem(item_id=self.item_ids[j], title=self.titles[j],
                                       score=float(s)) for j, s in items]))
        return out

    def _table_index(self, item_ids: np.ndarray) -> np.ndarray:
        """Table indices of item ids (0 = not in the table)."""
        return self._positions.get_indexer(np.asarray(item_ids, dtype=object)) + 1

    def _popular(self, k: int, exclude: set[int]) -> list[tuple[int, float]]:
        picked: list[tuple[int, float]] = []
        for j in self.popular:
            if int(j) not in exclude:
                picked.append((int(j), float(self.popular_share[j])))
                if len(picked) == k:
                    break
        return picked

    # ---- fraud ----------------------------------------------------------------------------

    def _features(self, req: FraudRequest) -> np.ndarray:
        """[n, F] in ``fraud_features`` order; InvalidRequestError names a bad feature."""
        rows = np.zeros((len(req.transactions), len(self.fraud_features)), dtype=np.float32)
        wanted = set(self.fraud_features)
        for n, txn in enumerate(req.transactions):
            prefix = f"transactions[{n}]." if req.is_list else ""
            missing = [f for f in self.fraud_features if f not in txn.features]
            unknown = sorted(set(txn.features) - wanted)
            if missing or unknown:
                name = missing[0] if missing else unknown[0]
                what = "missing" if missing else "unknown"
                raise InvalidRequestError(
                    f"{prefix}features.{name}: {what} feature; version {self.version} scores "
                    f"exactly {list(self.fraud_features)}", field=f"{prefix}features.{name}")
            rows[n] = [txn.features[f] for f in self.fraud_features]
        return rows

    @torch.inference_mode()
    def fraud(self, requests: Sequence[FraudRequest]
              ) -> list[FraudResponse | FraudListResponse | ErrorInfo]:
        answers: list[FraudResponse | FraudListResponse | ErrorInfo | None] = []
        features, txns = [], []
        for req in requests:
            try:
                features.append(self._features(req))
            except InvalidRequestError as err:
                answers.append(ErrorInfo.of(err))
                continue
            answers.append(None)
            txns.extend(req.transactions)
        probs = self.fraud_probabilities(np.concatenate(features), txns) if txns else []
        out: list[FraudResponse | FraudListResponse | ErrorInfo] = []
        start = 0
        for req, answer in zip(requests, answers):
            if answer is not None:
                out.append(answer)
                continue
            n = len(req.transactions)
            mine = probs[start:start + n]
            start += n
            try:
                out.append(self._fraud_body(self._results(req, mine), req.is_list))
            except UnscorableError as err:
                out.append(ErrorInfo.of(err))
        return out

    def _results(self, req: FraudRequest, probs: Sequence[float]) -> list[FraudResult]:
        """One result per transaction; UnscorableError (422) for a non-finite probability,
        which ``decide`` would otherwise approve (NaN is below every threshold)."""
        for n, (txn, p) in enumerate(zip(req.transactions, probs)):
            if not 0.0 <= p <= 1.0:
                prefix = f"transactions[{n}]." if req.is_list else ""
                values = {"amount": txn.amount, **{f"features.{name}": value
                                                   for name, value in txn.features.items()}}
                name = prefix + max(values, key=lambda k: abs(values[k]))
                raise UnscorableError(
                    f"{name}: fraud probability is {p}: the values overflow the model's "
                    "float32 arithmetic (this field has the largest magnitude)", field=name)
        return [FraudResult(txn_id=t.txn_id, fraud_probability=p,
                            decision=self.thresholds.decide(p))
                for t, p in zip(req.transactions, probs)]

    def _fraud_body(self, results: list[FraudResult], is_list: bool
                    ) -> FraudResponse | FraudListResponse:
        if is_list:
            return FraudListResponse(results=results, model_version=self.version,
                                     thresholds=self.thresholds.body())
        return FraudResponse(**results[0].model_dump(), model_version=self.version,
                             thresholds=self.thresholds.body())

    @torch.inference_mode()
    def fraud_probabilities(self, features: np.ndarray, txns: Sequence[Any]) -> list[float]:
        """Probabilities for transactions (objects with user_id, item_id, amount)."""
        hists = [self.histories.get(t.user_id, []) if t.user_id else [] for t in txns]
        batch = FraudBatch(
            features=torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)),
            amount=torch.tensor([float(t.amount) for t in txns], dtype=torch.float32),
            user_idx=torch.tensor([self.model.users.index_of(t.user_id) if t.user_id else 0
                                   for t in txns], dtype=torch.long),
            hist_idx=torch.from_numpy(history_matrix(hists, self.history_len)),
            item_idx=torch.tensor([self.index.get(t.item_id, 0) if t.item_id else 0
                                   for t in txns], dtype=torch.long),
            label=torch.zeros(len(txns)),
            bought=torch.from_numpy(self.bought.flags(
                np.asarray([t.user_id or "" for t in txns], dtype=object),
                np.asarray([t.item_id or "" for t in txns], dtype=object))))
        batch.validate(len(self.fraud_features))
        probs = self.model.fraud_probability(batch, self.table)
        return [float(p) for p in probs.tolist()]

    # ---- verification -----------------------------------------------------------------------

    def verify(self) -> None:
        """Refuse a version that cannot answer: non-finite tables or probe answers."""
        if self.n_items:
            self._verify_recommend()
        probe = FraudRequest.model_validate(
            {"amount": 1.0, "features": dict.fromkeys(self.fraud_features, 0.0)})
        (p,) = self.fraud_probabilities(self._features(probe), probe.transactions)
        if not 0.0 <= p <= 1.0:
            raise VersionRejectedError(f"probe fraud probability is {p}")

    def _verify_recommend(self) -> None:
        """A version with items must rank them (one without serves /fraud only)."""
        if not (torch.isfinite(self.table.vectors).all() and torch.isfinite(self.table.text).all()):
            raise VersionRejectedError("item table has non-finite values")
        probe_user = self.model.users.ids[0] if len(self.model.users) > 1 else "probe-user"
        cold = f"probe-{uuid.uuid4().hex}"  # a user no version knows
        probes = [RecommendRequest(user_id=probe_user, k=1, exclude_purchased=False),
                  RecommendRequest(user_id=cold, k=1, recent_item_ids=[self.item_ids[1]]),
                  RecommendRequest(user_id=cold, k=1)]
        for answer in self.recommend(probes):
            if not answer.items or not all(math.isfinite(i.score) for i in answer.items):
                raise VersionRejectedError(f"probe recommendation ({answer.strategy}) gave "
                                           f"{answer.items}")
