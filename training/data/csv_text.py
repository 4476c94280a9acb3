"""Read CSV files as text rows; rows that cannot be read are flagged, never dropped.

The one reader behind every CSV source (Online Retail, ULB). Every field is read as text
(the loaders parse them); a UTF-8 byte-order mark is dropped so a spreadsheet export does
not rename the first column; blank lines are skipped and not numbered, so ``row_number``
is the 0-based data row of its file; a row with fewer fields than the header reads the
missing ones as empty, and the loaders' checks judge it.

A clean file is read by pandas' C parser (:func:`read_with_pandas`). A file that parser
refuses (bytes that are not UTF-8, a row with too many fields) is read again row by row
(:func:`read_row_by_row`, the same rows and numbers, ~3x the time and memory), and each
row that cannot be read gets a reason in :data:`READ_REASON_COLUMN` (``""`` for a good
row), under which the loaders quarantine it before any other check:

- ``bad_encoding``  the row holds bytes that are not UTF-8 (a Latin-1/cp1252 export,
                    a corrupted copy). Its fields are kept with each bad byte written as
                    ``\\xNN``, so the quarantine loses nothing; re-encode the file as UTF-8
                    (``iconv -f cp1252 -t utf-8``) to load those rows.
- ``bad_row``       the row has more fields than the header (an unquoted comma). The extra
                    fields are appended, joined by ``,``, to its last column, so the
                    quarantine keeps the whole line.

A folder's files are meant to be disjoint slices of one data set. A row equal in every
published column to a row of an earlier file is flagged by :func:`repeats_earlier_file`,
and the loaders quarantine it as :data:`OVERLAP_REASON` (the published file dropped beside
its daily slices would otherwise load every row twice).
"""

from __future__ import annotations

import csv
import io
import logging
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from training.data.validate import ROW_NUMBER_COLUMN, SOURCE_COLUMN, SchemaError

logger = logging.getLogger(__name__)

READ_REASON_COLUMN = "read_reason"
READ_REASONS: tuple[str, ...] = ("bad_encoding", "bad_row")
OVERLAP_REASON = "overlapping_file"
# Bytes that are not UTF-8 decode to lone surrogates under errors="surrogateescape".
_UNDECODED = re.compile("[\udc80-\udcff]")
# The csv module's field limit is process-wide: reads that lift it take turns.
_FIELD_LIMIT_LOCK = threading.Lock()


def csv_files(path: str | Path) -> list[Path]:
    """``path`` itself, or the ``*.csv`` files of a folder sorted by name."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        if not files:
            raise FileNotFoundError(f"no *.csv files in {path}")
        return files
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    return [path]


def read_raw(path: str | Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """All CSV rows of ``path`` (a file or a folder) as text: ``columns``, plus ``source``
    (file name), ``row_number`` (per file) and ``read_reason`` (see the module doc)."""
    return pd.concat([read_csv_text(file, columns) for file in csv_files(path)],
                     ignore_index=True)


def repeats_earlier_file(raw: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    """[rows] bool: rows of :func:`read_raw`'s frame equal in every one of ``columns`` to a
    row of an earlier file (files in name order). Repeats within one file stay unflagged:
    published data has exact duplicate rows, and a folder of slices keeps them."""
    file_no = pd.factorize(raw[SOURCE_COLUMN])[0]  # read_raw's order: files sorted by name
    if len(raw) == 0 or file_no.max() == 0:
        return np.zeros(len(raw), dtype=bool)
    keys = pd.util.hash_pandas_object(raw[list(columns)], index=False).to_numpy()
    first = pd.Series(file_no).groupby(keys).transform("min").to_numpy()
    result: np.ndarray = file_no > first
    return result


def read_csv_text(file: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """One CSV file as text rows (see :func:`read_raw`); SchemaError naming the file when
    it is empty or its header lacks one of ``columns``."""
    try:
        frame = read_with_pandas(file, columns)
    except (UnicodeDecodeError, pd.errors.ParserError) as err:
        logger.info("%s: %s; reading it row by row", file, str(err).splitlines()[0])
        frame = read_row_by_row(file, columns)
    frame[SOURCE_COLUMN] = file.name
    frame[ROW_NUMBER_COLUMN] = np.arange(len(frame), dtype=np.int64)
    _log_unread(file, frame[READ_REASON_COLUMN])
    return frame


def read_with_pandas(file: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """``columns`` of a clean file, and an empty read reason per row; raises
    UnicodeDecodeError or ParserError on a file that is not."""
    try:
        frame = pd.read_csv(file, dtype=str, keep_default_na=False, na_filter=False,
                            encoding="utf-8-sig")
    except pd.errors.EmptyDataError as err:
        raise SchemaError(f"{file}: empty file, no header") from err
    _check_header(file, list(frame.columns), columns)
    frame = frame[list(columns)].copy()
    frame[READ_REASON_COLUMN] = ""
    return frame


def read_row_by_row(file: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """``columns`` of any file, with each row's read reason (see the module doc)."""
    text = file.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    undecoded = _UNDECODED.search(text) is not None
    with _unlimited_fields():
        records = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    if not records:
        raise SchemaError(f"{file}: empty file, no header")
    header = [_escaped(name) for name in records[0]]
    _check_header(file, header, columns)
    rows, reasons = _fit_rows(records[1:], len(header), undecoded)
    picks = [header.index(c) for c in columns]
    fields = list(zip(*rows)) if rows else [()] * len(header)
    frame = pd.DataFrame({c: pd.Series(fields[i], dtype="str") for c, i in zip(columns, picks)})
    frame[READ_REASON_COLUMN] = pd.Series(reasons, dtype="str")
    return frame


def _check_header(file: Path, header: list[str], columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in header]
    if missing:
        raise SchemaError(f"{file}: missing column(s) {missing}")


def _fit_rows(records: list[list[str]], width: int, undecoded: bool
              ) -> tuple[list[list[str]], list[str]]:
    """Each record padded or cut to ``width`` fields, with its read reason."""
    rows, reasons = [], []
    for record in records:
        reason = ""
        if undecoded and any(_UNDECODED.search(f) for f in record):
            record, reason = [_escaped(f) for f in record], "bad_encoding"
        if len(record) < width:  # as pandas reads it: missing fields are empty
            record = record + [""] * (width - len(record))
        elif len(record) > width:
            reason = reason or "bad_row"
            record = [*record[:width - 1], ",".join(record[width - 1:])]
        rows.append(record)
        reasons.append(reason)
    return rows, reasons


def _escaped(field: str) -> str:
    """``field`` with each byte that was not UTF-8 written as ``\\xNN``."""
    return field.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@contextmanager
def _unlimited_fields() -> Iterator[None]:
    """Lift the csv module's 128 KiB field limit for one read: a huge field is bad data
    for the loaders to judge, not a reason to lose the rest of the file. The limit is
    process-wide, so concurrent reads take turns and each restores what it found."""
    with _FIELD_LIMIT_LOCK:
        old = csv.field_size_limit()
        csv.field_size_limit(sys.maxsize)
        try:
            yield
        finally:
            csv.field_size_limit(old)


def _log_unread(file: Path, reasons: pd.Series) -> None:
    found = reasons[reasons != ""].value_counts()
    if len(found):
        logger.warning("%s: %s row(s) could not be read and are quarantined: %s%s", file,
                       int(found.sum()), found.to_dict(),
                       "; re-encode the file as UTF-8 (e.g. iconv -f cp1252 -t utf-8)"
                       if "bad_encoding" in found else "")
