"""String id -> embedding row, with row 0 reserved for every id the model has not seen."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

UNKNOWN_INDEX = 0


class IdMapError(ValueError):
    """An id cannot be stored (not a non-empty string), or a saved id list is malformed."""


class IdMap:
    """Ordered, append-only map from string ids to indices ``1..n``; ``0`` means unknown.

    Indices never change once assigned, so embedding rows stay valid when new ids arrive.
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        self._pd_index: pd.Index | None = None
        self._arrow_ids: pa.Array | None = None
        self.add(ids)

    def add(self, ids: Iterable[str]) -> int:
        """Append the ids not seen yet, in first-seen order; returns how many were new."""
        added = 0
        for raw in ids:
            if not isinstance(raw, str) or not raw:
                raise IdMapError(f"ids must be non-empty strings, got {raw!r}")
            if raw in self._index:
                continue
            self._ids.append(raw)
            self._index[raw] = len(self._ids)
            added += 1
        if added:
            self._pd_index = self._arrow_ids = None
        return added

    def lookup(self, ids: Sequence[str] | np.ndarray | pd.Series) -> np.ndarray:
        """Indices of ``ids`` as int64; unknown ids, None and NaN map to 0."""
        if isinstance(ids, pd.Series) and isinstance(ids.dtype, pd.StringDtype) \
                and ids.dtype.storage == "pyarrow":
            return self.lookup_arrow(pa.chunked_array(pa.array(ids)))
        if self._pd_index is None:
            # object dtype: lookups must not depend on pandas' default string dtype.
            self._pd_index = pd.Index(self._ids, dtype=object)
        values = ids.to_numpy(dtype=object) if isinstance(ids, pd.Series) else ids
        if len(values) == 0:
            return np.zeros(0, dtype=np.int64)
        found = self._pd_index.get_indexer(np.asarray(values, dtype=object))
        return (np.asarray(found, dtype=np.int64) + 1).astype(np.int64)

    def lookup_arrow(self, ids: pa.ChunkedArray) -> np.ndarray:
        """:meth:`lookup` of Arrow strings (a window's id column), without a Python object
        per row: at millions of rows those cost several times the column itself."""
        if self._arrow_ids is None or self._arrow_ids.type != ids.type:
            self._arrow_ids = pa.array(self._ids, type=ids.type)
        found = pc.index_in(ids, value_set=self._arrow_ids).fill_null(-1)
        return found.to_numpy().astype(np.int64) + 1

    def index_of(self, item_id: str) -> int:
        """Index of one id (0 if unknown)."""
        return self._index.get(item_id, UNKNOWN_INDEX)

    @property
    def ids(self) -> list[str]:
        """Real ids in index order (index ``i`` is ``ids[i - 1]``)."""
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids) + 1

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and item_id in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._ids))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self._ids == other._ids

    def __repr__(self) -> str:
        return f"IdMap({len(self._ids)} ids)"

    def to_json(self) -> list[str]:
        """The ids as a plain list (index order, reserved slot excluded)."""
        return list(self._ids)

    @classmethod
    def from_json(cls, ids: object) -> IdMap:
        """Rebuild from :meth:`to_json` output; duplicates would shift indices, so they fail."""
        if not isinstance(ids, list):
            raise IdMapError(f"expected a list of ids, got {type(ids).__name__}")
        result = cls()
        index = {raw: i for i, raw in enumerate(ids, start=1)
                 if isinstance(raw, str) and raw}
        if len(index) == len(ids):  # the common case, without add()'s per-id loop
            result._ids, result._index = list(ids), index
        else:
            result.add(ids)
        if len(result) != len(ids) + 1:
            raise IdMapError(f"saved id list has {len(ids) + 1 - len(result)} duplicate(s)")
        return result
