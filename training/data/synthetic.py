"""Synthetic drifting shop: the embedded default data source and the source for scale tests.

    python -m training.data.synthetic --out DIR [--n-windows 6 --freq week --seed 0 ...]

(also installed as ``shopstream-synth``). Writes every window with
:func:`training.data.windows.write_window` (``DIR/<window_id>/{items,interactions,
transactions}.parquet`` + ``_window.json``) and the ground truth, kept out of the model
tables, to ``DIR/_truth/{truth.json,fraud_campaigns.parquet}`` (``list_windows`` skips it).

Everything is drawn from a known model, deterministically from ``seed`` (same config ->
byte-identical frames; each window and table has its own random stream), vectorised.

Catalogue (:mod:`~training.data.synthetic_catalogue`): ``n_items`` at window 0, then
``new_items_per_window`` launched early in every later window. Titles are
``"<brand> <attribute> <noun>"`` from category vocabularies; item latents are sums of the
title words' embeddings, so text helps cold start. Items never change.

Users (:mod:`~training.data.synthetic_users`): category preferences, a taste vector, price
sensitivity, heavy-tailed activity; ``new_user_share`` of them sign up in later windows.
Purchases are Gumbel-max draws of ``pref[cat] + taste.latent + popularity
- price_sensitivity*log(price)`` over ``candidates`` random items; ``repeat_share`` of
purchases re-buy one of the user's 4 latest purchases.

Drift schedule, window ``w`` (``S`` = ``shift_window``, default ``n_windows // 2``):

* ``w = 0``: base preferences; the shift categories (default seasonal, toys) are off-season
  (base -1.0, every other category ~ N(0, 0.5)); fraud is card testing.
* every ``w >= 1``: gradual drift, a random-walk step: each user's category preferences
  move by N(0, drift_scale^2), each taste component by N(0, (0.6 drift_scale)^2).
* ``w = S``: the sudden seasonal shift: ``shift_boost`` (3.5) is added to the preference
  for every shift category of ``shift_user_share`` (80%) of users; it persists. In the same
  window fraud switches from card testing (bursts of small, mostly night-time charges from
  fraudster accounts, see :mod:`~training.data.synthetic_fraud`) to account takeover
  (high-value purchases from established accounts, often on a new device, far from home),
  for good.
* ``S = n_windows`` means no shift in the run (the drift-free control).

The truth (latents per window, the campaign of each fraudulent transaction, the shift) is in
:class:`ShopTruth`, never in the frames: the transactions table has no campaign column.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm import tqdm

from training.cli import ConfigError, add_dataclass_args, dataclass_from_args, setup_logging
from training.data.schema import LABEL_TS_COLUMN, TS_TYPE, WindowData, schema_for
from training.data.synthetic_catalogue import format_ids, make_catalogue
from training.data.synthetic_config import SyntheticShopConfig
from training.data.synthetic_events import (
    EVENT_NAMES,
    US_PER_DAY,
    EventArrays,
    WindowClock,
    window_interactions,
)
from training.data.synthetic_fraud import (
    FRAUD_FEATURES,
    TxnArrays,
    WindowTxns,
    window_transactions,
)
from training.data.synthetic_users import (
    LiveItems,
    advance,
    make_population,
    scramble_user_ids,
)
from training.data.windows import write_window

__all__ = ["FRAUD_FEATURES", "ShopSimulator", "ShopTruth", "SimulationFinishedError",
           "SyntheticShop", "SyntheticShopConfig", "WindowTruth", "generate", "iter_windows",
           "main"]

logger = logging.getLogger(__name__)

# Independent random streams, so e.g. more transactions do not change the interactions.
_CATALOGUE, _POPULATION, _DRIFT, _INTERACTIONS, _TRANSACTIONS, _CHARGEBACKS = range(1, 7)
TRUTH_DIR = "_truth"  # under --out; windows.list_windows skips "_" folders


class SimulationFinishedError(RuntimeError):
    """A simulator was asked for a window after its last one."""


@dataclass(frozen=True)
class WindowTruth:
    """What generated one window: the users' latent state and the fraud behind each fraud row."""

    window_id: str
    index: int
    shifted: bool
    campaign: str
    user_pref: np.ndarray | None  # (n_users, n_categories) in this window
    user_taste: np.ndarray | None  # (n_users, latent_dim) in this window
    fraud: pd.DataFrame  # txn_id, campaign, attack_id: one row per fraudulent transaction


