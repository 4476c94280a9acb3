"""Online Retail and ULB loaders: exact counts on the shipped slices, fixtures, shared data.

The slice counts were computed independently of the loaders (a csv-module script applying
the documented rules row by row) and hard-coded here.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from training.data.online_retail import load_online_retail
from training.data.schema import empty_frame
from training.data.ulb import FEATURE_COLUMNS, load_ulb
from training.data.validate import LoadResult, SchemaError, reason_counts

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
RETAIL = REPO / "data" / "online_retail"
ULB = REPO / "data" / "ulb_creditcard" / "creditcard_first_1h.csv"
FIXTURES = REPO / "tests" / "data"


def assert_partition(counts: dict[str, int], quarantine: pd.DataFrame) -> None:
    assert counts["valid"] + sum(reason_counts(counts).values()) == counts["total"]
    assert len(quarantine) == sum(reason_counts(counts).values())
    assert quarantine["reason"].value_counts().to_dict() == reason_counts(counts)


@pytest.fixture(scope="module")
def retail() -> LoadResult:
    return load_online_retail(RETAIL)


def test_online_retail_slice_counts(retail) -> None:
    assert retail.counts == {"total": 5217, "valid": 4003, "missing_user_id": 1205,
                             "non_product_code": 9, "cancellation": 69, "items": 1594}
    assert_partition(retail.counts, retail.quarantine)
    inter = retail.interactions
    assert len(inter) == 4003
    assert inter["user_id"].nunique() == 204
    assert inter["item_id"].nunique() == 1313
    assert inter["event"].value_counts().to_dict() == {"purchase": 3934, "return": 69}
    assert (inter["quantity"] > 0).all()
    assert inter["ts"].is_monotonic_increasing
    assert inter["user_id"].str.fullmatch(r"\d+").all()
    assert len(retail.items) == 1594
    assert retail.transactions.empty
    by_file = retail.quarantine.groupby("source")["reason"].value_counts().to_dict()
    assert by_file == {("2010-12-01.csv", "missing_user_id"): 1140,
                       ("2010-12-01.csv", "non_product_code"): 7,
                       ("2010-12-02.csv", "missing_user_id"): 65,
                       ("2010-12-02.csv", "non_product_code"): 2}


def test_online_retail_dtypes(retail) -> None:
    for name in ("items", "interactions", "transactions"):
        assert getattr(retail, name).dtypes.to_dict() == empty_frame(name).dtypes.to_dict()


def test_online_retail_quarantine_rows_are_raw_lines(retail) -> None:
    q = retail.quarantine.set_index(["source", "row_number"])
    row = q.loc[("2010-12-01.csv", 45)]
    # Line 47 of the file (header + 0-based row 45), exactly as published.
    assert row[["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
                "CustomerID", "Country"]].tolist() == [
        "536370", "POST", "POSTAGE", "3", "2010-12-01 08:45:00", "18.0", "12583.0", "France"]
    assert row["reason"] == "non_product_code"
    assert str(row["event_ts"]) == "2010-12-01 08:45:00+00:00"


def test_online_retail_items(retail) -> None:
    items = retail.items.set_index("item_id")
    # Descriptions vary: the most frequent wins (23 vs 18), ties go to the first seen.
    assert items.loc["22632", "title"] == "HAND WARMER RED RETROSPOT"
    assert items.loc["22965", "title"] == "3 TRADITIONAL COOKIE CUTTERS  SET"
    assert items.loc["22777", "title"] == "GLASS BELL JAR LARGE"
    assert items.loc["22632", "price"] == 2.1  # median of 18 x 1.85, 21 x 2.1, 2 x 4.21
    assert str(items.loc["85123A", "first_seen"]) == "2010-12-01 08:26:00+00:00"
    assert items["category"].isna().all()
    assert not items.index.duplicated().any()
    assert "POST" not in items.index


def test_online_retail_fixture_reasons() -> None:
    result = load_online_retail(FIXTURES / "online_retail_bad.csv")
    assert result.counts == {
        "total": 16, "valid": 5, "bad_type": 2, "missing_id": 1, "missing_user_id": 1,
        "non_product_code": 2, "missing_description": 1, "odd_description": 1,
        "non_positive_price": 1, "bad_quantity": 2, "cancellation": 1, "items": 4,
    }
    assert_partition(result.counts, result.quarantine)
    q = result.quarantine
    assert dict(zip(q["row_number"], q["reason"])) == {
        2: "bad_type", 3: "missing_user_id", 4: "missing_id", 5: "non_product_code",
        6: "non_product_code", 7: "missing_description", 8: "odd_description",
        9: "non_positive_price", 10: "bad_quantity", 12: "bad_quantity", 14: "bad_type"}
    inter = result.interactions
    # Sorted by ts: the 08:00 row that came late in the file is first, not quarantined.
    assert inter["user_id"].tolist() == ["15311", "17850", "17850", "14527", "17850"]
    assert inter["event"].tolist() == ["purchase", "purchase", "purchase", "return", "purchase"]
    assert inter["quantity"].tolist() == [2, 6, 6, 2, 2]
    items = result.items.set_index("item_id")
    assert items.index.tolist() == ["85123A", "71053", "22632", "21258"]
    assert items["price"].tolist() == [2.55, 3.39, 1.85, 12.75]
    assert str(items.loc["85123A", "first_seen"]) == "2010-12-01 08:00:00+00:00"


def test_online_retail_missing_column_and_paths(tmp_path: Path) -> None:
    frame = pd.read_csv(FIXTURES / "online_retail_bad.csv", dtype=str)
    frame.drop(columns=["CustomerID"]).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(SchemaError, match=r"x\.csv.*CustomerID"):
        load_online_retail(tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError):
        load_online_retail(tmp_path / "nope.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.csv"):
        load_online_retail(tmp_path / "empty")


def test_ulb_slice() -> None:
    result = load_ulb(ULB)
    assert result.counts == {"total": 3963, "valid": 3963, "fraud": 2}
    txn = result.transactions
    assert list(txn.columns) == ["txn_id", "user_id", "item_id", "ts", "amount", "is_fraud",
                                 *FEATURE_COLUMNS]
    assert txn.dtypes.to_dict() == empty_frame("transactions", list(FEATURE_COLUMNS)
                                               ).dtypes.to_dict()
    assert txn.loc[txn["is_fraud"], "txn_id"].tolist() == ["ulb-541", "ulb-623"]
    assert str(txn["ts"].iloc[0]) == "2013-09-01 00:00:00+00:00"
    assert str(txn["ts"].iloc[-1]) == "2013-09-01 00:59:53+00:00"
    assert txn["amount"].sum() == pytest.approx(257101.87)
    assert txn["V1"].iloc[0] == -1.3598071336738
    assert txn["user_id"].isna().all() and txn["item_id"].isna().all()
    assert result.items.empty and result.interactions.empty and result.quarantine.empty


def test_ulb_fixture_reasons() -> None:
    result = load_ulb(FIXTURES / "ulb_bad.csv", start="2020-01-01T00:00:00")
    assert result.counts == {"total": 10, "valid": 3, "bad_label": 2, "non_finite": 2,
                             "bad_type": 2, "negative_amount": 1, "fraud": 1}
    assert_partition(result.counts, result.quarantine)
    q = result.quarantine
    assert dict(zip(q["row_number"], q["reason"])) == {
        2: "bad_type", 3: "negative_amount", 4: "non_finite", 5: "bad_label",
        6: "non_finite", 7: "bad_type", 9: "bad_label"}
    txn = result.transactions
    assert txn["txn_id"].tolist() == ["ulb-0", "ulb-1", "ulb-8"]
    assert [str(t) for t in txn["ts"]] == ["2020-01-01 00:00:00+00:00"] * 2 + [
        "2020-01-01 00:00:00.500000+00:00"]
    assert txn["is_fraud"].tolist() == [False, False, True]
    assert q.loc[q["row_number"] == 2, "event_ts"].isna().all()


def split_ulb(folder: Path, cut: int, overlap: int = 0) -> None:
    """The 1 h slice as two files of one folder: rows before ``cut``, and from
    ``cut - overlap`` on (the header in both)."""
    lines = ULB.read_text().splitlines(keepends=True)
    folder.mkdir()
    (folder / "a_early.csv").write_text("".join(lines[:cut + 1]))
    (folder / "b_later.csv").write_text(lines[0] + "".join(lines[cut + 1 - overlap:]))


def test_ulb_folder_of_slices_loads_every_row(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """Later hours beside the first ones: every row kept (row numbers restart per file, so
    ids name the file), the same transactions and labels as the one file."""
    split_ulb(tmp_path / "ulb", 600)
    whole, parts = load_ulb(ULB), load_ulb(tmp_path / "ulb")
    assert parts.counts == whole.counts == {"total": 3963, "valid": 3963, "fraud": 2}
    txn = parts.transactions
    assert txn.loc[txn["is_fraud"], "txn_id"].tolist() == ["ulb-a_early-541",
                                                           "ulb-b_later-23"]
    pd.testing.assert_frame_equal(txn.drop(columns="txn_id"),
                                  whole.transactions.drop(columns="txn_id"))
    assert "repeat a row" not in caplog.text


def test_ulb_rows_repeated_by_a_later_file_are_quarantined(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The published file beside a slice of it: the repeated rows are counted once, the
    copies quarantined and counted (a file's own duplicate rows stay: the data has some)."""
    split_ulb(tmp_path / "ulb", 600, overlap=50)
    result = load_ulb(tmp_path / "ulb")
    assert result.counts == {"total": 3963 + 50, "valid": 3963, "overlapping_file": 50,
                             "fraud": 2}
    assert_partition(result.counts, result.quarantine)
    q = result.quarantine
    assert set(q["source"]) == {"b_later.csv"} and q["row_number"].tolist() == list(range(50))
    pd.testing.assert_frame_equal(result.transactions.drop(columns="txn_id"),
                                  load_ulb(ULB).transactions.drop(columns="txn_id"))
    assert "50 rows repeat a row of an earlier file" in caplog.text
    # Within one file, an exact repeat is a transaction of its own.
    lines = ULB.read_text().splitlines(keepends=True)
    (tmp_path / "one.csv").write_text("".join(lines[:11]) + lines[5])
    assert load_ulb(tmp_path / "one.csv").counts["valid"] == 11


