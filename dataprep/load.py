"""Ingest: find a dataset's files and read them in batches of raw rows, each with its source location.

Rows stay raw here (JSONL lines as bytes, Parquet/Arrow/CSV rows as dicts) so that parsing errors become
quarantine records in the stage that parses them, and so that parsing runs in the worker processes. A row this
stage cannot hand over (a string cell that is not UTF-8, a JSONL line over the read limit) becomes an
`Unreadable` payload, which the parser turns into a quarantine record: one bad row never fails its file.

Memory is bounded by the batch size and the read limit per line (`line_limit`), except for JSON-array files
and single JSON documents, which are read whole. `.gz`, `.zst`, `.bz2` and `.xz` files are decompressed as a
stream. This module holds what every reader shares (the row types, the file list, the dispatch on the format)
and the Arrow readers (Parquet, Arrow IPC, and CSV through csv_rows.py); JSON and JSON Lines files are read by
json_rows.py.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from dataprep.compressed import COMPRESSED
from dataprep.paths import expand_glob, unique_files
from schemas.config import DatasetConfig
from schemas.reasons import Reason

EXTENSIONS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow",
              ".ndjson": "jsonl", ".ipc": "arrow", ".feather": "arrow"}
# `data.jsonl.gz` is JSON Lines, a bare `data.zst` too (compressed.py).
STREAMABLE = ("json", "jsonl", "csv")  # formats that can be read from a decompressing stream
BATCH_BYTES = 64 << 20  # a JSONL batch ends early at this many bytes: few huge rows must not make a huge batch
LINE_LIMIT_FLOOR = 32 << 20  # no JSONL line under 32 MiB is refused, whatever sequence_len is


CUT_SHORT = ("the file ends inside its compressed data (cut short by an interrupted download or copy?); fetch "
             "or copy it again")


class InputError(Exception):
    """An input that cannot be read at all (missing, unreadable, wrong format): the run stops."""


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A row the reader could not hand over as it is; the parser quarantines it with this reason."""

    reason: Reason
    message: str
    field: str | None
    original: str


@dataclass(frozen=True, slots=True)
class RawRow:
    source_row: int  # 0-based row index in its file; blank JSONL lines are not counted
    payload: bytes | dict[str, Any] | Unreadable  # a JSONL line, a row decoded by Arrow, or why neither


def line_limit(text_limit: int) -> int:
    """The longest JSONL line read: 8x the longest text that could still fit (escapes such as \\uXXXX and fields
    the format does not use make a line longer than its text), and never under LINE_LIMIT_FLOOR."""
    return max(8 * text_limit, LINE_LIMIT_FLOOR)


def resolve_files(ds: DatasetConfig, config_dir: Path) -> list[Path]:
    """The files of one datasets[] entry, sorted, so that sample ids are stable."""
    tried = []
    for base in (config_dir, Path.cwd()):
        root = Path(ds.path) if Path(ds.path).is_absolute() else base / ds.path
        tried.append(str(root))
        if glob.has_magic(ds.path):
            files = expand_glob(root)
        elif is_dir(root, ds) and ds.data_files:
            # A folder without data_files is listed by hf_folders.dataset_splits (splits, metadata files).
            files = unique_files(_data_files(ds, root))
        elif root.is_file():
            files = [root]
        else:
            continue
        if not files:
            raise InputError(f"dataset '{ds.path}': no data files found in {root}")
        return files
    raise InputError(f"dataset '{ds.path}': {_not_found(ds.path, [Path(t) for t in tried])}")


def is_dir(path: Path, ds: DatasetConfig) -> bool:
    """Path.is_dir, but a name the file system refuses (ENAMETOOLONG, which is_dir raises) is an InputError."""
    try:
        os.stat(path)
    except ValueError:  # a NUL in the name: no file has it (_not_found says so)
        return False
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise InputError(f"dataset '{ds.path}': the name is too long for the file system ({e.strerror}); "
                             "fix `path` in the config") from None
    return path.is_dir()


def check_readable(path: Path) -> None:
    """An InputError naming `path` if it cannot be opened (permissions), before anything reads it: the
    fingerprint, a split slice's row count and the row pass would each raise a bare OSError."""
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror}); make it readable (chmod a+r) or leave it out of "
                         "the dataset's `path`") from None


