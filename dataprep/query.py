"""`tessera query DIR SQL`: DuckDB over a prepared directory, read-only.

    tessera query prepared/demo "select status, count(*) from samples group by all"
    tessera query prepared/demo sql/packing_efficiency.sql --format json
    tessera query prepared/demo sql/samples_containing_text.sql --param text=capital
    tessera query prepared/demo                       # lists the views, their columns and the sql/ library

Views (all splits, all shards):

    packed      one row per shard row: shard, split, row + the shard columns (schemas/shard.py)
    tokens      one row per token: shard, split, row, sample_id, position (in the row), position_id (in the
                sample), token_id, label, trained (label <> -100)
    samples     samples.parquet: one row per input row, whatever happened to it
    quarantine  quarantine.parquet: rows that could not become samples, with reason, message and original
    duplicates  duplicates.parquet: removed sample_id -> kept_sample_id, kind (exact|near), similarity, cluster_id
    vocab       the saved tokenizer: token_id, piece, text, bytes, special
    manifest    one row: sequence_len, eos_token, bos_token, vocab_size, chat_template, fingerprint, ...

Read-only by construction: the data is read by pyarrow (shards memory-mapped, zero-copy) and handed to an
in-memory DuckDB whose file system access is then switched off and locked, so no SQL (COPY, ATTACH, ...) can
write into the prepared directory or anywhere else. Results are written by Python (--out or stdout).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import decimal
import hashlib
import io
import json
import math
import re
import shutil
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from dataprep.outdir import NotPrepared, open_prepared_dir
from dataprep.shards import ShardPathError, shard_path
from schemas.shard import IGNORE_INDEX, SHARD_SCHEMA

if TYPE_CHECKING:  # imported where used: `tessera prepare` imports this module and needs neither
    import duckdb

# Installed from a wheel, the library ships as dataprep/sql (see pyproject.toml); in a checkout it is ../sql.
_HERE = Path(__file__).resolve().parent
SQL_DIR = _HERE / "sql" if (_HERE / "sql").is_dir() else _HERE.parent / "sql"

VIEWS = {
    "packed": "one row per shard row (all splits): shard, split, row (index in the shard) + the shard columns",
    "tokens": "one row per token of packed: position in the row, the sample it belongs to, token_id, label, "
              "trained",
    "samples": "samples.parquet: one row per input row (kept, quarantined, duplicate, dropped; one per chunk of a "
               "completion/pretrain row split at sequence_len; one per copy made by datasets[].weight, with "
               "repeat_of)",
    "quarantine": "quarantine.parquet: reason, field, message and original text of each bad row",
    "duplicates": "duplicates.parquet: removed sample_id -> kept_sample_id, kind (exact | near), similarity, "
                  "cluster_id (the kept sample), content_hash (exact)",
    "vocab": "the saved tokenizer: token_id -> piece (as stored), text (its bytes as UTF-8), bytes, special",
    "manifest": "one row from manifest.json: sequence_len, eos_token, bos_token, vocab_size, chat_template, ...",
}

# Segments first (one row per sample of a packed row), then the tokens of each segment, so that every token
# knows its sample without a window function over the whole dataset. DuckDB lists are 1-based, slices
# inclusive: tokens [start, stop) of a row are input_ids[start + 1:stop].
_TOKENS_SQL = f"""
create view tokens as
with segments as (
    select
        shard,
        split,
        row,
        input_ids,
        labels,
        position_ids,
        unnest(sample_ids) as sample_id,
        unnest(cu_seqlens[1:len(sample_ids)]) as seg_start,
        unnest(cu_seqlens[2:]) as seg_stop,
    from packed
),
flat as (
    select
        shard,
        split,
        row,
        sample_id,
        unnest(range(seg_start, seg_stop)) as position,
        unnest(position_ids[seg_start + 1:seg_stop]) as position_id,
        unnest(input_ids[seg_start + 1:seg_stop]) as token_id,
        unnest(labels[seg_start + 1:seg_stop]) as label,
    from segments
)
select
    shard,
    split,
    row,
    sample_id,
    position::integer as position,
    position_id,
    token_id,
    label,
    label <> {IGNORE_INDEX} as trained,
