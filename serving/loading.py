"""Loading one published version into a :class:`~serving.predictor.Predictor`, and the
watcher that keeps a replica on the newest good one.

A load opens the version with ``CheckpointStore.opened`` (every file's sha256 checked; a
local store's files are read in place, a remote store's downloaded into a temporary
folder), reads its thresholds, model, published title vectors and purchase
history, adds the new catalogue items (only their titles are encoded), precomputes the item
table and probes the result; only a predictor that
passed all of that is handed to the holder to swap in.

The holder reads the pointer through ``CheckpointStore.latest()``, which also reads and checks
the named version's ``meta.json``: a garbage, empty or wrong-typed ``latest.json``, a bad or
traversal version id, a missing version and an invalid ``meta.json`` all raise one of
:data:`PERMANENT_ERRORS` there, so the holder reports them as a pointer error under
``latest.json`` at once. Reasons name keys relative to the store, never its URI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from serving.config import ServeConfig
from serving.errors import VersionRejectedError
from serving.holder import VersionHolder, describe_error
from serving.item_cache import ItemVectorCache, default_cache_dir
from serving.predictor import Predictor, Thresholds
from training.cli import ConfigError
from training.features.history import PurchaseHistory
from training.model import IdMap, IdMapError, ModelFormatError, load_model
from training.store import (
    LATEST_KEY,
    CheckpointCorruptError,
    CheckpointMissingError,
    CheckpointStore,
    InvalidKeyError,
    InvalidMetaError,
    open_store,
)
from training.update.bundle import HISTORY_FILE, read_item_text
from training.update.gate import DEFAULT_THRESHOLDS
from training.update.phases import Laps

logger = logging.getLogger(__name__)

# Failures that another try cannot fix: the version is skipped at once, and the same errors
# from latest() make a pointer error at once (ConfigError covers StoreConfigError, e.g. a
# missing bucket).
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    CheckpointCorruptError, CheckpointMissingError, InvalidMetaError, InvalidKeyError,
    ModelFormatError, VersionRejectedError, ConfigError, IdMapError)


class CatalogueError(ValueError):
    """The catalogue file cannot be used; the message names the file and the column."""


def read_catalogue(path: str, known: IdMap) -> tuple[list[str], list[str]]:
    """(ids, titles) of the catalogue items ``known`` lacks, first occurrence of each id;
    rows with an empty id or title are left out (and counted in the log)."""
    try:
        table = pq.read_table(path, columns=["item_id", "title"])
    except (OSError, pa.ArrowInvalid, KeyError) as exc:
        raise CatalogueError(f"catalogue {path}: cannot read item_id and title: {exc}") from exc
    for name in ("item_id", "title"):
        if not pa.types.is_string(table.schema.field(name).type) and \
                not pa.types.is_large_string(table.schema.field(name).type):
            raise CatalogueError(f"catalogue {path}: column {name} must be strings, got "
                                 f"{table.schema.field(name).type}")
    ids, titles = table.column("item_id").to_pylist(), table.column("title").to_pylist()
    new_ids: list[str] = []
    new_titles: list[str] = []
    seen: set[str] = set()
    dropped = 0
    for item, title in zip(ids, titles):
        if not item or not title or not item.strip():
            dropped += 1
            continue
        if item in known or item in seen:
            continue
        seen.add(item)
        new_ids.append(item)
        new_titles.append(title)
    if dropped:
        logger.warning("catalogue %s: %d row(s) without an id or title left out", path, dropped)
    return new_ids, new_titles


def load_version(store: CheckpointStore, version: str, config: ServeConfig,
                 cache: ItemVectorCache) -> Predictor:
    """Download, verify and precompute ``version``; raises on anything wrong with it. Logs
    where the load's time went (a replica serves the old version meanwhile, so this is the
    freshness an operator waits for)."""
    laps = Laps()
    with store.opened(version, prefix="shopstream-serve-") as (info, folder):
        meta = info.user_meta
        thresholds = Thresholds.from_meta(meta, DEFAULT_THRESHOLDS)
        laps.lap("files")
        model = load_model(folder)
        published = read_item_text(folder, model)
        laps.lap("model")
        history_path = folder / HISTORY_FILE
        try:
            history = PurchaseHistory.load(history_path, model.cfg.history_len) \
                if history_path.exists() else PurchaseHistory(model.cfg.history_len)
        except (ValueError, KeyError, OSError, pa.ArrowInvalid) as exc:
            raise VersionRejectedError(f"{HISTORY_FILE}: {exc}") from exc
    new_items: tuple[list[str], list[str]] = ([], [])
    if config.catalogue:
        try:
            new_items = read_catalogue(config.catalogue, model.items)
        except CatalogueError as exc:  # a config problem, not the version's: serve without
            logger.error("%s; serving the version's own items only", exc)
    laps.lap("history")
    window = meta.get("window")
    predictor = Predictor(version, model, thresholds, history, new_items, cache,
                          None if window is None else str(window), published)
    laps.lap("predictor")
    predictor.verify()
    laps.lap("verify")
    logger.info("version %s loaded in %.2f s: %s", version, laps.total(),
                ", ".join(f"{name} {s:.2f} s" for name, s in laps.seconds.items()))
    return predictor


def item_cache(config: ServeConfig) -> ItemVectorCache:
    if config.cache_dir == "":
        return ItemVectorCache(None)
    return ItemVectorCache(Path(config.cache_dir) if config.cache_dir else default_cache_dir())


def make_holder(config: ServeConfig, name: str, pointer: Callable[[], str | None] | None = None,
                pointer_key: str = LATEST_KEY, store: CheckpointStore | None = None
                ) -> VersionHolder[Predictor]:
    """A holder watching ``config.store``'s ``latest.json`` (not started), or another
    ``pointer`` to a version (e.g. the canary's, ``pointer_key`` naming it in errors)."""
    torch.set_num_threads(config.torch_threads)
    store = store or open_store(config.store, config.endpoint_url)
    cache = item_cache(config)

    def latest() -> str | None:
        info = store.latest()
        return None if info is None else info.version

    return VersionHolder(pointer or latest,
                         lambda version: load_version(store, version, config, cache),
                         poll_interval_s=config.poll_interval_s,
                         max_attempts=config.max_load_attempts,
                         permanent=PERMANENT_ERRORS, name=name,
                         describe=partial(describe_error, root=store.uri),
                         pointer_key=pointer_key)
