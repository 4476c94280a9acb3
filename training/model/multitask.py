"""ShopStreamModel: a two-tower recommender and a fraud classifier sharing one text encoder.

Item vector = L2-normalised (projected title embedding + item id embedding); user vector =
L2-normalised (user id embedding + MLP over the mean of the user's recent item vectors). A
ranking score (:meth:`ShopStreamModel.pool_scores`) adds to the two-tower similarity a learned
popularity term and a learned repeat term over the user's own past items. The
fraud head sees the normalised amount and transaction features, the user vector and the
projected title of the item bought. Id row 0 is "unknown" and stays zero, so unseen users and
items are scored from their history and title alone.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from training.features.profile import POPULARITY_FEATURES, REPEAT_FEATURES
from training.model.batches import BatchError, FraudBatch, MultiTaskBatch, RecBatch
from training.model.calibration import FraudCalibration
from training.model.config import ModelConfig
from training.model.embeddings import grow_embedding, id_embedding
from training.model.features import (
    fraud_input_matrix,
    fraud_stats,
    item_title_list,
    signed_log1p,
)
from training.model.fraud_head import FraudHead
from training.model.fraud_trees import FraudTrees
from training.model.item_table import ItemTable
from training.model.outputs import FraudInputs, RecLogits, StepOutputs, fraud_bce
from training.model.ranking import (
    LAST_COUNT,
    cold_tie_rank,
    own_order,
    row_count_weights,
    strict_cold_rows,
    strict_count_order,
)
from training.model.text import TextEncoder
from training.model.vocab import IdMap

logger = logging.getLogger(__name__)

__all__ = ["FraudBatch", "FraudInputs", "ItemTable", "MultiTaskBatch", "RecBatch",
           "RecLogits",
           "ShopStreamModel", "StepOutputs", "TASKS", "fraud_input_matrix", "fraud_stats",
           "item_title_list", "signed_log1p"]

TASKS: tuple[str, ...] = ("rec", "fraud")


class ShopStreamModel(FraudHead, nn.Module):
    """Recommendation + fraud model; ``forward`` returns the weighted multi-task loss (the
    fraud task's methods live in :class:`training.model.fraud_head.FraudHead`)."""

    def __init__(self, cfg: ModelConfig, users: IdMap, items: IdMap, item_titles: list[str],
                 fraud_mean: np.ndarray | None = None, fraud_std: np.ndarray | None = None,
                 encoder_config: dict | None = None) -> None:
        super().__init__()
        if len(item_titles) != len(items):
            raise ValueError(f"item_titles: expected {len(items)} titles (index 0 = ''), "
                             f"got {len(item_titles)}")
        self.cfg = cfg
        self.users = users
        self.items = items
        self.item_titles = list(item_titles)
        # Not a module or tensor: fitted outside the training loop (training.update.fraud_blend),
        # saved in the model's JSON by training.model.io.
        self.fraud_trees: FraudTrees | None = None
        self.fraud_calibration = FraudCalibration()
        n_in = len(cfg.fraud_features) + 1
        # Seeded so every process (DDP ranks, a rebuild) starts from the same weights.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.text = TextEncoder(cfg, encoder_config)
            self.item_text_proj = nn.Linear(self.text.output_dim, cfg.dim)
            self.item_emb = id_embedding(len(items), cfg.dim)
            self.user_emb = id_embedding(len(users), cfg.dim)
            self.user_mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.GELU(),
                                          nn.Dropout(cfg.dropout), nn.Linear(cfg.dim, cfg.dim))
            hidden = cfg.fraud_hidden
            self.fraud_mlp = nn.Sequential(
                nn.Linear(n_in + 2 * cfg.dim, hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                nn.Linear(hidden, 1))
            # Repeat-aware scoring, fused with the two-tower score in one logit: a learned
            # weight on item popularity, and an MLP over (user, own past item) features.
            self.pop_score = nn.Linear(len(POPULARITY_FEATURES), 1, bias=False)
            self.repeat_mlp = nn.Sequential(
                nn.Linear(len(REPEAT_FEATURES), cfg.repeat_hidden), nn.GELU(),
                nn.Linear(cfg.repeat_hidden, 1))
            self._init_repeat_prior(cfg.repeat_prior)
        self.fraud_mean: Tensor
        self.fraud_std: Tensor
        self.register_buffer("fraud_mean", torch.zeros(n_in))
        self.register_buffer("fraud_std", torch.ones(n_in))
        if fraud_mean is not None or fraud_std is not None:
            self.set_fraud_stats(np.zeros(n_in) if fraud_mean is None else fraud_mean,
                                 np.ones(n_in) if fraud_std is None else fraud_std)

    def _init_repeat_prior(self, bonus: float) -> None:
        """Start the fused terms at the repeat-then-popular ranking, which training refines.

        Retail baskets are mostly repeat purchases, so a model that starts from "the user's
        own items, most bought first, then popular items" is useful after its first few
        steps, while one that starts at zero needs many windows to learn it. Own items get
        ``bonus``; one hidden unit passes ``log_count`` (monotone through GELU for counts
        >= 1) and the last-update popularity gets the same slope of ``bonus / 10``.
        """
        first, out = self.repeat_mlp[0], self.repeat_mlp[2]
        assert isinstance(first, nn.Linear) and isinstance(out, nn.Linear)
        with torch.no_grad():
            for weight in (self.pop_score.weight, out.weight, out.bias):
                weight.zero_()
            if bonus == 0.0:
                return
            slope = bonus / 10.0
            first.weight[0].zero_()
            first.weight[0, REPEAT_FEATURES.index("log_count")] = 1.0
            first.bias[0] = 0.0
            out.weight[0, 0] = slope
            out.bias.fill_(bonus)
            self.pop_score.weight[0, POPULARITY_FEATURES.index("log_count_last_update")] = slope

    # ---- item and user towers -------------------------------------------------------------

    @property
    def item_rows(self) -> int:
        """The item table's size, not len(self.items): ids added to the IdMap directly (not
        through extend_vocab) have no embedding row yet."""
        return min(self.item_emb.num_embeddings, len(self.item_titles))

    def item_table(self, idx: Tensor) -> ItemTable:
        """Item-tower and title vectors of the distinct items of ``idx``."""
        uniq = torch.unique(idx.reshape(-1).long())
        rows = self.item_rows
        if uniq.numel() and (int(uniq[0]) < 0 or int(uniq[-1]) >= rows):
            raise BatchError(f"item index out of range [0, {rows}): "
                             f"{int(uniq[0])}..{int(uniq[-1])} (new ids need extend_vocab)")
        titles = [self.item_titles[i] for i in uniq.tolist()]
        projected = self.item_text_proj(self.text(titles))
        vectors = F.normalize(projected + self.item_emb(uniq), dim=-1)
        return ItemTable(uniq, vectors, F.normalize(projected, dim=-1))

    def item_vectors(self, item_idx: Tensor) -> Tensor:
        """Item tower [n, dim] (L2-normalised); each distinct item's title is encoded once."""
        return self.item_table(item_idx).rows(item_idx)

    def item_vectors_from_titles(self, titles: list[str]) -> Tensor:
        """Cold start: vectors [n, dim] from titles alone (no id embedding)."""
        if not titles:
            return torch.zeros(0, self.cfg.dim, device=self.fraud_mean.device)
        return F.normalize(self.item_text_proj(self.text(titles)), dim=-1)

    def _user_vectors(self, user_idx: Tensor, hist_idx: Tensor, table: ItemTable) -> Tensor:
        rows = self.user_emb.num_embeddings
        if user_idx.numel() and (int(user_idx.min()) < 0 or int(user_idx.max()) >= rows):
            raise BatchError(f"user_idx: index out of range [0, {rows}): {int(user_idx.min())}"
                             f"..{int(user_idx.max())} (new ids need extend_vocab)")
        hist = table.rows(hist_idx)
        mask = (hist_idx != 0).unsqueeze(-1).to(hist.dtype)
        mean = (hist * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return F.normalize(self.user_emb(user_idx) + self.user_mlp(mean), dim=-1)

    def user_vectors(self, user_idx: Tensor, hist_idx: Tensor,
                     table: ItemTable | None = None) -> Tensor:
        """User tower [B, dim] (L2-normalised) from the id and the recent items (0 = pad);
        ``table`` (e.g. serving's precomputed one) saves encoding the history's titles."""
        return self._user_vectors(user_idx, hist_idx,
                                  self.item_table(hist_idx) if table is None else table)

    def popularity_score(self, pop: Tensor) -> Tensor:
        """Logit term [n] of items from their popularity features [n, P]."""
        return self.pop_score(pop.to(self.pop_score.weight.dtype)).squeeze(-1)

    def repeat_score(self, rep_items: Tensor, rep_feats: Tensor) -> Tensor:
        """Logit term [B, R] of each row's own past items (0 where ``rep_items`` is 0)."""
        g = self.repeat_mlp(rep_feats.to(self.pop_score.weight.dtype)).squeeze(-1)
        return g * (rep_items > 0).to(g.dtype)

    def pool_scores(self, user_vec: Tensor, pool_vectors: Tensor,
                    pool_pop: Tensor | None = None, rep_pos: Tensor | None = None,
                    rep_feats: Tensor | None = None, pool_rank: Tensor | None = None
                    ) -> Tensor:
        """THE ranking score [B, n] of users against a pool of items, as trained:
        two-tower similarity / temperature + popularity term + repeat term, plus the
        ranking-time terms that are not trained (chosen per update on held-out rows, see
        training.update.ranking_terms): ``repeat_bonus`` on a user's own past items, and a count
        weight on repeat-then-popular's signals — own items by the user's own purchase
        count and count rank (repeat-then-popular's own order), every other item by its
        count in the last update. Users with own items (warm) use ``count_weight``, users
        without (cold) ``cold_count_weight``; at its bound cold users rank by the
        last-update count strictly, equal counts as ``cold_ties`` says (``item_id``: by
        ``pool_rank`` [n], the pool's :func:`~training.model.ranking.id_ranks`, which makes
        it the popularity baseline's list; pool order without it), the items nobody bought
        by the model (training.model.ranking.strict_count_order).

        ``pool_pop`` [n, P] popularity features of the pool; ``rep_pos`` [B, R] the pool
        positions of each user's own past items (-1 = none) with ``rep_feats`` [B, R, F].
        Evaluation and serving both rank with this function.
        """
        scores = user_vec @ pool_vectors.T
        own = None if rep_pos is None or rep_feats is None or not rep_pos.numel() \
            else (rep_pos >= 0).to(scores.dtype)
        # Per-user count weights, only when a count term is on (a [B, n] add otherwise).
        weight = row_count_weights(self.cfg, own, len(user_vec), scores) \
            if self.cfg.count_weight or self.cfg.cold_count_weight else None
        last = None
        if pool_pop is not None:
            scores = scores + self.popularity_score(pool_pop)[None, :]
            last = pool_pop[:, LAST_COUNT].to(scores.dtype)
            if weight is not None:
                scores = scores + weight[:, None] * last[None, :]
        if own is not None and rep_pos is not None and rep_feats is not None:
            g = self.repeat_score(rep_pos + 1, rep_feats)  # -1 (none) -> 0 (masked)
            if self.cfg.repeat_bonus or self.cfg.count_weight:
                term = own * self.cfg.repeat_bonus
                if weight is not None:
                    term = term + own * weight[:, None] * own_order(rep_pos, rep_feats,
                                                                    last).to(g.dtype)
                g = g + term
            scores = scores.scatter_add(1, rep_pos.clamp(min=0), g.to(scores.dtype))
        strict = None if last is None else \
            strict_cold_rows(self.cfg, own, len(user_vec), scores.device)
        if strict is not None and last is not None:  # (both: for the type checker)
            scores = strict_count_order(scores, last, strict, cold_tie_rank(
                self.cfg, pool_rank, scores.shape[1], scores.device))
        return scores / self.cfg.temperature

    def set_ranking_terms(self, repeat_bonus: float, count_weight: float,
                          cold_count_weight: float, cold_ties: str | None = None) -> None:
        """Rank with these ranking-time terms from now on (recorded in the config;
        ``cold_ties`` None keeps the current one)."""
        self.cfg = dataclasses.replace(self.cfg, repeat_bonus=float(repeat_bonus),
                                       count_weight=float(count_weight),
                                       cold_count_weight=float(cold_count_weight),
                                       cold_ties=cold_ties or self.cfg.cold_ties)

    @torch.no_grad()
    def catalogue_matrix(self, batch_size: int = 512, progress: bool = False) -> Tensor:
        """Vectors of every item index [len(items), dim], in the current train/eval mode.

        Row 0 (unknown) is the vector of the empty title; callers mask it out.
        """
        device = self.fraud_mean.device
        chunks = []
        starts = range(0, len(self.items), batch_size)
        for start in tqdm(starts, desc="item vectors", disable=not progress):
            stop = min(start + batch_size, len(self.items))
            chunks.append(self.item_vectors(torch.arange(start, stop, device=device)))
        return torch.cat(chunks)

    # ---- losses ---------------------------------------------------------------------------

    def _zero(self) -> Tensor:
        """0.0 that touches every trainable parameter: backward works with no task rows,
        and DDP sees a gradient (of zeros) for every parameter on every rank."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:  # a frozen model (e.g. a distillation teacher)
            return torch.zeros((), device=self.fraud_mean.device)
        return torch.stack([p.reshape(-1)[0] for p in params]).sum() * 0.0

    def _rec_logits(self, batch: RecBatch, table: ItemTable) -> RecLogits:
        ids = batch.user_idx if batch.drop_id is None else \
            batch.user_idx.masked_fill(batch.drop_id, 0)
        users = self._user_vectors(ids, batch.hist_idx, table)
        cand, pop, logq = batch.target_idx, batch.target_pop, batch.target_logq
        if batch.neg_idx is not None and batch.neg_idx.numel():
            cand = torch.cat([cand, batch.neg_idx])
            pop = None if pop is None or batch.neg_pop is None else \
                torch.cat([pop, batch.neg_pop])
            logq = None if logq is None or batch.neg_logq is None else \
                torch.cat([logq, batch.neg_logq])
        # Every term is on the cosine scale and shares the temperature, so the fused
        # terms learn at the same pace as the towers.
        logits = users @ table.rows(cand).T
        if pop is not None:
            logits = logits + self.popularity_score(pop)[None, :]
        if batch.rep_items is not None and batch.rep_feats is not None:
            g = self.repeat_score(batch.rep_items, batch.rep_feats)
            match = (batch.rep_items[:, :, None] == cand[None, None, :]).to(g.dtype)
            logits = logits + torch.einsum("br,brc->bc", g, match)
        logits = logits / self.cfg.temperature
        if logq is not None:
            logits = logits - logq.to(logits.dtype)[None, :]

        rows = torch.arange(len(batch), device=logits.device)
        # Another row's target (or a sampled negative) equal to this row's target is no
        # negative: mask it, keeping only the diagonal positive. Nor is another row's target
        # of the same user: the user bought that item too (in the same window), so it
        # would teach the model that a user's purchases compete with each other.
        valid = batch.target_idx[:, None] != cand[None, :]
        same_user = (batch.user_idx[:, None] == batch.user_idx[None, :]) \
            & (batch.user_idx[:, None] != 0)
        valid[:, :len(batch)] &= ~same_user
        valid[rows, rows] = True
        return RecLogits(logits, valid)

    def rec_logits(self, batch: RecBatch) -> RecLogits:
        """Logits [B, C] over the candidates (targets, then ``neg_idx``) and their mask."""
        batch.validate()
        return self._rec_logits(batch, self.item_table(self._rec_items(batch)))

    def rec_loss(self, batch: RecBatch) -> Tensor:
        """Sampled softmax over in-batch targets (+ ``neg_idx``); 0 for an empty batch."""
        batch.validate()
        if len(batch) == 0:
            return self._zero()
        return self.rec_logits(batch).loss()

    @staticmethod
    def _rec_items(batch: RecBatch) -> Tensor:
        parts = [batch.hist_idx.reshape(-1), batch.target_idx]
        if batch.neg_idx is not None:
            parts.append(batch.neg_idx)
        return torch.cat(parts)

    @staticmethod
    def task_weights(weights: Mapping[str, float]) -> dict[str, float]:
        """Every task's weight (missing = 1.0); unknown task names raise ValueError."""
        unknown = sorted(set(weights) - set(TASKS))
        if unknown:
            raise ValueError(f"weights: unknown task(s) {unknown}; expected keys from {TASKS}")
        return {task: float(weights.get(task, 1.0)) for task in TASKS}

    def step_outputs(self, batch: MultiTaskBatch,
                     item_table: Callable[[Tensor], ItemTable] | None = None) -> StepOutputs:
        """Rec logits and fraud-head inputs of one step, each distinct item title of both tasks
        encoded once (by ``item_table``, default :meth:`item_table`); an empty task is None."""
        rec = batch.rec if batch.rec is not None and len(batch.rec) > 0 else None
        fraud = batch.fraud if batch.fraud is not None and len(batch.fraud) > 0 else None
        if rec is not None:
            rec.validate()
        if fraud is not None:
            fraud.validate(len(self.cfg.fraud_features))
        needed = ([self._rec_items(rec)] if rec is not None else []) + (
            [self._fraud_items(fraud)] if fraud is not None else [])
        out = StepOutputs(self._zero())
        if needed:
            table = (item_table or self.item_table)(torch.cat(needed))
            if rec is not None:
                out.rec = self._rec_logits(rec, table)
            if fraud is not None:
                out.fraud = self._fraud_inputs(fraud, table)
        return out

    def forward(self, batch: MultiTaskBatch, weights: Mapping[str, float],
                fraud_pos_weight: float = 1.0) -> dict[str, Tensor]:
        """{"loss": Σ weight·task loss, "rec": ..., "fraud": ...}; a task whose batch is None
        or empty contributes exactly 0. A missing weight means 1.0. Every item title the
        step needs (both tasks) is encoded once."""
        alpha = self.task_weights(weights)
        out = self.step_outputs(batch)
        losses = {"rec": out.zero, "fraud": out.zero}
        if out.rec is not None:
            losses["rec"] = out.rec.loss()
        if out.fraud is not None:
            losses["fraud"] = fraud_bce(self.fraud_head(out.fraud), out.fraud.label,
                                        fraud_pos_weight)
        total = out.zero + alpha["rec"] * losses["rec"] + alpha["fraud"] * losses["fraud"]
        return {"loss": total, **losses}

    # ---- vocabulary and statistics --------------------------------------------------------

    def extend_vocab(self, user_ids: Iterable[str], item_ids: Iterable[str],
                     item_titles: Mapping[str, str]) -> dict[str, int]:
        """Add unseen ids; grow the id tables (old rows kept exactly, new rows small random).

        Titles of new items come from ``item_titles`` ("" if absent: scored as cold start);
        known items whose title appears there are updated. The embedding parameters are
        replaced, so rebuild the optimizer (and any DDP wrapper) afterwards.
        Returns {"users": new users, "items": new items, "titles_updated": changed titles}.
        """
        new_users = self.users.add(user_ids)
        old_items = len(self.items)
        new_items = self.items.add(item_ids)
        grow_embedding(self.user_emb, len(self.users), self.cfg.seed)
        grow_embedding(self.item_emb, len(self.items), self.cfg.seed + 1)
        ids = self.items.ids
        updated = 0
        for index in range(1, old_items):
            title = item_titles.get(ids[index - 1])
            if title is not None and title != self.item_titles[index]:
                self.item_titles[index] = title
                updated += 1
        added = [item_titles.get(item_id) for item_id in ids[old_items - 1:]]
        if any(title is None for title in added):
            logger.warning("%d new item(s) have no title; they are scored as empty titles",
                           sum(title is None for title in added))
        self.item_titles.extend(title or "" for title in added)
        logger.info("vocabulary: +%d users, +%d items, %d titles updated",
                    new_users, new_items, updated)
        return {"users": new_users, "items": new_items, "titles_updated": updated}
