"""Ingest: find a dataset's files and read them in batches of raw rows, each with its source location.

Rows stay raw here (JSONL lines as bytes, Parquet/Arrow/CSV rows as dicts) so that parsing errors become
quarantine records in the stage that parses them, and so that parsing runs in the worker processes. Memory
is bounded by the batch size, except for JSON-array files, which are one document and are read whole.
"""

from __future__ import annotations

import csv
import glob
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from schemas.config import DatasetConfig

EXTENSIONS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow",
              ".ndjson": "jsonl", ".ipc": "arrow", ".feather": "arrow"}


class InputError(Exception):
    """An input that cannot be read at all (missing, unreadable, wrong format): the run stops."""


@dataclass(frozen=True, slots=True)
class RawRow:
    source_row: int  # 0-based row index in its file; blank JSONL lines are not counted
    payload: bytes | dict[str, Any]  # a JSONL line, or a row already decoded by Arrow


def resolve_files(ds: DatasetConfig, config_dir: Path) -> list[Path]:
    """The files of one datasets[] entry, sorted, so that sample ids are stable."""
    tried = []
    for base in (config_dir, Path.cwd()):
        root = Path(ds.path) if Path(ds.path).is_absolute() else base / ds.path
        tried.append(str(root))
        if glob.has_magic(ds.path):
            files = [Path(p) for p in sorted(glob.glob(str(root), recursive=True)) if Path(p).is_file()]
        elif root.is_dir():
            if ds.data_files:
                files = sorted({Path(p) for pat in ds.data_files for p in glob.glob(str(root / pat))})
            else:
                files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in EXTENSIONS)
        elif root.is_file():
            files = [root]
        else:
            continue
        if not files:
            raise InputError(f"dataset '{ds.path}': no data files found in {root}")
        return files
    raise InputError(f"dataset '{ds.path}': not found (looked at {' and '.join(tried)}); "
                     "fix `path` in the config (relative paths are resolved next to the config file)")


def file_format(path: Path, ds: DatasetConfig) -> str:
    if ds.ds_type:
        return ds.ds_type
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unknown file type '{path.suffix}'; set ds_type "
                         "(json, jsonl, parquet, csv or arrow) on the dataset")
    return fmt


def read_batches(path: Path, fmt: str, batch_size: int) -> Iterator[list[RawRow]]:
    try:
        if fmt in ("json", "jsonl"):
            yield from _json_batches(path, batch_size)
        elif fmt == "parquet":
            yield from _arrow_batches(pq.ParquetFile(path).iter_batches(batch_size=batch_size))
        elif fmt == "arrow":
            yield from _arrow_batches(_ipc_batches(path))
        elif fmt == "csv":
            yield from _arrow_batches(_csv_batches(path, batch_size))
        else:
            raise InputError(f"{path}: unsupported ds_type '{fmt}'")
    except (OSError, pa.ArrowInvalid) as e:
        raise InputError(f"{path}: cannot read as {fmt}: {e}") from None


def _json_batches(path: Path, batch_size: int) -> Iterator[list[RawRow]]:
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    if head.startswith(b"["):
        # A JSON array is one document; rows are its items. Any syntax error makes the whole file unreadable.
        try:
            items = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: not a valid JSON array ({e}); if it is JSON Lines, set ds_type: jsonl") from None
        for start in range(0, len(items), batch_size):
            yield [RawRow(start + i, _as_payload(item)) for i, item in enumerate(items[start:start + batch_size])]
        return
    batch: list[RawRow] = []
    row = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            batch.append(RawRow(row, line.rstrip(b"\r\n")))
            row += 1
            if len(batch) == batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def _as_payload(item: Any) -> bytes | dict[str, Any]:
    # Non-object items are re-encoded so the parser quarantines them like a bad JSONL line.
    return item if isinstance(item, dict) else json.dumps(item, ensure_ascii=False).encode()


def _arrow_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[list[RawRow]]:
    row = 0
    for batch in batches:
        records = batch.to_pylist()
        yield [RawRow(row + i, r) for i, r in enumerate(records)]
        row += len(records)


def _ipc_batches(path: Path) -> Iterator[pa.RecordBatch]:
    source = pa.memory_map(str(path))
    try:
        reader = ipc.open_file(source)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)
    except pa.ArrowInvalid:
        source.seek(0)
        yield from ipc.open_stream(source)


def _csv_batches(path: Path, batch_size: int) -> Iterator[pa.RecordBatch]:
    # Every column is read as text: a number in an `output` column is the text "42", not a type error.
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        header = next(csv.reader(f), [])
    convert = pacsv.ConvertOptions(column_types={name: pa.string() for name in header},
                                   strings_can_be_null=False)
    read = pacsv.ReadOptions(block_size=1 << 22)
    reader = pacsv.open_csv(path, read_options=read, convert_options=convert)
    for batch in reader:
        for start in range(0, batch.num_rows, batch_size):
            yield batch.slice(start, batch_size)