def _data_files(ds: DatasetConfig, root: Path) -> Iterator[Path]:
    """Each data_files entry's files; an entry that matches none is an error, as in datasets.load_dataset
    (it was skipped without a word)."""
    for pattern in ds.data_files or []:
        found = expand_glob(root / pattern)
        if not found:
            raise InputError(f"dataset '{ds.path}': data_files entry '{pattern}' matches no file in {root}; fix or "
                             "remove it")
        yield from found


def _not_found(path: str, tried: list[Path]) -> str:
    """Why none of `tried` is a file or folder, and the fix: not there, or there but unusable (a FIFO, a broken
    link)."""
    fix = "fix `path` in the config (relative paths are resolved next to the config file)"
    looked = f"not found (looked at {' and '.join(map(str, tried))})"
    if "\x00" in path:
        return f"the path holds a NUL character (\\x00), which no file name can; {fix}"
    if path.startswith("~") or "$" in path:
        # datasets.load_dataset (Axolotl's reader) expands neither, so a config that works there has none.
        return f"{looked}; `~` and environment variables are not expanded in `path`: write it out in full"
    for p in tried:
        if p.is_symlink():
            try:
                p.stat()
            except OSError as e:
                if e.errno == errno.ELOOP:
                    return f"{p} is a symbolic link that loops; point it at the data file"
                return f"{p} is a symbolic link to {os.readlink(p)}, which does not exist; {fix}"
        if p.exists():  # neither a file nor a folder
            kind = "a FIFO" if stat.S_ISFIFO(p.stat().st_mode) else "a device or socket"
            return f"{p} is {kind}, not a regular file; write the data to a file"
    return f"{looked}; {fix}"