from flat
"""


class QueryError(Exception):
    """The directory cannot be queried (not a prepared directory, tokenizer missing, bad --param, ...)."""


# ------------------------------------------------------------------------------------------------------------
# the tokenizer's vocabulary


class Vocab:
    """The saved tokenizer's vocabulary with each token's exact bytes, so that a run of tokens decodes to the
    text the model saw even when a multi-byte character is split across tokens (each token alone would
    decode to U+FFFD). Bytes are worked out per id on first use: inspect needs a few hundred, vocab all."""

    def __init__(self, tokenizer_json: Path):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        decoder = self.tokenizer.decoder
        self.byte_level = decoder is not None and "ByteLevel" in decoder.__getstate__().decode()
        self.added = self.tokenizer.get_added_tokens_decoder()
        self.size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self._bytes: dict[int, bytes] = {}

    def __len__(self) -> int:
        return self.size

    def piece(self, token_id: int) -> str | None:
        """As stored in the vocabulary: Ġ-encoded for byte-level BPE, ▁ for SentencePiece."""
        return self.tokenizer.id_to_token(token_id)

    def special(self, token_id: int) -> bool:
        return token_id in self.added and self.added[token_id].special

    def bytes(self, token_id: int) -> bytes:
        if (b := self._bytes.get(token_id)) is None:
            b = self._bytes[token_id] = self._token_bytes(token_id)
        return b

    def text(self, token_id: int) -> str:
        return self.bytes(token_id).decode("utf-8", errors="replace")

    def _token_bytes(self, token_id: int) -> bytes:
        piece = self.piece(token_id)
        if piece is None:
            return b""
        if token_id in self.added:  # added tokens are stored as their literal text
            return self.added[token_id].content.encode()
        byte_map = _byte_decoder()
        if self.byte_level and all(c in byte_map for c in piece):
            return bytes(byte_map[c] for c in piece)
        if m := _BYTE_PIECE.match(piece):  # SentencePiece byte fallback
            return bytes([int(m.group(1), 16)])
        return piece.replace("▁", " ").encode()


@cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet (printable stand-ins for the 256 bytes), reversed."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, n = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


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


def cached_vocab_table(prepared: Path) -> pa.Table:
    """vocab_table for a tokenizer file, built once per process for each version of the file: the report
    and the tests open several connections, and a 150k vocabulary takes about a second."""
    path = tokenizer_file(prepared).resolve()
    st = path.stat()
    return _vocab_table_for(str(path), st.st_mtime_ns, st.st_size)


@cache
def _vocab_table_for(path: str, mtime_ns: int, size: int) -> pa.Table:
    return vocab_table(Vocab(Path(path)))


def vocab_table(vocab: Vocab) -> pa.Table:
    ids = range(len(vocab))
    token_bytes = [vocab.bytes(i) for i in ids]
    return pa.table({
        "token_id": pa.array(np.arange(len(vocab), dtype=np.int32)),
        "piece": pa.array([vocab.piece(i) for i in ids], pa.string()),
        "text": pa.array([b.decode("utf-8", errors="replace") for b in token_bytes], pa.string()),
        "bytes": pa.array(token_bytes, pa.binary()),
        "special": pa.array([vocab.special(i) for i in ids], pa.bool_()),
    })


# ------------------------------------------------------------------------------------------------------------
# the connection


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


def connect(prepared: Path, with_vocab: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the views over `prepared`, file system access disabled and locked.

    with_vocab=False skips loading the tokenizer (about a second for a 150k vocabulary) for SQL that does not
    use the vocab view."""
    import duckdb
    import pyarrow.dataset as pads

    prepared = open_dir(prepared)
    manifest = read_manifest(prepared)
    con = duckdb.connect(":memory:")
    sources: dict[str, Any] = {
        "packed": packed_table(prepared, manifest),
        # Parquet through pyarrow datasets: DuckDB scans them lazily (projection and filter pushdown).
        "samples": pads.dataset(str(prepared / "samples.parquet"), format="parquet"),
        "quarantine": pads.dataset(str(prepared / "quarantine.parquet"), format="parquet"),
        "duplicates": pads.dataset(str(prepared / "duplicates.parquet"), format="parquet"),
        "manifest": manifest_table(manifest),
    }
    if with_vocab:
        sources["vocab"] = cached_vocab_table(prepared)
    for name, source in sources.items():
        con.register(f"_{name}", source)
        con.execute(f"create view {name} as select * from _{name}")
    con.execute(_TOKENS_SQL)
    con.execute("set enable_external_access = false")
    con.execute("set lock_configuration = true")
    return con


