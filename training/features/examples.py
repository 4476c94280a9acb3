"""Turn a window's tables into model-ready example arrays, and arrays into batches.

Examples are plain numpy arrays so they shard cheaply across Ray Train workers
(:func:`shard`) and are built once per window, not per step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd
import torch

from training.data.schema import WindowData
from training.features.history import (
    PurchaseHistory,
    history_matrix,
    purchases,
)
from training.features.point_in_time import point_in_time
from training.features.profile import REPEAT_FEATURES
from training.features.repeat_plan import (
    INDEX_DTYPE,
    RepeatPlan,
    as_index,
    empty_repeat,
    repeat_blocks,
)
from training.model import FraudBatch, MultiTaskBatch, RecBatch, ShopStreamModel


@dataclass
class RecExamples:
    """One row per purchase: who bought, what they had bought before, what they bought.

    Row arrays: ``user_idx``, ``hist_idx``, ``target_idx``; ``rep_items``/``rep_feats`` the
    buyer's own past items and pair features as of the snapshot before the row (zeros for
    rows older than the snapshot: replayed and carried rows); ``target_pop`` the target's
    popularity features at that snapshot. Item arrays (indexed by item index, shared by
    every row): ``item_pop`` the latest snapshot's popularity (for sampled negatives) and
    ``item_freq`` each item's share of the targets (for the logQ correction).
    """

    user_idx: np.ndarray
    hist_idx: np.ndarray
    target_idx: np.ndarray
    rep_items: np.ndarray
    rep_feats: np.ndarray
    target_pop: np.ndarray
    item_pop: np.ndarray
    item_freq: np.ndarray

    def __len__(self) -> int:
        return len(self.target_idx)

    def take(self, rows: np.ndarray) -> RecExamples:
        return RecExamples(self.user_idx[rows], self.hist_idx[rows], self.target_idx[rows],
                           self.rep_items[rows], self.rep_feats[rows],
                           self.target_pop[rows], self.item_pop, self.item_freq)

    @classmethod
    def concat(cls, parts: list[RecExamples]) -> RecExamples:
        """Rows of every part in order; item arrays of the last part, frequencies anew."""
        def rows(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        target = rows("target_idx")
        return cls(rows("user_idx"), rows("hist_idx"), target, rows("rep_items"),
                   rows("rep_feats"), rows("target_pop"), parts[-1].item_pop,
                   target_frequency(target, len(parts[-1].item_freq)))


def target_frequency(target_idx: np.ndarray, n_items: int) -> np.ndarray:
    """Each item index's share of ``target_idx`` (float64 [n_items])."""
    counts = np.bincount(target_idx, minlength=n_items)[:n_items].astype(np.float64)
    return counts / max(1.0, float(counts.sum()))


def item_popularity(model: ShopStreamModel, history: PurchaseHistory) -> np.ndarray:
    """[len(model.items), P] popularity features of every item index (row 0 zeros)."""
    pop = history.profile.item_popularity(model.items.ids)
    return np.concatenate([np.zeros((1, pop.shape[1]), dtype=np.float32), pop])


@dataclass
class FraudExamples:
    """One row per labelled transaction."""

    features: np.ndarray
    amount: np.ndarray
    user_idx: np.ndarray
    hist_idx: np.ndarray
    item_idx: np.ndarray
    label: np.ndarray
    # [n, 2] float32: bought anything / this item before the payment's window (NaN:
    # unknown; PurchaseHistory.bought_before). The fraud trees read it, the head does not.
    bought: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def take(self, rows: np.ndarray) -> FraudExamples:
        return FraudExamples(self.features[rows], self.amount[rows], self.user_idx[rows],
                             self.hist_idx[rows], self.item_idx[rows], self.label[rows],
                             self.bought[rows])


def rec_examples(model: ShopStreamModel, interactions: pd.DataFrame,
                 history: PurchaseHistory) -> RecExamples:
    """Every purchase in the window, with the buyer's previous ``history_len`` items and
    repeat features (:func:`deferred_rec_examples`, built at once)."""
    rows, plan = deferred_rec_examples(model, interactions, history)
    return with_repeat(rows, [plan])


def with_repeat(rec: RecExamples, plans: Sequence[RepeatPlan]) -> RecExamples:
    """``rec`` (its repeat arrays empty) with every row's repeat features built."""
    out = empty_repeat(len(rec), plans[0].per_user if plans else 0)
    for plan in plans:
        plan.fill(out)
    return replace(rec, rep_items=out.items, rep_feats=out.features)


