"""cluster.comparison.evaluation: window contexts, pool matrices, model/baseline scoring,
forgetting rows (the fraud baseline: test_fraud_baseline.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from threadpoolctl import threadpool_limits

from cluster.comparison.evaluation import (
    REC_BASELINES,
    WindowContext,
    baseline_rec,
    build_contexts,
    evaluate_models,
    forgetting_row,
    model_rec,
    pool_matrix,
)
from training.data.schema import WindowData, empty_frame
from training.data.synthetic import SyntheticShopConfig, generate
from training.evaluation.evaluate import fraud_labels_scores, model_rankings
from training.features.history import PurchaseHistory, history_matrix, purchases
from training.fit.loop import init_model
from training.model import ModelConfig, ShopStreamModel

pytestmark = pytest.mark.unit

TINY = ModelConfig(encoder_init="tiny_random", finetune_layers=1, dim=16, history_len=10,
                   fraud_hidden=16, max_title_tokens=8)
K = 2
# 1 / (1 + 1/log2(3)): NDCG@2 of a user with two targets and one hit at rank 0.
NDCG_HIT_FIRST_OF_TWO = 1.0 / (1.0 + 1.0 / math.log2(3))
BASE = pd.Timestamp("2024-01-01", tz="UTC")


def _ts(minutes: list[int]) -> pd.Series:
    return pd.Series([BASE + pd.Timedelta(minutes=m) for m in minutes]).astype(
        "datetime64[us, UTC]")


def _window(wid: str, items: list[str], rows: list[tuple[str, str, int, str]]) -> WindowData:
    users, ids, minutes, events = zip(*rows)
    inter = pd.DataFrame({"user_id": list(users), "item_id": list(ids),
                          "ts": _ts(list(minutes)), "event": list(events), "quantity": 1,
                          "price": 1.0})
    table = pd.DataFrame({"item_id": items, "title": [f"title {i}" for i in items],
                          "category": "x", "price": 1.0, "first_seen": _ts([0] * len(items))})
    return WindowData(wid, table, inter, empty_frame("transactions"))


P, V = "purchase", "view"
# w0: u1 (cold) buys a then b; u2 buys c (one basket: no target); u3 only views.
# w1 lists d first, re-lists a, adds e; e is bought twice (popularity of w1: e first).
# w2 adds f; u2 re-buys c and buys f, u4 re-buys e, u5 (cold) has one basket.
W0 = _window("w0", ["a", "b", "c"], [("u1", "a", 0, P), ("u1", "b", 1, P), ("u2", "c", 2, P),
                                     ("u3", "a", 3, V)])
W1 = _window("w1", ["d", "a", "e"], [("u1", "d", 10, P), ("u1", "c", 11, P), ("u4", "a", 12, P),
                                     ("u4", "e", 13, P), ("u3", "e", 14, P), ("u2", "b", 15, V)])
W2 = _window("w2", ["f", "c"], [("u2", "c", 20, P), ("u2", "f", 21, P), ("u4", "e", 22, P),
                                ("u5", "f", 23, P)])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny models and HistGradientBoosting run far faster on one thread than with
    OpenMP workers spinning against whatever else the machine runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def contexts() -> list[WindowContext]:
    return build_contexts([W0, W1, W2], history_len=10)


@pytest.fixture(scope="module")
def model() -> ShopStreamModel:
    """Knows only w0's users and items (a, b, c): d, e, f are cold items for it."""
    return init_model(TINY, W0).eval()


def _rows(frame: pd.DataFrame) -> list[tuple[str, str, pd.Timestamp]]:
    return sorted(zip(frame["user_id"], frame["item_id"], frame["ts"]))


# ---- build_contexts ------------------------------------------------------------------------

def test_pools_grow_in_first_appearance_order(contexts) -> None:
    assert [c.pool for c in contexts] == [["a", "b", "c"], ["a", "b", "c", "d", "e"],
                                          ["a", "b", "c", "d", "e", "f"]]
    assert [c.window.window_id for c in contexts] == ["w0", "w1", "w2"]
    assert contexts[2].titles == {i: f"title {i}" for i in "abcdef"}
    assert contexts[0].titles == {i: f"title {i}" for i in "abc"}


