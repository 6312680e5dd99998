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
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from dataprep.look.prepared import QueryError, manifest_table, open_dir, packed_table, read_manifest
from dataprep.look.results import show_table, to_csv, to_json
from dataprep.look.vocab import cached_vocab_table
from schemas.shard import IGNORE_INDEX

if TYPE_CHECKING:  # imported where used: `tessera prepare` imports this module and needs neither
    import duckdb

# Installed from a wheel, the library ships as dataprep/sql (see pyproject.toml); in a checkout it is sql/ at
# the top of the repository, next to dataprep/.
_PACKAGE = Path(__file__).resolve().parent.parent
SQL_DIR = _PACKAGE / "sql" if (_PACKAGE / "sql").is_dir() else _PACKAGE.parent / "sql"

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


# ------------------------------------------------------------------------------------------------------------
# the connection


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
