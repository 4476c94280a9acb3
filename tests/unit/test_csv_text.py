"""The CSV reader: rows that cannot be read are quarantined and counted, never crash a load.

A Latin-1/cp1252 export (bytes that are not UTF-8) or an unquoted comma used to raise
(UnicodeDecodeError, ParserError) and lose the whole load. Such a file is now read row by
row, and that reader gives exactly pandas' rows wherever pandas can read them.
"""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.data.csv_text import (
    READ_REASON_COLUMN,
    csv_files,
    read_raw,
    read_row_by_row,
    read_with_pandas,
)
from training.data.online_retail import RAW_COLUMNS as RETAIL_COLUMNS
from training.data.online_retail import load_online_retail
from training.data.ulb import RAW_COLUMNS as ULB_COLUMNS
from training.data.ulb import load_ulb
from training.data.validate import SchemaError, reason_counts

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "data"
HEADER = b"InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
GOOD = b"536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,UK\n"


@pytest.mark.parametrize(("path", "columns"), [
    (REPO / "data" / "online_retail", RETAIL_COLUMNS),
    (REPO / "data" / "ulb_creditcard" / "creditcard_first_1h.csv", ULB_COLUMNS),
    (FIXTURES / "online_retail_bad.csv", RETAIL_COLUMNS),
    (FIXTURES / "ulb_bad.csv", ULB_COLUMNS),
])
def test_clean_files_read_exactly_as_pandas_reads_them(path: Path, columns) -> None:
    files = csv_files(path)
    expected = pd.concat([
        pd.read_csv(f, dtype=str, keep_default_na=False, na_filter=False)[list(columns)]
        .assign(source=f.name, row_number=lambda d: np.arange(len(d), dtype=np.int64))
        for f in files], ignore_index=True)
    got = read_raw(path, columns)
    assert got[[*columns, "source", "row_number"]].equals(expected)
    assert (got[READ_REASON_COLUMN] == "").all()
    # The row-by-row reader, used for files pandas refuses, gives the same rows.
    for f in files:
        assert read_row_by_row(f, columns).equals(read_with_pandas(f, columns))


def test_a_short_row_reads_the_same_whichever_reader_reads_the_file(tmp_path: Path) -> None:
    short = b"536368,22960,JAM MAKING SET WITH JARS,6,2010-12-01 08:34\n"
    (tmp_path / "clean.csv").write_bytes(HEADER + GOOD + short)
    (tmp_path / "dirty.csv").write_bytes(HEADER + GOOD + short + GOOD[:-1] + b",extra\n")
    clean = read_raw(tmp_path / "clean.csv", RETAIL_COLUMNS)
    dirty = read_raw(tmp_path / "dirty.csv", RETAIL_COLUMNS)
    assert dirty.iloc[:2].drop(columns="source").equals(clean.drop(columns="source"))
    assert clean["UnitPrice"].tolist() == ["2.55", ""]
    assert dirty[READ_REASON_COLUMN].tolist() == ["", "", "bad_row"]


def retail_file(tmp_path: Path) -> Path:
    lines = [
        b"\xef\xbb\xbf" + HEADER,                      # byte-order mark from a spreadsheet
        GOOD,                                                                  # row 0
        b"536366,22633,HAND WARMER CAF\xe9 JACK,6,2010-12-01 08:28:00,1.85,17850.0,UK\n",
        b"\n",                                            # blank: skipped, not numbered
        b"536367,84879,ASSORTED BIRD, ORNAMENT,32,2010-12-01 08:34:00,1.69,13047.0,UK\n",
        b"536367,22745,POPPY'S PLAYHOUSE BEDROOM,6,2010-12-01 08:34:00,2.10,13047.0,UK\n",
        b"536368,22960,JAM MAKING SET WITH JARS,6,2010-12-01 08:34",  # cut short, no newline:
        # its missing fields read as empty, and the loader's own checks judge it (bad_type).
    ]
    path = tmp_path / "2010-12-01.csv"
    path.write_bytes(b"".join(lines))
    return path


