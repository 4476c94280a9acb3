"""Payment transactions of one synthetic window: ordinary purchases plus one fraud campaign.

Legit transactions are purchases drawn like the interactions (same users, same utility), in
sessions of 1 + Poisson(0.35) checkouts minutes apart, with realistic noise in the fraud
features: about 7% happen at night (00-05 UTC), 5% come from a new device (35% for accounts
younger than 14 days), 8% of sessions are made while travelling (~300 km from home).

Fraud is ``Binomial(transactions_per_window, fraud_rate)`` rows of the window's campaign
(:func:`campaign_for`):

* ``card_testing`` (windows before the shift): fraudster accounts (40% made 0-3 days before,
  the rest bought aged 20-400 days) fire bursts of 2 + Poisson(3) small charges on the
  cheapest fifth of the items (20% are item-less 0.50-2.00 "balance checks"), 20 s to 10 min
  apart; 60% of bursts run at night; 35% on a new device; ~40 km from home.
* ``account_takeover`` (shift window and later): established users' accounts buy
  1 + Poisson(0.6) items from the dearest fifth of the items, 2-30 min apart, at ordinary
  shopping hours; 55% on a new device; ~150 km from home (widely spread).

The feature columns are computed from the generated rows the way a shop would: the hour of
day, the count of the same user's transactions in the preceding hour (within the window),
the account's age, and the amount relative to the user's running typical spend (which the
fraud itself also moves). No single feature separates fraud; together they do, and a model
fitted on one campaign fails on the other.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from training.data.synthetic_catalogue import Catalogue
from training.data.synthetic_config import SyntheticShopConfig
from training.data.synthetic_events import (
    DIURNAL,
    EXTRA_QUANTITY,
    NIGHT_HOURS,
    US_PER_DAY,
    US_PER_HOUR,
    WindowClock,
    sample_times,
)
from training.data.synthetic_users import LiveItems, Population, choose_items

CARD_TESTING, ACCOUNT_TAKEOVER = "card_testing", "account_takeover"
FRAUD_FEATURES: tuple[str, ...] = (
    "hour_sin", "hour_cos", "is_new_device", "txns_last_hour", "distance_from_home_km",
    "account_age_days", "amount_to_user_median",
)
_NIGHT = np.r_[np.ones(NIGHT_HOURS), np.zeros(24 - NIGHT_HOURS)] / NIGHT_HOURS
CARD_TESTING_HOURS = 0.6 * _NIGHT + 0.4 * DIURNAL
SPEND_MEMORY = 0.7  # weight of the old typical spend when a window's amounts update it
LEGIT_EXTRA_PER_SESSION = 0.35  # a legit session holds 1 + Poisson(0.35) checkouts
YOUNG_ACCOUNT_DAYS = 14  # accounts younger than this often show a device not seen before


def campaign_for(window: int, shift_at: int) -> str:
    """The fraud campaign running in ``window``: it switches at the seasonal shift."""
    return CARD_TESTING if window < shift_at else ACCOUNT_TAKEOVER


@dataclass(frozen=True)
class TxnArrays:
    """Transactions as parallel arrays (any order until :func:`window_transactions` sorts)."""

    users: np.ndarray  # int64: population index, >= n_users for fraudster accounts
    items: np.ndarray  # int64: catalogue index, -1 = no item
    ts_us: np.ndarray  # int64
    amount: np.ndarray  # float64
    new_device: np.ndarray  # float64 0/1
    distance_km: np.ndarray  # float64
    created_us: np.ndarray  # int64: account creation
    attack: np.ndarray  # int64: -1 legit, else the burst / takeover session within the window

    @classmethod
    def concat(cls, parts: list[TxnArrays]) -> TxnArrays:
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                      for f in fields(cls)})

    def take(self, order: np.ndarray) -> TxnArrays:
        return TxnArrays(**{f.name: getattr(self, f.name)[order] for f in fields(self)})


@dataclass(frozen=True)
class WindowTxns:
    """A window's transactions sorted by time, their features, and the truth kept apart."""

    rows: TxnArrays
    features: dict[str, np.ndarray]
    campaign: str
    next_account: int


