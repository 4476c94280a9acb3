"""The store's title vectors (``training.store.title_vectors``) in and out of an update.

:func:`seed_titles` runs at the end of ``prepare_update``, before anything encodes a title:
each stored title this process has not encoded yet is taken from the store, so an update
in a new process (a ``training.incremental`` job, a Tune trial) encodes only the window's new
titles. :func:`keep_titles` runs after the candidate is published or recorded, and writes
the process's vectors back when the store's object lacks some of them.

Only with the whole encoder frozen (``finetune_layers=0``, the default): a trained top layer
makes the cached part per-token states, which are not kept. ``--title-cache false`` turns
both off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from training.model import ShopStreamModel
from training.model.text_cache import titles_encoded
from training.store import CheckpointStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TitleSeed:
    """What :func:`seed_titles` found: the titles in the store's object when it was read
    (empty: none, or not read), how many it added to this process's cache, and the process's
    :func:`titles_encoded` count at that moment (the update's own encoding is the rise)."""

    stored: frozenset[str] = frozenset()
    from_store: int = 0
    encoded_before: int = 0

    def summary(self, written: int) -> dict[str, int]:
        """For an update's summary: titles taken from the store, encoded by this update,
        written back (0: the store already had every one)."""
        return {"from_store": self.from_store, "encoded": titles_encoded() - self.encoded_before,
                "written": written}


def _usable(model: ShopStreamModel, enabled: bool) -> bool:
    return enabled and model.text.pools_frozen and model.cfg.text_cache_size > 0


def seed_titles(store: CheckpointStore, model: ShopStreamModel, enabled: bool) -> TitleSeed:
    """Add the store's vectors that this process lacks to the process-wide cache of
    ``model``'s frozen encoder weights (every copy, teacher and incumbent shares it)."""
    before = titles_encoded()
    if not _usable(model, enabled):
        return TitleSeed(encoded_before=before)
    text = model.text
    text.use_shared_cache()
    stored = store.get_title_vectors(text.frozen_signature())
    have = set(text.cached_titles())
    wanted = [t for t in stored if t not in have]
    if wanted and stored[wanted[0]].shape != (text.output_dim,):
        logger.warning("title vectors in the store have shape %s, the encoder gives [%d]: "
                       "ignored", list(stored[wanted[0]].shape), text.output_dim)
        return TitleSeed(encoded_before=before)
    text.import_cache({t: torch.from_numpy(stored[t].copy()) for t in wanted})
    logger.info("title vectors: %d from the store (%d already in this process)",
                len(wanted), len(have))
    return TitleSeed(frozenset(stored), len(wanted), before)


def keep_titles(store: CheckpointStore, model: ShopStreamModel, seed: TitleSeed,
                enabled: bool) -> int:
    """Write every vector the process holds for ``model``'s frozen encoder weights (at most
    ``text_cache_size``: the catalogue, and the titles of the held-out tail and the
    evaluation, which the next update meets again) when the store's object, as
    :func:`seed_titles` read it, lacks one; returns the rows written (0: nothing to add)."""
    if not _usable(model, enabled):
        return 0
    text = model.text
    text.use_shared_cache()
    titles = text.cached_titles()
    if set(titles) <= seed.stored:
        return 0
    vectors = text.export_cache(titles)
    store.put_title_vectors(text.frozen_signature(),
                            {t: v.detach().float().cpu().numpy() for t, v in vectors.items()})
    return len(vectors)
