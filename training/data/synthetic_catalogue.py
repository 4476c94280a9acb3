"""The synthetic shop's catalogue: items whose titles, categories and prices follow their latents.

Every word of the vocabulary (category, noun, attribute, brand) gets a random embedding; an
item's latent vector is the sum of the embeddings of its category and title words plus a
little noise, with latent dimension 0 reserved for quality. Quality also picks the title's
quality word ("premium"/"budget") at the extremes and raises the price. So the title alone
locates a new item close to its latent: text helps cold start, as it would in a real shop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data.synthetic_config import SyntheticShopConfig
from training.data.synthetic_vocab import BUDGET_WORDS, PREMIUM_WORDS, VOCABULARIES

US_PER_SECOND = 1_000_000
# Scale of each word's embedding: category words dominate, brands nudge.
CATEGORY_NORM, NOUN_NORM, ATTRIBUTE_NORM, BRAND_NORM, NOISE_NORM = 1.0, 0.6, 0.35, 0.25, 0.15
QUALITY_WORD_AT = 1.0  # |quality| above this swaps the attribute for a quality word
QUALITY_IN_LATENT = 0.5
QUALITY_IN_PRICE = 0.35
LAUNCH_SPREAD = 0.25  # new items launch within the first quarter of their window


@dataclass(frozen=True)
class Catalogue:
    """All items of the run (later windows' launches included), in launch order."""

    item_ids: np.ndarray  # str
    titles: np.ndarray  # str
    category: np.ndarray  # int16 index into config.categories
    latent: np.ndarray  # float32 (n_items, latent_dim)
    quality: np.ndarray  # float32
    popularity: np.ndarray  # float32, additive utility term
    price: np.ndarray  # float64
    first_seen_us: np.ndarray  # int64 microseconds since the epoch, UTC
    launch_window: np.ndarray  # int32

    @property
    def log_price(self) -> np.ndarray:
        return np.log(self.price).astype(np.float32)

    def live_count(self, window: int) -> int:
        """Items launched in windows ``<= window``: a prefix, since items are in launch order."""
        return int(np.searchsorted(self.launch_window, window, side="right"))


@dataclass(frozen=True)
class _WordTable:
    """One kind of word (noun, attribute, brand) flattened over categories."""

    text: np.ndarray  # str
    offset: np.ndarray  # int64 per category: first row of that category
    count: np.ndarray  # int64 per category
    vector: np.ndarray  # float32 (rows, latent_dim)

    def draw(self, rng: np.random.Generator, category: np.ndarray) -> np.ndarray:
        """One random row of each item's category."""
        pick = np.floor(rng.random(len(category)) * self.count[category]).astype(np.int64)
        return np.asarray(self.offset[category] + pick)


def _embed(rng: np.random.Generator, rows: int, dim: int, norm: float) -> np.ndarray:
    vec = rng.standard_normal((rows, dim)) * (norm / np.sqrt(dim - 1))
    vec[:, 0] = 0.0  # dimension 0 is quality's alone
    return vec.astype(np.float32)


def _word_table(rng: np.random.Generator, words: list[list[str]], dim: int,
                norm: float) -> _WordTable:
    count = np.array([len(w) for w in words], dtype=np.int64)
    offset = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    text = np.array([w for group in words for w in group], dtype=object)
    return _WordTable(text=text, offset=offset, count=count,
                      vector=_embed(rng, int(count.sum()), dim, norm))


def _launch_plan(cfg: SyntheticShopConfig) -> np.ndarray:
    per_window = [cfg.n_items] + [cfg.new_items_per_window] * (cfg.n_windows - 1)
    return np.repeat(np.arange(cfg.n_windows, dtype=np.int32), per_window)


def _first_seen(rng: np.random.Generator, launch: np.ndarray, window_starts_us: np.ndarray,
                window_us: int) -> np.ndarray:
    """Window 0's items exist when the shop opens; later ones launch early in their window."""
    offset_s = rng.random(len(launch)) * (LAUNCH_SPREAD * window_us / US_PER_SECOND)
    offset_us = np.floor(offset_s).astype(np.int64) * US_PER_SECOND
    offset_us[launch == 0] = 0
    return np.asarray(window_starts_us[launch] + offset_us, dtype=np.int64)


def _titles(rng: np.random.Generator, quality: np.ndarray, brand: np.ndarray,
            attribute: np.ndarray, noun: np.ndarray) -> np.ndarray:
    words = attribute.copy()
    premium, budget = quality > QUALITY_WORD_AT, quality < -QUALITY_WORD_AT
    words[premium] = np.array(PREMIUM_WORDS, dtype=object)[
        rng.integers(0, len(PREMIUM_WORDS), int(premium.sum()))]
    words[budget] = np.array(BUDGET_WORDS, dtype=object)[
        rng.integers(0, len(BUDGET_WORDS), int(budget.sum()))]
    return np.asarray(brand + " " + words + " " + noun, dtype=object)


def format_ids(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    """``prefix`` + zero-padded numbers, vectorised (no Python loop per id)."""
    digits = np.strings.zfill(np.asarray(numbers, dtype=np.int64).astype(np.str_), width)
    return np.asarray(np.strings.add(prefix, digits), dtype=object)


def make_catalogue(cfg: SyntheticShopConfig, rng: np.random.Generator,
                   window_starts_us: np.ndarray, window_us: int) -> Catalogue:
    """Every item of the run, generated up front (the catalogue is small next to the events)."""
    vocab = [VOCABULARIES[c] for c in cfg.categories]
    dim = cfg.latent_dim
    cat_vec = _embed(rng, len(vocab), dim, CATEGORY_NORM)
    nouns = _word_table(rng, [[n for n, _ in v.nouns] for v in vocab], dim, NOUN_NORM)
    base_price = np.array([p for v in vocab for _, p in v.nouns], dtype=np.float64)
    attrs = _word_table(rng, [list(v.attributes) for v in vocab], dim, ATTRIBUTE_NORM)
    brands = _word_table(rng, [list(v.brands) for v in vocab], dim, BRAND_NORM)
    brand_pop = rng.normal(0.0, 0.4, len(brands.text)).astype(np.float32)

    launch = _launch_plan(cfg)
    n = len(launch)
    category = rng.integers(0, len(vocab), n).astype(np.int16)
    noun, attr, brand = nouns.draw(rng, category), attrs.draw(rng, category), brands.draw(
        rng, category)
    quality = rng.standard_normal(n).astype(np.float32)
    is_quality_word = np.abs(quality) > QUALITY_WORD_AT
    latent = (cat_vec[category] + nouns.vector[noun] + brands.vector[brand]
              + np.where(is_quality_word[:, None], 0.0, attrs.vector[attr])
              + _embed(rng, n, dim, NOISE_NORM))
    latent[:, 0] = QUALITY_IN_LATENT * quality
    price = base_price[noun] * np.exp(QUALITY_IN_PRICE * quality + rng.normal(0.0, 0.15, n))
    return Catalogue(
        item_ids=format_ids("i", np.arange(n), max(6, len(str(n)))),
        titles=_titles(rng, quality, brands.text[brand], attrs.text[attr], nouns.text[noun]),
        category=category,
        latent=latent.astype(np.float32),
        quality=quality,
        popularity=(brand_pop[brand] + rng.normal(0.0, 0.7, n)).astype(np.float32),
        price=np.round(np.maximum(price, 0.5), 2),
        first_seen_us=_first_seen(rng, launch, window_starts_us, window_us),
        launch_window=launch,
    )
