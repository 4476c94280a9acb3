"""Encoders with identical frozen weights share frozen outputs; nothing else does."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from training.model import ModelConfig, TextEncoder, text_cache

pytestmark = pytest.mark.unit

TITLES = ["red shoe", "blue mug", "Set Of 3 Cake Tins Pantry Design", "x"]


@pytest.fixture(autouse=True)
def no_shared_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_cache, "SHARED_CACHES", {})


def make(seed: int = 0, finetune_layers: int = 1, cache: int = 100) -> TextEncoder:
    cfg = ModelConfig(encoder_init="tiny_random", finetune_layers=finetune_layers,
                      text_cache_size=cache, max_title_tokens=16, seed=seed)
    return TextEncoder(cfg).eval()


def test_same_frozen_weights_share_one_cache_and_outputs_stay_exact() -> None:
    first, second = make(), make()
    with torch.no_grad():
        second.layers[-1].output.dense.weight.add_(0.5)  # a trained top layer
    assert first.frozen_signature() == second.frozen_signature()
    first.use_shared_cache()
    second.use_shared_cache()
    expected = second.forward_uncached(TITLES)
    first(TITLES)
    assert first.cache_misses == 4
    out = second(TITLES)
    assert (second.cache_misses, second.cache_hits) == (0, 4)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


def test_other_frozen_weights_or_settings_never_share() -> None:
    base = make()
    assert make(seed=1).frozen_signature() != base.frozen_signature()
    assert make(finetune_layers=0).frozen_signature() != base.frozen_signature()
    other = make(seed=1)
    base.use_shared_cache()
    other.use_shared_cache()
    base(TITLES)
    other(TITLES)
    assert other.cache_misses == 4


def test_a_checkpoint_load_leaves_the_shared_cache_without_clearing_it() -> None:
    first, second = make(), make()
    first.use_shared_cache()
    second.use_shared_cache()
    first(TITLES)
    second.load_state_dict(make(seed=3).state_dict())  # new frozen weights
    assert second.cache_len == 0 and first.cache_len == 4
    expected = second.forward_uncached(TITLES)
    torch.testing.assert_close(second(TITLES), expected, atol=1e-6, rtol=1e-5)


def test_export_import_round_trip_gives_the_same_outputs() -> None:
    source, target = make(), make()
    source.warm(TITLES + ["", "red shoe"])
    entries = source.export_cache(TITLES + ["never seen"])
    assert sorted(entries) == sorted(TITLES)
    target.import_cache(entries)
    expected = target.forward_uncached(TITLES)
    out = target(TITLES)
    assert (target.cache_misses, target.cache_hits) == (0, 4)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


def test_no_cache_means_no_sharing_and_no_imports() -> None:
    off = make(cache=0)
    off.use_shared_cache()
    off.import_cache(make().export_cache(TITLES))
    assert off.cache_len == 0 and text_cache.SHARED_CACHES == {}


def test_the_shared_cache_is_bounded_by_text_cache_size() -> None:
    small = TextEncoder(dataclasses.replace(make().cfg, text_cache_size=2)).eval()
    small.use_shared_cache()
    small.warm(TITLES)
    assert small.cache_len == 2


def test_the_signature_is_hashed_once_per_load_and_a_copy_keeps_it() -> None:
    from training.model import IdMap, ShopStreamModel, copy_model

    cfg = ModelConfig(encoder_init="tiny_random", finetune_layers=1, max_title_tokens=16)
    model = ShopStreamModel(cfg, IdMap(["u1"]), IdMap(["i1"]), ["", "red shoe"])
    hashes: list[str] = []
    real = TextEncoder._hash_frozen

    def counted(encoder: TextEncoder) -> str:
        hashes.append(real(encoder))
        return hashes[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TextEncoder, "_hash_frozen", counted)
        signature = model.text.frozen_signature()
        assert model.text.frozen_signature() == signature and len(hashes) == 1
        copy = copy_model(model)
        assert copy.text.frozen_signature() == signature and len(hashes) == 1
        other = make(seed=3)
        copy.text.load_state_dict(other.state_dict())  # new frozen weights: hash again
        assert copy.text.frozen_signature() == other.frozen_signature() != signature
        assert len(hashes) == 3
