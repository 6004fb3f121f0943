"""Rows of a local data file (.jsonl, .json, .csv, .parquet), each with the 1-based place a user finds it at.

JSON Lines and JSON are parsed here rather than through `datasets`: its loader reports a malformed line as a
76-line `DatasetGenerationError` traceback with a 0-based row, an empty file as a bare `StopIteration`, and
writes an Arrow cache under ~/.cache before any check has run. Line-by-line `json.loads` names the file and
the editor's line number. CSV uses the standard library (its reader counts records, so a quoted field with
a newline does not shift row numbers); Parquet uses pyarrow (a columnar format has rows, not lines).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.data.errors import DataError

LOCAL_FORMATS = (".json", ".jsonl", ".parquet", ".csv")


@dataclass(frozen=True)
class Rows:
    """A table's records in file order; `places[i]` is where record i is, e.g. "line 3" or "row 3"."""

    columns: list[str]
    records: list[dict[str, Any]]
    places: list[str]


def is_local_file(source: str) -> bool:
    return Path(source).suffix.lower() in LOCAL_FORMATS


def read_rows(path: Path) -> Rows:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            rows = _parquet(path)
        elif suffix == ".csv":
            rows = _csv(path)
        else:
            rows = _json(path, path.read_text(encoding="utf-8", errors="replace"))
    except OSError as err:  # e.g. no read permission: the user's problem, not a crash
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    if not rows.records:
        what = "is empty" if path.stat().st_size == 0 else "has no rows"
        raise DataError(f"{path} {what}: give a file with one example per row")
    return rows


def _json(path: Path, text: str) -> Rows:
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):  # a JSON array of objects
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path} line {err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON array of objects, got {type(data).__name__}")
        return _records(path, data, [f"row {i}" for i in range(1, len(data) + 1)])
    records, places = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines (a trailing newline, a gap) carry no record
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path} line {number}: not valid JSON ({err.msg}, column {err.colno}); JSON Lines needs one "
                "complete object per line"
            ) from None
        places.append(f"line {number}")
    return _records(path, records, places)


def _records(path: Path, data: list[Any], places: list[str]) -> Rows:
    columns: dict[str, None] = {}  # ordered set: columns in order of first appearance
    for record, place in zip(data, places):
        if not isinstance(record, dict):
            raise DataError(f"{path} {place}: expected a JSON object ({{\"context\": ...}}), got {type(record).__name__}")
        columns.update(dict.fromkeys(record))
    return Rows(list(columns), list(data), places)


def _csv(path: Path) -> Rows:
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return Rows([], [], [])
        records, places = [], []
        for number, values in enumerate(reader, start=1):
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise DataError(f"{path} row {number}: {len(values)} fields, the header has {len(header)} ({', '.join(header)})")
            records.append(dict(zip(header, values)))
            places.append(f"row {number}")
    return Rows(header, records, places)


def _parquet(path: Path) -> Rows:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({err})") from None
    return Rows(table.column_names, table.to_pylist(), [f"row {i}" for i in range(1, table.num_rows + 1)])
