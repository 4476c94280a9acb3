"""Table schemas shared by every stage: items, interactions, transactions.

All ids are strings (Online Retail's float CustomerID ``17850.0`` becomes ``"17850"``),
all timestamps are UTC microseconds. A transactions table carries any number of
numeric feature columns beside its base columns; :func:`transaction_feature_columns`
names them, in a stable order, so a model can record which features it was built on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:  # only annotations here: importing the schema (every --help) skips pandas
    import pandas as pd

TS_TYPE = pa.timestamp("us", tz="UTC")

ITEMS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=True),
        pa.field("price", pa.float64(), nullable=True),
        pa.field("first_seen", TS_TYPE, nullable=False),
    ]
)

EVENT_TYPES: tuple[str, ...] = ("view", "cart", "purchase", "return")

INTERACTIONS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("quantity", pa.int64(), nullable=False),
        pa.field("price", pa.float64(), nullable=True),
    ]
)

# Base columns of a transactions table; every other numeric column is a feature.
# user_id and item_id are nullable: ULB's anonymised data has neither.
TRANSACTIONS_BASE_SCHEMA = pa.schema(
    [
        pa.field("txn_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=True),
        pa.field("item_id", pa.string(), nullable=True),
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("amount", pa.float64(), nullable=False),
        pa.field("is_fraud", pa.bool_(), nullable=True),
    ]
)
# Optional: when the row's fraud label became known, where that was earlier than the run's
# label delay (an investigated alert, an early chargeback); see training.data.labels. A
# table has the column only when its source gives it; it is never a feature.
LABEL_TS_COLUMN = "label_ts"
LABEL_TS_FIELD = pa.field(LABEL_TS_COLUMN, TS_TYPE, nullable=True)
TRANSACTION_BASE_COLUMNS: tuple[str, ...] = (*TRANSACTIONS_BASE_SCHEMA.names, LABEL_TS_COLUMN)

TABLE_NAMES: tuple[str, ...] = ("items", "interactions", "transactions")

QUARANTINE_REASON_COLUMN = "reason"


def transactions_schema(feature_columns: list[str], label_ts: bool = False) -> pa.Schema:
    """The full transactions schema for the given feature columns (all float64), with the
    optional ``label_ts`` column when ``label_ts``."""
    fields = list(TRANSACTIONS_BASE_SCHEMA) + ([LABEL_TS_FIELD] if label_ts else [])
    fields += [pa.field(name, pa.float64(), nullable=False) for name in feature_columns]
    return pa.schema(fields)


def transaction_feature_columns(columns: list[str] | pd.Index) -> list[str]:
    """Feature columns of a transactions table: every column that is not a base column.

    Order is the table's own column order, which loaders and the generator keep stable.
    """
    return [c for c in columns if c not in TRANSACTION_BASE_COLUMNS]


def schema_for(table: str, feature_columns: list[str] | None = None,
               label_ts: bool = False) -> pa.Schema:
    """The pyarrow schema of ``table`` (one of :data:`TABLE_NAMES`); ``label_ts``: a
    transactions table with that optional column."""
    if table == "items":
        return ITEMS_SCHEMA
    if table == "interactions":
        return INTERACTIONS_SCHEMA
    if table == "transactions":
        return transactions_schema(feature_columns or [], label_ts)
    raise ValueError(f"unknown table {table!r}; expected one of {TABLE_NAMES}")


def empty_frame(table: str, feature_columns: list[str] | None = None) -> pd.DataFrame:
    """An empty DataFrame with the table's columns and dtypes."""
    return schema_for(table, feature_columns).empty_table().to_pandas()


@dataclass
class WindowData:
    """One time window of shop data, as pandas frames that already passed validation.

    A table with no rows in the window is an empty frame with the right columns,
    never ``None``: a missing table means that task has no data in the window.
    """

    window_id: str
    items: pd.DataFrame = field(default_factory=lambda: empty_frame("items"))
    interactions: pd.DataFrame = field(default_factory=lambda: empty_frame("interactions"))
    transactions: pd.DataFrame = field(default_factory=lambda: empty_frame("transactions"))

    def table(self, name: str) -> pd.DataFrame:
        if name not in TABLE_NAMES:
            raise ValueError(f"unknown table {name!r}; expected one of {TABLE_NAMES}")
        frame: pd.DataFrame = getattr(self, name)
        return frame

    @property
    def fraud_features(self) -> list[str]:
        return transaction_feature_columns(list(self.transactions.columns))

    def counts(self) -> dict[str, int]:
        return {name: len(self.table(name)) for name in TABLE_NAMES}
