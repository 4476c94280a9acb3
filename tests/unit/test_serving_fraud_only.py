"""A version trained on fraud data alone (no items, e.g. the ULB card data) is served:
/fraud answers from it and /recommend says why it cannot, as a 503 with a JSON body."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.config import ServeConfig
from serving.errors import ErrorInfo, NoRecommenderError, status_of
from serving.item_cache import ItemVectorCache
from serving.loading import load_version
from serving.replica import ModelReplica
from serving.schemas import FraudRequest, RecommendRequest
from tests.support.published import publish, shop_model
from training.features.history import PurchaseHistory
from training.model import ModelConfig
from training.store import LocalStore

pytestmark = pytest.mark.unit

CFG = ModelConfig(encoder_init="tiny_random", dim=8, history_len=3)
TXN = {"txn_id": "t1", "amount": 12.5, "features": {"night": 1.0, "new_device": 0.0,
                                                    "distance": 3.0}}


def fraud_only_version(tmp_path: Path) -> tuple[LocalStore, str]:
    store = LocalStore(tmp_path / "store")
    model = shop_model(6, 0, CFG)
    return store, publish(store, model, PurchaseHistory(CFG.history_len), tmp_path / "v",
                          thresholds=(0.4, 0.6))


def test_a_fraud_only_version_loads_and_scores_transactions(tmp_path: Path) -> None:
    store, version = fraud_only_version(tmp_path)
    config = ServeConfig(store=str(store.root))
    predictor = load_version(store, version, config, ItemVectorCache(tmp_path / "cache"))
    assert predictor.n_items == 0
    (answer,) = predictor.fraud([FraudRequest.model_validate(TXN)])
    assert not isinstance(answer, ErrorInfo)
    assert 0.0 <= answer.fraud_probability <= 1.0 and answer.model_version == version


def test_recommend_on_a_fraud_only_version_is_a_503_naming_why(tmp_path: Path) -> None:
    store, version = fraud_only_version(tmp_path)
    replica = ModelReplica(ServeConfig(store=str(store.root), cache_dir="",
                                       poll_interval_s=60.0), "Recommender")
    try:
        assert replica.status().version == version
        (answer,) = replica.recommend([RecommendRequest(user_id="u1", k=3)])
        assert isinstance(answer, ErrorInfo)
        err = answer.to_exception()
        assert isinstance(err, NoRecommenderError) and status_of(err) == 503
        assert version in str(err) and "/fraud only" in str(err)
        (fraud,) = replica.fraud([FraudRequest.model_validate(TXN)])
        assert not isinstance(fraud, ErrorInfo) and fraud.model_version == version
    finally:
        replica.holder.stop()
