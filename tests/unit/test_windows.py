"""Window ids, splitting, the on-disk layout and the make-windows command."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from training.data.online_retail import load_online_retail
from training.data.schema import TABLE_NAMES, WindowData
from training.data.ulb import load_ulb
from training.data.validate import LoadResult, QuarantineReport, SchemaError
from training.data.windows import (
    list_windows,
    main,
    read_window,
    read_window_meta,
    split_windows,
    window_bounds,
    window_id_for,
    write_window,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
RETAIL = REPO / "data" / "online_retail"
ULB = REPO / "data" / "ulb_creditcard" / "creditcard_first_1h.csv"


@pytest.fixture(scope="module")
def retail() -> LoadResult:
    return load_online_retail(RETAIL)


def stamps(*texts: str | None) -> pd.Series:
    return pd.Series(pd.to_datetime(list(texts), utc=True))


def test_window_ids() -> None:
    ts = stamps("2010-12-01 13:45", "2011-01-02 23:59", "2011-01-03 00:00", None)
    assert window_id_for(ts, "hour").tolist()[:3] == ["2010-12-01T13", "2011-01-02T23",
                                                     "2011-01-03T00"]
    assert window_id_for(ts, "day").tolist()[:3] == ["2010-12-01", "2011-01-02", "2011-01-03"]
    # ISO weeks start on Monday: Wed 2010-12-01 -> Mon 11-29; Sun 2011-01-02 -> Mon 12-27.
    assert window_id_for(ts, "week").tolist()[:3] == ["2010-11-29", "2010-12-27", "2011-01-03"]
    assert window_id_for(ts, "month").tolist()[:3] == ["2010-12", "2011-01", "2011-01"]
    assert window_id_for(ts, "day").isna().tolist() == [False, False, False, True]


def test_window_ids_convert_to_utc() -> None:
    paris = pd.Series(pd.to_datetime(["2010-12-01 00:30"]).tz_localize("Europe/Paris"))
    assert window_id_for(paris, "day").tolist() == ["2010-11-30"]
    naive = pd.Series(pd.to_datetime(["2010-12-01 00:30"]))
    assert window_id_for(naive, "hour").tolist() == ["2010-12-01T00"]


@pytest.mark.parametrize("freq", ["hour", "day", "week", "month"])
def test_window_ids_sort_in_time_order(freq: str) -> None:
    ts = pd.Series(pd.date_range("2009-12-25", "2011-03-03", freq="7h", tz="UTC"))
    ids = window_id_for(ts, freq)  # type: ignore[arg-type]
    assert ids.tolist() == sorted(ids.tolist())
    starts = [window_bounds(i, freq)[0] for i in ids.unique()]  # type: ignore[arg-type]
    assert starts == sorted(starts)
    assert all(window_id_for(pd.Series([s]), freq).iloc[0] == i  # type: ignore[arg-type]
               for s, i in zip(starts, ids.unique()))


def test_window_bounds() -> None:
    assert [str(t) for t in window_bounds("2010-12", "month")] == [
        "2010-12-01 00:00:00+00:00", "2011-01-01 00:00:00+00:00"]
    assert [str(t) for t in window_bounds("2010-11-29", "week")] == [
        "2010-11-29 00:00:00+00:00", "2010-12-06 00:00:00+00:00"]
    with pytest.raises(ValueError, match="window_id"):
        window_bounds("2010-12-01", "week")  # a Wednesday
    with pytest.raises(ValueError, match="freq"):
        window_id_for(stamps("2010-12-01"), "year")  # type: ignore[arg-type]


def test_split_by_day(retail: LoadResult) -> None:
    windows = split_windows(retail, "day")
    assert list(windows) == ["2010-12-01", "2010-12-02"]
    assert windows["2010-12-01"].counts() == {"items": 1338, "interactions": 1961,
                                              "transactions": 0}
    assert windows["2010-12-02"].counts() == {"items": 919, "interactions": 2042,
                                              "transactions": 0}
    day2 = windows["2010-12-02"]
    assert set(day2.interactions["item_id"]) <= set(day2.items["item_id"])
    assert (day2.interactions["ts"] >= pd.Timestamp("2010-12-02", tz="UTC")).all()
    week = split_windows(retail, "week")
    assert list(week) == ["2010-11-29"]
    assert week["2010-11-29"].counts() == {"items": 1594, "interactions": 4003,
                                           "transactions": 0}


def test_split_rejects_missing_ts() -> None:
    frame = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "ts": [pd.NaT], "event": ["view"],
                          "quantity": [1], "price": [1.0]})
    with pytest.raises(ValueError, match="interactions: 1 rows have no ts"):
        split_windows({"interactions": frame}, "day")


def test_round_trip_online_retail(retail: LoadResult, tmp_path: Path) -> None:
    windows = split_windows(retail, "day")
    for data in windows.values():
        write_window(tmp_path, data, "day", source="slice")
    assert list_windows(tmp_path) == ["2010-12-01", "2010-12-02"]
    for wid, data in windows.items():
        report = QuarantineReport()
        back = read_window(tmp_path, wid, report)
        for name in TABLE_NAMES:
            pd.testing.assert_frame_equal(back.table(name), data.table(name))
        assert report.counts == {"items.total": data.counts()["items"],
                                 "items.valid": data.counts()["items"],
                                 "interactions.total": data.counts()["interactions"],
                                 "interactions.valid": data.counts()["interactions"]}
    assert not (tmp_path / "2010-12-01" / "transactions.parquet").exists()
    meta = read_window_meta(tmp_path, "2010-12-02")
    assert meta == {"window_id": "2010-12-02", "freq": "day",
                    "start": "2010-12-02T00:00:00+00:00", "end": "2010-12-03T00:00:00+00:00",
                    "counts": {"items": 919, "interactions": 2042, "transactions": 0},
                    "quarantine_counts": {}, "source": "slice"}


def test_round_trip_ulb_features(tmp_path: Path) -> None:
    result = load_ulb(ULB, start="2013-09-01T00:30:00Z")
    windows = split_windows(result, "hour")
    assert {k: v.counts()["transactions"] for k, v in windows.items()} == {
        "2013-09-01T00": 2260, "2013-09-01T01": 1703}
    for data in windows.values():
        write_window(tmp_path, data, "hour")
    back = read_window(tmp_path, "2013-09-01T00")
    pd.testing.assert_frame_equal(back.transactions, windows["2013-09-01T00"].transactions)
    assert back.fraud_features == [f"V{i}" for i in range(1, 29)]
    assert int(back.transactions["is_fraud"].sum()) == 2


def test_atomic_write_and_listing(retail: LoadResult, tmp_path: Path) -> None:
    data = split_windows(retail, "day")["2010-12-01"]
    (tmp_path / ".tmp-2010-12-02").mkdir()  # a writer died half-way through
    (tmp_path / ".tmp-2010-12-02" / "items.parquet").write_bytes(b"partial")
    (tmp_path / "2010-12-03").mkdir()  # no _window.json: not a complete window
    (tmp_path / "_scratch").mkdir()
    (tmp_path / "_scratch" / "_window.json").write_text("{}")
    write_window(tmp_path, data, "day")
    assert list_windows(tmp_path) == ["2010-12-01"]
    # Rewriting replaces the window and leaves no temporary folder behind.
    smaller = WindowData(window_id="2010-12-01", items=data.items.iloc[:5])
    write_window(tmp_path, smaller, "day")
    assert read_window(tmp_path, "2010-12-01").counts() == {"items": 5, "interactions": 0,
                                                            "transactions": 0}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".tmp-2010-12-02", "2010-12-01", "2010-12-03", "_scratch"]
    assert list_windows(tmp_path / "absent") == []


def test_read_missing_column_names_file_and_column(retail: LoadResult, tmp_path: Path) -> None:
    write_window(tmp_path, split_windows(retail, "day")["2010-12-01"], "day")
    path = tmp_path / "2010-12-01" / "interactions.parquet"
    pd.read_parquet(path).drop(columns=["event"]).to_parquet(path)
    with pytest.raises(SchemaError, match=r"\['event'\] in .*2010-12-01/interactions\.parquet"):
        read_window(tmp_path, "2010-12-01")
    with pytest.raises(FileNotFoundError, match="2099-01-01"):
        read_window(tmp_path, "2099-01-01")


def test_read_quarantines_bad_user_rows(tmp_path: Path) -> None:
    folder = tmp_path / "2011-01-03"
    folder.mkdir()
    (folder / "_window.json").write_text(json.dumps({"window_id": "2011-01-03"}))
    pd.DataFrame({
        "user_id": ["u1", "u2", "u3", "u4"], "item_id": ["i1", "i2", "i3", "i4"],
        "ts": pd.to_datetime(["2011-01-03 10:00", "2011-01-03 09:00", "2011-01-03 11:00",
                              "2011-01-03 12:00"], utc=True),
        "event": ["view", "view", "purchase", "click"], "quantity": [1, 1, 1, 1],
        "price": [1.0, 1.0, -2.0, 1.0],
    }).to_parquet(folder / "interactions.parquet")
    report = QuarantineReport()
    data = read_window(tmp_path, "2011-01-03", report)
    assert data.interactions["user_id"].tolist() == ["u1"]
    assert report.counts == {"interactions.total": 4, "interactions.valid": 1,
                             "interactions.negative_amount": 1,
                             "interactions.unknown_event": 1,
                             "interactions.ts_out_of_order": 1}
    assert report.quarantine["row_number"].tolist() == [1, 2, 3]


def test_main_writes_windows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "windows"
    assert main(["--source", "online_retail", "--path", str(RETAIL), "--freq", "day",
                 "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("2010-12-01  items=1338 interactions=1961 transactions=0")
    assert "'missing_user_id': 1140" in lines[0]
    assert lines[-1].startswith("total  {'total': 5217")
    assert list_windows(out) == ["2010-12-01", "2010-12-02"]
    assert read_window_meta(out, "2010-12-02")["quarantine_counts"] == {
        "missing_user_id": 65, "non_product_code": 2}
    q = pd.read_parquet(out / "2010-12-01" / "quarantine.parquet")
    assert len(q) == 1147 and set(q["source"]) == {"2010-12-01.csv"}
    assert not (out / "unplaced.quarantine.parquet").exists()


def test_main_ulb_and_unplaced_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = REPO / "tests" / "data" / "ulb_bad.csv"
    assert main(["--source", "ulb", "--path", str(bad), "--freq", "hour", "--out",
                 str(tmp_path)]) == 0
    assert list_windows(tmp_path) == ["2013-09-01T00"]
    unplaced = pd.read_parquet(tmp_path / "unplaced.quarantine.parquet")
    assert unplaced["row_number"].tolist() == [2]  # its Time did not parse
    meta = read_window_meta(tmp_path, "2013-09-01T00")
    assert meta["quarantine_counts"] == {"bad_label": 2, "non_finite": 2, "bad_type": 1,
                                         "negative_amount": 1}
    assert "2013-09-01T00  items=0 interactions=0 transactions=3" in capsys.readouterr().out


def test_main_rejects_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--source", "ulb", "--out", "x"])
    assert exc.value.code == 2
    assert "path: is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--freq" in capsys.readouterr().out