def test_history_previous_and_earlier_hold_only_earlier_windows(contexts) -> None:
    """Each context keeps the history of its own window's users only (u1..u4 in w1; u2, u4,
    u5 in w2), and the earlier windows' interactions by reference, not copied."""
    c0, c1, c2 = contexts
    assert len(c0.history) == 0 and len(c0.previous) == 0 and c0.earlier == ()
    assert list(c0.previous.columns) == list(W0.interactions.columns)
    assert _rows(c1.history.frame) == _rows(purchases(W0.interactions))
    both = purchases(pd.concat([W0.interactions, W1.interactions]))
    assert _rows(c2.history.frame) == _rows(both[both["user_id"].isin(["u2", "u4", "u5"])])
    assert len(c2.history) == 3  # u1 and u3 (5 purchases) do not buy in w2
    assert sorted(c2.history.profile.pairs["user_id"]) == ["u2", "u4", "u4"]
    assert len(c2.history.profile.items) == 5  # every item's popularity: a..e were bought
    assert c1.previous is W0.interactions and c2.previous is W1.interactions
    assert c2.earlier[0] is W0.interactions and c2.earlier[1] is W1.interactions
    assert c1.earlier[0] is W0.interactions and len(c1.earlier) == 1


def test_queries_and_targets_index_into_the_pool(contexts) -> None:
    c0, c1, c2 = contexts
    # w0: u1 is cold (query = first basket [a], target b); u2's only basket leaves no target.
    assert c0.queries.user_ids == ["u1"] and c0.queries.query_items == [["a"]]
    assert [t.tolist() for t in c0.targets] == [[1]]
    # w1: u1 warm (query = its w0 purchases), u4 cold; u3 only viewed before: cold, no target.
    assert c1.queries.user_ids == ["u1", "u4"]
    assert c1.queries.is_warm.tolist() == [True, False]
    assert c1.queries.query_items == [["a", "b"], ["a"]]
    assert [t.tolist() for t in c1.targets] == [[3, 2], [4]]
    assert c2.queries.user_ids == ["u2", "u4"] and c2.queries.is_warm.tolist() == [True, True]
    assert [t.tolist() for t in c2.targets] == [[2, 5], [4]]
    assert all(t.dtype == np.int64 for c in contexts for t in c.targets)
    assert c2.queries.cold_baskets["user_id"].tolist() == ["u5"]


def test_repeat_flags_mark_targets_bought_in_any_earlier_window(contexts) -> None:
    c0, c1, c2 = contexts
    assert [r.tolist() for r in c0.repeat] == [[False]]  # u1 cold in w0
    assert [r.tolist() for r in c1.repeat] == [[False, False], [False]]  # u1: d, c are new
    # w2: u2 re-buys c (w0) and buys f (new); u4 re-buys e (w1).
    assert [r.tolist() for r in c2.repeat] == [[True, False], [True]]
    # history_len=1 keeps only u2's last purchase; "bought before" still sees all of them.
    short = build_contexts([W0, W1, W2], history_len=1)[2]
    assert [r.tolist() for r in short.repeat] == [[True, False], [True]]


def test_rec_row_splits_warm_targets_into_repeat_and_new(contexts) -> None:
    out = baseline_rec(contexts[2], K)
    repeat, _ = out["repeat_then_popular"]
    # u2 ranked [c, a]: repeat target c hit at rank 0, new target f missed; u4: e at rank 0.
    assert (repeat["warm_repeat/ndcg@2"], repeat["warm_repeat/recall@2"]) == (1.0, 1.0)
    assert repeat["warm_new/ndcg@2"] == 0.0 and repeat["warm_new/n_users"] == 1.0
    assert repeat["warm_repeat/n_users"] == 2.0
    per = repeat.per_user["warm"]  # kept in memory for paired intervals
    assert per.users.tolist() == [0, 1]
    assert per.ndcg.tolist() == pytest.approx([NDCG_HIT_FIRST_OF_TWO, 1.0])


