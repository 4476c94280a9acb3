"""Published versions in seconds, for the serving tests, the latency benchmark and demos.

    model = shop_model(n_users=50, n_items=40)
    version = publish(store, model, shop_history(model), tmp_dir, thresholds=(0.3, 0.7))

The model is untrained (random heads over the configured encoder) but complete: a real
:class:`ShopStreamModel`, written with :func:`training.update.bundle.write_bundle` and published
with :meth:`CheckpointStore.publish`, exactly as ``training.incremental`` does.
:func:`perturbed` derives a different next version that keeps the text tower, as a version
trained with a frozen encoder would.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from training.evaluation.baselines import PopularityRecommender
from training.evaluation.evaluate import fraud_scores, rank_pool
from training.features.examples import fraud_examples
from training.features.history import PurchaseHistory
from training.features.replay import ReplayBuffer
from training.model import IdMap, ModelConfig, ShopStreamModel, model_from_state, model_state
from training.store import CheckpointStore
from training.update.bundle import write_bundle

BRANDS = ("acme", "nordic", "solis", "vela", "kumo", "tara", "orbit", "lumen")
ATTRIBUTES = ("red", "wooden", "large", "organic", "vintage", "silver", "soft", "compact")
NOUNS = ("lamp", "mug", "chair", "scarf", "teapot", "candle", "notebook", "basket", "clock",
         "blanket", "vase", "backpack")
FRAUD_FEATURES = ("night", "new_device", "distance")


def item_title(index: int) -> str:
    """A deterministic shop-like title; unique per index."""
    return (f"{BRANDS[index % len(BRANDS)]} {ATTRIBUTES[(index // 8) % len(ATTRIBUTES)]} "
            f"{NOUNS[(index // 64) % len(NOUNS)]} no {index}")


def shop_model(n_users: int, n_items: int, cfg: ModelConfig | None = None,
               fraud_features: tuple[str, ...] = FRAUD_FEATURES, seed: int = 0
               ) -> ShopStreamModel:
    """Users ``u0..``, items ``i0..`` titled by :func:`item_title`; eval mode."""
    base = cfg or ModelConfig(dim=32, history_len=5)
    cfg = dataclasses.replace(base, fraud_features=tuple(fraud_features), seed=seed)
    users = IdMap(f"u{i}" for i in range(n_users))
    items = IdMap(f"i{i}" for i in range(n_items))
    model = ShopStreamModel(cfg, users, items, [""] + [item_title(i) for i in range(n_items)])
    gen = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():  # ids strong enough that rankings differ between users
        for emb in (model.user_emb, model.item_emb):
            emb.weight.copy_(torch.randn(emb.weight.shape, generator=gen) * 0.5)
            emb.weight[0].zero_()
    model.set_fraud_stats(np.zeros(len(fraud_features) + 1), np.ones(len(fraud_features) + 1))
    return model.eval()


def perturbed(model: ShopStreamModel, seed: int, scale: float = 0.5) -> ShopStreamModel:
    """A copy with new id embeddings and fraud head, same text tower and vocabulary."""
    tensors, meta = model_state(model)
    gen = torch.Generator().manual_seed(seed)
    for name, value in tensors.items():
        if name.startswith(("user_emb", "item_emb", "fraud_mlp", "user_mlp")):
            tensors[name] = value + torch.randn(value.shape, generator=gen) * scale
    for name in ("user_emb.weight", "item_emb.weight"):
        tensors[name][0] = 0.0
    return model_from_state(tensors, meta)


def shop_history(model: ShopStreamModel, per_user: int = 3, seed: int = 0,
                 popular: int = 5) -> PurchaseHistory:
    """Each user's last ``per_user`` purchases; half of them among the first ``popular``
    items, so popularity has a clear order."""
    rng = np.random.default_rng(seed)
    users = model.users.ids
    items = model.items.ids
    rows = []
    start = pd.Timestamp("2024-01-01", tz="UTC")
    for u, user in enumerate(users):
        for n in range(per_user):
            pick = int(rng.integers(min(popular, len(items)))) if rng.random() < 0.5 \
                else int(rng.integers(len(items)))
            rows.append((user, items[pick], start + pd.Timedelta(minutes=u * per_user + n)))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "ts"])
    frame["ts"] = frame["ts"].astype("datetime64[us, UTC]")
    # Through update(), so the purchase profile (repeat features, popularity) is built too.
    return PurchaseHistory(model.cfg.history_len).update(frame.assign(event="purchase"))


def publish(store: CheckpointStore, model: ShopStreamModel, history: PurchaseHistory,
            workdir: Path, *, thresholds: tuple[float, float] | None = (0.5, 0.9),
            window: str = "2024-01-01", parent: str | None = None,
            extra_meta: dict[str, Any] | None = None) -> str:
    """Publish ``model`` as a new version (no optimizer state, empty replay); returns its id.
    ``thresholds=None`` leaves ``fraud_thresholds`` out of the meta."""
    folder = Path(workdir) / f"bundle-{len(list(Path(workdir).glob('bundle-*')))}"
    files, meta = write_bundle(folder, model, None, ReplayBuffer(100, 0), history)
    meta.update({"window": window, "source": "tests.support.published"})
    if thresholds is not None:
        meta["fraud_thresholds"] = {"review": thresholds[0], "decline": thresholds[1],
                                    "basis": "set by tests.support.published"}
    meta.update(extra_meta or {})
    return store.publish(files, meta, parent).version


class Reference:
    """Expected answers of one version, computed with the model's public API and
    ``training.evaluation.evaluate`` (independently of :mod:`serving.predictor`), for tests to
    compare
    served answers with. Histories and recent items must use items the model knows."""

    def __init__(self, version: str, model: ShopStreamModel, history: PurchaseHistory,
                 thresholds: tuple[float, float],
                 new_items: list[tuple[str, str]] | None = None,
                 last_update: pd.DataFrame | None = None) -> None:
        self.version = version
        self.model = model.eval()
        self.history = history
        # The purchases of the history's last update (what popularity counts); its whole
        # frame for a history built in one update, as :func:`shop_history` builds it.
        self.last_update = history.frame.assign(event="purchase") if last_update is None \
            else last_update
        self.thresholds = thresholds
        new = list(new_items or [])
        self.item_ids = model.items.ids + [i for i, _ in new]
        with torch.no_grad():
            self.matrix = torch.cat([model.catalogue_matrix()[1:],
                                     model.item_vectors_from_titles([t for _, t in new])])

    def recommend(self, user_id: str, recent: list[str] | None = None, k: int = 5,
                  exclude: bool = False) -> tuple[str, list[str]]:
        """(strategy, item ids) the service should answer."""
        known = user_id in self.model.users
        past = self.history.last_items([user_id])[0] if known else []
        query = (past + list(recent or []))[-self.model.cfg.history_len:]
        banned = set(past) | set(recent or []) if exclude else set()
        if not known and not query:
            # The popularity baseline fitted on the version's last update, then every item it
            # never saw bought, by id (the baseline's tie rule).
            popular = PopularityRecommender().fit(self.last_update).recommend(
                [user_id], len(self.item_ids))[0]
            order = popular + sorted(set(self.item_ids) - set(popular))
            return "popularity", [i for i in order if i not in banned][:k]
        # Ranked by evaluation's own function: serving must agree with it exactly.
        order = rank_pool(self.model, [user_id], [query], self.history, self.item_ids,
                          self.matrix, len(self.item_ids))[0].tolist()
        picked = [self.item_ids[i] for i in order if self.item_ids[i] not in banned][:k]
        return ("personal" if known else "recent_items"), picked

    def fraud(self, txns: list[dict[str, Any]]) -> list[float]:
        """Probabilities of request-shaped transactions, through
        ``training.evaluation.evaluate``."""
        features = list(self.model.cfg.fraud_features)
        frame = pd.DataFrame({
            "txn_id": [str(i) for i in range(len(txns))],
            "user_id": [t.get("user_id") for t in txns],
            "item_id": [t.get("item_id") for t in txns],
            "ts": pd.Timestamp("2024-02-01", tz="UTC"),
            "amount": [float(t["amount"]) for t in txns],
            "is_fraud": False,
            **{f: [float(t["features"][f]) for t in txns] for f in features}})
        examples = fraud_examples(self.model, frame, self.history)
        return [float(p) for p in fraud_scores(self.model, examples)]

    def decision(self, probability: float) -> str:
        review, decline = self.thresholds
        return "decline" if probability >= decline else (
            "review" if probability >= review else "approve")


def wait_serving(url: str, version: str, timeout_s: float = 180.0,
                 headers: dict[str, str] | None = None, in_a_row: int = 4) -> float:
    """Seconds until ``url``'s /healthz is 200 with every deployment on ``version`` in
    ``in_a_row`` answers running (each answer comes from one replica of each deployment, and
    HAProxy spreads sequential requests over the replicas); raises TimeoutError with the
    last answer after ``timeout_s``."""
    import httpx  # a dev dependency: tests and benchmarks only

    started = time.monotonic()
    body: Any = None
    agreed = 0
    with httpx.Client(base_url=url, timeout=10.0, headers=headers) as client:
        while time.monotonic() - started < timeout_s:
            try:
                response = client.get("/healthz")
                body = response.json()
                if response.status_code == 200 and body.get("deployments") is None:
                    raise ValueError(f"{url}/healthz shows no per-deployment detail without "
                                     "the bearer token: pass it in headers")
                on_version = response.status_code == 200 and all(
                    d["version"] == version for d in body["deployments"].values())
                agreed = agreed + 1 if on_version else 0
                if agreed >= in_a_row:
                    return time.monotonic() - started
            except httpx.HTTPError as exc:
                body, agreed = repr(exc), 0
            time.sleep(0.05 if agreed else 0.2)
    raise TimeoutError(f"{url} not serving {version} after {timeout_s} s: {body}")