@pytest.mark.parametrize("whole_name", ["all.csv", "0_all.csv"])
def test_online_retail_whole_file_beside_its_days_loads_once(
        tmp_path: Path, retail: LoadResult, whole_name: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """The whole-data file dropped into the folder of its daily files: every purchase and
    item as from the days alone, the second copy of each row quarantined and counted,
    whichever file sorts first."""
    folder = tmp_path / "retail"
    folder.mkdir()
    days = sorted(RETAIL.glob("*.csv"))
    whole = days[0].read_text()
    for day in days:
        (folder / day.name).write_text(day.read_text())
    whole += "".join(days[1].read_text().splitlines(keepends=True)[1:])
    (folder / whole_name).write_text(whole)
    result = load_online_retail(folder)
    assert result.counts == {**retail.counts, "total": 2 * 5217, "overlapping_file": 5217}
    assert_partition(result.counts, result.quarantine)
    pd.testing.assert_frame_equal(result.interactions, retail.interactions)
    pd.testing.assert_frame_equal(result.items, retail.items)
    copies = result.quarantine[result.quarantine["reason"] == "overlapping_file"]
    later = {"all.csv": {"all.csv"}, "0_all.csv": {d.name for d in days}}[whole_name]
    assert set(copies["source"]) == later
    assert "5217 rows repeat a row of an earlier file" in caplog.text


def test_ulb_bad_start() -> None:
    with pytest.raises(ValueError, match="start"):
        load_ulb(ULB, start="not a time")


@pytest.mark.shared_data
def test_online_retail_full_shared_folder(shared_data_dir: Path) -> None:
    folder = shared_data_dir / "online_retail"
    assert len(list(folder.glob("*.csv"))) == 68
    result = load_online_retail(folder)
    assert result.counts == {"total": 105335, "valid": 68800, "missing_user_id": 36210,
                             "non_product_code": 318, "non_positive_price": 7,
                             "cancellation": 1756, "items": 3089}
    assert_partition(result.counts, result.quarantine)
    assert result.interactions["user_id"].nunique() == 1745
    assert result.interactions["item_id"].nunique() == 2771
    assert result.interactions["ts"].is_monotonic_increasing


@pytest.mark.shared_data
def test_ulb_full_shared_file(shared_data_dir: Path) -> None:
    result = load_ulb(shared_data_dir / "ulb_creditcard" / "creditcard_first_6h.csv")
    assert result.counts == {"total": 12340, "valid": 12340, "fraud": 55}
    assert result.transactions["ts"].max() < pd.Timestamp("2013-09-01T06:00:00Z")
