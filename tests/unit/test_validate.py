"""validate(): reasons, their order, dtypes, quarantine layout, counts helpers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.data.schema import empty_frame
from training.data.validate import (
    REASONS,
    LoadResult,
    QuarantineReport,
    SchemaError,
    ValidationResult,
    merge_counts,
    reason_counts,
    validate,
    write_quarantine,
)

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[1] / "data"


def read_csv(name: str) -> pd.DataFrame:
    return pd.read_csv(DATA / name, dtype=str, keep_default_na=False)


def reasons_by_row(result: ValidationResult) -> dict[int, str]:
    q = result.quarantine
    return dict(zip(q["row_number"].tolist(), q["reason"].tolist()))


def assert_partition(result: ValidationResult, total: int) -> None:
    assert result.counts["total"] == total
    assert len(result.valid) + len(result.quarantine) == total
    assert result.counts["valid"] == len(result.valid)
    assert sum(reason_counts(result.counts).values()) == len(result.quarantine)


def test_interactions_fixture_counts_and_first_reason_wins() -> None:
    result = validate("interactions", read_csv("interactions_bad.csv"), source="fx.csv")
    assert result.counts == {
        "total": 16, "valid": 3, "missing_id": 3, "bad_type": 3, "non_finite": 2,
        "negative_amount": 1, "bad_quantity": 1, "unknown_event": 1, "ts_out_of_order": 2,
    }
    assert_partition(result, 16)
    assert reasons_by_row(result) == {
        1: "missing_id", 2: "missing_id", 3: "bad_type", 4: "bad_type", 5: "bad_type",
        6: "non_finite", 7: "non_finite", 8: "negative_amount", 9: "bad_quantity",
        10: "unknown_event", 11: "ts_out_of_order", 14: "missing_id", 15: "ts_out_of_order",
    }
    assert result.valid["user_id"].tolist() == ["u1", "u13", "u14"]
    # An empty price is a null (nullable in the schema), not a quarantine reason.
    assert result.valid["price"].isna().tolist() == [False, True, False]
    assert result.valid["quantity"].tolist() == [1, 2, 1]
    assert set(result.quarantine["source"]) == {"fx.csv"}


def test_quarantine_keeps_the_raw_text() -> None:
    result = validate("interactions", read_csv("interactions_bad.csv"))
    row = result.quarantine.set_index("row_number").loc[5]
    assert (row["quantity"], row["ts"], row["reason"]) == ("1.5", "2011-01-01T10:08:00Z",
                                                          "bad_type")
    assert list(result.quarantine.columns) == [
        "user_id", "item_id", "ts", "event", "quantity", "price", "reason", "source",
        "row_number"]


def test_valid_dtypes_match_the_schema() -> None:
    for table, name, features in [("interactions", "interactions_bad.csv", None),
                                  ("items", "items_bad.csv", None),
                                  ("transactions", "transactions_bad.csv", ["f1", "f2"])]:
        result = validate(table, read_csv(name))
        expected = empty_frame(table, features).dtypes
        assert result.valid.dtypes.to_dict() == expected.to_dict(), table


def test_transactions_fixture_counts() -> None:
    result = validate("transactions", read_csv("transactions_bad.csv"))
    assert result.counts == {
        "total": 15, "valid": 4, "missing_id": 1, "bad_type": 3, "non_finite": 3,
        "negative_amount": 2, "ts_out_of_order": 1, "duplicate_id": 1,
    }
    assert_partition(result, 15)
    assert reasons_by_row(result) == {
        2: "missing_id", 3: "bad_type", 4: "bad_type", 5: "bad_type", 6: "non_finite",
        7: "non_finite", 8: "non_finite", 9: "negative_amount", 10: "ts_out_of_order",
        11: "duplicate_id", 13: "negative_amount",
    }
    valid = result.valid
    # t4's first row was quarantined, so its second one is not a duplicate.
    assert valid["txn_id"].tolist() == ["t1", "t2", "t13", "t4"]
    assert valid["is_fraud"].tolist() == [False, True, True, True]
    assert valid["f1"].tolist() == [0.5, 0.1, -0.3, 0.1]
    assert valid["user_id"].isna().tolist() == [False, True, False, False]
    assert list(valid.columns[-2:]) == ["f1", "f2"]


def test_items_fixture_counts() -> None:
    result = validate("items", read_csv("items_bad.csv"))
    assert result.counts == {
        "total": 10, "valid": 3, "missing_id": 1, "bad_type": 2, "non_finite": 1,
        "negative_amount": 1, "missing_title": 1, "duplicate_id": 1,
    }
    assert_partition(result, 10)
    # Items are a catalog, not a time series: an older first_seen is not out of order.
    assert result.valid["item_id"].tolist() == ["A1", "A2", "A9"]
    assert result.valid["title"].tolist() == ["Red mug", "Blue mug", "Old item"]
    assert result.valid["category"].isna().tolist() == [False, True, False]


def test_check_order_off_keeps_out_of_order_rows() -> None:
    result = validate("interactions", read_csv("interactions_bad.csv"), check_order=False)
    assert "ts_out_of_order" not in result.counts
    assert result.counts["valid"] == 5


def test_missing_required_column_raises_naming_it() -> None:
    frame = read_csv("interactions_bad.csv").drop(columns=["event", "quantity"])
    with pytest.raises(SchemaError, match=r"interactions: .*\['event', 'quantity'\].*in x\.csv"):
        validate("interactions", frame, source="x.csv")


def test_missing_nullable_columns_are_filled_with_nulls() -> None:
    frame = read_csv("items_bad.csv").drop(columns=["category", "price"]).iloc[:2]
    result = validate("items", frame)
    assert result.counts == {"total": 2, "valid": 2}
    assert result.valid["price"].isna().all() and result.valid["category"].isna().all()


def test_a_schema_exact_frame_is_validated_without_copying_its_columns() -> None:
    """A window this package wrote (schema-exact, nothing to strip, every row valid) comes
    back sharing its text columns' memory: at millions of rows a copy per pass was most
    of the driver's read peak. A row to drop, or text to strip, still gets its copy."""
    raw = validate("interactions", read_csv("interactions_bad.csv")).valid
    assert len(raw) > 2
    again = validate("interactions", raw)
    assert again.counts["valid"] == len(raw)
    pd.testing.assert_frame_equal(again.valid, raw)
    for column in ("user_id", "item_id", "event"):
        assert np.shares_memory(np.asarray(again.valid[column].array._pa_array.chunk(0)
                                           .buffers()[2]),
                                np.asarray(raw[column].array._pa_array.chunk(0).buffers()[2]))
    padded = raw.assign(user_id=" " + raw["user_id"])
    stripped = validate("interactions", padded).valid
    assert stripped["user_id"].tolist() == raw["user_id"].tolist()
    dropped = validate("interactions", raw.assign(quantity=[0] + [1] * (len(raw) - 1))).valid
    assert len(dropped) == len(raw) - 1
    assert dropped["item_id"].tolist() == raw["item_id"].tolist()[1:]


