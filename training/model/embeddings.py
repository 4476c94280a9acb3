"""Id embedding tables that grow with the vocabulary, old rows kept bit for bit."""

from __future__ import annotations

import torch
from torch import nn

# Id embeddings start small so the title, not a random id vector, dominates early scores.
ID_INIT_STD = 0.02


def id_embedding(rows: int, dim: int) -> nn.Embedding:
    emb = nn.Embedding(rows, dim, padding_idx=0)
    with torch.no_grad():
        emb.weight.normal_(0.0, ID_INIT_STD)
        emb.weight[0].zero_()
    return emb


def grow_embedding(emb: nn.Embedding, rows: int, seed: int) -> None:
    """Append rows to ``emb`` in place; old rows are kept bit for bit."""
    old = emb.weight.detach()
    if rows <= old.shape[0]:
        return
    # Seeded by the old size, so every DDP rank grows the table identically.
    gen = torch.Generator().manual_seed(seed * 1_000_003 + old.shape[0])
    extra = torch.randn(rows - old.shape[0], old.shape[1], generator=gen) * ID_INIT_STD
    weight = torch.cat([old, extra.to(device=old.device, dtype=old.dtype)])
    emb.weight = nn.Parameter(weight, requires_grad=emb.weight.requires_grad)
    emb.num_embeddings = rows
