"""Item-tower and title vectors of a set of items, gathered back by index."""

from __future__ import annotations

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