def describe_views(con: duckdb.DuckDBPyConnection) -> str:
    present = {r[0] for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
    lines = []
    for name, doc in VIEWS.items():
        if name not in present:
            continue
        columns = con.execute(f"describe {name}").fetchall()
        lines.append(f"  {name:<11} {doc}")
        line = ""
        for item in (f"{c[0]} {c[1]}" for c in columns):  # wrapped between columns, never inside one
            if line and len(line) + len(item) > 100:
                lines.append(" " * 14 + line.rstrip())
                line = ""
            line += item + ", "
        lines.append(" " * 14 + line.removesuffix(", "))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------
# SQL text and parameters


def resolve_sql(arg: str) -> tuple[str, Path | None]:
    """(SQL text, file) for a .sql path, a library name (`summary` -> sql/summary.sql) or SQL text."""
    path = Path(arg)
    if arg.endswith(".sql"):
        for candidate in (path, SQL_DIR / path.name):
            if candidate.is_file():
                return candidate.read_text(encoding="utf-8"), candidate
        raise QueryError(f"no such SQL file: {arg} (the library is in {SQL_DIR}: {', '.join(library_names())})")
    if re.fullmatch(r"[A-Za-z0-9_]+", arg) and (SQL_DIR / f"{arg}.sql").is_file():
        return (SQL_DIR / f"{arg}.sql").read_text(encoding="utf-8"), SQL_DIR / f"{arg}.sql"
    return arg, None


def library_names() -> list[str]:
    return sorted(p.stem for p in SQL_DIR.glob("*.sql"))


def header(sql: str) -> str:
    """The leading `--` comment of a library file, without the dashes: what the query answers."""
    lines = []
    for line in sql.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[2:].strip())
    return "\n".join(lines).strip()


_STRIP = re.compile(r"--[^\n]*|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")


def named_params(sql: str) -> list[str]:
    """$name parameters used in `sql` (comments and quoted strings ignored), in order of first use."""
    return list(dict.fromkeys(re.findall(r"\$([A-Za-z_]\w*)", _STRIP.sub(" ", sql))))


def parse_params(items: list[str], sql: str) -> dict[str, str]:
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise QueryError(f"--param {item!r}: expected NAME=VALUE, e.g. --param text=capital")
        params[name.lstrip("$")] = value
    used = named_params(sql)
    missing = [p for p in used if p not in params]
    unknown = [p for p in params if p not in used]
    if missing:
        raise QueryError(f"the SQL uses {', '.join('$' + p for p in missing)}: pass "
                         + " ".join(f"--param {p}=VALUE" for p in missing))
    if unknown:
        uses = f"it uses {', '.join('$' + p for p in used)}" if used else "it has no $parameters"
        raise QueryError(f"--param {', '.join(unknown)}: not used by the SQL ({uses})")
    return params