@dataclass
class ShopTruth:
    """Ground truth of a run: fixed user and item parameters plus per-window truth."""

    config: SyntheticShopConfig
    window_ids: list[str]
    shift_window: int
    shift_window_id: str | None
    user_ids: np.ndarray
    user_join_window: np.ndarray
    user_activity: np.ndarray
    user_price_sensitivity: np.ndarray
    item_ids: np.ndarray
    item_category: np.ndarray  # index into config.categories
    item_latent: np.ndarray
    item_quality: np.ndarray
    item_popularity: np.ndarray
    item_price: np.ndarray
    item_launch_window: np.ndarray
    windows: list[WindowTruth] = field(default_factory=list)

    def fraud_campaigns(self) -> pd.DataFrame:
        """Every fraudulent transaction of the run with its window, campaign and attack id."""
        frames = [w.fraud.assign(window_id=w.window_id) for w in self.windows]
        if not frames:
            return pd.DataFrame(columns=["txn_id", "campaign", "attack_id", "window_id"])
        return pd.concat(frames, ignore_index=True)

    def utility(self, window: int, users: np.ndarray) -> np.ndarray:
        """Noise-free utility of ``users`` (indices) for each item live in ``window``."""
        truth = self.windows[window]
        if truth.user_pref is None or truth.user_taste is None:
            raise ValueError(f"window {window}: latents were not kept (keep_latents=False)")
        n_live = int(np.searchsorted(self.item_launch_window, window, side="right"))
        cat = self.item_category[:n_live]
        return np.asarray(
            truth.user_pref[users][:, cat] + truth.user_taste[users] @ self.item_latent[:n_live].T
            + self.item_popularity[None, :n_live]
            - self.user_price_sensitivity[users][:, None]
            * np.log(self.item_price[None, :n_live]))


@dataclass
class SyntheticShop:
    """A whole generated run."""

    windows: list[WindowData]
    truth: ShopTruth


def _rng(cfg: SyntheticShopConfig, stream: int, window: int = 0) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, stream, window])


def window_starts(cfg: SyntheticShopConfig) -> list[pd.Timestamp]:
    first = pd.Timestamp(cfg.start, tz="UTC")
    return [first + pd.Timedelta(days=cfg.window_days * w) for w in range(cfg.n_windows)]


def _frame(table: str, columns: dict[str, pa.Array | np.ndarray]) -> pd.DataFrame:
    """A frame with exactly the schema's column order and dtypes."""
    schema = schema_for(table, list(FRAUD_FEATURES) if table == "transactions" else None,
                        label_ts=LABEL_TS_COLUMN in columns)
    arrays = [pa.array(columns[f.name], type=f.type) if isinstance(columns[f.name], np.ndarray)
              else columns[f.name] for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema).to_pandas()


def _ts(us: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(us, dtype=np.int64), type=schema_for("items").field(
        "first_seen").type)


def _maybe_take(ids: pa.Array, index: np.ndarray) -> pa.Array:
    """``ids[index]`` with null where ``index`` is -1."""
    return ids.take(pa.array(np.maximum(index, 0), mask=index < 0))


