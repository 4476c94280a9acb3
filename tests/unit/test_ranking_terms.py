"""The ranking-time terms (own-item bonus, purchase-count weight): what they add, how
held-out rows choose them, and that they travel with the saved model; and id dropout,
which trains the user tower for id-less (cold) users."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tests.unit.tiny_shop import TINY, tiny_window
from training.cli import ConfigError
from training.data.schema import WindowData
from training.evaluation.baselines import PopularityRecommender, RepeatThenPopular
from training.evaluation.evaluate import candidate_matrix, rank_pool
from training.features.examples import WindowExamples, iter_batches
from training.features.history import PurchaseHistory
from training.features.profile import POPULARITY_FEATURES, REPEAT_FEATURES
from training.fit.loop import init_model
from training.incremental_config import COUNT_WEIGHT_GRID, REPEAT_BONUS_GRID, IncrementalConfig
from training.model import (
    IdMap,
    ModelConfig,
    RecBatch,
    ShopStreamModel,
    load_model,
    save_model,
)
from training.model.ranking import id_ranks
from training.update.ranking_terms import COLD_FALLBACK_WEIGHT, MIN_COLD_USERS, choose_ranking_terms

pytestmark = pytest.mark.unit

TITLES = {"x": "red cup", "y": "blue pot", "z": "green jar", "w": "white bowl"}


def _model() -> ShopStreamModel:
    cfg = ModelConfig(encoder_init="tiny_random", dim=8, history_len=3, repeat_items=4,
                      dropout=0.0, text_cache_size=0)
    model = ShopStreamModel(cfg, IdMap(), IdMap(), [""])
    model.extend_vocab(["a", "b"], list(TITLES), TITLES)
    return model.eval()


def _buys(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                         "ts": pd.to_datetime([r[2] for r in rows], utc=True).astype(
                             "datetime64[us, UTC]"),
                         "event": "purchase", "quantity": 1, "price": 1.0})


def _window(rows: list[tuple[str, str, str]]) -> WindowData:
    items = pd.DataFrame({"item_id": list(TITLES), "title": list(TITLES.values()),
                          "category": "x", "price": 1.0,
                          "first_seen": pd.Series([pd.Timestamp("2020-01-01", tz="UTC")] * 4
                                                  ).astype("datetime64[us, UTC]")})
    return WindowData("w1", items, _buys(rows), pd.DataFrame())


HISTORY = PurchaseHistory(3).update(_buys([("a", "z", "2020-01-01"), ("a", "z", "2020-01-02"),
                                           ("b", "y", "2020-01-03")]))


def test_the_terms_lift_own_items_and_counts_only() -> None:
    model = _model()
    pool = torch.zeros(3, 8)
    user = torch.zeros(2, 8)
    pop = torch.zeros(3, len(POPULARITY_FEATURES))
    pop[1, POPULARITY_FEATURES.index("log_count_last_update")] = 2.0
    pop[2, POPULARITY_FEATURES.index("log_count_last_update")] = 1.0
    pop[1, POPULARITY_FEATURES.index("log_count_decayed")] = 5.0  # not a ranking-time term
    rep_pos = torch.tensor([[2, -1], [-1, -1]])
    feats = torch.zeros(2, 2, len(REPEAT_FEATURES))
    feats[0, 0, REPEAT_FEATURES.index("log_count")] = 4.0
    feats[0, 0, REPEAT_FEATURES.index("share")] = 9.0  # not a ranking-time term
    before = model.pool_scores(user, pool, pop, rep_pos, feats)
    model.set_ranking_terms(3.0, 0.5, 0.2)
    after = model.pool_scores(user, pool, pop, rep_pos, feats)
    lift = (after - before) * model.cfg.temperature
    # Warm user 0: own item z gets bonus 3 + 0.5 * own count 4 (not its last-update count);
    # item y 0.5 * its last-update count 2. Cold user 1 (no own item): the cold weight 0.2.
    assert lift[0].tolist() == pytest.approx([0.0, 1.0, 5.0])
    assert lift[1].tolist() == pytest.approx([0.0, 0.4, 0.2])


def _strict_case(cold_weight: float, pool_rank: torch.Tensor | None = None,
                 counts: tuple[float, ...] = (200.0, 199.0, 5.0, 5.0),
                 cold_ties: str = "item_id") -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of a cold and a warm user over 4 items bought ``counts`` times in the last
    update, whose towers prefer the second of each pair by their whole range (2)."""
    model = _model()
    model.set_ranking_terms(10.0, 1.0, cold_weight, cold_ties)
    pool = torch.zeros(4, 8)
    pool[:, 0] = torch.tensor([-1.0, 1.0, -1.0, 1.0])
    users = torch.zeros(2, 8)
    users[:, 0] = 1.0
    pop = torch.log1p(torch.tensor(counts))[:, None].repeat(
        1, len(POPULARITY_FEATURES))
    rep_pos = torch.tensor([[-1], [2]])  # the warm user (row 1) bought the third item
    feats = torch.zeros(2, 1, len(REPEAT_FEATURES))
    feats[1, 0, REPEAT_FEATURES.index("log_count")] = 1.0
    scores = model.pool_scores(users, pool, pop, rep_pos, feats, pool_rank)
    return scores.argsort(dim=1, descending=True), scores


