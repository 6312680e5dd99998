"""A query result as text: DuckDB's box table for reading, CSV and JSON for programs (`tessera query --format`).
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import decimal
import io
import json
import math
import re
import shutil
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    import duckdb


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):  # DuckDB sums are HUGEINT/DECIMAL
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime.date | datetime.time | datetime.datetime):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def to_json(table: pa.Table) -> str:
    return json.dumps([_jsonable(r) for r in table.to_pylist()], ensure_ascii=False, allow_nan=False)


def to_csv(table: pa.Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(table.column_names)
    for row in table.to_pylist():
        values = (_jsonable(v) for v in row.values())
        w.writerow(["" if v is None else json.dumps(v, ensure_ascii=False) if isinstance(v, list | dict) else v
                    for v in values])
    return buf.getvalue()


def show_table(rel: duckdb.DuckDBPyRelation, max_rows: int) -> str:
    """DuckDB's box rendering, as wide as the terminal (160 columns when not a terminal). A single row that
    does not fit is shown transposed, one column per line, instead of with columns left out."""
    width = shutil.get_terminal_size((200, 24)).columns

    def render(mode: str | None) -> str:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rel.show(max_width=width, max_rows=max_rows, max_col_width=60, render_mode=mode)
        return buf.getvalue()

    out = render(None)
    if re.search(r"\d+ columns \(\d+ shown\)", out) and len(rel) == 1:
        out = render("columns")
    return out
