"""Canary and shadow serving on a real replica over a local store (no Ray): routing by a
stable user hash, shadow comparisons that never reach the client, the counts, the end of a
canary, and the CLI that starts it and promotes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.canary import bucket
from serving.config import ServeConfig
from serving.replica import ModelReplica
from serving.schemas import FraudRequest, RecommendRequest
from tests.support.published import FRAUD_FEATURES, perturbed, publish, shop_history, shop_model
from training.model import ModelConfig
from training.store import CheckpointMissingError, LocalStore
from training.store.canary import CanarySpec, read_canary, write_canary
from training.store.versions import main

pytestmark = pytest.mark.unit

CFG = ModelConfig(encoder_init="tiny_random", dim=8, history_len=3)
USERS = [f"u{i}" for i in range(12)] + [f"new{i}" for i in range(28)]


@pytest.fixture
def versions(tmp_path: Path) -> tuple[LocalStore, str, str]:
    """A store whose latest is v1, with v2 published beside it (not latest)."""
    store = LocalStore(tmp_path / "store")
    model = shop_model(12, 20, CFG)
    history = shop_history(model)
    v1 = publish(store, model, history, tmp_path)
    v2 = publish(store, perturbed(model, 1), history, tmp_path, parent=v1,
                 thresholds=(0.0, 0.0))
    store.promote(v1)
    return store, v1, v2


@pytest.fixture
def replica(versions: tuple[LocalStore, str, str], tmp_path: Path) -> Iterator[ModelReplica]:
    store = versions[0]
    config = ServeConfig(store=str(store.root), poll_interval_s=3600,
                         cache_dir=str(tmp_path / "cache"))
    replica = ModelReplica(config, "test")
    yield replica
    replica.shutdown()


def _follow(replica: ModelReplica) -> None:
    assert replica.canary is not None
    replica.canary.holder.check()


def test_a_canary_answers_its_share_of_users_and_each_user_sticks(
        versions: tuple[LocalStore, str, str], replica: ModelReplica) -> None:
    store, v1, v2 = versions
    assert {a.model_version for a in replica.recommend(
        [RecommendRequest(user_id=u, k=3) for u in USERS])} == {v1}  # no canary yet
    write_canary(store, CanarySpec(v2, fraction=0.5))
    _follow(replica)
    requests = [RecommendRequest(user_id=u, k=3) for u in USERS]
    for _ in range(2):  # the same users get the same version every time
        answers = replica.recommend(requests)
        assert [a.model_version for a in answers] == [
            v2 if bucket(u) < 0.5 else v1 for u in USERS]
    assert {a.model_version for a in answers} == {v1, v2}
    assert [a.user_id for a in answers] == USERS  # order kept across the two versions
    fraud = [FraudRequest.model_validate({"user_id": u, "amount": 10.0, "features": dict.fromkeys(
        FRAUD_FEATURES, 0.0)}) for u in USERS]
    assert [a.model_version for a in replica.fraud(fraud)] == [  # type: ignore[union-attr]
        v2 if bucket(u) < 0.5 else v1 for u in USERS]
    status = replica.status().canary
    assert status is not None and status["loaded"] and status["fraction"] == 0.5
    assert status["counts"]["canary_answers"] + status["counts"]["latest_answers"] == 3 * 40


def test_a_shadow_is_compared_never_served_and_an_ended_canary_is_unloaded(
        versions: tuple[LocalStore, str, str], replica: ModelReplica) -> None:
    store, v1, v2 = versions
    write_canary(store, CanarySpec(v2, fraction=1.0, mode="shadow"))
    _follow(replica)
    answers = replica.recommend([RecommendRequest(user_id=u, k=5) for u in USERS])
    assert {a.model_version for a in answers} == {v1}
    txn = {"amount": 10.0, "features": dict.fromkeys(FRAUD_FEATURES, 0.0)}
    scored = replica.fraud([FraudRequest.model_validate([txn, txn])])
    assert {a.model_version for a in scored} == {v1}  # type: ignore[union-attr]
    counts = replica.status().canary["counts"]  # type: ignore[index]
    assert counts["shadow_recommend"] == 40 and 0 < counts["shadow_recommend_overlap"] <= 40
    # v2 declines everything (thresholds 0, 0): decisions disagree unless v1 declines too.
    assert counts["shadow_fraud"] == 2 and 0 <= counts["shadow_fraud_agree"] <= 2
    write_canary(store, None)
    _follow(replica)
    assert replica.status().canary is None and replica.canary.holder.current is None  # type: ignore[union-attr]


def test_the_cli_starts_a_canary_and_promote_ends_it(
        versions: tuple[LocalStore, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    store, v1, v2 = versions
    base = ["--store", str(store.root)]
    assert main([*base, "canary", v2, "--fraction", "0.2"]) == 0
    assert read_canary(store) == CanarySpec(v2, 0.2, "canary")
    capsys.readouterr()
    assert main([*base, "list"]) == 0
    assert "canary 0.2" in capsys.readouterr().out
    assert main([*base, "canary"]) == 2  # neither a version nor --off
    assert main([*base, "promote", v2]) == 0
    assert read_canary(store) is None and store.latest().version == v2  # type: ignore[union-attr]
    assert main([*base, "canary", v1, "--shadow"]) == 0
    assert read_canary(store) == CanarySpec(v1, 0.05, "shadow")
    assert main([*base, "canary", "--off"]) == 0 and read_canary(store) is None
    rejected = store.record_rejected({"m": b"x"}, {}, v2, reason="worse").version
    with pytest.raises(CheckpointMissingError, match="only a published version"):
        write_canary(store, CanarySpec(rejected))