def test_the_cold_weights_bound_is_the_popularity_order_ties_by_item_id_not_towers() -> None:
    order, scores = _strict_case(COLD_FALLBACK_WEIGHT)
    assert torch.isfinite(scores).all()
    # Cold user: 200 before 199 although the towers prefer 199 by 2 (a count gap of 0.005
    # in log count, which no finite weight under 400 outweighs); the equal counts (5, 5)
    # in pool order although the towers prefer the fourth item...
    assert order[0].tolist() == [0, 1, 2, 3]
    # ... or by item id, the popularity baseline's rule, when the pool's ids are given:
    # ids "d", "c", "b", "a" put the fourth item (id "a") first of the tie.
    by_id = _strict_case(COLD_FALLBACK_WEIGHT, id_ranks(["d", "c", "b", "a"]))[0]
    assert by_id[0].tolist() == [0, 1, 3, 2]
    assert _strict_case(COLD_FALLBACK_WEIGHT, id_ranks(["a", "b", "c", "d"]))[0][0].tolist() \
        == [0, 1, 2, 3]
    # With cold_ties=model the towers break the tie, whatever the ids.
    assert _strict_case(COLD_FALLBACK_WEIGHT, id_ranks(["a", "b", "c", "d"]),
                        cold_ties="model")[0][0].tolist() == [0, 1, 3, 2]
    # Items nobody bought have no place in the baseline's list: the towers order them, and
    # with nothing bought at all the whole list is the towers'.
    unbought = _strict_case(COLD_FALLBACK_WEIGHT, id_ranks(["a", "b", "c", "d"]),
                            (200.0, 199.0, 0.0, 0.0))[0]
    assert unbought[0].tolist() == [0, 1, 3, 2]
    nothing = _strict_case(COLD_FALLBACK_WEIGHT, id_ranks(["a", "b", "c", "d"]),
                           (0.0, 0.0, 0.0, 0.0))[0]
    assert nothing[0].tolist()[:2] in ([1, 3], [3, 1])
    # The warm user keeps the blend: own item (bonus 10) first, then the towers' pick.
    assert order[1].tolist()[:2] == [2, 1]
    # Below the bound the towers move the near-tie: the blend, not the strict order.
    assert _strict_case(COUNT_WEIGHT_GRID[-1])[0][0].tolist()[:2] == [1, 0]


