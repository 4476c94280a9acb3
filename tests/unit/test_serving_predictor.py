"""Loading a published version and answering from it, against the model's own API (tiny
random encoder, local store, no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from serving.config import ServeConfig
from serving.errors import ErrorInfo, VersionRejectedError
from serving.item_cache import ItemVectorCache
from serving.loading import CatalogueError, load_version, read_catalogue
from serving.predictor import Predictor, Thresholds
from serving.schemas import FraudRequest, RecommendRequest
from tests.support.published import Reference, perturbed, publish, shop_history, shop_model
from training.model import (
    IdMap,
    ModelConfig,
    ModelFormatError,
    ShopStreamModel,
    model_from_state,
    model_state,
    project_titles,
)
from training.store import CheckpointCorruptError, LocalStore
from training.update.bundle import ITEM_TEXT_FILE, ITEM_TEXT_TENSOR, read_item_text
from training.update.ranking_terms import COLD_FALLBACK_WEIGHT

pytestmark = pytest.mark.unit

CFG = ModelConfig(encoder_init="tiny_random", dim=8, history_len=3)
NEW = [("n1", "fresh linen towel"), ("n2", "glass water bottle")]
TXNS = [{"txn_id": f"t{i}", "user_id": f"u{i}" if i % 2 else None, "item_id": f"i{i}",
         "amount": 1.0 + 9.0 * i, "features": {"night": float(i % 2), "new_device": 1.0,
                                                "distance": float(i)}} for i in range(8)]


@pytest.fixture(scope="module")
def model() -> ShopStreamModel:
    return shop_model(12, 20, CFG)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def load(store: LocalStore, version: str, tmp_path: Path, catalogue: str | None = None,
         cache: ItemVectorCache | None = None) -> Predictor:
    config = ServeConfig(store=str(store.root), catalogue=catalogue)
    return load_version(store, version, config, cache or ItemVectorCache(tmp_path / "cache"))


def catalogue_file(tmp_path: Path) -> str:
    path = tmp_path / "items.parquet"
    pd.DataFrame({"item_id": ["i3", "n1", "n2", "n1", ""],
                  "title": ["renamed", NEW[0][1], NEW[1][1], "dup", "no id"]}).to_parquet(path)
    return str(path)


@pytest.mark.parametrize("terms", [(0.0, 0.0, 0.0), (0.3, 1.0, 3.0),
                                   (0.3, 1.0, COLD_FALLBACK_WEIGHT)],
                         ids=["model", "ranking_terms", "cold_fallback"])
def test_rankings_match_the_model_for_every_strategy(model: ShopStreamModel, store: LocalStore,
                                                     tmp_path: Path,
                                                     terms: tuple[float, float, float]) -> None:
    # With the ranking-time terms an update chose, serving ranks exactly as evaluation does.
    model = model_from_state(*model_state(model)).eval()
    model.set_ranking_terms(*terms)
    history = shop_history(model)
    version = publish(store, model, history, tmp_path, thresholds=(0.4, 0.6))
    predictor = load(store, version, tmp_path, catalogue_file(tmp_path))
    ref = Reference(version, model, history, (0.4, 0.6), NEW)
    assert predictor.n_items == 22 and predictor.item_ids[-2:] == ["n1", "n2"]
    requests = [RecommendRequest(user_id="u1", k=5),
                RecommendRequest(user_id="u2", k=22, exclude_purchased=False),
                RecommendRequest(user_id="u4", recent_item_ids=["i7", "i8"], k=4),
                RecommendRequest(user_id="new", recent_item_ids=["i1", "nope"], k=6),
                RecommendRequest(user_id="new", k=7),
                RecommendRequest(user_id="new", recent_item_ids=["i2"], k=22,
                                 exclude_purchased=True)]
    answers = predictor.recommend(requests)
    for req, answer in zip(requests, answers):
        strategy, expected = ref.recommend(req.user_id, [i for i in req.recent_item_ids
                                                         if i != "nope"],
                                           k=req.k, exclude=req.exclude_purchased)
        assert answer.model_version == version and answer.strategy == strategy
        assert [i.item_id for i in answer.items] == expected
    assert len(answers[1].items) == 22 and {"n1", "n2"} <= {i.item_id for i in answers[1].items}
    assert len(answers[5].items) == 21  # everything but the excluded recent item
    titles = {i.item_id: i.title for i in answers[1].items}
    assert titles["n1"] == NEW[0][1] and titles["i3"] == model.item_titles[4]


def test_item_table_matches_the_model_vectors(model: ShopStreamModel, store: LocalStore,
                                              tmp_path: Path) -> None:
    version = publish(store, model, shop_history(model), tmp_path)
    predictor = load(store, version, tmp_path, catalogue_file(tmp_path))
    with torch.no_grad():
        known = model.catalogue_matrix()[1:]
        cold = model.item_vectors_from_titles([t for _, t in NEW])
    torch.testing.assert_close(predictor.candidates, torch.cat([known, cold]), atol=1e-5,
                               rtol=1e-5)


def test_fraud_probabilities_and_decisions_follow_the_version(model: ShopStreamModel,
                                                              store: LocalStore,
                                                              tmp_path: Path) -> None:
    history = shop_history(model)
    ref = Reference("", model, history, (0.5, 0.9))
    probs = sorted(ref.fraud(TXNS))
    thresholds = ((probs[2] + probs[3]) / 2, (probs[5] + probs[6]) / 2)
    version = publish(store, model, history, tmp_path, thresholds=thresholds)
    predictor = load(store, version, tmp_path)
    listed = FraudRequest.model_validate(TXNS)
    single = FraudRequest.model_validate(TXNS[3])
    (many, one) = predictor.fraud([listed, single])
    expected = ref.fraud(TXNS)
    assert not isinstance(many, ErrorInfo) and not isinstance(one, ErrorInfo)
    assert [r.fraud_probability for r in many.results] == pytest.approx(expected, abs=1e-6)
    decisions = [r.decision for r in many.results]
    rule = Thresholds(*thresholds, basis="")
    assert decisions == [rule.decide(p) for p in expected]
    assert decisions.count("approve") == 3 and decisions.count("decline") == 2
    assert one.fraud_probability == pytest.approx(expected[3], abs=1e-6)
    assert one.model_version == version and one.thresholds.review == thresholds[0]


def test_bad_features_fail_only_their_own_request(model: ShopStreamModel, store: LocalStore,
                                                  tmp_path: Path) -> None:
    predictor = load(store, publish(store, model, shop_history(model), tmp_path), tmp_path)
    missing = FraudRequest.model_validate([TXNS[0], {"amount": 1.0, "features": {"night": 1}}])
    unknown = FraudRequest.model_validate({**TXNS[1], "features": {
        **TXNS[1]["features"], "colour": 3.0}})
    answers = predictor.fraud([missing, FraudRequest.model_validate(TXNS[2]), unknown])
    assert answers[0] == ErrorInfo("invalid_request", answers[0].message,  # type: ignore[union-attr]
                                   "transactions[1].features.new_device")
    assert isinstance(answers[2], ErrorInfo) and answers[2].field == "features.colour"
    assert not isinstance(answers[1], ErrorInfo) and answers[1].txn_id == "t2"


def test_a_version_without_thresholds_uses_the_defaults(model: ShopStreamModel,
                                                        store: LocalStore,
                                                        tmp_path: Path) -> None:
    version = publish(store, model, shop_history(model), tmp_path, thresholds=None)
    predictor = load(store, version, tmp_path)
    assert (predictor.thresholds.review, predictor.thresholds.decline) == (0.5, 0.9)
    assert predictor.thresholds.basis.startswith("default")


@pytest.mark.parametrize(("thresholds", "match"), [
    ((0.8, 0.2), "review 0.8 is above decline 0.2"), ((-0.1, 0.5), "review"),
    ((0.1, float("nan")), "decline")])
def test_invalid_thresholds_reject_the_version(model: ShopStreamModel, store: LocalStore,
                                               tmp_path: Path, thresholds: tuple[float, float],
                                               match: str) -> None:
    meta = {"fraud_thresholds": {"review": thresholds[0],
                                 "decline": None if thresholds[1] != thresholds[1]
                                 else thresholds[1], "basis": "x"}}
    version = publish(store, model, shop_history(model), tmp_path, thresholds=None,
                      extra_meta=meta)
    with pytest.raises(VersionRejectedError, match=match):
        load(store, version, tmp_path)


def test_a_corrupt_file_fails_its_checksum(model: ShopStreamModel, store: LocalStore,
                                           tmp_path: Path) -> None:
    version = publish(store, model, shop_history(model), tmp_path)
    history = store.root / "versions" / version / "history.parquet"
    history.write_bytes(history.read_bytes()[:-3] + b"xyz")
    with pytest.raises(CheckpointCorruptError, match="history.parquet"):
        load(store, version, tmp_path)


def test_non_finite_weights_fail_verification(model: ShopStreamModel, store: LocalStore,
                                              tmp_path: Path) -> None:
    broken = perturbed(model, seed=3)
    with torch.no_grad():
        broken.item_emb.weight[4, 0] = float("nan")
    version = publish(store, broken, shop_history(model), tmp_path)
    with pytest.raises(VersionRejectedError, match="non-finite"):
        load(store, version, tmp_path)


def test_title_vectors_are_cached_per_text_tower(model: ShopStreamModel, store: LocalStore,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import serving.item_table as item_table_module
    import serving.loading as loading_module

    calls: list[int] = []
    real = item_table_module.project_titles

    def counting(m: ShopStreamModel, titles: list[str]) -> torch.Tensor:
        calls.append(len(titles))
        return real(m, titles)

    monkeypatch.setattr(item_table_module, "project_titles", counting)
    # Versions published before title vectors were: every title goes through the cache.
    monkeypatch.setattr(loading_module, "read_item_text", lambda folder, model: None)
    cache = ItemVectorCache(tmp_path / "cache")
    first = publish(store, model, shop_history(model), tmp_path)
    a = load(store, first, tmp_path, cache=cache)
    second = publish(store, perturbed(model, seed=1), shop_history(model), tmp_path,
                     parent=first)
    b = load(store, second, tmp_path, cache=cache)  # same text tower: reused
    assert calls == [21]
    torch.testing.assert_close(a.table.text, b.table.text)
    assert not torch.equal(a.table.vectors, b.table.vectors)  # id embeddings changed
    for path in (tmp_path / "cache").glob("*.safetensors"):
        path.write_bytes(b"garbage")
    c = load(store, first, tmp_path, cache=cache)
    assert calls == [21, 21]  # an unreadable cache file is recomputed, not trusted
    torch.testing.assert_close(a.table.vectors, c.table.vectors)


def test_catalogue_reading(tmp_path: Path) -> None:
    known = IdMap(["i1", "i2"])
    path = tmp_path / "c.parquet"
    pd.DataFrame({"item_id": ["i1", "x1", "x2", "x1", None], "title": ["t", "a", None, "b", "c"],
                  "price": np.ones(5)}).to_parquet(path)
    assert read_catalogue(str(path), known) == (["x1"], ["a"])
    with pytest.raises(CatalogueError, match="cannot read"):
        read_catalogue(str(tmp_path / "missing.parquet"), known)
    pd.DataFrame({"item_id": [1, 2], "title": ["a", "b"]}).to_parquet(path)
    with pytest.raises(CatalogueError, match="item_id must be strings"):
        read_catalogue(str(path), known)
    pd.DataFrame({"id": ["a"], "title": ["b"]}).to_parquet(path)
    with pytest.raises(CatalogueError, match="item_id"):
        read_catalogue(str(path), known)


def test_published_title_vectors_spare_the_encoder_for_known_items(
        model: ShopStreamModel, store: LocalStore, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import serving.item_table as item_table_module
    import serving.loading as loading_module

    history = shop_history(model)
    version = publish(store, model, history, tmp_path)
    published = store.load(version, tmp_path / "raw")
    assert ITEM_TEXT_FILE in published.files
    torch.testing.assert_close(read_item_text(tmp_path / "raw", model),
                               project_titles(model, list(model.item_titles)))

    calls: list[int] = []
    real = item_table_module.project_titles
    monkeypatch.setattr(item_table_module, "project_titles",
                        lambda m, titles: calls.append(len(titles)) or real(m, titles))
    fast = load(store, version, tmp_path, catalogue_file(tmp_path), ItemVectorCache(None))
    assert calls == [len(NEW)]  # only the catalogue's two new titles were encoded
    monkeypatch.setattr(loading_module, "read_item_text", lambda folder, m: None)
    slow = load(store, version, tmp_path, catalogue_file(tmp_path), ItemVectorCache(None))
    assert calls == [len(NEW), len(model.item_titles) + len(NEW)]
    torch.testing.assert_close(fast.table.vectors, slow.table.vectors)
    torch.testing.assert_close(fast.table.text, slow.table.text)


@pytest.mark.parametrize("tensor, message", [
    (torch.zeros(3, 8), "expected shape"),
    (torch.full((21, 8), float("nan")), "non-finite"),
])
def test_a_bad_title_vector_file_is_a_named_format_error(model: ShopStreamModel, tmp_path: Path,
                                                         tensor: torch.Tensor,
                                                         message: str) -> None:
    save_file({ITEM_TEXT_TENSOR: tensor}, str(tmp_path / ITEM_TEXT_FILE))
    assert len(model.item_titles) == 21
    with pytest.raises(ModelFormatError, match=f"{ITEM_TEXT_FILE}: .*{message}"):
        read_item_text(tmp_path, model)
    (tmp_path / ITEM_TEXT_FILE).write_bytes(b"garbage")
    with pytest.raises(ModelFormatError, match=ITEM_TEXT_FILE):
        read_item_text(tmp_path, model)


def test_a_version_with_fraud_trees_serves_the_blended_score(model: ShopStreamModel,
                                                            store: LocalStore,
                                                            tmp_path: Path) -> None:
    from training.update.fraud_blend import fit_trees

    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"txn_id": [f"x{i}" for i in range(300)], "user_id": None,
                         "item_id": None, "ts": pd.Timestamp("2024-01-01", tz="UTC"),
                         "amount": rng.uniform(1, 80, 300), "night": rng.integers(0, 2, 300),
                         "new_device": 1.0, "distance": rng.uniform(0, 8, 300)})
    rows["is_fraud"] = rows["amount"] > 40
    with_trees = model_from_state(*model_state(model))
    history = shop_history(with_trees)
    with_trees.set_fraud_trees(fit_trees(with_trees, rows, history, 0), 0.75)
    version = publish(store, with_trees, history, tmp_path)
    predictor = load(store, version, tmp_path)
    (answer,) = predictor.fraud([FraudRequest.model_validate(TXNS)])
    assert not isinstance(answer, ErrorInfo)
    expected = Reference("", with_trees, history, (0.5, 0.9)).fraud(TXNS)
    neural = Reference("", model, history, (0.5, 0.9)).fraud(TXNS)
    assert [r.fraud_probability for r in answer.results] == pytest.approx(expected, abs=1e-6)
    assert max(abs(a - b) for a, b in zip(expected, neural)) > 0.05


def test_served_trees_read_the_users_purchase_history_like_evaluation(
        model: ShopStreamModel, store: LocalStore, tmp_path: Path) -> None:
    """Fraud iff the account never bought anything: only the history flags tell, and the
    replica (its own index over the version's profile) scores as evaluation does."""
    from training.update.fraud_blend import fit_trees

    rng = np.random.default_rng(1)
    stranger = rng.random(400) < 0.25
    rows = pd.DataFrame({"txn_id": [f"x{i}" for i in range(400)],
                         "user_id": np.where(stranger, [f"new{i}" for i in range(400)],
                                             [f"u{i % 12}" for i in range(400)]),
                         "item_id": None, "ts": pd.Timestamp("2024-01-01", tz="UTC"),
                         "amount": rng.uniform(1, 80, 400), "night": rng.integers(0, 2, 400),
                         "new_device": 1.0, "distance": rng.uniform(0, 8, 400),
                         "is_fraud": stranger})
    with_trees = model_from_state(*model_state(model))
    history = shop_history(with_trees)
    trees = fit_trees(with_trees, rows, history, 0)
    assert trees is not None and trees.uses_history
    with_trees.set_fraud_trees(trees, 1.0)
    predictor = load(store, publish(store, with_trees, history, tmp_path), tmp_path)
    (answer,) = predictor.fraud([FraudRequest.model_validate(TXNS)])
    assert not isinstance(answer, ErrorInfo)
    served = [r.fraud_probability for r in answer.results]
    assert served == pytest.approx(Reference("", with_trees, history, (0.5, 0.9)).fraud(TXNS),
                                   abs=1e-6)
    known = [bool(t["user_id"]) for t in TXNS]  # odd rows name a user of the history
    assert max(p for p, k in zip(served, known) if k) < 0.2 < min(
        p for p, k in zip(served, known) if not k)


def test_a_load_logs_where_its_time_went(model: ShopStreamModel, store: LocalStore,
                                         tmp_path: Path, caplog: pytest.LogCaptureFixture
                                         ) -> None:
    version = publish(store, model, shop_history(model), tmp_path)
    with caplog.at_level("INFO", logger="serving.loading"):
        load(store, version, tmp_path)
    (line,) = [r.getMessage() for r in caplog.records if "loaded in" in r.getMessage()]
    phases = dict(part.rsplit(" ", 2)[:2] for part in line.split(": ", 1)[1].split(", "))
    assert list(phases) == ["files", "model", "history", "predictor", "verify"]
    total = float(line.split("loaded in ")[1].split(" s")[0])
    assert 0.0 < sum(float(v) for v in phases.values()) <= total + 0.05
