"""CSV files: Arrow's reader, and Python's csv module for the rest of a file once Arrow meets a row it cannot
read, so that one bad line is one row's quarantine record, never the whole file's failure.

Arrow reads every column as text (a number in an `output` column is the text "42"), as bytes relabelled as
strings without a check, so that a line that is not UTF-8 fails alone (load.arrow_rows finds it). A line with
more or fewer values than the header, or a value longer than Arrow's 16 MiB block, stops Arrow's reader before
any later row is handed over; _csv_rows_one_by_one then reads the rows after the ones Arrow handed over, each
once and in order: such a line is quarantined as malformed_csv, one that is not UTF-8 as invalid_utf8.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from dataprep.compressed import open_stream
from dataprep.load import InputError, RawRow, Unreadable, arrow_rows
from schemas.reasons import Reason


def csv_rows(path: Path, batch_size: int, max_line: int) -> Iterator[list[RawRow]]:
    fast = _CsvProgress()
    yield from arrow_rows(path, _csv_batches(path, batch_size, fast))
    if fast.stopped:
        yield from _csv_rows_one_by_one(path, batch_size, max_line, fast.rows)


@dataclass(slots=True)
class _CsvProgress:
    rows: int = 0  # rows Arrow has handed over, all of them before any row it could not read
    stopped: bool = False  # Arrow met a row it cannot read: the rest of the file is read by Python's csv module


def _csv_batches(path: Path, batch_size: int, progress: _CsvProgress) -> Iterator[pa.RecordBatch]:
    # Every column as bytes, relabelled as strings below without a check (see the module docstring)
    with open_stream(path) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="") as f:
        header = next(csv.reader(f), [])
    convert = pacsv.ConvertOptions(column_types={name: pa.binary() for name in header}, strings_can_be_null=False)
    read = pacsv.ReadOptions(block_size=1 << 24)
    bad: list[str] = []
    # Quoted values may hold newlines (multi-line answers are common); Arrow needs to be told.
    parse = pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=lambda row: bad.append(row.text) or "skip")
    try:
        # A path, not a stream: Arrow reads it without the GIL and decompresses .gz/.zst/.bz2 itself (not .xz).
        source = open_stream(path) if path.suffix.lower() == ".xz" else str(path)
        reader = pacsv.open_csv(source, read_options=read, parse_options=parse, convert_options=convert)
        reader.schema.names  # noqa: B018 (decodes the header: a name that is not UTF-8 fails here)
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            raise InputError(f"{path}: cannot read as CSV: {e}") from None
        progress.stopped = True  # e.g. a value over a block in the first block: read one by one
        return
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: the header line is not UTF-8 ({e.reason} at byte {e.start}); re-encode the "
                         "file as UTF-8") from None
    try:
        for batch in reader:
            if bad:  # the handler runs while Arrow splits a block, before that block's batch comes out
                break
            columns = [c.view(pa.string()) if c.type == pa.binary() else c for c in batch.columns]
            batch = pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
            for start in range(0, batch.num_rows, batch_size):
                yield batch.slice(start, batch_size)
            progress.rows += batch.num_rows
    except pa.ArrowInvalid:  # e.g. "straddling object straddles two block boundaries": a value over 16 MiB
        progress.stopped = True
    progress.stopped = progress.stopped or bool(bad)


def _csv_rows_one_by_one(path: Path, batch_size: int, max_line: int, skip: int) -> Iterator[list[RawRow]]:
    """The rows after the first `skip`, read with Python's csv module (slower than Arrow): a line whose values
    do not match the header is quarantined as malformed_csv, one that is not UTF-8 as invalid_utf8. A value
    over `max_line` stops the run (Python's csv cannot skip it)."""
    csv.field_size_limit(max(max_line, csv.field_size_limit()))
    batch: list[RawRow] = []
    row = 0
    with open_stream(path) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape",
                                                    newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, [])
            if twice := sorted({n for n in header if header.count(n) > 1}):
                raise InputError(f"{path}: column {', '.join(map(repr, twice))} appears more than once; rename one")
            for values in reader:
                if not values:  # a blank line, which Arrow skips too
                    continue
                if row >= skip:
                    batch.append(RawRow(row, _csv_record(header, values)))
                    if len(batch) == batch_size:
                        yield batch
                        batch = []
                row += 1
        except csv.Error as e:
            raise InputError(f"{path}: row {row} cannot be read as CSV ({e}); split or shorten it") from None
    if batch:
        yield batch


def _csv_record(header: list[str], values: list[str]) -> dict[str, Any] | Unreadable:
    original = ",".join(values).encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
    if len(values) != len(header):
        return Unreadable(Reason.malformed_csv, f"{len(values)} values, but the header has {len(header)} columns; "
                          "quote values that hold commas, quotes or newlines (\"a, b\")", None, original)
    record = dict(zip(header, values, strict=True))
    for name, value in record.items():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:  # surrogateescape keeps a byte that is not UTF-8 as a lone surrogate
            return Unreadable(Reason.invalid_utf8, f"column '{name}' is not UTF-8 (byte {e.start}); re-encode the "
                              "file's text as UTF-8", name, original)
    return record
