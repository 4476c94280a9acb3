"""The real packaged MiniLM: it loads offline and its embeddings carry meaning.

Marked integration (loads 90 MB of weights); lives beside the other model tests.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from training.model import ModelConfig, TextEncoder

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(ModelConfig(encoder_init="pretrained", finetune_layers=1)).eval()


def test_pretrained_minilm_size_and_semantics(encoder):
    n_params = sum(p.numel() for p in encoder.bert.parameters())
    assert n_params == pytest.approx(22.7e6, rel=0.005)
    assert encoder.output_dim == 384 and encoder.num_layers == 6
    trainable = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
    assert trainable == 1_774_464  # exactly one BERT layer of MiniLM
    emb = encoder(["wireless earbuds", "bluetooth headphones", "wooden train set"])
    related = F.cosine_similarity(emb[0], emb[1], dim=0)
    unrelated = F.cosine_similarity(emb[0], emb[2], dim=0)
    assert related > unrelated + 0.2, (related, unrelated)


def test_pretrained_cache_matches_full_forward(encoder):
    titles = ["wireless earbuds", "WHITE HANGING HEART T-LIGHT HOLDER", "", "a"]
    torch.testing.assert_close(encoder(titles), encoder.forward_uncached(titles),
                               atol=1e-5, rtol=1e-4)
