"""The title half of the item tower over any titles: ``item_text_proj(text(title))``.

One home for it: a published version's title vectors (``training.update.bundle``) and serving's
item table (``serving.item_table``) both come from :func:`project_titles`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm import tqdm

from training.model.multitask import ShopStreamModel

TITLE_CHUNK = 256


@torch.no_grad()
def project_titles(model: ShopStreamModel, titles: list[str], chunk: int = TITLE_CHUNK,
                   progress: bool | None = False) -> Tensor:
    """[len(titles), dim] float32 on CPU, each distinct title encoded once, in eval mode
    (the model's mode is restored). ``progress=None`` shows a bar only on a terminal."""
    distinct = list(dict.fromkeys(titles))
    was_training = model.training
    model.eval()
    try:
        out = [model.item_text_proj(model.text(distinct[start:start + chunk])).float().cpu()
               for start in tqdm(range(0, len(distinct), chunk), desc="item titles",
                                 unit="chunk", disable=None if progress is None else not progress,
                                 leave=False)]
    finally:
        model.train(was_training)
    if not out:
        return torch.zeros(0, model.cfg.dim)
    row = {title: i for i, title in enumerate(distinct)}
    return torch.cat(out)[torch.tensor([row[t] for t in titles], dtype=torch.long)]
