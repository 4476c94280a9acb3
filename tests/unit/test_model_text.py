"""TextEncoder: the frozen-part cache must never change what the encoder outputs."""

from __future__ import annotations

import pytest
import torch

from training.cli import ConfigError
from training.model import ModelConfig, TextEncoder

pytestmark = pytest.mark.unit

TITLES = [
    "red shoe",
    "",
    "wireless bluetooth earbuds with charging case and three sizes of silicone tips " * 3,
    "red shoe",
    "x",
    "Set Of 3 Cake Tins Pantry Design",
]


def make_encoder(finetune_layers: int = 1, cache: int = 100) -> TextEncoder:
    cfg = ModelConfig(encoder_init="tiny_random", finetune_layers=finetune_layers,
                      text_cache_size=cache, max_title_tokens=16)
    return TextEncoder(cfg)


@pytest.mark.parametrize("finetune_layers", [0, 1, 2])
def test_cached_output_equals_a_plain_full_forward(finetune_layers):
    enc = make_encoder(finetune_layers).eval()
    reference = enc.forward_uncached(TITLES)
    cold = enc(TITLES)
    warm = enc(TITLES)
    assert cold.shape == (len(TITLES), enc.output_dim) == (6, 32)
    torch.testing.assert_close(cold, reference, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(warm, reference, atol=1e-6, rtol=1e-5)
    assert torch.equal(cold[0], cold[3])  # duplicate title, one row reused
    assert enc.cache_len == 5  # distinct titles
    assert (enc.cache_misses, enc.cache_hits) == (5, 5)


def test_cache_filled_in_train_mode_is_exact_in_eval_mode():
    enc = make_encoder(1).train()
    assert not enc.bert.embeddings.training
    assert not enc.layers[0].training and enc.layers[1].training
    enc(TITLES)  # fills the cache while the top layer uses dropout
    enc.eval()
    torch.testing.assert_close(enc(TITLES), enc.forward_uncached(TITLES), atol=1e-6, rtol=1e-5)
    assert enc.cache_hits == 5


def test_only_the_top_layers_train():
    torch.manual_seed(0)  # dropout
    enc = make_encoder(1).train()
    out = enc(["a red shoe", "blue hat"])
    # not out.sum(): the final LayerNorm makes that constant in everything below it
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    (out * probe).sum().backward()
    for name, param in enc.bert.named_parameters():
        trainable = name.startswith("encoder.layer.1.")
        assert param.requires_grad is trainable, name
        assert (param.grad is not None) is trainable, name
        if trainable and name.endswith("weight"):
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_frozen_encoder_has_no_trainable_parameter_and_caches_pooled_vectors():
    enc = make_encoder(0)
    assert not any(p.requires_grad for p in enc.parameters())
    out = enc(["a", "b c"])
    assert not out.requires_grad
    assert enc._cache["a"].shape == (32,)


def test_cache_is_bounded_lru_and_can_be_disabled():
    enc = make_encoder(1, cache=3).eval()
    enc(["a", "b", "c"])
    enc(["a"])  # "a" becomes most recent
    enc(["d", "e"])
    assert list(enc._cache) == ["a", "d", "e"]
    off = make_encoder(1, cache=0).eval()
    torch.testing.assert_close(off(TITLES), off.forward_uncached(TITLES), atol=1e-6, rtol=1e-5)
    assert off.cache_len == 0


def test_loading_new_weights_drops_the_cache():
    enc = make_encoder(1).eval()
    before = enc(TITLES)
    other = make_encoder(1)
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in other.state_dict().items()}
    enc.load_state_dict(state)
    assert enc.cache_len == 0
    after = enc(TITLES)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, enc.forward_uncached(TITLES), atol=1e-6, rtol=1e-5)


def test_same_seed_same_encoder_and_too_many_finetune_layers_is_named():
    a, b = make_encoder(1), make_encoder(1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                   b.state_dict().values()))
    with pytest.raises(ConfigError, match="^finetune_layers:"):
        make_encoder(3)


def test_rebuild_from_encoder_config_keeps_the_architecture():
    enc = make_encoder(1)
    config = enc.encoder_config_dict()
    assert config["hidden_size"] == 32 and config["num_hidden_layers"] == 2
    again = TextEncoder(enc.cfg, encoder_config=config)
    assert again.bert.config.hidden_size == 32
    assert again.state_dict().keys() == enc.state_dict().keys()
    assert enc(["", "a"]).shape == (2, 32) and enc([]).shape == (0, 32)
