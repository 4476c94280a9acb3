"""The synthetic shop's users: who they are, what they like, how that drifts, what they pick.

A user's utility for an item is

    u(user, item) = pref[user, category(item)] + taste[user] . latent[item]
                    + popularity[item] - price_sensitivity[user] * log(price[item]) + noise

with Gumbel noise, so taking the argmax over a random candidate set is an exact draw from the
softmax (multinomial logit) over those candidates. :func:`choose_items` does this vectorised,
in chunks, without a Python loop per event.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data.synthetic_catalogue import US_PER_SECOND, Catalogue, format_ids
from training.data.synthetic_config import SyntheticShopConfig

ACTIVITY_SIGMA = 1.3  # lognormal activity: the top 1% of users make ~10% of the events
TASTE_SCALE = 0.6
PREF_SPREAD = 0.8  # per-user spread of category preference around the category's base
OFF_SEASON = -1.0  # base preference of the shift categories before the shift
FAVOURITES = 4  # recent purchases a user may re-buy
CHUNK = 8192  # events scored at once: (CHUNK, candidates, latent_dim) float32 stays small
US_PER_DAY = 86_400 * US_PER_SECOND
ID_MULTIPLIER = 0x9E3779B1  # odd, so idx -> idx * M mod 2**32 is a bijection


@dataclass
class Population:
    """Every user of the run (late sign-ups included) and their current, drifting state."""

    user_ids: np.ndarray  # str
    join_window: np.ndarray  # int32: first window the user is active in
    created_us: np.ndarray  # int64: account creation time
    activity: np.ndarray  # float64: relative event rate
    price_sensitivity: np.ndarray  # float32
    shift_prone: np.ndarray  # bool: does the seasonal shift boost this user
    pref: np.ndarray  # float32 (n_users, n_categories), drifts every window
    taste: np.ndarray  # float32 (n_users, latent_dim), drifts every window
    favourites: np.ndarray  # int64 (n_users, FAVOURITES): item index or -1, newest last
    log_spend: np.ndarray  # float64: running typical log amount the shop has seen

    def activity_cdf(self, window: int) -> np.ndarray:
        """Cumulative activity of the users signed up by ``window`` (others weigh 0)."""
        return np.cumsum(np.where(self.join_window <= window, self.activity, 0.0))

    def sample_users(self, rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
        """``n`` user indices drawn in proportion to activity, through a precomputed cdf."""
        picks = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
        return np.minimum(picks, len(cdf) - 1).astype(np.int64)


@dataclass(frozen=True)
class LiveItems:
    """The items on sale in one window, as float32 arrays the chooser gathers from."""

    category: np.ndarray
    latent: np.ndarray
    popularity: np.ndarray
    log_price: np.ndarray

    @classmethod
    def of(cls, catalogue: Catalogue, n_live: int) -> LiveItems:
        return cls(category=catalogue.category[:n_live], latent=catalogue.latent[:n_live],
                   popularity=catalogue.popularity[:n_live],
                   log_price=catalogue.log_price[:n_live])

    @property
    def n(self) -> int:
        return len(self.category)


def scramble_user_ids(numbers: np.ndarray, seed: int) -> np.ndarray:
    """Ids that do not reveal sign-up order (nor whether an account is a fraudster's)."""
    salt = (seed * 2_654_435_761 + 12_345) % 2**32
    mixed = (numbers.astype(np.uint64) * np.uint64(ID_MULTIPLIER) + np.uint64(salt)) % 2**32
    return format_ids("u", mixed.astype(np.int64), 10)


def _join_windows(cfg: SyntheticShopConfig, rng: np.random.Generator) -> np.ndarray:
    join = np.zeros(cfg.n_users, dtype=np.int32)
    if cfg.n_windows > 1:
        late = rng.permutation(cfg.n_users)[: int(round(cfg.n_users * cfg.new_user_share))]
        join[late] = 1 + np.arange(len(late)) % (cfg.n_windows - 1)
    return join


def _created(rng: np.random.Generator, join: np.ndarray,
             window_starts_us: np.ndarray) -> np.ndarray:
    """Founding users' accounts are 30-1500 days old; late ones sign up just before joining."""
    age_days = np.where(join == 0, rng.uniform(30.0, 1500.0, len(join)),
                        rng.uniform(0.0, 0.25, len(join)))
    return np.asarray(window_starts_us[join] - (age_days * US_PER_DAY).astype(np.int64))


def _base_preference(cfg: SyntheticShopConfig, rng: np.random.Generator) -> np.ndarray:
    base = rng.normal(0.0, 0.5, len(cfg.categories))
    for name in cfg.shift_categories:
        base[cfg.categories.index(name)] = OFF_SEASON
    return base


def make_population(cfg: SyntheticShopConfig, rng: np.random.Generator, catalogue: Catalogue,
                    window_starts_us: np.ndarray) -> Population:
    n, dim = cfg.n_users, cfg.latent_dim
    join = _join_windows(cfg, rng)
    pref = _base_preference(cfg, rng) + PREF_SPREAD * rng.standard_normal(
        (n, len(cfg.categories)))
    taste = TASTE_SCALE * rng.standard_normal((n, dim))
    taste[:, 0] += 0.3  # most users like quality a little, and pay for it through the price
    pop = Population(
        user_ids=scramble_user_ids(np.arange(n), cfg.seed),
        join_window=join,
        created_us=_created(rng, join, window_starts_us),
        activity=rng.lognormal(0.0, ACTIVITY_SIGMA, n),
        price_sensitivity=rng.lognormal(np.log(0.4), 0.4, n).astype(np.float32),
        shift_prone=rng.random(n) < cfg.shift_user_share,
        pref=pref.astype(np.float32), taste=taste.astype(np.float32),
        favourites=np.full((n, FAVOURITES), -1, dtype=np.int64),
        log_spend=np.zeros(n),
    )
    # Staples: every user starts with a few habitual items, drawn from their own utility.
    live = LiveItems.of(catalogue, catalogue.live_count(0))
    users = np.repeat(np.arange(n, dtype=np.int64), FAVOURITES)
    staples = choose_items(pop, live, users, np.ones(len(users), np.float32), rng, cfg.candidates)
    pop.favourites[:] = staples.reshape(n, FAVOURITES)
    pop.log_spend[:] = np.median(np.log(catalogue.price[pop.favourites]), axis=1)
    return pop


def advance(pop: Population, cfg: SyntheticShopConfig, window: int,
            rng: np.random.Generator) -> None:
    """Move preferences to ``window``: a random-walk step, plus the one sudden seasonal shift."""
    if window > 0 and cfg.drift_scale > 0:
        pop.pref += (cfg.drift_scale * rng.standard_normal(pop.pref.shape)).astype(np.float32)
        pop.taste += (cfg.drift_scale * TASTE_SCALE
                      * rng.standard_normal(pop.taste.shape)).astype(np.float32)
    if window == cfg.shift_at:
        cols = np.array([cfg.categories.index(name) for name in cfg.shift_categories],
                        dtype=np.int64)
        rows = np.flatnonzero(pop.shift_prone)
        pop.pref[np.ix_(rows, cols)] += np.float32(cfg.shift_boost)


def gumbel(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    # -log(E) with E ~ Exp(1) is Gumbel; the floor keeps log away from an exact zero.
    return np.asarray(-np.log(rng.standard_exponential(shape, dtype=np.float32) + 1e-30))


def choose_items(pop: Population, items: LiveItems, users: np.ndarray, noise: np.ndarray,
                 rng: np.random.Generator, candidates: int) -> np.ndarray:
    """Each user's pick among ``candidates`` random live items: argmax of utility + Gumbel noise.

    ``noise`` scales each event's Gumbel noise (browsing is noisier than buying).
    """
    picks = np.empty(len(users), dtype=np.int64)
    for lo in range(0, len(users), CHUNK):
        u = users[lo:lo + CHUNK]
        cand = rng.integers(0, items.n, (len(u), candidates))
        util = pop.pref[u[:, None], items.category[cand]]
        util += np.einsum("nd,ncd->nc", pop.taste[u], items.latent[cand])
        util += items.popularity[cand]
        util -= pop.price_sensitivity[u][:, None] * items.log_price[cand]
        util += noise[lo:lo + CHUNK, None] * gumbel(rng, cand.shape)
        picks[lo:lo + CHUNK] = cand[np.arange(len(u)), util.argmax(axis=1)]
    return picks


def update_favourites(pop: Population, users: np.ndarray, items: np.ndarray) -> None:
    """Keep each user's ``FAVOURITES`` most recent purchases; ``users``/``items`` in time order."""
    n, k = pop.favourites.shape
    old_users = np.repeat(np.arange(n, dtype=np.int64), k)
    old_items = pop.favourites.ravel()
    kept = old_items >= 0
    all_users = np.concatenate([old_users[kept], users])
    all_items = np.concatenate([old_items[kept], items])
    order = np.argsort(all_users, kind="stable")  # stable: time order survives within a user
    all_users, all_items = all_users[order], all_items[order]
    group_end = np.searchsorted(all_users, all_users, side="right")
    from_end = group_end - 1 - np.arange(len(all_users))
    keep = from_end < k
    pop.favourites.fill(-1)
    pop.favourites[all_users[keep], k - 1 - from_end[keep]] = all_items[keep]
