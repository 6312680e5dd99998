"""`filters:`: declarative per-sample conditions in DuckDB SQL, evaluated read-only over the sample table.

    filters:
      - name: no_refusals
        where: "not regexp_matches(assistant_text, '(?i)as an ai language model')"
      - name: length_bounds
        where: "num_trainable between 8 and 4000"

`where` sees one row per kept sample with the columns documented in dataprep/sample_columns.py (dataset,
source_file, source_row, num_tokens, num_trainable, turns, system_text, user_text, assistant_text, text, and the
row's own top-level fields by name). A sample is kept when `where` is true; false **or NULL** (e.g. a field the
row lacks) quarantines it with reason `filter:<name>`. Filters are tried in config order and the first one
that fails names the reason, so a later filter never sees samples an earlier one rejected.

Checked during setup, before any row is read (`check_filters`): each `where` must parse as one expression
(`SELECT (<where>) FROM samples` and nothing else), bind against an empty table of the documented columns
and be a boolean. Not allowed: subqueries (they could read files or other samples), aggregate and window
functions (a filter is a condition on one sample), table functions (read_csv, glob, ...), query parameters,
and functions whose result changes between runs (random, uuid, now, current_setting, ...), so the same input
always gives the same output. Statements (COPY, ATTACH, PRAGMA, SET, ...) cannot be written inside an
expression; on top of that the connection has file system access switched off and its settings locked.

A name that is not a documented column is taken to be a top-level field of the input rows; whether one exists
is known only once the rows are read: the run then fails with a config error (naming the filter and the
field) when no row has it, before anything is written. Field types come from the values (DuckDB's
json_group_structure over every sample the stage evaluates, curate.py): integers BIGINT,
numbers (or integers and numbers) DOUBLE, true/false BOOLEAN, anything else text (VARCHAR): strings as they are,
lists and objects as JSON text, and a field with values of several kinds as each value's text (compare with
try_cast(field AS DOUBLE) if a numeric field is sometimes a string).

One DuckDB query per table (curate.py: per chunk of the sample table) evaluates every filter; no Python runs
per row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from dataprep.sample_columns import BUILTIN_COLUMNS, SHADOWED_PREFIX, field_key
from schemas.config import FilterRule

if TYPE_CHECKING:  # imported where used: a run without filters never loads DuckDB
    import duckdb

# Functions whose result depends on the clock, the session or chance: the output would not be reproducible.
_UNSTABLE = {"now", "today", "current_date", "current_time", "current_timestamp", "current_localtime",
             "current_localtimestamp", "get_current_time", "get_current_timestamp", "transaction_timestamp",
             "current_setting", "getvariable", "current_database", "current_schema", "current_schemas",
             "current_query", "txid_current", "localtime", "localtimestamp", "current_user", "session_user",
             "user", "current_role", "current_catalog"}
_NOT_ALLOWED_CLASSES = {
    "SUBQUERY": "a subquery (a filter is a condition on one sample and reads nothing else)",
    "WINDOW": "a window function (a filter is a condition on one sample, not a comparison across samples)",
    "PARAMETER": "a query parameter ($1, ?)",
    "STAR": "* or COLUMNS(...)",
}


class FilterError(Exception):
    """A filter that cannot run: the message names the filter and says what to change (exit 2)."""


@dataclass
class CheckedFilter:
    rule: FilterRule
    fields: tuple[str, ...]  # top-level fields of the input rows it names (keys as in the rows)


@dataclass
class FilterPlan:
    filters: list[CheckedFilter]
    fields: tuple[str, ...] = field(default=())  # every named field, in first-use order: what the workers keep

    @property
    def names(self) -> list[str]:
        return [f.rule.name for f in self.filters]


def check_filters(rules: list[FilterRule]) -> FilterPlan:
    """Every filter parsed, checked for read-only, deterministic SQL and bound against the documented columns;
    raises FilterError listing every bad filter."""
    con = _connect()
    problems, checked = [], []
    for i, rule in enumerate(rules):
        try:
            checked.append(_check(con, rule))
        except FilterError as e:
            problems.append(f"filters[{i}] ({rule.name}): {e}")
    if problems:
        raise FilterError("\n".join(problems))
    names: list[str] = []
    for c in checked:
        names += [f for f in c.fields if f not in names]
    return FilterPlan(checked, tuple(names))


def _connect() -> duckdb.DuckDBPyConnection:
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute("set enable_external_access = false")
    con.execute("set autoload_known_extensions = false")
    con.execute("set lock_configuration = true")
    return con


def _statement(where: str) -> str:
    # The expression on lines of its own: a trailing `--` comment cannot swallow the FROM.
    return f"SELECT (\n{where}\n) AS keep FROM samples"


def _check(con: duckdb.DuckDBPyConnection, rule: FilterRule) -> CheckedFilter:
    import duckdb

    tree = json.loads(con.execute("select json_serialize_sql(?)", [_statement(rule.where)]).fetchall()[0][0])
    if tree.get("error") and "Only SELECT" not in str(tree.get("error_message")):
        raise FilterError(f"`{rule.where}` is not a valid SQL expression: {_one_line(tree.get('error_message'))}")
    # The filter is wrapped in parentheses (in _statement and in FilterRunner's CASE), so `a) or (b` would parse
    # there as `(a) or (b)`, and in CASE as `not (a) or (b)`: it must also be one expression without them.
    bare = json.loads(con.execute("select json_serialize_sql(?)", [f"SELECT\n{rule.where}\n AS keep FROM samples"]
                                  ).fetchall()[0][0])
    statements = [] if bare.get("error") else (tree.get("statements") or [])
    node = statements[0]["node"] if len(statements) == 1 else {}
    from_table = node.get("from_table") or {}
    if (len(statements) != 1 or node.get("type") != "SELECT_NODE" or len(node["select_list"]) != 1
            or from_table.get("type") != "BASE_TABLE" or from_table.get("table_name") != "samples"
            or node.get("where_clause") or node.get("group_expressions") or node.get("having")
            or node.get("qualify") or node.get("modifiers") or node.get("cte_map", {}).get("map")
            or node.get("sample")):
        raise FilterError(f"`{rule.where}` must be one SQL expression (a condition such as "
                          "`num_tokens < 2000`), not a statement or several")
    functions = _function_kinds(con)
    columns = _walk(node["select_list"][0], set(), functions)
    fields = tuple(dict.fromkeys(field_key(c) for c in columns if c not in BUILTIN_COLUMNS))
    try:
        types = con.sql(_statement(rule.where).replace("FROM samples", f"FROM ({_empty_samples(fields)}) samples")
                        ).types
    except duckdb.Error as e:
        raise FilterError(f"`{rule.where}`: {_one_line(str(e))}") from None
    if str(types[0]) not in ("BOOLEAN", '"NULL"', "NULL"):
        raise FilterError(f"`{rule.where}` is {types[0]}, not a condition (true/false); compare it, e.g. "
                          f"`({rule.where}) > 0`")
    return CheckedFilter(rule, fields)


def _function_kinds(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, str]]:
    rows = con.execute("select function_name, function_type, coalesce(stability, '') from duckdb_functions()"
                       ).fetchall()
    kinds: dict[str, tuple[str, str]] = {}
    for name, kind, stability in rows:
        # A name may have scalar and aggregate overloads; any non-scalar one is what the checks care about.
        if name not in kinds or kind not in ("scalar", "macro"):
            kinds[name.lower()] = (kind, stability)
    return kinds


def _walk(expr: Any, bound: set[str], functions: dict[str, tuple[str, str]]) -> list[str]:
    """The column names an expression reads (lambda parameters excluded); raises FilterError on what is not
    allowed."""
    if isinstance(expr, list):
        return [c for item in expr for c in _walk(item, bound, functions)]
    if not isinstance(expr, dict):
        return []
    kind = expr.get("class")
    if kind in _NOT_ALLOWED_CLASSES:
        raise FilterError(f"uses {_NOT_ALLOWED_CLASSES[kind]}, which filters do not allow")
    if kind == "COLUMN_REF":
        names = expr["column_names"]
        name = names[1] if len(names) > 1 and names[0].lower() == "samples" else names[0]
        if name.lower() in _UNSTABLE:
            raise FilterError(f"uses {name}, which changes from run to run; filters must give the same result "
                              "every time")
        return [] if name in bound else [name]
    if kind == "LAMBDA":
        params = {p for p in _walk(expr.get("lhs"), set(), functions)}
        return _walk(expr.get("expr"), bound | params, functions)
    if kind == "FUNCTION" and not expr.get("is_operator"):
        name = expr["function_name"].lower()
        fkind, stability = functions.get(name, ("scalar", ""))
        if fkind in ("aggregate", "window"):
            raise FilterError(f"uses the {fkind} function {name}(), which compares samples with each other; a "
                              "filter is a condition on one sample")
        if fkind in ("table", "table_macro", "pragma"):
            raise FilterError(f"uses the table function {name}(), which filters do not allow (no files, no "
                              "other tables)")
        if stability == "VOLATILE" or name in _UNSTABLE:
            raise FilterError(f"uses {name}(), which changes from run to run; filters must give the same result "
                              "every time")
    return [c for key, value in expr.items() if key not in ("class", "type") for c in _walk(value, bound, functions)]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _empty_samples(fields: tuple[str, ...]) -> str:
    """The documented columns, with no rows; the fields as NULL, which binds to any type."""
    cols = [f"NULL::{t} AS {c}" for c, t in BUILTIN_COLUMNS.items()]
    cols += [f"NULL AS {_quote(_column_of(f))}" for f in fields]
    return f"SELECT {', '.join(cols)} WHERE false"


def _column_of(key: str) -> str:
    """The column a top-level field is under (see sample_columns.py)."""
    return SHADOWED_PREFIX + key if key in BUILTIN_COLUMNS else key


def _one_line(message: str | None) -> str:
    # DuckDB's messages carry the statement and a caret line: useless for an expression shown on its own.
    lines = [ln for ln in (message or "").splitlines() if ln.strip() and not ln.startswith("LINE ")
             and not set(ln.strip()) <= {"^"}]
    text = " ".join(" ".join(lines).split()).split(" Candidate functions:")[0]
    return text if len(text) <= 400 else text[:400] + "…"


@dataclass
class FilterResult:
    """The samples `apply_filters` rejected, in sample_id order: which filter (index into the plan) and whether
    its `where` was NULL rather than false."""

    sample_ids: np.ndarray  # int64
    failed: np.ndarray  # int32: index of the first failing filter
    null: np.ndarray  # bool

    def reasons(self, plan: FilterPlan) -> list[str]:
        return [f"filter:{plan.names[i]}" for i in self.failed.tolist()]

    def messages(self, plan: FilterPlan) -> list[str]:
        return [f"filter '{plan.names[i]}' is {'NULL' if n else 'false'} for this sample: "
                f"{plan.filters[i].rule.where}" for i, n in zip(self.failed.tolist(), self.null.tolist(), strict=True)]


class FilterRunner:
    """One read-only DuckDB connection that evaluates the plan over table after table (the row pass's
    batches, or one whole table). Records which named fields any table had, for `check_fields_seen`."""

    def __init__(self, plan: FilterPlan):
        self.plan = plan
        self.con = _connect()
        self.fields_seen: set[str] = set()

    def run(self, table: Any, types: dict[str, str] | None = None) -> FilterResult:
        """`table`: anything DuckDB scans (a pyarrow Table, Dataset or RecordBatchReader) with a `sample_id`
        column, the BUILTIN_COLUMNS and, when the plan names fields, `fields` (each sample's JSON object of
        them). A field this table's rows lack is NULL here. `types`: the fields' types (`field_types`, e.g. over
        every chunk of a larger table), else those of this table's values. Raises FilterError when a filter
        fails on the data."""
        import duckdb

        con, plan = self.con, self.plan
        con.register("_table", table)
        try:
            columns = self._field_columns(types)
            con.execute(f"create or replace temp view samples as select *{columns} from _table")
        except duckdb.Error as e:
            raise FilterError(f"the filters' fields cannot be read: {_one_line(str(e))}") from None
        cases = " ".join(f"when ({f.rule.where}\n) is null then {2 * i + 1} when not ({f.rule.where}\n) then {2 * i}"
                         for i, f in enumerate(plan.filters))
        query = (f"select sample_id, code from (select sample_id, case {cases} else -1 end as code from samples) "
                 "where code >= 0 order by sample_id")
        try:
            out = con.sql(query).to_arrow_table()
        except duckdb.Error:
            _blame(con, plan)
            raise
        finally:
            con.unregister("_table")
        code = out.column("code").to_numpy().astype(np.int32)
        return FilterResult(out.column("sample_id").to_numpy().astype(np.int64), code // 2, (code % 2) == 1)

    def field_types(self, table: Any) -> dict[str, str]:
        """The named fields' JSON types in `table` (DuckDB's json_group_structure; lists and objects as JSON);
        combine those of several tables with `merge_types`."""
        if not self.plan.fields:
            return {}
        self.con.register("_types", table)
        try:
            return self._types_of("_types")
        finally:
            self.con.unregister("_types")

    def _types_of(self, name: str) -> dict[str, str]:
        found = self.con.execute(f"select json_group_structure(fields::json) from {name}").fetchall()[0][0]
        structure = json.loads(found) if found else {}
        if not isinstance(structure, dict):
            return {}
        return {k: v if isinstance(v, str) else "JSON" for k, v in structure.items() if k in self.plan.fields}

    def _field_columns(self, types: dict[str, str] | None) -> str:
        """`, <typed extraction> AS <column>` for each named field."""
        if not self.plan.fields:
            return ""
        structure = self._types_of("_table") if types is None else types
        self.fields_seen.update(k for k in self.plan.fields if k in structure)
        parts = []
        for key in self.plan.fields:
            pointer = "/" + key.replace("~", "~0").replace("/", "~1")
            path = "'" + pointer.replace("'", "''") + "'"
            kind = structure.get(key, "NULL")
            if kind == "NULL":  # no value in this table: NULL of no type, which binds like the setup check's
                value = "NULL"
            elif kind in ("BIGINT", "UBIGINT", "DOUBLE", "BOOLEAN"):
                sql_type = {"UBIGINT": "HUGEINT"}.get(kind, kind)
                value = f"cast(json_extract(fields, {path}) as {sql_type})"
            else:  # text; lists and objects as JSON text; values of several types as their text
                value = f"json_extract_string(fields, {path})"
            parts.append(f", {value} AS {_quote(_column_of(key))}")
        return "".join(parts)

    def check_fields_seen(self) -> None:
        """Raises FilterError for a named field no table had: almost surely a misspelt column or field."""
        for key in self.plan.fields:
            if key not in self.fields_seen:
                users = ", ".join(f"'{f.rule.name}'" for f in self.plan.filters if key in f.fields)
                raise FilterError(f"filter {users} names '{_column_of(key)}', which is neither a sample column "
                                  f"({', '.join(BUILTIN_COLUMNS)}) nor a top-level field of any input row; check "
                                  "the spelling (SQL names are case-insensitive, fields are not: quote them, "
                                  "\"Score\")")


def merge_types(a: dict[str, str], b: dict[str, str]) -> dict[str, str]:
    """Field types over two tables: equal types stay, integers and numbers are DOUBLE, NULL gives way, anything
    else becomes text."""
    out = dict(a)
    for k, t in b.items():
        was = out.get(k, "NULL")
        if was == "NULL" or was == t:
            out[k] = t
        elif t != "NULL":
            numeric = {was, t} <= {"BIGINT", "UBIGINT", "DOUBLE"}
            out[k] = ("BIGINT" if {was, t} == {"BIGINT", "UBIGINT"} else "DOUBLE") if numeric else "VARCHAR"
    return out


def apply_filters(table: Any, plan: FilterPlan) -> FilterResult:
    """The plan over one whole table (see FilterRunner.run); a named field no row has is a FilterError."""
    runner = FilterRunner(plan)
    result = runner.run(table)
    runner.check_fields_seen()
    return result


def _blame(con: duckdb.DuckDBPyConnection, plan: FilterPlan) -> None:
    """Re-runs each filter alone to name the one that fails on the data; raises FilterError for it."""
    import duckdb

    for f in plan.filters:
        try:
            con.execute(f"select count(*) from samples where ({f.rule.where}\n) is not true").fetchall()
        except duckdb.Error as e:
            where = _first_failing_row(con, f.rule.where)
            raise FilterError(f"filter '{f.rule.name}' fails on the data{where}: {_one_line(str(e))}; the field "
                              "types are those of the rows' JSON values (try_cast(... as ...) tolerates odd rows)"
                              ) from None


def _first_failing_row(con: duckdb.DuckDBPyConnection, where: str) -> str:
    """`, first at FILE row N` for the first sample (by sample_id) on which `where` raises (a cast or a division
    by zero that only some rows hit), found by bisection: log2(samples) queries. Empty when no single row is to
    blame (a type error raises on no rows at all)."""
    import duckdb

    def fails(lo: int, hi: int) -> bool:
        # The filter sits above LIMIT/OFFSET, so DuckDB cannot evaluate it on rows outside the range.
        try:
            con.execute(f"select count(*) from (select * from samples order by sample_id limit {hi - lo} offset {lo})"
                        f" where ({where}\n) is not true").fetchall()
            return False
        except duckdb.Error:
            return True

    n = con.execute("select count(*) from samples").fetchall()[0][0]
    if fails(0, 0) or not fails(0, n):
        return ""
    lo, hi = 0, n  # invariant: some row in [lo, hi) fails; the first one is sought
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fails(lo, mid) else (mid, hi)
    # fetchall: fetchone would leave the result open, and the connection refuses its next call
    file, row = con.execute(f"select source_file, source_row from samples order by sample_id limit 1 offset {lo}"
                            ).fetchall()[0]
    return f", first at {file} row {row}"