def test_an_item_missing_from_every_items_table_gets_target_minus_one() -> None:
    extra = _window("w1", ["d"], [("u1", "d", 10, P), ("u1", "zz", 11, P)])
    ctx = build_contexts([W0, extra], history_len=10)[1]
    assert ctx.pool == ["a", "b", "c", "d"]
    assert [t.tolist() for t in ctx.targets] == [[3]]  # zz is in no items table


def test_synthetic_windows_give_prefix_pools_and_exact_histories() -> None:
    shop = generate(SyntheticShopConfig(n_users=40, n_items=30, new_items_per_window=5,
                                        n_windows=3, interactions_per_window=150,
                                        transactions_per_window=10, fraud_rate=0.1))
    windows = shop.windows
    ctxs = build_contexts(windows, history_len=1000)
    for t, ctx in enumerate(ctxs):
        expected = list(dict.fromkeys(pd.concat([w.items["item_id"] for w in windows[:t + 1]])))
        assert ctx.pool == expected
        assert len(set(ctx.pool)) == len(ctx.pool)
        if t:
            assert ctx.pool[:len(ctxs[t - 1].pool)] == ctxs[t - 1].pool
            assert len(ctx.pool) > len(ctxs[t - 1].pool)
            assert ctx.previous is windows[t - 1].interactions
        earlier = [w.interactions for w in windows[:t]]
        users = set(windows[t].interactions["user_id"]) | \
            set(windows[t].transactions["user_id"].dropna())
        bought = purchases(pd.concat(earlier)) if earlier else None
        want = _rows(bought[bought["user_id"].isin(users)]) if earlier else []
        assert _rows(ctx.history.frame) == want
        pos = {item: i for i, item in enumerate(ctx.pool)}
        assert len(ctx.targets) == len(ctx.queries.user_ids) > 0
        for ids, idx in zip(ctx.queries.targets, ctx.targets):
            assert idx.tolist() == [pos.get(i, -1) for i in ids]
    assert len(ctxs[0].history) == 0


def test_a_context_scores_as_with_the_whole_history_snapshot() -> None:
    """The per-window history holds only the window's users, and ranking and fraud scores
    read nothing else: every ranked list and score equals the whole snapshot's."""
    shop = generate(SyntheticShopConfig(n_users=40, n_items=30, new_items_per_window=5,
                                        n_windows=4, interactions_per_window=150,
                                        transactions_per_window=30, fraud_rate=0.2))
    windows = shop.windows
    model = init_model(TINY, windows[0]).eval()
    # Own items and popularity in the score too (repeat features, item counts).
    model.set_ranking_terms(repeat_bonus=1.0, count_weight=0.5, cold_count_weight=0.5)
    whole = PurchaseHistory(TINY.history_len)
    for ctx, window in zip(build_contexts(windows, TINY.history_len), windows):
        assert len(ctx.history.profile.pairs) <= len(whole.profile.pairs)
        matrix = pool_matrix(model, ctx.pool, ctx.titles)
        got = model_rankings(model, ctx.queries, ctx.history, ctx.pool, matrix, 5)
        want = model_rankings(model, ctx.queries, whole, ctx.pool, matrix, 5)
        np.testing.assert_array_equal(got, want)
        for a, b in zip(fraud_labels_scores(model, ctx.history, window),
                        fraud_labels_scores(model, whole, window)):
            np.testing.assert_array_equal(a, b)
        whole = whole.update(window.interactions)
    assert len(whole.users()) > len(ctx.history.users())  # the last window: a subset


# ---- pool_matrix and model_rec -------------------------------------------------------------

def test_pool_matrix_uses_trained_rows_for_known_items_and_titles_for_the_rest(
        model, contexts) -> None:
    pool = contexts[2].pool
    matrix = pool_matrix(model, pool, contexts[2].titles)
    assert matrix.shape == (6, TINY.dim)
    with torch.no_grad():
        catalogue = model.catalogue_matrix()
        idx = model.items.lookup(np.asarray(["a", "b", "c"], dtype=object))
        cold = model.item_vectors_from_titles(["title d", "title e", "title f"])
    assert (idx > 0).all()
    assert torch.allclose(matrix[:3], catalogue[torch.from_numpy(idx)], atol=1e-6)
    assert torch.allclose(matrix[3:], cold, atol=1e-6)
    # Title vectors differ from trained ones (the id embedding is added to the latter).
    title_abc = model.item_vectors_from_titles(["title a", "title b", "title c"])
    assert not torch.allclose(matrix[:3], title_abc, atol=1e-4)