def test_typed_input_and_float_ids() -> None:
    frame = pd.DataFrame({
        "user_id": [17850.0, np.nan, 12.5],
        "item_id": ["85123A", "71053", "x"],
        "ts": pd.to_datetime(["2010-12-01 08:26", "2010-12-01 08:27", "2010-12-01 08:28"]),
        "event": ["purchase"] * 3,
        "quantity": [6, 6, 1],
        "price": [2.55, 3.39, np.nan],
        "country": ["UK", "UK", "UK"],
    })
    result = validate("interactions", frame)
    assert result.counts == {"total": 3, "valid": 2, "missing_id": 1}
    assert result.valid["user_id"].tolist() == ["17850", "12.5"]
    assert str(result.valid["ts"].iloc[0]) == "2010-12-01 08:26:00+00:00"
    assert "country" not in result.valid.columns
    assert result.quarantine["country"].tolist() == ["UK"]


def test_numeric_ts_is_a_schema_error() -> None:
    frame = pd.DataFrame({"txn_id": ["a"], "ts": [1_700_000_000], "amount": [1.0]})
    with pytest.raises(SchemaError, match="'ts'"):
        validate("transactions", frame)


def test_null_labels_and_label_words() -> None:
    frame = pd.DataFrame({"txn_id": ["a", "b", "c", "d"], "ts": ["2020-01-01"] * 4,
                          "amount": [1.0] * 4, "is_fraud": ["true", "", "1.0", "no"]})
    result = validate("transactions", frame)
    assert result.counts == {"total": 4, "valid": 4}
    assert result.valid["is_fraud"].tolist() == [True, None, True, False]


def test_empty_frame_is_valid_and_empty() -> None:
    result = validate("interactions", empty_frame("interactions"))
    assert result.counts == {"total": 0, "valid": 0}
    assert result.valid.dtypes.to_dict() == empty_frame("interactions").dtypes.to_dict()


def test_counts_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="training.data.validate"):
        validate("items", read_csv("items_bad.csv"), source="items_bad.csv")
    assert "validate items (items_bad.csv)" in caplog.text
    assert "'duplicate_id': 1" in caplog.text


def test_reasons_are_stable() -> None:
    assert REASONS == ("missing_id", "bad_type", "non_finite", "negative_amount",
                       "bad_quantity", "unknown_event", "missing_title", "ts_out_of_order",
                       "duplicate_id")


def test_merge_counts_and_report() -> None:
    assert merge_counts({"a": 1, "b": 2}, {"b": 3, "c": 4}) == {"a": 1, "b": 5, "c": 4}
    report = QuarantineReport()
    one = validate("items", read_csv("items_bad.csv"))
    two = validate("interactions", read_csv("interactions_bad.csv"))
    report.add(one)
    report.add(two)
    assert report.counts["total"] == 26 and report.counts["missing_id"] == 4
    assert len(report.quarantine) == 7 + 13
    report.add(LoadResult(counts={"total": 1, "valid": 1}), table="items")
    assert report.counts["items.total"] == 1


def test_write_quarantine_round_trip(tmp_path: Path) -> None:
    result = validate("transactions", read_csv("transactions_bad.csv"), source="t.csv")
    path = write_quarantine(result, tmp_path / "q", "transactions")
    assert path == tmp_path / "q" / "transactions.quarantine.parquet"
    back = pd.read_parquet(path)
    assert back["reason"].tolist() == result.quarantine["reason"].tolist()
    assert back["row_number"].tolist() == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == [path.name]
    clean = validate("items", read_csv("items_bad.csv").iloc[:2])
    assert write_quarantine(clean, tmp_path / "q", "items") is None