def test_online_retail_quarantines_unreadable_rows_and_keeps_the_rest(tmp_path: Path) -> None:
    result = load_online_retail(retail_file(tmp_path))
    assert result.counts == {"total": 5, "valid": 2, "bad_encoding": 1, "bad_row": 1,
                             "bad_type": 1, "cancellation": 0, "items": 2}
    q = result.quarantine.set_index("row_number")
    assert sum(reason_counts(result.counts).values()) == len(q)
    assert q["reason"].to_dict() == {1: "bad_encoding", 2: "bad_row", 4: "bad_type"}
    # Nothing is lost: the bad byte is escaped, the extra field joins the last column.
    assert q.loc[1, "Description"] == "HAND WARMER CAF\\xe9 JACK"
    assert q.loc[2, "Description"] == "ASSORTED BIRD"
    assert q.loc[2, "Country"] == "13047.0,UK"
    assert q.loc[4, "InvoiceDate"] == "2010-12-01 08:34" and q.loc[4, "CustomerID"] == ""
    assert result.interactions["item_id"].tolist() == ["85123A", "22745"]
    # Unread rows give no item either (their fields may be shifted or mis-decoded).
    assert sorted(result.items["item_id"]) == ["22745", "85123A"]


def test_ulb_unreadable_rows_do_not_move_the_other_txn_ids(tmp_path: Path) -> None:
    lines = (FIXTURES / "ulb_bad.csv").read_bytes().splitlines(keepends=True)[:3]
    fields = lines[1].rstrip(b"\n").split(b",")
    long_row = b",".join([*fields[:5], b"9.9", *fields[5:]]) + b"\n"
    bad_byte = b",".join([*fields[:-2], b"1\xff0", fields[-1]]) + b"\n"
    path = tmp_path / "creditcard.csv"
    path.write_bytes(b"".join([lines[0], lines[1], long_row, bad_byte, lines[2]]))
    result = load_ulb(path)
    assert result.counts == {"total": 4, "valid": 2, "bad_row": 1, "bad_encoding": 1,
                             "fraud": 0}
    assert result.transactions["txn_id"].tolist() == ["ulb-0", "ulb-3"]
    q = result.quarantine.set_index("row_number")
    assert q["reason"].to_dict() == {1: "bad_row", 2: "bad_encoding"}
    assert q.loc[2, "Amount"] == "1\\xff0"


def test_a_huge_field_is_read_and_the_csv_limit_is_restored(tmp_path: Path) -> None:
    limit = csv.field_size_limit()
    title = "A" * (limit + 10)
    path = tmp_path / "big.csv"
    big = GOOD.replace(b"WHITE HANGING HEART T-LIGHT HOLDER", title.encode())
    path.write_bytes(HEADER + big + GOOD[:-1] + b",extra\n")  # the row-by-row reader
    raw = read_raw(path, RETAIL_COLUMNS)
    assert raw["Description"].str.len().tolist() == [len(title), 34]
    assert raw[READ_REASON_COLUMN].tolist() == ["", "bad_row"]
    assert csv.field_size_limit() == limit


def test_concurrent_reads_of_huge_fields_all_succeed_and_restore_the_limit(
        tmp_path: Path) -> None:
    limit = csv.field_size_limit()
    big = GOOD.replace(b"WHITE HANGING HEART T-LIGHT HOLDER", b"A" * (limit + 10))
    path = tmp_path / "big.csv"
    path.write_bytes(HEADER + (big + GOOD[:-1] + b",extra\n") * 50)
    with ThreadPoolExecutor(4) as pool:
        frames = list(pool.map(lambda _: read_raw(path, RETAIL_COLUMNS), range(8)))
    assert all((f["Description"].str.len() > limit).sum() == 50 for f in frames)
    assert csv.field_size_limit() == limit


def test_an_empty_file_names_itself_and_a_header_alone_loads_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(SchemaError, match=r"empty\.csv: empty file"):
        read_raw(tmp_path / "empty.csv", RETAIL_COLUMNS)
    (tmp_path / "header.csv").write_bytes(HEADER)
    raw = read_raw(tmp_path / "header.csv", RETAIL_COLUMNS)
    assert len(raw) == 0 and list(raw.columns[:8]) == list(RETAIL_COLUMNS)
    result = load_online_retail(tmp_path / "header.csv")
    assert result.counts["total"] == 0 and result.interactions.empty