@pytest.mark.parametrize("tied", [False, True])
def test_a_cold_user_at_the_fallback_gets_the_popularity_baselines_list(tied: bool) -> None:
    # Tied: w and y are bought once each; the model's table holds y before w, the baseline
    # puts the smaller id (w) first, and so must the fallback.
    last = [("d", "w" if tied else "z", "2020-01-06"), ("e", "y", "2020-01-06")]
    if not tied:
        last.append(("c", "z", "2020-01-06"))
    buys = _buys([("c", "x", "2020-01-05"), ("d", "x", "2020-01-05"), ("e", "x", "2020-01-06"),
                  *last])
    model = _model()
    model.set_ranking_terms(0.0, 0.0, COLD_FALLBACK_WEIGHT)
    history = PurchaseHistory(3).update(buys)
    candidates, matrix = candidate_matrix(model, _window([("new", "y", "2020-02-01")]))
    ranked = rank_pool(model, ["new"], [["w"]], history, candidates, matrix, k=4)
    popular = PopularityRecommender().fit(buys).recommend(["new"], 4)[0]
    assert popular == (["x", "w", "y"] if tied else ["x", "z", "y"])  # only bought items
    assert [candidates[i] for i in ranked[0]] == [*popular, "z" if tied else "w"]


def test_the_large_end_ranks_own_items_in_repeat_then_populars_order() -> None:
    # a bought z twice, then x, then w; others made x the most bought item of the last
    # update. Repeat-then-popular: z (count 2), w (count 1, more recent), x, then y.
    model = _model()
    history = PurchaseHistory(3).update(_buys([
        ("a", "z", "2020-01-01"), ("a", "z", "2020-01-02"), ("a", "x", "2020-01-03"),
        ("a", "w", "2020-01-04")])).update(_buys([
            ("c", "x", "2020-01-05"), ("d", "x", "2020-01-05"), ("e", "x", "2020-01-06"),
            ("c", "y", "2020-01-06")]))
    candidates, matrix = candidate_matrix(model, _window([("a", "y", "2020-02-01")]))
    model.set_ranking_terms(REPEAT_BONUS_GRID[-1], COUNT_WEIGHT_GRID[-1], 0.0)
    ranked = rank_pool(model, ["a"], [["w"]], history, candidates, matrix, k=4)
    assert [candidates[i] for i in ranked[0]] == ["z", "w", "x", "y"]
    expected = RepeatThenPopular().fit(_buys([
        ("a", "z", "2020-01-01"), ("a", "z", "2020-01-02"), ("a", "x", "2020-01-03"),
        ("a", "w", "2020-01-04")])).recommend(["a"], 3)
    assert expected == [["z", "w", "x"]]


def _choose(model: ShopStreamModel, rows: list[tuple[str, str, str]],
            bonuses: tuple[float, ...] = REPEAT_BONUS_GRID,
            weights: tuple[float, ...] = COUNT_WEIGHT_GRID) -> dict:
    return choose_ranking_terms(model, HISTORY, _window(rows), bonuses, weights, k=4)


def test_repeat_targets_choose_terms_that_put_own_items_first() -> None:
    model = _model()
    out = _choose(model, [("a", "z", "2020-02-01")])
    assert out["n_warm"] == 1
    assert len(out["warm_ndcg"]) == len(REPEAT_BONUS_GRID) * len(COUNT_WEIGHT_GRID)
    assert out["warm_ndcg"]["10.0,0.0"] == pytest.approx(1.0)  # z, a's own item, first
    chosen = (out["repeat_bonus"], out["count_weight"])
    assert out["warm_ndcg"][f"{chosen[0]},{chosen[1]}"] == pytest.approx(1.0)
    # Ties go to the smaller weight, then the smaller bonus.
    best = [(w, b) for b in REPEAT_BONUS_GRID for w in COUNT_WEIGHT_GRID
            if out["warm_ndcg"][f"{b},{w}"] == pytest.approx(1.0)]
    assert (chosen[1], chosen[0]) == min(best)
    assert (model.cfg.repeat_bonus, model.cfg.count_weight) == chosen