def deferred_rec_examples(model: ShopStreamModel, interactions: pd.DataFrame,
                          history: PurchaseHistory) -> tuple[RecExamples, RepeatPlan]:
    """Every purchase in the window, with the buyer's previous ``history_len`` items, its
    repeat arrays left empty (zero width), and the :class:`RepeatPlan` that builds them.

    Earlier windows' purchases come from ``history``; each purchase sees the ones made
    before its basket (not the basket's other lines), so replayed old rows mixed into a
    window are point-in-time correct too.
    """
    return purchase_examples(model, purchases(interactions), history)


def purchase_examples(model: ShopStreamModel, new: pd.DataFrame, history: PurchaseHistory
                      ) -> tuple[RecExamples, RepeatPlan]:
    """:func:`deferred_rec_examples` of a window's purchases ``new`` (:func:`purchases`:
    sorted by user and time)."""
    hist, targets, rows = point_in_time(new, history, model.items.lookup,
                                        model.cfg.history_len)
    # ``new`` is sorted by user and time: its rows are the examples' rows, labelled by
    # their positions among the buyers' earlier purchases.
    new_rows = new.set_axis(rows)
    plan = repeat_plan(model, history, new_rows)
    rep = empty_repeat(len(new_rows), 0)
    pop = item_popularity(model, history)
    user_idx = as_index(model.users.lookup(new_rows["user_id"]))
    return RecExamples(user_idx, hist, targets, rep.items, rep.features, pop[targets], pop,
                       target_frequency(targets, len(model.items))), plan


def repeat_plan(model: ShopStreamModel, history: PurchaseHistory, rows: pd.DataFrame
                ) -> RepeatPlan:
    """The :class:`RepeatPlan` of purchase ``rows`` (their positions are the rows' order):
    those bought after the history's snapshot see the snapshot plus their user's earlier
    baskets among them (:meth:`PurchaseProfile.basket_features`)."""
    as_of = history.profile.as_of
    fresh = np.ones(len(rows), dtype=bool) if as_of is None else (rows["ts"] > as_of).to_numpy()
    return RepeatPlan(history.profile, rows[fresh], np.flatnonzero(fresh),
                      model.cfg.repeat_items, model.items.lookup)


def fraud_examples(model: ShopStreamModel, transactions: pd.DataFrame,
                   history: PurchaseHistory, bought: bool = True) -> FraudExamples:
    """Labelled transactions with the features the model was built on, in its order;
    ``bought=False`` leaves the trees' history flags at 0 (rows the neural head trains on:
    it does not read them)."""
    labelled = transactions[transactions["is_fraud"].notna()] if len(transactions) else transactions
    names = list(model.cfg.fraud_features)
    missing = [n for n in names if n not in labelled.columns]
    if missing:
        raise KeyError(f"transactions lack the model's fraud feature column(s) {missing}")
    user_ids = labelled["user_id"].fillna("").astype(str).to_numpy()
    # One id lookup over every row's items, then cut back per row: a lookup per row costs
    # a pandas index probe each (seconds per window of a few thousand transactions).
    last = history.last_items(user_ids)
    flat = model.items.lookup(np.asarray([i for items in last for i in items], dtype=object))
    ends = np.cumsum([len(items) for items in last])
    hist_lists = [list(flat[end - len(items):end]) for items, end in zip(last, ends)]
    item_ids = labelled["item_id"].fillna("").astype(str) if "item_id" in labelled else \
        pd.Series([""] * len(labelled))
    flags = history.bought_before(user_ids, item_ids.to_numpy(dtype=object),
                                  labelled["ts"] if "ts" in labelled else None) if bought \
        else np.zeros((len(labelled), 2), dtype=np.float32)
    return FraudExamples(
        features=labelled[names].to_numpy(dtype=np.float32).reshape(len(labelled), len(names)),
        amount=labelled["amount"].to_numpy(dtype=np.float32),
        user_idx=as_index(model.users.lookup(user_ids)),
        hist_idx=as_index(history_matrix(hist_lists, model.cfg.history_len)),
        item_idx=as_index(model.items.lookup(item_ids.to_numpy())),
        label=labelled["is_fraud"].astype(bool).to_numpy(dtype=np.float32),
        bought=flags,
    )


FRAUD_FIELDS: tuple[str, ...] = ("features", "amount", "user_idx", "hist_idx", "item_idx",
                                 "label", "bought")