class ShopSimulator:
    """Steps the shop one window at a time; :attr:`truth` fills in as windows are made."""

    def __init__(self, cfg: SyntheticShopConfig, keep_latents: bool = True) -> None:
        self.cfg = cfg
        self.keep_latents = keep_latents
        starts = window_starts(cfg)
        self.window_ids = [s.strftime("%Y-%m-%d") for s in starts]
        self._starts_us = np.array([s.value // 1000 for s in starts], dtype=np.int64)
        self.catalogue = make_catalogue(cfg, _rng(cfg, _CATALOGUE), self._starts_us,
                                        cfg.window_days * US_PER_DAY)
        self.population = make_population(cfg, _rng(cfg, _POPULATION), self.catalogue,
                                          self._starts_us)
        cat, pop = self.catalogue, self.population
        shift = cfg.shift_at
        self.truth = ShopTruth(
            config=cfg, window_ids=list(self.window_ids), shift_window=shift,
            shift_window_id=self.window_ids[shift] if shift < cfg.n_windows else None,
            user_ids=pop.user_ids, user_join_window=pop.join_window,
            user_activity=pop.activity, user_price_sensitivity=pop.price_sensitivity,
            item_ids=cat.item_ids, item_category=cat.category, item_latent=cat.latent,
            item_quality=cat.quality, item_popularity=cat.popularity, item_price=cat.price,
            item_launch_window=cat.launch_window)
        self._item_ids = pa.array(cat.item_ids, type=pa.string())
        self._user_ids = pa.array(pop.user_ids, type=pa.string())
        self._next_window = 0
        self._next_account = cfg.n_users  # fraudster accounts are numbered after the users

    def __iter__(self) -> Iterator[WindowData]:
        while self._next_window < self.cfg.n_windows:
            yield self.step()

    def step(self) -> WindowData:
        """Generate the next window (and append its :class:`WindowTruth`)."""
        w = self._next_window
        if w >= self.cfg.n_windows:
            raise SimulationFinishedError(
                f"n_windows: all {self.cfg.n_windows} windows were already generated")
        cfg, pop = self.cfg, self.population
        advance(pop, cfg, w, _rng(cfg, _DRIFT, w))
        clock = WindowClock(index=w, start_us=int(self._starts_us[w]), days=cfg.window_days)
        live = LiveItems.of(self.catalogue, self.catalogue.live_count(w))
        events = window_interactions(cfg, pop, self.catalogue, live, clock,
                                     _rng(cfg, _INTERACTIONS, w))
        txns = window_transactions(cfg, pop, self.catalogue, live, clock,
                                   _rng(cfg, _TRANSACTIONS, w), self._next_account)
        self._next_account = txns.next_account
        data = WindowData(window_id=self.window_ids[w], items=self._items(w, events, txns),
                          interactions=self._interactions(events),
                          transactions=self._transactions(w, txns))
        self._record_truth(w, txns, data)
        self._next_window += 1
        return data

    def _items(self, w: int, events: EventArrays, txns: WindowTxns) -> pd.DataFrame:
        """Items launched in the window plus every item its rows reference (as windows.py
        cuts real data), in launch order."""
        cat = self.catalogue
        keep = cat.launch_window == w
        keep[events.items] = True
        keep[txns.rows.items[txns.rows.items >= 0]] = True
        rows = np.flatnonzero(keep)
        names = np.array(self.cfg.categories, dtype=object)[cat.category[rows]]
        return _frame("items", {
            "item_id": self._item_ids.take(pa.array(rows)), "title": cat.titles[rows],
            "category": names, "price": cat.price[rows], "first_seen": _ts(cat.first_seen_us[rows]),
        })

    def _interactions(self, ev: EventArrays) -> pd.DataFrame:
        return _frame("interactions", {
            "user_id": self._user_ids.take(pa.array(ev.users)),
            "item_id": self._item_ids.take(pa.array(ev.items)),
            "ts": _ts(ev.ts_us),
            "event": pa.array(EVENT_NAMES, type=pa.string()).take(pa.array(ev.event)),
            "quantity": ev.quantity,
            "price": self.catalogue.price[ev.items],
        })

    def _txn_ids(self, w: int, n: int) -> np.ndarray:
        return format_ids(f"t{w:04d}-", np.arange(n), 8)

    def _transactions(self, w: int, txns: WindowTxns) -> pd.DataFrame:
        rows: TxnArrays = txns.rows
        return _frame("transactions", {
            "txn_id": self._txn_ids(w, len(rows.ts_us)),
            "user_id": scramble_user_ids(rows.users, self.cfg.seed),
            "item_id": _maybe_take(self._item_ids, rows.items),
            "ts": _ts(rows.ts_us),
            "amount": rows.amount,
            "is_fraud": rows.attack >= 0,
            **{name: np.asarray(txns.features[name], dtype=np.float64)
               for name in FRAUD_FEATURES},
            **self._label_times(w, rows),
        })

    def _label_times(self, w: int, rows: TxnArrays) -> dict[str, pa.Array]:
        """``label_ts`` when the shop emits chargeback times: each fraud's payment time plus
        an exponential delay of mean ``chargeback_days``; legit rows blank (a legit label is
        known only when the chargeback horizon, the run's label delay, has passed). A
        generator of its own, so the other columns are the same with or without it."""
        if not self.cfg.chargeback_days:
            return {}
        rng = _rng(self.cfg, _CHARGEBACKS, w)
        lag = rng.exponential(self.cfg.chargeback_days * US_PER_DAY, len(rows.ts_us))
        fraud = rows.attack >= 0
        us = np.asarray(rows.ts_us, dtype=np.int64) + lag.astype(np.int64)
        return {LABEL_TS_COLUMN: pa.array(np.where(fraud, us, 0), type=TS_TYPE,
                                          mask=~fraud)}

    def _record_truth(self, w: int, txns: WindowTxns, data: WindowData) -> None:
        fraud = txns.rows.attack >= 0
        keep = self.keep_latents
        self.truth.windows.append(WindowTruth(
            window_id=self.window_ids[w], index=w, shifted=w >= self.cfg.shift_at,
            campaign=txns.campaign,
            user_pref=self.population.pref.copy() if keep else None,
            user_taste=self.population.taste.copy() if keep else None,
            fraud=pd.DataFrame({
                "txn_id": data.transactions["txn_id"].to_numpy()[fraud],
                "campaign": np.full(int(fraud.sum()), txns.campaign, dtype=object),
                "attack_id": txns.rows.attack[fraud],
            })))


def generate(cfg: SyntheticShopConfig, progress: bool = False) -> SyntheticShop:
    """Generate every window of ``cfg`` in memory, with the ground truth."""
    sim = ShopSimulator(cfg)
    windows = list(tqdm(sim, total=cfg.n_windows, desc="synthetic windows", disable=not progress))
    return SyntheticShop(windows=windows, truth=sim.truth)


def iter_windows(cfg: SyntheticShopConfig, progress: bool = False) -> Iterator[WindowData]:
    """Stream the windows one at a time (memory stays at one window: for big configs)."""
    sim = ShopSimulator(cfg, keep_latents=False)
    yield from tqdm(sim, total=cfg.n_windows, desc="synthetic windows", disable=not progress)


def write_truth(truth_dir: Path, truth: ShopTruth) -> None:
    """The schedule as JSON and the per-transaction fraud truth as Parquet."""
    truth_dir.mkdir(parents=True, exist_ok=True)
    schedule = {
        "config": dataclasses.asdict(truth.config),
        "shift_window": truth.shift_window, "shift_window_id": truth.shift_window_id,
        "windows": [{"window_id": w.window_id, "index": w.index, "shifted": w.shifted,
                     "campaign": w.campaign, "n_fraud": len(w.fraud)} for w in truth.windows],
    }
    (truth_dir / "truth.json").write_text(json.dumps(schedule, indent=2) + "\n")
    truth.fraud_campaigns().to_parquet(truth_dir / "fraud_campaigns.parquet", index=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.data.synthetic",
        description="Write the synthetic drifting shop's windows (and its truth under "
                    "OUT/_truth, which list_windows skips).")
    parser.add_argument("--out", type=Path, required=True,
                        help="root folder; one window folder per window id")
    add_dataclass_args(parser, SyntheticShopConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = dataclass_from_args(SyntheticShopConfig, args)
    except ConfigError as exc:
        parser.error(str(exc))
    setup_logging()
    sim = ShopSimulator(cfg, keep_latents=False)
    for data in tqdm(sim, total=cfg.n_windows, desc="synthetic windows", unit="window"):
        folder = write_window(args.out, data, cfg.freq, source="synthetic")
        logger.info("wrote %s: %s", folder, data.counts())
    write_truth(args.out / TRUTH_DIR, sim.truth)
    logger.info("wrote the ground truth to %s", args.out / TRUTH_DIR)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