def _sessions(rng: np.random.Generator, n: int, min_size: int,
              extra_mean: float) -> tuple[np.ndarray, int]:
    """Split ``n`` rows into sessions of ``min_size + Poisson(extra_mean)`` (the last trimmed)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    sizes = min_size + rng.poisson(extra_mean, n)
    ends = np.cumsum(sizes)
    n_groups = int(np.searchsorted(ends, n)) + 1
    sizes = sizes[:n_groups]
    sizes[-1] -= ends[n_groups - 1] - n
    return np.repeat(np.arange(n_groups, dtype=np.int64), sizes), n_groups


def _session_times(rng: np.random.Generator, group: np.ndarray, starts_us: np.ndarray,
                   gap_s: tuple[float, float], clock: WindowClock) -> np.ndarray:
    """Session start plus cumulative random gaps, kept inside the window."""
    gaps = rng.uniform(gap_s[0], gap_s[1], len(group)) * 1e6
    first = np.r_[True, group[1:] != group[:-1]] if len(group) else np.zeros(0, dtype=bool)
    gaps[first] = 0.0
    elapsed = np.cumsum(gaps)
    elapsed -= elapsed[np.flatnonzero(first)][group]
    ts = starts_us[group] + elapsed.astype(np.int64)
    return np.minimum(ts, clock.end_us - 1)


def _per_session(rng: np.random.Generator, group: np.ndarray, n_groups: int,
                 p: np.ndarray | float) -> np.ndarray:
    """A 0/1 flag drawn once per session (one device per session), spread to its rows."""
    return np.asarray((rng.random(n_groups) < p)[group], dtype=np.float64)


def _legit(cfg: SyntheticShopConfig, pop: Population, catalogue: Catalogue, live: LiveItems,
           clock: WindowClock, rng: np.random.Generator, n: int) -> TxnArrays:
    """Ordinary checkouts, some of them several in one session (so bursts are not only fraud)."""
    group, n_sessions = _sessions(rng, n, 1, LEGIT_EXTRA_PER_SESSION)
    users = pop.sample_users(rng, pop.activity_cdf(clock.index), n_sessions)
    ts = _session_times(rng, group, sample_times(rng, n_sessions, clock), (30.0, 900.0), clock)
    items = choose_items(pop, live, users[group], np.ones(n, np.float32), rng, cfg.candidates)
    ts = np.maximum(ts, catalogue.first_seen_us[items])
    quantity = 1 + rng.poisson(EXTRA_QUANTITY, n)
    amount = np.round(catalogue.price[items] * quantity * rng.uniform(1.0, 1.08, n), 2)
    items[rng.random(n) < 0.03] = -1  # gift cards and top-ups carry no item
    young = pop.created_us[users] > clock.start_us - YOUNG_ACCOUNT_DAYS * US_PER_DAY
    travelling = rng.random(n_sessions) < 0.08
    distance = np.where(travelling, rng.lognormal(np.log(300.0), 1.1, n_sessions),
                        rng.lognormal(np.log(6.0), 0.9, n_sessions))
    return TxnArrays(users=users[group], items=items, ts_us=ts, amount=amount,
                     new_device=_per_session(rng, group, n_sessions, np.where(young, 0.35, 0.05)),
                     distance_km=distance[group], created_us=pop.created_us[users[group]],
                     attack=np.full(n, -1, dtype=np.int64))


def _card_testing(catalogue: Catalogue, live: LiveItems, clock: WindowClock,
                  rng: np.random.Generator, n: int, first_account: int) -> TxnArrays:
    """Bursts of small charges, each burst from one fraudster account and device."""
    group, n_bursts = _sessions(rng, n, 2, 3.0)
    starts = sample_times(rng, n_bursts, clock, CARD_TESTING_HOURS)
    ts = _session_times(rng, group, starts, (20.0, 600.0), clock)
    price = catalogue.price[: live.n]
    cheap = np.flatnonzero(price <= np.quantile(price, 0.2))
    items = cheap[rng.integers(0, len(cheap), n)]
    amount = np.round(price[items] * rng.uniform(0.9, 1.0, n), 2)
    balance_check = rng.random(n) < 0.2  # "is this card alive" charges with no item
    items[balance_check] = -1
    amount[balance_check] = np.round(rng.uniform(0.5, 2.0, int(balance_check.sum())), 2)
    # Most accounts are made for the attack; some were bought aged, to look established.
    age_days = np.where(rng.random(n_bursts) < 0.4, rng.uniform(0.0, 3.0, n_bursts),
                        rng.uniform(20.0, 400.0, n_bursts))
    created = starts - (age_days * US_PER_DAY).astype(np.int64)
    return TxnArrays(users=first_account + group, items=items, ts_us=ts, amount=amount,
                     new_device=_per_session(rng, group, n_bursts, 0.35),
                     distance_km=rng.lognormal(np.log(40.0), 1.4, n_bursts)[group],
                     created_us=created[group], attack=group)


def _takeover_victims(pop: Population, clock: WindowClock, rng: np.random.Generator,
                      n: int) -> np.ndarray:
    """Established accounts, the busier the likelier (a new shop has only founders to rob)."""
    established = pop.join_window < clock.index
    if not established.any():
        established = pop.join_window <= clock.index
    cdf = np.cumsum(np.where(established, pop.activity, 0.0))
    return pop.sample_users(rng, cdf, n)


def _account_takeover(pop: Population, catalogue: Catalogue, live: LiveItems,
                      clock: WindowClock, rng: np.random.Generator, n: int) -> TxnArrays:
    group, n_sessions = _sessions(rng, n, 1, 0.6)
    victims = _takeover_victims(pop, clock, rng, n_sessions)
    starts = sample_times(rng, n_sessions, clock)
    ts = _session_times(rng, group, starts, (120.0, 1800.0), clock)
    price = catalogue.price[: live.n]
    dear = np.flatnonzero(price >= np.quantile(price, 0.8))
    items = dear[rng.integers(0, len(dear), n)]
    ts = np.maximum(ts, catalogue.first_seen_us[items])
    quantity = 1 + (rng.random(n) < 0.3)
    return TxnArrays(users=victims[group], items=items, ts_us=ts,
                     amount=np.round(price[items] * quantity, 2),
                     new_device=_per_session(rng, group, n_sessions, 0.55),
                     distance_km=rng.lognormal(np.log(150.0), 1.3, n_sessions)[group],
                     created_us=pop.created_us[victims[group]], attack=group)


def _txns_last_hour(users: np.ndarray, ts_us: np.ndarray, start_us: int) -> np.ndarray:
    """Per row: the same user's transactions in the hour before it (rows sorted by time)."""
    _, rank = np.unique(users, return_inverse=True)
    span = int(ts_us.max() - start_us) + 2 * US_PER_HOUR if len(ts_us) else 1
    key = rank.astype(np.int64) * span + (ts_us - start_us)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    earlier = np.arange(len(key)) - np.searchsorted(sorted_key, sorted_key - US_PER_HOUR,
                                                    side="left")
    counts = np.empty(len(key), dtype=np.float64)
    counts[order] = earlier
    return counts


