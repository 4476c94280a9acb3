"""What the title encoders of one process share (``training.model.text``).

Encoders whose frozen weights hash alike (every version of one model, its distillation
teacher, the comparison arms) compute identical frozen outputs, so they share one cache of
them per hash: :func:`shared_cache`. The process counts the titles it has pushed through a
frozen part (:func:`titles_encoded`: an update's summary reports its own), and memoises
the hash of the installed package's weights (:data:`PACKAGE_SIGNATURES`), which every encoder
loaded from the package would otherwise compute again (0.12 s for MiniLM).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor

# Frozen-part outputs shared within a process, per hash of the frozen weights.
SHARED_CACHES: dict[str, OrderedDict[str, Tensor]] = {}
# frozen_signature of the installed package's weights, per (package folder, frozen layers,
# title limit, finetune_layers == 0).
PACKAGE_SIGNATURES: dict[tuple[str, int, int, bool], str] = {}
_ENCODED = {"titles": 0}


def shared_cache(signature: str) -> OrderedDict[str, Tensor]:
    """The process's cache for frozen weights hashed ``signature`` (made empty if new)."""
    return SHARED_CACHES.setdefault(signature, OrderedDict())


def count_encoded(n: int) -> None:
    """Record that ``n`` more titles went through a frozen part (not found cached)."""
    _ENCODED["titles"] += n


def titles_encoded() -> int:
    """How many titles this process has encoded (frozen part computed, not found cached)."""
    return _ENCODED["titles"]


def drop_shared_caches() -> None:
    """Forget the process-wide caches: encoders made after this start empty, as in a new
    process (encoders already sharing one keep it)."""
    SHARED_CACHES.clear()
