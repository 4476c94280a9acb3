"""The synthetic shop's one config dataclass, validated on construction.

Kept apart from :mod:`training.data.synthetic` so the generator's helper modules can
import it without importing the generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from training.cli import ConfigError, require
from training.data.synthetic_vocab import DEFAULT_CATEGORIES, VOCABULARIES

Freq = Literal["day", "week"]
WINDOW_DAYS: dict[str, int] = {"day": 1, "week": 7}


@dataclass(frozen=True)
class SyntheticShopConfig:
    """Size, schedule and behaviour of the synthetic drifting shop."""

    seed: int = field(default=0, metadata={"help": "random seed; same config -> same frames"})
    n_users: int = field(default=2000, metadata={"help": "users over the whole run"})
    n_items: int = field(default=800, metadata={"help": "items in the catalogue at window 0"})
    new_items_per_window: int = field(
        default=40, metadata={"help": "items launched in every window after the first"})
    n_windows: int = field(default=6, metadata={"help": "number of time windows"})
    freq: Freq = field(default="week", metadata={"help": "window length: day or week"})
    start: str = field(
        default="2024-01-01",
        metadata={"help": "first window's start date YYYY-MM-DD (a Monday when freq=week)"})
    interactions_per_window: int = field(
        default=15000, metadata={"help": "interaction rows (views + carts + purchases) per window"})
    transactions_per_window: int = field(
        default=4000, metadata={"help": "payment transactions per window (legit + fraud)"})
    fraud_rate: float = field(
        default=0.01, metadata={"help": "expected share of fraudulent transactions"})
    drift_scale: float = field(
        default=0.15,
        metadata={"help": "std of the per-window random-walk step of user preferences"})
    shift_window: int | None = field(
        default=None,
        metadata={"help": "window index of the sudden seasonal shift (none = n_windows // 2; "
                          "n_windows = no shift in this run)"})
    shift_categories: tuple[str, ...] = field(
        default=("seasonal", "toys"),
        metadata={"help": "comma-separated categories that most users suddenly favour at the "
                          "shift"})
    shift_boost: float = field(
        default=3.5, metadata={"help": "preference added to the shift categories at the shift"})
    shift_user_share: float = field(
        default=0.8, metadata={"help": "share of users whose preference the shift boosts"})
    categories: tuple[str, ...] = field(
        default=DEFAULT_CATEGORIES,
        metadata={"help": "comma-separated shop categories, each one of "
                          + ",".join(sorted(VOCABULARIES))})
    new_user_share: float = field(
        default=0.3,
        metadata={"help": "share of users who sign up after window 0, evenly over later windows"})
    view_share: float = field(
        default=0.25, metadata={"help": "share of interaction rows that are views"})
    cart_share: float = field(
        default=0.1, metadata={"help": "share of interaction rows that are add-to-carts"})
    repeat_share: float = field(
        default=0.3,
        metadata={"help": "probability that a purchase re-buys one of the user's recent items"})
    chargeback_days: float = field(
        default=0.0, metadata={"help": "mean days from a fraud to its chargeback; > 0 emits "
                                       "each fraud's label arrival time (label_ts = ts + "
                                       "Exponential(mean)), 0: none (labels come at the "
                                       "run's --label-delay)"})
    latent_dim: int = field(
        default=16, metadata={"help": "size of user taste / item latent vectors (>= 4)"})
    candidates: int = field(
        default=32,
        metadata={"help": "items offered per event; the user takes the Gumbel-max of them"})

    def __post_init__(self) -> None:
        require(self.seed >= 0, "seed", f"must be >= 0 (a numpy seed), got {self.seed}")
        for name in ("n_users", "n_items", "n_windows", "interactions_per_window",
                     "transactions_per_window"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        require(self.new_items_per_window >= 0, "new_items_per_window",
                f"must be >= 0, got {self.new_items_per_window}")
        require(self.freq in WINDOW_DAYS, "freq", f"must be day or week, got {self.freq!r}")
        self._check_start()
        require(0.0 <= self.fraud_rate <= 0.5, "fraud_rate",
                f"must be in [0, 0.5], got {self.fraud_rate}")
        require(self.drift_scale >= 0.0, "drift_scale", f"must be >= 0, got {self.drift_scale}")
        self._check_categories()
        require(self.shift_window is None or 0 <= self.shift_window <= self.n_windows,
                "shift_window", f"must be in [0, n_windows={self.n_windows}], "
                f"got {self.shift_window}")
        for name in ("shift_user_share", "new_user_share", "view_share", "cart_share",
                     "repeat_share"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, name, f"must be in [0, 1], got {value}")
        require(self.view_share + self.cart_share < 1.0, "view_share",
                "view_share + cart_share must leave room for purchases (< 1)")
        require(self.chargeback_days >= 0.0 and self.chargeback_days < float("inf"),
                "chargeback_days", f"must be a finite number >= 0, got {self.chargeback_days}")
        require(self.latent_dim >= 4, "latent_dim", f"must be >= 4, got {self.latent_dim}")
        require(self.candidates >= 2, "candidates", f"must be >= 2, got {self.candidates}")

    def _check_start(self) -> None:
        try:
            start = datetime.strptime(self.start, "%Y-%m-%d")
        except ValueError as exc:
            raise ConfigError(f"start: not a date YYYY-MM-DD: {self.start!r}") from exc
        # Week ids are Monday dates (training/data/windows.py); a window must start on one.
        require(self.freq != "week" or start.weekday() == 0, "start",
                f"must be a Monday when freq=week, got {self.start!r} ({start:%A})")

    def _check_categories(self) -> None:
        require(len(self.categories) >= 1, "categories", "needs at least one category")
        require(len(set(self.categories)) == len(self.categories), "categories",
                f"has duplicates: {self.categories}")
        unknown = [c for c in self.categories if c not in VOCABULARIES]
        require(not unknown, "categories",
                f"unknown {unknown}; known: {sorted(VOCABULARIES)}")
        stray = [c for c in self.shift_categories if c not in self.categories]
        require(not stray, "shift_categories", f"{stray} are not in categories")

    @property
    def shift_at(self) -> int:
        """The resolved shift window index (``n_windows`` means no shift in this run)."""
        return self.n_windows // 2 if self.shift_window is None else self.shift_window

    @property
    def window_days(self) -> int:
        return WINDOW_DAYS[self.freq]
