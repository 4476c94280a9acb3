"""The served item table: every item's tower vector and title vector, built when a version
loads, so requests never run the text encoder.

Title vectors come from the version itself when it published them
(``training.update.bundle.read_item_text``); only the catalogue's new titles are encoded, through
the node's :class:`~serving.item_cache.ItemVectorCache`. Older versions encode every title
through the cache.
"""

from __future__ import annotations

import logging
import threading

import torch
import torch.nn.functional as F
from torch import Tensor

from serving.errors import VersionRejectedError
from serving.item_cache import ItemVectorCache, module_digest, titles_digest
from training.model import ShopStreamModel
from training.model import project_titles as encode_titles

logger = logging.getLogger(__name__)

# The text encoder's title cache is not thread-safe; loading versions hold this.
ENCODER_LOCK = threading.Lock()


def project_titles(model: ShopStreamModel, titles: list[str]) -> Tensor:
    """:func:`training.model.project_titles` under ``ENCODER_LOCK``; the encoder's title
    cache is emptied after, as the served version never encodes again."""
    with ENCODER_LOCK:
        try:
            return encode_titles(model, titles, progress=None)
        finally:
            model.text.clear_cache()


def cached_projection(model: ShopStreamModel, titles: list[str],
                      cache: ItemVectorCache) -> tuple[Tensor, bool]:
    """:func:`project_titles` of ``titles`` through the node's cache (keyed by the text
    tower's weights and the titles); (vectors, whether the cache had them)."""
    if not titles:
        return torch.zeros(0, model.cfg.dim), True
    key = module_digest([model.text, model.item_text_proj],
                        extra=f"{model.cfg.max_title_tokens}") + "-" + titles_digest(titles)
    return cache.get(key[:32] + key[-32:], (len(titles), model.cfg.dim),
                     lambda: project_titles(model, titles))


def item_table(model: ShopStreamModel, new_titles: list[str], cache: ItemVectorCache,
               published: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(item vectors, title vectors), each [len(model.items) + len(new_titles), dim].

    ``published``: the version's own title vectors of its known items
    (``training.update.bundle.read_item_text``), so only the catalogue's new titles are encoded;
    without them (older versions) every title goes through the cache."""
    known = len(model.items)
    if model.item_emb.num_embeddings != known or len(model.item_titles) != known:
        raise VersionRejectedError(
            f"model: {known} item ids but {model.item_emb.num_embeddings} embedding rows and "
            f"{len(model.item_titles)} titles")
    if published is None:
        projected, hit = cached_projection(model, list(model.item_titles) + list(new_titles),
                                           cache)
        source = "cached title vectors" if hit else "titles encoded"
    else:
        extra, hit = cached_projection(model, list(new_titles), cache)
        projected = torch.cat([published.float(), extra]) if new_titles else published.float()
        source = "published title vectors" + ("" if not new_titles else
                                              ", new titles cached" if hit else
                                              ", new titles encoded")
    logger.info("item table: %d known + %d new items (%s)", known - 1, len(new_titles), source)
    return _normalised(model, projected, known)


def _normalised(model: ShopStreamModel, projected: Tensor, known: int) -> tuple[Tensor, Tensor]:
    """(item vectors, title vectors) from ``projected`` (this load's own tensor, normalised
    in place): one new [n, dim] tensor, no temporaries. Each temporary is fresh memory the
    kernel must zero, and a replica reloads beside live traffic (the same arithmetic as
    ``ShopStreamModel.catalogue_matrix``)."""
    with torch.inference_mode():
        vectors = torch.empty_like(projected)
        torch.add(projected[:known], model.item_emb.weight.float(), out=vectors[:known])
        F.normalize(vectors[:known], dim=-1, out=vectors[:known])
        text = F.normalize(projected, dim=-1, out=projected)
        vectors[known:] = text[known:]  # new catalogue items: their titles alone
        vectors[0] = 0.0  # index 0 is "no item": never a candidate, masked in histories
        text[0] = 0.0
    return vectors, text


def drop_item_side(model: ShopStreamModel) -> None:
    """Free what the item table replaced: requests only run the user tower and the fraud
    head, so the text encoder (MiniLM: ~90 MB), the title projection, the item id embedding
    and the titles are dead weight in a serving replica (twice, while a swap is underway)."""
    for name in ("text", "item_text_proj", "item_emb"):
        delattr(model, name)
    model.item_titles = []
