"""Interaction events of one synthetic window: who looked at, carted and bought what, and when.

Users are drawn in proportion to their heavy-tailed activity; each event's item is the user's
Gumbel-max pick (:func:`~training.data.synthetic_users.choose_items`), except that a share of
purchases re-buy one of the user's recent purchases. Times follow a shop-wide daily rhythm
(UTC), and no event touches an item before its launch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data.synthetic_catalogue import US_PER_SECOND, Catalogue
from training.data.synthetic_config import SyntheticShopConfig
from training.data.synthetic_users import (
    FAVOURITES,
    LiveItems,
    Population,
    choose_items,
    update_favourites,
)

US_PER_HOUR = 3600 * US_PER_SECOND
US_PER_DAY = 24 * US_PER_HOUR
# Relative activity per hour of day; about 7% of it falls at night (00-05), so night-time
# purchases are normal, just rarer.
_HOURLY = np.array([2.0, 1.4, 1.0, 0.8, 0.8, 1.0, 1.2, 2.5, 3.5, 4.0, 4.5, 5.0,
                    5.5, 5.0, 4.8, 4.8, 5.0, 5.5, 6.0, 6.5, 7.0, 6.5, 5.0, 3.0])
DIURNAL = _HOURLY / _HOURLY.sum()
NIGHT_HOURS = 6  # hours 00:00-05:59 count as night
EVENT_NAMES: tuple[str, ...] = ("view", "cart", "purchase")
VIEW, CART, PURCHASE = 0, 1, 2
VIEW_NOISE = 1.5  # views are browsing: noisier picks than carts and purchases
EXTRA_QUANTITY = 0.3  # purchases buy 1 + Poisson(0.3) units


@dataclass(frozen=True)
class WindowClock:
    """Where one window lies in time."""

    index: int
    start_us: int
    days: int

    @property
    def end_us(self) -> int:
        return self.start_us + self.days * US_PER_DAY


@dataclass(frozen=True)
class EventArrays:
    """One window's interactions, as arrays sorted by time."""

    users: np.ndarray  # int64 population index
    items: np.ndarray  # int64 catalogue index
    ts_us: np.ndarray  # int64
    event: np.ndarray  # int8 index into EVENT_NAMES
    quantity: np.ndarray  # int64


def sample_times(rng: np.random.Generator, n: int, clock: WindowClock,
                 hour_weights: np.ndarray = DIURNAL) -> np.ndarray:
    """``n`` times within the window: a uniform day, an hour by ``hour_weights``, uniform within."""
    day = rng.integers(0, clock.days, n)
    hour = rng.choice(24, size=n, p=hour_weights)
    within = rng.integers(0, US_PER_HOUR, n)
    return np.asarray(clock.start_us + day * US_PER_DAY + hour * US_PER_HOUR + within,
                      dtype=np.int64)


def not_before_launch(rng: np.random.Generator, ts_us: np.ndarray, launch_us: np.ndarray,
                      clock: WindowClock) -> np.ndarray:
    """Move events that precede their item's launch to a uniform time after it."""
    early = ts_us < launch_us
    if not early.any():
        return ts_us
    moved = ts_us.copy()
    room = clock.end_us - launch_us[early]
    moved[early] = launch_us[early] + np.floor(rng.random(int(early.sum())) * room).astype(
        np.int64)
    return moved


def window_interactions(cfg: SyntheticShopConfig, pop: Population, catalogue: Catalogue,
                        live: LiveItems, clock: WindowClock,
                        rng: np.random.Generator) -> EventArrays:
    """Draw the window's events and fold its purchases into the users' favourites."""
    n = cfg.interactions_per_window
    thresholds = np.cumsum([cfg.view_share, cfg.cart_share])
    event = np.searchsorted(thresholds, rng.random(n), side="right").astype(np.int8)
    users = pop.sample_users(rng, pop.activity_cdf(clock.index), n)
    noise = np.where(event == VIEW, VIEW_NOISE, 1.0).astype(np.float32)
    items = choose_items(pop, live, users, noise, rng, cfg.candidates)

    slot = rng.integers(0, FAVOURITES, n)
    favourite = pop.favourites[users, slot]
    repeat = (event == PURCHASE) & (rng.random(n) < cfg.repeat_share) & (favourite >= 0)
    items[repeat] = favourite[repeat]

    ts = not_before_launch(rng, sample_times(rng, n, clock), catalogue.first_seen_us[items],
                           clock)
    quantity = np.where(event == PURCHASE, 1 + rng.poisson(EXTRA_QUANTITY, n), 1)
    order = np.argsort(ts, kind="stable")
    out = EventArrays(users=users[order], items=items[order], ts_us=ts[order],
                      event=event[order], quantity=quantity[order].astype(np.int64))
    bought = out.event == PURCHASE
    update_favourites(pop, out.users[bought], out.items[bought])
    return out