def _user_matrix(model: ShopStreamModel, ctx: WindowContext) -> torch.Tensor:
    """The user vectors model_rankings scores with (one row per query)."""
    users = model.users.lookup(np.asarray(ctx.queries.user_ids, dtype=object))
    hist = history_matrix([list(model.items.lookup(np.asarray(q, dtype=object)))
                           for q in ctx.queries.query_items], model.cfg.history_len)
    with torch.no_grad():
        return model.user_vectors(torch.from_numpy(users), torch.from_numpy(hist))


def _matrix_for(users: torch.Tensor, scores: list[list[float]]) -> torch.Tensor:
    """Item vectors M with users @ M.T == scores (users has full row rank)."""
    want = torch.tensor(scores, dtype=torch.float64)
    return (torch.linalg.pinv(users.double()) @ want).T.float()


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal rows, NaN (an empty part, e.g. no repeat target) equal to NaN."""
    return list(a) == list(b) and all(a[k] == b[k] or math.isnan(a[k]) and math.isnan(b[k])
                                      for k in a)


def test_model_rec_is_perfect_when_item_vectors_put_the_targets_first(model, contexts) -> None:
    ctx = contexts[1]  # u1 (warm) targets pool 3 and 2; u4 (cold) targets 4
    users = _user_matrix(model, ctx)
    matrix = _matrix_for(users, [[0.0, 0.1, 0.8, 0.9, 0.2], [0.1, 0.0, 0.0, 0.2, 0.9]])
    assert torch.allclose(users @ matrix.T, torch.tensor([[0.0, 0.1, 0.8, 0.9, 0.2],
                                                          [0.1, 0.0, 0.0, 0.2, 0.9]]),
                          atol=1e-4)
    row = model_rec(model, ctx, matrix, K)
    # u1's targets d and c are both new to it (it bought a and b before): no repeat target.
    assert math.isnan(row.pop("warm_repeat/ndcg@2")) and math.isnan(row.pop("warm_repeat/recall@2"))
    assert row == {"ndcg@2": 1.0, "recall@2": 1.0, "hitrate@2": 1.0, "warm/ndcg@2": 1.0,
                   "warm/recall@2": 1.0, "cold/ndcg@2": 1.0, "cold/recall@2": 1.0,
                   "warm_new/ndcg@2": 1.0, "warm_new/recall@2": 1.0,
                   "n_users": 2.0, "warm/n_users": 1.0, "cold/n_users": 1.0,
                   "warm_repeat/n_users": 0.0, "warm_new/n_users": 1.0}


def test_model_rec_exact_partial_hits_and_only_the_pool_prefix_counts(model, contexts) -> None:
    ctx = contexts[1]
    users = _user_matrix(model, ctx)
    # u1 ranks [0, 2]: one of its two targets at rank 1; u4 ranks [0, 1]: no hit.
    matrix = _matrix_for(users, [[0.9, 0.0, 0.5, 0.1, 0.0], [0.9, 0.5, 0.1, 0.2, 0.0]])
    row = model_rec(model, ctx, matrix, K)
    warm_ndcg = (1.0 / math.log2(3)) / (1.0 + 1.0 / math.log2(3))
    assert row["warm/recall@2"] == pytest.approx(0.5)
    assert row["warm/ndcg@2"] == pytest.approx(warm_ndcg)
    assert row["cold/recall@2"] == 0.0 and row["cold/ndcg@2"] == 0.0
    assert row["recall@2"] == pytest.approx(0.25)
    assert row["ndcg@2"] == pytest.approx(warm_ndcg / 2)
    assert row["hitrate@2"] == pytest.approx(0.5)
    # Rows past the pool (a later window's items) would win every ranking if they counted.
    longer = torch.cat([matrix, 100.0 * users])
    assert _same(model_rec(model, ctx, longer, K), row)


def test_model_rec_and_forgetting_work_when_the_pool_is_smaller_than_k(model, contexts) -> None:
    ctx = contexts[0]  # pool a, b, c; u1's target b
    baseline = baseline_rec(ctx, 5)  # the baselines pad their lists with -1 to k
    assert baseline["popularity"][0]["n_users"] == 1.0
    row = model_rec(model, ctx, pool_matrix(model, ctx.pool, ctx.titles), 5)
    assert row["hitrate@5"] == 1.0 and row["recall@5"] == 1.0  # every pool item is listed
    assert list(forgetting_row(model, contexts, 5, {"rec": "ndcg@5"})) == ["w0", "w1", "w2"]


def test_scoring_survives_a_target_outside_the_pool(model) -> None:
    extra = _window("w1", ["d"], [("u1", "d", 10, P), ("u1", "zz", 11, P)])
    ctx = build_contexts([W0, extra], history_len=10)[1]
    assert [t.tolist() for t in ctx.targets] == [[3]]  # zz is in no items table
    assert baseline_rec(ctx, K)["popularity"][0]["n_users"] == 1.0
    assert model_rec(model, ctx, pool_matrix(model, ctx.pool, ctx.titles), K)["n_users"] == 1.0


# ---- baselines ------------------------------------------------------------------------------

def test_baseline_rec_popularity_of_previous_window_and_repeat_then_popular(contexts) -> None:
    out = baseline_rec(contexts[2], K)
    assert tuple(out) == REC_BASELINES
    assert all(seconds >= 0.0 for _, seconds in out.values())
    popularity, _ = out["popularity"]
    # w1's purchases: e twice, then a (ties by id) -> [e, a] for everyone.
    # u2 (targets c, f): no hit; u4 (target e): hit at rank 0.
    assert popularity["recall@2"] == pytest.approx(0.5)
    assert popularity["ndcg@2"] == pytest.approx(0.5)
    assert popularity["hitrate@2"] == pytest.approx(0.5)
    assert popularity["n_users"] == 2.0
    assert math.isnan(popularity["cold/recall@2"])  # both users are warm
    repeat, _ = out["repeat_then_popular"]
    # Own items first: u2 -> [c, a] (hit c of {c, f}); u4 -> [e (most recent), a] (hit).
    assert repeat["recall@2"] == pytest.approx(0.75)
    assert repeat["ndcg@2"] == pytest.approx((NDCG_HIT_FIRST_OF_TWO + 1.0) / 2)
    assert repeat["hitrate@2"] == pytest.approx(1.0)
    assert repeat["warm/recall@2"] == pytest.approx(0.75)


def test_evaluate_models_scores_each_model_on_its_pool_matrix(model, contexts) -> None:
    ctx = contexts[2]
    out = evaluate_models({"m": model}, ctx, K, ("rec",))
    want = model_rec(model, ctx, pool_matrix(model, ctx.pool, ctx.titles), K)
    assert list(out) == ["m"] and list(out["m"]) == ["rec"]
    got = out["m"]["rec"]
    assert list(got) == list(want)
    assert all(got[key] == want[key] or math.isnan(got[key]) and math.isnan(want[key])
               for key in want)
    assert got["n_users"] == 2.0 and math.isnan(got["cold/ndcg@2"])  # no cold user in w2


# ---- forgetting_row -------------------------------------------------------------------------

def test_forgetting_row_keys_are_window_ids_and_values_match_model_rec(model, contexts) -> None:
    tasks = {"rec": "ndcg@2", "fraud": "auc_pr"}
    out = forgetting_row(model, contexts, K, tasks)
    assert list(out) == ["w0", "w1", "w2"]
    for ctx in contexts:
        own = model_rec(model, ctx, pool_matrix(model, ctx.pool, ctx.titles), K)["ndcg@2"]
        assert out[ctx.window.window_id]["rec"] == pytest.approx(own, abs=1e-12)
        assert math.isnan(out[ctx.window.window_id]["fraud"])  # no transactions
    two = forgetting_row(model, contexts[:2], K, {"rec": "recall@2"})
    assert list(two) == ["w0", "w1"] and set(two["w0"]) == {"rec"}
