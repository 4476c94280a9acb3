"""Where windows come from: the synthetic shop, the real loaders, or a folder of windows.

Every source yields validated :class:`WindowData` in time order, so the stages after it
never care which one it was. The settings that choose one live in
:mod:`training.data.source_config`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from training.data.online_retail import load_online_retail
from training.data.schema import TABLE_NAMES, WindowData
from training.data.source_config import SOURCES, SourceError
from training.data.synthetic import SyntheticShopConfig, generate
from training.data.ulb import load_ulb
from training.data.window_set import WindowSet
from training.data.windows import split_windows

logger = logging.getLogger(__name__)


def load_windows(source: str, path: str | None = None, freq: str = "week",
                 synthetic: SyntheticShopConfig | None = None) -> WindowSet:
    """All windows of a source, oldest first; a folder's are read only when used."""
    if source == "synthetic":
        shop = synthetic or SyntheticShopConfig()
        return WindowSet.of(generate(shop).windows, freq=shop.freq)
    if source not in SOURCES:
        raise SourceError(f"source: unknown source {source!r}; expected one of {SOURCES}")
    if not path:
        raise SourceError(f"path: source {source!r} needs --path (a file or folder)")
    if not Path(path).exists():
        raise SourceError(f"path: {path} does not exist")
    if source == "windows":
        return WindowSet.from_folder(path)
    loaded = load_online_retail(path) if source == "online_retail" else load_ulb(path)
    logger.info("loaded %s from %s: %s", source, path, loaded.counts)
    return WindowSet.of(split_windows(loaded, freq).values(),  # type: ignore[arg-type]
                        freq=freq)


def merge_windows(windows: Sequence[WindowData]) -> WindowData:
    """One window holding the rows of several (items deduplicated, newest title wins)."""
    if len(windows) == 1:
        return windows[0]
    tables = {}
    for name in TABLE_NAMES:
        frames = [w.table(name) for w in windows if len(w.table(name))]
        tables[name] = pd.concat(frames, ignore_index=True) if frames else windows[0].table(name)
    items = tables["items"].drop_duplicates("item_id", keep="last").reset_index(drop=True)
    wid = f"{windows[0].window_id}..{windows[-1].window_id}"
    return WindowData(wid, items, tables["interactions"], tables["transactions"])