def test_new_item_targets_keep_own_items_from_going_first() -> None:
    model = _model()
    out = _choose(model, [("b", "x", "2020-02-01")], weights=(0.0,))
    # b's own item y outranks the target x at bonus 10, so that bonus scores worse.
    assert out["warm_ndcg"]["10.0,0.0"] < max(out["warm_ndcg"].values())
    assert out["repeat_bonus"] < 10.0
    assert out["warm_ndcg"][f"{out['repeat_bonus']},0.0"] == max(out["warm_ndcg"].values())


def test_no_warm_user_or_no_grid_keeps_the_parents_terms() -> None:
    model = _model()
    model.set_ranking_terms(0.3, 0.1, 1.0)
    cold = _choose(model, [("new", "x", "2020-02-01"), ("new", "y", "2020-02-02")])
    assert (cold["repeat_bonus"], cold["count_weight"]) == (0.3, 0.1)
    assert cold["warm_ndcg"] == {}
    off = _choose(model, [("a", "z", "2020-02-01")], bonuses=())
    assert (off["repeat_bonus"], off["count_weight"], off["cold_count_weight"]) == \
        (0.3, 0.1, COLD_FALLBACK_WEIGHT)
    assert (model.cfg.repeat_bonus, model.cfg.count_weight) == (0.3, 0.1)


def _two_baskets(users: int) -> list[tuple[str, str, str]]:
    """Each user buys y, then x a day later: ranked as cold from the y basket, x is the
    only target."""
    return [row for u in range(users) for row in (
        (f"u{u}", "y", "2020-02-01"), (f"u{u}", "x", "2020-02-02"))]


def test_too_few_users_as_cold_give_cold_users_the_popularity_order() -> None:
    model = _model()
    out = _choose(model, _two_baskets(MIN_COLD_USERS - 1))
    assert out["n_as_cold"] == MIN_COLD_USERS - 1 and out["cold_ndcg"] == {}
    assert out["cold_count_weight"] == model.cfg.cold_count_weight == COLD_FALLBACK_WEIGHT
    # Without evidence the towers do not break the baseline's ties either.
    assert out["cold_ties"] == model.cfg.cold_ties == "item_id"


def test_the_cold_weight_is_chosen_on_users_ranked_as_cold() -> None:
    model = _model()
    # Against HISTORY, x is bought by nobody and z is the most bought item: the
    # popularity order puts z ahead of the target x, so the largest weight scores worst.
    out = _choose(model, _two_baskets(MIN_COLD_USERS))
    assert out["n_as_cold"] == MIN_COLD_USERS and out["n_warm"] == 0
    # The popularity baseline's list (the fallback), with either tie rule, competes with
    # the grid.
    weights = (*COUNT_WEIGHT_GRID, COLD_FALLBACK_WEIGHT)
    assert set(out["cold_ndcg"]) == {str(w) for w in weights} | {f"{COLD_FALLBACK_WEIGHT}/model"}
    best = max(out["cold_ndcg"].values())
    assert out["cold_ndcg"][str(COLD_FALLBACK_WEIGHT)] < best
    assert out["cold_count_weight"] == min(w for w in weights
                                           if out["cold_ndcg"][str(w)] == best)
    assert model.cfg.cold_count_weight == out["cold_count_weight"]
    assert out["cold_ties"] == "item_id"  # a grid weight: the tie rule does not apply


def test_equal_held_out_scores_keep_the_baselines_tie_rule() -> None:
    # No tie the two rules order apart (only z was bought; the target x, bought by nobody,
    # goes where the towers put it under both): the bound scores alike under both rules,
    # and the baseline's own rule is kept.
    model = _model()
    history = PurchaseHistory(3).update(_buys([("a", "z", "2020-01-01")]))
    window = _window(_two_baskets(MIN_COLD_USERS))
    chosen = choose_ranking_terms(model, history, window, (0.0,), (COLD_FALLBACK_WEIGHT,), 4)
    scores = chosen["cold_ndcg"]
    assert scores[str(COLD_FALLBACK_WEIGHT)] == scores[f"{COLD_FALLBACK_WEIGHT}/model"]
    assert (chosen["cold_count_weight"], chosen["cold_ties"]) == (COLD_FALLBACK_WEIGHT,
                                                                   "item_id")


