"""The windows of a source in time order, each read from disk only when an update uses it.

An update needs its new window, the parent's window (the carried tail) and, with a label
delay, the windows whose labels have arrived: a handful, however long the source. Reading
them all for every update would make a year of weekly windows cost the square of its
length in reads and hold the whole history in the driver's memory; a :class:`WindowSet`
over a folder lists the ids (cheap) and reads a window on first use, keeping the last few.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import overload

from training.data.schema import WindowData
from training.data.source_config import SourceError
from training.data.windows import (
    list_windows,
    read_window,
    read_window_meta,
    transaction_columns,
)

# An update touches at most four windows: the new one, the parent's, and the window whose
# labels arrive for each of them.
KEEP = 4


class WindowSet(Sequence[WindowData]):
    """Windows by position or id; ``reads`` records the ids read from disk, in order."""

    def __init__(self, ids: Sequence[str], read: Callable[[str], WindowData],
                 keep: int = KEEP, reads: list[str] | None = None,
                 freq: str | None = None,
                 columns: Callable[[str], list[str]] | None = None) -> None:
        if keep < 1:
            raise ValueError(f"keep: must be >= 1, got {keep}")
        self.ids: tuple[str, ...] = tuple(ids)
        # The window length (hour, day, week, month) where known: it places a label_ts in
        # a window (training.data.labels).
        self.freq = freq
        self.columns = columns  # a window's transactions columns without reading it
        self.reads: list[str] = [] if reads is None else reads
        self.read = read
        self.keep = keep
        self.cache: OrderedDict[str, WindowData] = OrderedDict()

    @classmethod
    def of(cls, windows: Iterable[WindowData], freq: str | None = None) -> WindowSet:
        """Windows already in memory (the synthetic shop, a raw file split into windows)."""
        held = {w.window_id: w for w in windows}
        return cls(list(held), held.__getitem__, keep=max(1, len(held)), freq=freq)

    @classmethod
    def from_folder(cls, root: str | Path) -> WindowSet:
        """The complete windows under ``root`` (see :mod:`training.data.windows`)."""
        ids = list_windows(root)
        freq = read_window_meta(root, ids[0]).get("freq") if ids else None
        if ids and not freq:
            raise SourceError(f"freq: {Path(root) / ids[0]} does not say its window length "
                              "(hour, day, week or month); write the folder again with "
                              "training.data.windows")
        return cls(ids, lambda wid: read_window(root, wid), freq=freq,
                   columns=lambda wid: transaction_columns(root, wid))

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> WindowData: ...

    @overload
    def __getitem__(self, index: slice) -> WindowSet: ...

    def __getitem__(self, index: int | slice) -> WindowData | WindowSet:
        if isinstance(index, slice):
            part = WindowSet(self.ids[index], self.read, self.keep, self.reads, self.freq,
                             self.columns)
            part.cache = self.cache
            return part
        return self.get(self.ids[index])

    def __iter__(self) -> Iterator[WindowData]:
        return (self.get(wid) for wid in self.ids)

    def position(self, window_id: str) -> int:
        if window_id not in self.ids:
            raise KeyError(f"window {window_id!r} is not one of {list(self.ids)}")
        return self.ids.index(window_id)

    def transaction_columns(self, index: int) -> list[str]:
        """The columns of a window's transactions, from its file's schema where it has not
        been read (an update looks for label arrival times in windows it may not need)."""
        window_id = self.ids[index]
        if window_id in self.cache or self.columns is None:
            return list(self.get(window_id).transactions.columns)
        return self.columns(window_id)

    def forget(self) -> None:
        """Drop the windows kept in memory (read again on next use); windows held by
        :meth:`of` stay where they are."""
        self.cache.clear()

    def get(self, window_id: str) -> WindowData:
        """The window, read now unless it is among the last few used."""
        if window_id in self.cache:
            self.cache.move_to_end(window_id)
            return self.cache[window_id]
        window = self.read(window_id)
        self.reads.append(window_id)
        self.cache[window_id] = window
        while len(self.cache) > self.keep:
            self.cache.popitem(last=False)
        return window


def window_ids(windows: Sequence[WindowData]) -> list[str]:
    """The ids of ``windows`` in order, without reading a lazy set's windows."""
    if isinstance(windows, WindowSet):
        return list(windows.ids)
    return [w.window_id for w in windows]