def is_data_file(path: Path) -> bool:
    suffixes = [x.lower() for x in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        return len(suffixes) == 1 or suffixes[-2] in EXTENSIONS
    return bool(suffixes) and suffixes[-1] in EXTENSIONS


def file_format(path: Path, ds: DatasetConfig) -> str:
    compressed = path.suffix.lower() in COMPRESSED
    inner = Path(path.stem).suffix.lower() if compressed else path.suffix.lower()
    fmt = ds.ds_type or EXTENSIONS.get(inner) or ("jsonl" if compressed and not inner else None)
    if fmt is None:
        raise InputError(f"{path}: unknown file type '{path.suffix}'; set ds_type "
                         "(json, jsonl, parquet, csv or arrow) on the dataset")
    if compressed and fmt not in STREAMABLE:
        raise InputError(f"{path}: a compressed {fmt} file cannot be read as a stream; decompress it "
                         f"({COMPRESSED[path.suffix.lower()]} {path.name})")
    return fmt


def read_batches(path: Path, fmt: str, batch_size: int, max_line: int = LINE_LIMIT_FLOOR) -> Iterator[list[RawRow]]:
    try:
        if fmt in ("json", "jsonl"):
            from dataprep.json_rows import json_rows  # it builds this module's RawRow and Unreadable

            yield from json_rows(path, batch_size, max_line)
        elif fmt == "parquet":
            yield from arrow_rows(path, _parquet_batches(path, batch_size))
        elif fmt == "arrow":
            yield from arrow_rows(path, _ipc_batches(path))
        elif fmt == "csv":
            from dataprep.csv_rows import csv_rows  # it reads through this module's helpers

            yield from csv_rows(path, batch_size, max_line)
        else:
            raise InputError(f"{path}: unsupported ds_type '{fmt}'")
    except EOFError:  # a compressed file cut short; what was read before the cut is not a dataset
        raise InputError(f"{path}: {CUT_SHORT}") from None
    except (OSError, pa.ArrowInvalid) as e:
        if "runcated compressed" in str(e):  # Arrow's words for the same (CSV)
            raise InputError(f"{path}: {CUT_SHORT}") from None
        raise InputError(f"{path}: cannot read as {fmt}: {e}") from None
    except UnicodeEncodeError:  # Arrow takes UTF-8 paths only; Python keeps other bytes as surrogates
        shown = os.fsencode(path).decode("utf-8", errors="backslashreplace")
        raise InputError(f"{shown}: the file name is not UTF-8, which Arrow cannot open; rename the file") from None
    except Exception as e:  # a decompressor's own error (zstandard.ZstdError): a corrupt file, not a crash
        if type(e).__module__.split(".")[0] not in ("zstandard", "gzip", "zlib", "_lzma"):
            raise
        raise InputError(f"{path}: cannot decompress: {e}") from None


def arrow_rows(path: Path, batches: Iterator[pa.RecordBatch]) -> Iterator[list[RawRow]]:
    """Arrow record batches (Parquet, Arrow, CSV) as raw rows numbered from 0; a cell Python cannot hold makes
    its row an Unreadable."""
    row = 0
    for batch in _by_size(batches):
        if row == 0 and (twice := sorted({n for n in batch.schema.names if batch.schema.names.count(n) > 1})):
            # A row becomes a dict: one of the two columns would be dropped without a word
            raise InputError(f"{path}: column {', '.join(map(repr, twice))} appears more than once; rename one")
        try:
            records: list[dict[str, Any] | Unreadable] = batch.to_pylist()
        except (ValueError, OverflowError):  # a cell Python cannot hold (not UTF-8, a date past year 9999): find it
            records = [_arrow_row(batch, i) for i in range(batch.num_rows)]
        yield [RawRow(row + i, r) for i, r in enumerate(records)]
        row += len(records)


def _by_size(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Batches cut to about BATCH_BYTES, so that rows with huge cells do not become huge batches of Python
    objects (Arrow's batches are counted in rows)."""
    for batch in batches:
        if batch.nbytes <= BATCH_BYTES or batch.num_rows <= 1:
            yield batch
            continue
        step = max(1, batch.num_rows * BATCH_BYTES // batch.nbytes)
        for start in range(0, batch.num_rows, step):
            yield batch.slice(start, step)


def _arrow_row(batch: pa.RecordBatch, i: int) -> dict[str, Any] | Unreadable:
    one = batch.slice(i, 1)
    try:
        return one.to_pylist()[0]
    except (ValueError, OverflowError) as e:
        bad = next(name for name, col in zip(one.schema.names, one.columns, strict=True) if not _decodes(col))
        raw = {name: _as_bytes(col) for name, col in zip(one.schema.names, one.columns, strict=True)}
        original = json.dumps(raw, ensure_ascii=False, default=lambda b: b.decode("utf-8", errors="replace"))
        if isinstance(e, UnicodeDecodeError):
            return Unreadable(Reason.invalid_utf8, f"column '{bad}' is not UTF-8 ({e.reason} at byte {e.start}); "
                              "re-encode the file's text as UTF-8", bad, original)
        # Parquet/Arrow dates and timestamps reach far past Python's datetime (years 1-9999)
        return Unreadable(Reason.wrong_type, f"column '{bad}' holds a value Python cannot represent ({e}); fix "
                          "the value or drop the column", bad, original)


def _decodes(col: pa.Array) -> bool:
    try:
        col.to_pylist()
        return True
    except (ValueError, OverflowError):
        return False


def _as_bytes(col: pa.Array) -> Any:
    try:
        return col.cast(_binary_type(col.type)).to_pylist()[0]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    except (ValueError, OverflowError):  # shown as Arrow writes it: "<value out of range: 4611686018427387904>"
        return col.cast(pa.string()).to_pylist()[0] if pa.types.is_temporal(col.type) else None


def _binary_type(t: pa.DataType) -> pa.DataType:
    """The same type with every string replaced by binary, so that bad bytes can be shown."""
    if pa.types.is_string(t):
        return pa.binary()
    if pa.types.is_large_string(t):
        return pa.large_binary()
    if pa.types.is_list(t):
        return pa.list_(_binary_type(t.value_type))
    if pa.types.is_large_list(t):
        return pa.large_list(_binary_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _binary_type(f.type)) for f in t])
    return t


def _parquet_batches(path: Path, batch_size: int) -> Iterator[pa.RecordBatch]:
    """The file's rows in batches, a few row groups per reader. One `iter_batches` over the whole file keeps
    memory in Arrow's pool that grows with every row group it reads (pyarrow 26: +220 bytes a row of this
    benchmark's data, 217 MB at 1M rows, bench/prepare_memory.py); a reader per run of row groups stays at the
    size of one run. Row groups smaller than a batch are read together, so batches keep their size."""
    pf = pq.ParquetFile(path)
    run: list[int] = []
    rows = 0
    for g in range(pf.num_row_groups):
        run.append(g)
        rows += pf.metadata.row_group(g).num_rows
        if rows >= batch_size or g == pf.num_row_groups - 1:
            yield from pf.iter_batches(batch_size=batch_size, row_groups=run)
            run, rows = [], 0


def _ipc_batches(path: Path) -> Iterator[pa.RecordBatch]:
    source = pa.memory_map(str(path))
    try:
        reader = ipc.open_file(source)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)
    except pa.ArrowInvalid:
        source.seek(0)
        yield from ipc.open_stream(source)