def test_the_terms_are_saved_with_the_model(tmp_path) -> None:
    model = _model()
    model.set_ranking_terms(1.0, 0.03, 3.0, "model")
    save_model(model, tmp_path)
    loaded = load_model(tmp_path).cfg
    assert (loaded.repeat_bonus, loaded.count_weight, loaded.cold_count_weight,
            loaded.cold_ties) == (1.0, 0.03, 3.0, "model")


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ConfigError, match="repeat_bonus"):
        ModelConfig(repeat_bonus=-1.0)
    with pytest.raises(ConfigError, match="count_weight"):
        ModelConfig(count_weight=1e9)
    with pytest.raises(ConfigError, match="cold_count_weight"):
        ModelConfig(cold_count_weight=-0.5)
    with pytest.raises(ConfigError, match="cold_ties"):
        ModelConfig(cold_ties="towers")
    with pytest.raises(ConfigError, match="repeat_bonus_grid"):
        IncrementalConfig.of(repeat_bonus_grid=(0.0, 1e9))
    with pytest.raises(ConfigError, match="count_weight_grid"):
        IncrementalConfig.of(count_weight_grid=(-1.0,))


def test_id_dropout_hides_the_id_from_the_user_tower_only() -> None:
    model = _model()
    with torch.no_grad():
        model.user_emb.weight[1:].normal_(0.0, 1.0)  # ids that move the user vector a lot
    batch = RecBatch(user_idx=torch.tensor([1, 1, 2]),
                     hist_idx=torch.tensor([[1, 0, 0], [1, 0, 0], [2, 0, 0]]),
                     target_idx=torch.tensor([1, 2, 3]))
    plain = model.rec_logits(batch)
    dropped = model.rec_logits(RecBatch(batch.user_idx, batch.hist_idx, batch.target_idx,
                                        drop_id=torch.tensor([True, False, False])))
    anonymous = model.rec_logits(RecBatch(torch.tensor([0, 1, 2]), batch.hist_idx,
                                          batch.target_idx))
    # Row 0 scores as an id-less user; rows 1 and 2 are untouched.
    torch.testing.assert_close(dropped.logits[0], anonymous.logits[0])
    assert not torch.allclose(dropped.logits[0], plain.logits[0])
    torch.testing.assert_close(dropped.logits[1:], plain.logits[1:])
    # Rows 0 and 1 are still one user's: neither target is the other's negative.
    assert dropped.valid.tolist() == plain.valid.tolist()
    assert not dropped.valid[0, 1] and not dropped.valid[1, 0]


def test_id_dropout_leaves_the_batches_and_negatives_as_they_were() -> None:
    window = tiny_window()
    model = init_model(TINY, window)
    examples = WindowExamples.build(model, window, PurchaseHistory(TINY.history_len))
    plain = list(iter_batches(examples, 3, len(model.items), 4, np.random.default_rng(0)))
    dropped = list(iter_batches(examples, 3, len(model.items), 4, np.random.default_rng(0),
                                0.5, np.random.default_rng(1)))
    for a, b in zip(plain, dropped, strict=True):
        assert a.rec is not None and b.rec is not None and b.rec.drop_id is not None
        assert torch.equal(a.rec.target_idx, b.rec.target_idx)
        assert torch.equal(a.rec.neg_idx, b.rec.neg_idx)
    share = torch.cat([b.rec.drop_id for b in dropped if b.rec is not None]).float().mean()
    assert 0.2 < float(share) < 0.8
    with pytest.raises(ValueError, match="id_dropout"):
        next(iter_batches(examples, 3, len(model.items), 4, np.random.default_rng(0), 0.5))