@dataclass
class WindowExamples:
    """A fit's rec and fraud rows. With ``repeat`` plans, the rec rows' repeat arrays are
    still to build (zero width until then): :meth:`materialized` builds them whole for an
    in-process fit, :meth:`rec_blocks` a block at a time for the rank files."""

    rec: RecExamples
    fraud: FraudExamples
    repeat: tuple[RepeatPlan, ...] = ()

    @classmethod
    def build(cls, model: ShopStreamModel, window: WindowData, history: PurchaseHistory,
              defer_repeat: bool = False) -> WindowExamples:
        # Fraud rows first: their transient then sits on a few bytes a transaction, not on
        # the rec rows and their plan (~100 MB a million purchases).
        fraud = fraud_examples(model, window.transactions, history, bought=False)
        return cls.from_purchases(model, purchases(window.interactions), fraud, history,
                                  defer_repeat)

    @classmethod
    def from_purchases(cls, model: ShopStreamModel, bought: pd.DataFrame,
                       fraud: FraudExamples, history: PurchaseHistory,
                       defer_repeat: bool = False) -> WindowExamples:
        """:meth:`build` from a window's purchases (:func:`purchases`) and its fraud rows,
        taken out beforehand so that the caller can let the window go first."""
        rec, plan = purchase_examples(model, bought, history)
        examples = cls(rec, fraud, (plan,))
        return examples if defer_repeat else examples.materialized()

    @classmethod
    def build_over(cls, model: ShopStreamModel, windows: list[WindowData],
                   history: PurchaseHistory, defer_repeat: bool = False) -> WindowExamples:
        """Examples of several windows in order, each against the history as of its start
        (what a full retrain trains on: every row point-in-time)."""
        parts = []
        for window in windows:
            parts.append(cls.build(model, window, history, defer_repeat=True))
            history = history.update(window.interactions)
        offsets = np.cumsum([0, *(len(p.rec) for p in parts[:-1])])
        fraud = [p.fraud for p in parts]
        built = cls(RecExamples.concat([p.rec for p in parts]),
                    FraudExamples(*(np.concatenate([getattr(f, name) for f in fraud])
                                    for name in FRAUD_FIELDS)),
                    tuple(plan.shifted(int(at)) for p, at in zip(parts, offsets)
                          for plan in p.repeat))
        return built if defer_repeat else built.materialized()

    def materialized(self) -> WindowExamples:
        """These examples with every array built (themselves when nothing is deferred)."""
        if not self.repeat:
            return self
        return WindowExamples(with_repeat(self.rec, self.repeat), self.fraud)

    def require_built(self) -> None:
        """ValueError while the repeat arrays are still to build."""
        if self.repeat:
            raise ValueError("examples: repeat features not built yet (materialized() first)")

    def rec_head(self) -> RecExamples:
        """No rec row, with every array at its built shape."""
        head = self.rec.take(np.arange(0))
        if not self.repeat:
            return head
        rep = empty_repeat(0, self.repeat[0].per_user)
        return replace(head, rep_items=rep.items, rep_feats=rep.features)

    def rec_blocks(self, block_rows: int) -> Iterator[RecExamples]:
        """The rec rows in order, built, as blocks of at most ``block_rows`` rows: with
        deferred plans, one group of users' repeat features and one block at a time."""
        n = len(self.rec)
        if not self.repeat:
            for start in range(0, n, block_rows):
                yield self.rec.take(np.arange(start, min(n, start + block_rows)))
            return
        for start, stop, rep in repeat_blocks(n, self.repeat, block_rows):
            yield replace(self.rec.take(np.arange(start, stop)), rep_items=rep.items,
                          rep_feats=rep.features)

    @property
    def nbytes(self) -> int:
        """The bytes of every array once built (deferred repeat arrays included)."""
        size = sum(getattr(task, f.name).nbytes for task in (self.rec, self.fraud)
                   for f in fields(task))
        if self.repeat:  # an index and float32 features per repeat slot
            size += len(self.rec) * self.repeat[0].per_user * (
                np.dtype(INDEX_DTYPE).itemsize + 4 * len(REPEAT_FEATURES))
        return size

    def shard(self, rank: int, world_size: int) -> WindowExamples:
        """Every ``world_size``-th example from ``rank``: disjoint, covering all rows."""
        self.require_built()
        return WindowExamples(self.rec.take(np.arange(rank, len(self.rec), world_size)),
                              self.fraud.take(np.arange(rank, len(self.fraud), world_size)))


