"""A prepared directory as Arrow tables, read-only: its manifest, its shards (memory-mapped) and the saved
tokenizer's file. What `tessera query`, `inspect` and `report` open before they look at anything; `QueryError`
is every reason a directory cannot be read (printed as one line, exit 1).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from dataprep.outdir import NotPrepared, open_prepared_dir
from dataprep.shards import ShardPathError, shard_path
from schemas.shard import SHARD_SCHEMA


class QueryError(Exception):
    """The directory cannot be queried (not a prepared directory, tokenizer missing, bad --param, ...)."""


def read_manifest(prepared: Path) -> dict[str, Any]:
    path = prepared / "manifest.json"
    if not path.is_file():
        hint = " (it is being written, or the run crashed)" if prepared.is_dir() else ""
        raise QueryError(f"{prepared}: not a prepared directory, no manifest.json{hint}; "
                         "create one with `tessera prepare CONFIG`")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise QueryError(f"{path}: not valid JSON ({e}); run `tessera prepare CONFIG` again to rebuild it") from None
    return manifest


def open_dir(prepared: Path) -> Path:
    """The one version of `prepared` every file is read from (outdir.open_prepared_dir), as a QueryError."""
    try:
        return open_prepared_dir(prepared)
    except NotPrepared as e:
        raise QueryError(str(e)) from None


def tokenizer_file(prepared: Path) -> Path:
    saved = prepared / "tokenizer" / "tokenizer.json"
    if saved.is_file():
        return saved
    # Directories prepared before tokenizer/ was saved: the source tokenizer, if it is byte-identical.
    tok = read_manifest(prepared).get("tokenizer", {})
    source = Path(tok.get("path", "")) / "tokenizer.json"
    if source.is_file() and _sha256(source) == tok.get("files", {}).get("tokenizer.json"):
        return source
    raise QueryError(f"{prepared}: no tokenizer/tokenizer.json (and the source tokenizer {source} is gone or "
                     "changed); re-run `tessera prepare CONFIG --force` to save it")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def packed_table(prepared: Path, manifest: dict[str, Any]) -> pa.Table:
    """Every shard (memory-mapped: zero-copy, the OS pages data in as queries touch it) with shard, split and
    row prepended."""
    tables = []
    for s in manifest["shards"]:
        try:
            path = shard_path(prepared, s["file"])
        except ShardPathError as e:
            raise QueryError(str(e)) from None
        t = ipc.open_file(pa.memory_map(str(path))).read_all()
        n = t.num_rows
        extra = [pa.array([s["file"]] * n, pa.string()), pa.array([s["split"]] * n, pa.string()),
                 pa.array(np.arange(n, dtype=np.int32))]
        tables.append(pa.Table.from_arrays(extra + t.columns, names=["shard", "split", "row", *t.column_names]))
    if not tables:
        empty = SHARD_SCHEMA.empty_table()
        return pa.Table.from_arrays([pa.array([], pa.string()), pa.array([], pa.string()), pa.array([], pa.int32()),
                                     *empty.columns], names=["shard", "split", "row", *empty.column_names])
    return pa.concat_tables(tables)


def manifest_table(manifest: dict[str, Any]) -> pa.Table:
    tok, stats, cfg = manifest.get("tokenizer", {}), manifest.get("stats", {}), manifest.get("config", {})
    template = manifest.get("chat_template") or {}
    return pa.Table.from_pylist([{
        "tessera_version": manifest.get("tessera_version"),
        "format_version": manifest.get("format_version"),
        "fingerprint": manifest.get("fingerprint"),
        "sequence_len": stats.get("sequence_len", cfg.get("sequence_len")),
        "sample_packing": stats.get("sample_packing", cfg.get("sample_packing")),
        "val_set_size": cfg.get("val_set_size"),
        "seed": cfg.get("seed"),
        "tokenizer_path": tok.get("path"),
        "vocab_size": tok.get("vocab_size"),
        "bos_token": tok.get("bos_token"),
        "eos_token": tok.get("eos_token"),
        "chat_template": template.get("name"),
    }], schema=pa.schema([("tessera_version", pa.string()), ("format_version", pa.int32()),
                          ("fingerprint", pa.string()), ("sequence_len", pa.int32()), ("sample_packing", pa.bool_()),
                          ("val_set_size", pa.float64()), ("seed", pa.int64()), ("tokenizer_path", pa.string()),
                          ("vocab_size", pa.int32()), ("bos_token", pa.string()), ("eos_token", pa.string()),
                          ("chat_template", pa.string())]))