def run(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, str] | None = None) -> pa.Table:
    """The result of `sql` as an Arrow table (parameters are passed as strings; cast them in SQL)."""
    rel = con.sql(sql, params=params or None)
    if rel is None:  # a statement without a result (SET, CREATE VIEW ...)
        return pa.table({})
    return rel.to_arrow_table()


def run_file(con: duckdb.DuckDBPyConnection, name: str, params: dict[str, str] | None = None) -> pa.Table:
    """A library query by name, e.g. run_file(con, "summary")."""
    return run(con, (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8"), params)


def uses_vocab(sql: str) -> bool:
    return re.search(r"\bvocab\b", sql, re.IGNORECASE) is not None


# ------------------------------------------------------------------------------------------------------------
# output


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


# ------------------------------------------------------------------------------------------------------------
# CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="a prepared directory (tessera prepare's output)")
    p.add_argument("sql", nargs="?", help="SQL text, a .sql file (e.g. sql/packing_efficiency.sql) or a library "
                   "query's name; omitted: list the views, their columns and the sql/ library")
    p.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table",
                   help="table (default, for reading), csv, json (one JSON array of row objects), parquet")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="value of a $NAME parameter in the SQL, e.g. --param text=capital (passed as a string)")
    p.add_argument("--out", type=Path, help="write the result to this file instead of stdout")
    p.add_argument("--max-rows", type=int, default=100, help="rows shown by --format table (default 100)")


def main(args: argparse.Namespace) -> int:
    try:
        return _main(args)
    except QueryError as e:
        _error(str(e))
        return 1


def _main(args: argparse.Namespace) -> int:
    import duckdb

    shown: Path = args.dir
    prepared = open_dir(shown)
    if args.sql is None:
        con = connect(prepared)
        where = SQL_DIR.relative_to(Path.cwd()) if SQL_DIR.is_relative_to(Path.cwd()) else SQL_DIR
        print(f"views over {shown}:\n{describe_views(con)}\n\nlibrary ({where}/, run one with "
              f"`tessera query {shown} NAME`):")
        for name in library_names():
            first = header((SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")).split("\n")[0]
            print(f"  {name:<30} {first}")
        return 0
    sql, _ = resolve_sql(args.sql)
    params = parse_params(args.param, sql)
    if args.out is not None:
        _check_out(args.out, prepared)
    if args.format == "parquet" and args.out is None and sys.stdout.isatty():
        raise QueryError("--format parquet is binary: pass --out FILE.parquet or redirect stdout to a file")
    con = connect(prepared, with_vocab=uses_vocab(sql))
    try:
        rel = con.sql(sql, params=params or None)
        if rel is None:
            return 0
        if args.format == "table":
            text = show_table(rel, args.max_rows)
        else:
            table = rel.to_arrow_table()
    except duckdb.Error as e:
        # The listing needs every view, vocab included, whatever the SQL used.
        listing = describe_views(con if uses_vocab(sql) else connect(prepared))
        _error(f"{e}\n\nviews (columns and types):\n{listing}")
        return 1
    if args.format == "table":
        _write(text, args.out)
    elif args.format == "json":
        _write(to_json(table) + "\n", args.out)
    elif args.format == "csv":
        _write(to_csv(table), args.out)
    elif args.out is not None:
        pq.write_table(table, args.out)
    else:
        pq.write_table(table, sys.stdout.buffer)
    return 0


def _check_out(out: Path, prepared: Path) -> None:
    if out.resolve().is_relative_to(prepared.resolve()):
        raise QueryError(f"--out {out}: inside the prepared directory, which tessera never writes into after "
                         "prepare (its manifest describes its contents); write it elsewhere")


def _write(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        out.write_text(text, encoding="utf-8")


def _error(message: str) -> None:
    red, reset = ("\033[31m", "\033[0m") if sys.stderr.isatty() else ("", "")
    print(f"{red}error:{reset} {message}", file=sys.stderr)