def steps_per_epoch(n_rec: int, n_fraud: int, batch_size: int) -> int:
    """Both tasks cover their rows once per epoch in the same number of steps."""
    return max(1, math.ceil(n_rec / batch_size), math.ceil(n_fraud / batch_size))


def _log_q(ex: RecExamples, idx: np.ndarray, in_batch: int, n_negatives: int) -> torch.Tensor:
    """log of the expected times each candidate is drawn as a negative in one step:
    in-batch targets follow the target frequency, sampled negatives are uniform."""
    n_items = max(1, len(ex.item_freq) - 1)
    expected = in_batch * ex.item_freq[idx] + n_negatives / n_items
    return torch.from_numpy(np.log(np.maximum(expected, 1e-12)).astype(np.float32))


def _rec_batch(ex: RecExamples, rows: np.ndarray, negatives: np.ndarray | None,
               drop_id: np.ndarray | None = None) -> RecBatch:
    targets = ex.target_idx[rows]
    n_neg = 0 if negatives is None else len(negatives)
    neg = None if negatives is None else torch.from_numpy(negatives)
    return RecBatch(user_idx=index_tensor(ex.user_idx[rows]),
                    hist_idx=index_tensor(ex.hist_idx[rows]),
                    target_idx=index_tensor(targets), neg_idx=neg,
                    rep_items=index_tensor(ex.rep_items[rows]),
                    rep_feats=torch.from_numpy(ex.rep_feats[rows]),
                    target_pop=torch.from_numpy(ex.target_pop[rows]),
                    neg_pop=None if negatives is None else torch.from_numpy(
                        ex.item_pop[negatives]),
                    target_logq=_log_q(ex, targets, len(rows), n_neg),
                    neg_logq=None if negatives is None else _log_q(ex, negatives, len(rows),
                                                                   n_neg),
                    drop_id=None if drop_id is None else torch.from_numpy(drop_id))


def index_tensor(indices: np.ndarray) -> torch.Tensor:
    """An example index array as the int64 tensor the model's lookups take."""
    return torch.from_numpy(indices).long()


def fraud_batch(ex: FraudExamples, rows: np.ndarray) -> FraudBatch:
    """Fraud rows ``rows`` of ``ex`` as a batch (indices widened to int64)."""
    return FraudBatch(features=torch.from_numpy(ex.features[rows]),
                      amount=torch.from_numpy(ex.amount[rows]),
                      user_idx=index_tensor(ex.user_idx[rows]),
                      hist_idx=index_tensor(ex.hist_idx[rows]),
                      item_idx=index_tensor(ex.item_idx[rows]),
                      label=torch.from_numpy(ex.label[rows]),
                      bought=torch.from_numpy(ex.bought[rows]))


def iter_batches(examples: WindowExamples, steps: int, n_items: int, n_negatives: int,
                 rng: np.random.Generator, id_dropout: float = 0.0,
                 drop_rng: np.random.Generator | None = None) -> Iterator[MultiTaskBatch]:
    """``steps`` batches; each task's rows shuffled and split evenly over the steps.

    ``steps`` is given (not derived from this shard) so that every DDP rank runs the
    same number of steps even when shards differ by a row. With ``id_dropout``, that share
    of rec rows hide their user id (drawn from ``drop_rng``, so ``rng``'s stream, and with
    it the batches and negatives, stays the same with or without it).
    """
    if id_dropout and drop_rng is None:
        raise ValueError("id_dropout: needs drop_rng")
    examples.require_built()
    rec_order = rng.permutation(len(examples.rec))
    fraud_order = rng.permutation(len(examples.fraud))
    rec_parts = np.array_split(rec_order, steps)
    fraud_parts = np.array_split(fraud_order, steps)
    for rec_rows, fraud_rows in zip(rec_parts, fraud_parts):
        drop = drop_rng.random(len(rec_rows)) < id_dropout \
            if id_dropout and drop_rng is not None else None
        negatives = None
        if n_negatives and n_items > 1:
            negatives = rng.integers(1, n_items, size=n_negatives, dtype=np.int64)
        yield MultiTaskBatch(
            rec=_rec_batch(examples.rec, rec_rows, negatives, drop) if len(rec_rows) else None,
            fraud=fraud_batch(examples.fraud, fraud_rows) if len(fraud_rows) else None,
        )