def _features(rows: TxnArrays, pop: Population, clock: WindowClock) -> dict[str, np.ndarray]:
    hour = (rows.ts_us % US_PER_DAY) / US_PER_HOUR
    known = rows.users < len(pop.user_ids)
    # Unknown (fraudster) accounts have no history: compare with the shop's typical spend.
    typical = np.full(len(rows.users), float(np.exp(np.median(pop.log_spend))))
    typical[known] = np.exp(pop.log_spend[rows.users[known]])
    return {
        "hour_sin": np.sin(2 * np.pi * hour / 24),
        "hour_cos": np.cos(2 * np.pi * hour / 24),
        "is_new_device": rows.new_device,
        "txns_last_hour": _txns_last_hour(rows.users, rows.ts_us, clock.start_us),
        "distance_from_home_km": np.round(rows.distance_km, 2),
        "account_age_days": np.maximum(rows.ts_us - rows.created_us, 0) / US_PER_DAY,
        "amount_to_user_median": rows.amount / typical,
    }


def _remember_spend(pop: Population, rows: TxnArrays) -> None:
    known = rows.users < len(pop.user_ids)
    users, log_amount = rows.users[known], np.log(np.maximum(rows.amount[known], 0.01))
    n = len(pop.user_ids)
    count = np.bincount(users, minlength=n)
    mean = np.bincount(users, weights=log_amount, minlength=n) / np.maximum(count, 1)
    seen = count > 0
    pop.log_spend[seen] = SPEND_MEMORY * pop.log_spend[seen] + (1 - SPEND_MEMORY) * mean[seen]


def window_transactions(cfg: SyntheticShopConfig, pop: Population, catalogue: Catalogue,
                        live: LiveItems, clock: WindowClock, rng: np.random.Generator,
                        next_account: int) -> WindowTxns:
    """The window's transactions; fraudster accounts are numbered from ``next_account``."""
    n = cfg.transactions_per_window
    n_fraud = int(rng.binomial(n, cfg.fraud_rate))
    legit = _legit(cfg, pop, catalogue, live, clock, rng, n - n_fraud)
    campaign = campaign_for(clock.index, cfg.shift_at)
    if campaign == CARD_TESTING:
        fraud = _card_testing(catalogue, live, clock, rng, n_fraud, next_account)
        next_account += int(fraud.attack.max()) + 1 if n_fraud else 0
    else:
        fraud = _account_takeover(pop, catalogue, live, clock, rng, n_fraud)
    rows = TxnArrays.concat([legit, fraud])
    rows = rows.take(np.argsort(rows.ts_us, kind="stable"))
    features = _features(rows, pop, clock)
    _remember_spend(pop, rows)
    return WindowTxns(rows=rows, features=features, campaign=campaign, next_account=next_account)
