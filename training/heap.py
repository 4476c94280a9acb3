"""Keep a long-running stage's import-time objects out of Python's full garbage collections.

A ShopStream driver holds about 0.6 M container objects that live as long as the process:
the functions, classes and tables of torch, transformers, Ray, pandas and scikit-learn.
CPython's full (generation 2) collection walks every one of them each time it runs, and in
an update loop it runs every few seconds: 0.2-0.4 s a pause on the 2-core machines, 3-9% of
a pipeline run (``benchmarks/gc_pauses.py``), landing on whichever update is running.
``gc.freeze`` moves the objects alive now into a permanent generation the collector skips;
objects made later are collected as before, by reference counting and by the (now small)
full collections.

Set ``SHOPSTREAM_GC_FREEZE=0`` to leave the collector as Python ships it (for example, to
inspect the whole heap with ``gc.get_objects()``).
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

GC_FREEZE_ENV = "SHOPSTREAM_GC_FREEZE"

#: What every stage that updates models imports sooner or later: the update and, loaded
#: lazily by ``AutoModel``, the encoder's architecture (a third of the import-time heap).
TRAINING_MODULES: tuple[str, ...] = ("training.update.run",
                                     "transformers.models.bert.modeling_bert")


def freezing_enabled() -> bool:
    """False where ``SHOPSTREAM_GC_FREEZE`` is ``0``/``false``/``no``/``off``."""
    return os.environ.get(GC_FREEZE_ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


@contextmanager
def frozen_import_heap(modules: Iterable[str]) -> Iterator[int]:
    """Import ``modules`` (ones the stage imports later anyway), collect once, and freeze
    every object alive; yields how many were frozen (0 when disabled).

    Frozen objects are never collected, so this belongs at the start of a stage's ``main()``,
    before it loads data or models: what is alive then lives as long as the process. On exit
    the objects go back to the collector, so a caller in a longer process (a test, a
    notebook) loses nothing that later becomes garbage.
    """
    if not freezing_enabled():
        yield 0
        return
    enabled = gc.isenabled()
    gc.disable()  # the imports' own objects would trigger full collections of a growing heap
    try:
        for name in modules:
            importlib.import_module(name)
        gc.collect()
        gc.freeze()
    finally:
        if enabled:
            gc.enable()
    frozen = gc.get_freeze_count()
    logger.debug("garbage collector: %d import-time objects frozen", frozen)
    try:
        yield frozen
    finally:
        gc.unfreeze()
