"""Item-tower and title vectors of a set of items, gathered back by index; and the tables of a
frozen model, each item computed once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class ItemTable:
    """Vectors of a sorted set of distinct item indices, gathered back by index (serving
    builds one for the whole catalogue; :meth:`ShopStreamModel.item_table` for a subset)."""

    uniq: Tensor  # sorted distinct item indices
    vectors: Tensor  # [u, dim] item tower output
    text: Tensor  # [u, dim] normalised projected title embedding

    def rows(self, idx: Tensor) -> Tensor:
        return self.vectors[torch.searchsorted(self.uniq, idx.long())]

    def text_rows(self, idx: Tensor) -> Tensor:
        return self.text[torch.searchsorted(self.uniq, idx.long())]


class FrozenItemTables:
    """:meth:`ShopStreamModel.item_table` of a model whose weights do not change during a
    fit (a distillation teacher, in eval mode), each item's rows computed the first time a
    step needs them and gathered from then on.

    ``compute(uniq)`` is the model's own item table of sorted distinct indices; ``rows`` its
    table size. Indices outside ``[0, rows)`` go to ``compute`` as they are, which names the
    error. Holds at most two ``[rows, dim]`` tensors.
    """

    def __init__(self, compute: Callable[[Tensor], ItemTable], rows: int) -> None:
        self._compute = compute
        self.rows = int(rows)
        self._vectors: Tensor | None = None
        self._text: Tensor | None = None
        self._known: Tensor | None = None

    def __call__(self, idx: Tensor) -> ItemTable:
        uniq = torch.unique(idx.reshape(-1).long())
        if uniq.numel() == 0 or int(uniq[0]) < 0 or int(uniq[-1]) >= self.rows:
            return self._compute(uniq)
        missing = uniq if self._known is None else uniq[~self._known[uniq]]
        if missing.numel():
            self._store(missing, self._compute(missing))
        assert self._vectors is not None and self._text is not None
        return ItemTable(uniq, self._vectors[uniq], self._text[uniq])

    def _store(self, idx: Tensor, part: ItemTable) -> None:
        if self._vectors is None or self._text is None or self._known is None:
            device = part.vectors.device
            self._vectors = part.vectors.new_zeros((self.rows, part.vectors.shape[1]))
            self._text = part.text.new_zeros((self.rows, part.text.shape[1]))
            self._known = torch.zeros(self.rows, dtype=torch.bool, device=device)
        self._vectors[idx] = part.vectors.detach()
        self._text[idx] = part.text.detach()
        self._known[idx] = True

    @property
    def computed(self) -> int:
        """How many items' rows have been computed."""
        return 0 if self._known is None else int(self._known.sum())
