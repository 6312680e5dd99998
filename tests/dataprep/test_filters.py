"""Declarative filters on their own (dataprep/filters.py) and the per-sample columns they read
(dataprep/sample_columns.py): the setup checks (bad SQL, statements smuggled into an expression, file-reading
and table functions, subqueries, aggregates, windows, run-dependent functions, non-boolean results), and the
evaluation over a plain pyarrow table: first failing filter wins, NULL fails, row fields typed from their JSON
values, unknown fields and failures on the data as errors naming the filter.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_filters.py -v
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest

from dataprep.filters import FilterError, apply_filters, check_filters
from dataprep.formats import to_sample
from dataprep.sample_columns import BUILTIN_COLUMNS, sample_columns
from schemas.config import DatasetConfig, FilterRule


def _rules(*wheres: str) -> list[FilterRule]:
    return [FilterRule(name=f"f{i}", where=w) for i, w in enumerate(wheres)]


@pytest.mark.parametrize(("where", "message"), [
    ("num_tokens >", r"is not a valid SQL expression: .*syntax error"),
    ("true) AS keep FROM samples; COPY samples TO '/tmp/x.csv'; SELECT (1", "must be one SQL expression"),
    ("true) AS keep FROM samples UNION SELECT (1", "must be one SQL expression"),
    ("true) AS keep, (1", "must be one SQL expression"),
    # Balanced inside the parentheses the filter is wrapped in, but not an expression of its own: it was
    # evaluated as `(true) or (true)` in one place and `not (true) or (true)` in another, quarantining every row.
    ("true) or (true", "must be one SQL expression"),
    ("num_tokens > 0) and (turns > 1", "must be one SQL expression"),
    ("true) AS keep FROM samples UNION ALL SELECT (SELECT count(*) > 0 FROM read_csv('/etc/passwd')",
     "must be one SQL expression"),
    ("true) AS keep FROM read_csv('/etc/passwd') /*", "unterminated /\\* comment"),
    ("exists (select * from read_csv('/etc/passwd'))", "uses a subquery"),
    ("num_tokens > (select max(num_tokens) from samples)", "uses a subquery"),
    ("read_csv('/etc/passwd') is null", r"uses the table function read_csv\(\)"),
    ("pragma_version() is null", r"uses the table function pragma_version\(\)"),
    ("sum(num_tokens) > 10", r"uses the aggregate function sum\(\)"),
    ("num_tokens > avg(num_tokens) over ()", "uses a window function"),
    ("random() < 0.5", r"uses random\(\), which changes from run to run"),
    ("current_timestamp > '2020-01-01'", "uses current_timestamp, which changes from run to run"),
    ("current_setting('threads') = 2", r"uses current_setting\(\)"),
    ("num_tokens > $1", "query parameter"),
    ("num_tokens", "is BIGINT, not a condition"),
    ("turns > [1]", "Binder Error: Cannot compare values of type INTEGER and type INTEGER"),
    ("text + 1 > 0", r"No function matches .*explicit type casts\.$"),
    ("no_such_function(text)", "no_such_function does not exist"),
])
def test_bad_filters_are_config_errors(where: str, message: str) -> None:
    with pytest.raises(FilterError, match=message) as e:
        check_filters([FilterRule(name="ok", where="num_tokens > 0"), FilterRule(name="bad", where=where)])
    assert str(e.value).startswith("filters[1] (bad): ")
    assert "\n" not in str(e.value)  # one line: no DuckDB caret display


def test_every_bad_filter_is_reported_at_once_and_good_ones_pass() -> None:
    with pytest.raises(FilterError) as e:
        check_filters(_rules("num_tokens >", "text like '%x%'", "random() < 1"))
    assert [line.split(":")[0] for line in str(e.value).splitlines()] == ["filters[0] (f0)", "filters[2] (f2)"]
    plan = check_filters(_rules(
        "not regexp_matches(assistant_text, '(?i)as an ai language model')",
        "num_trainable between 8 and 4000 -- a trailing comment",
        "score > 0.5 and len(json_extract(tags, '$')::varchar[]) >= 0 and field_text is not null",
        "list_filter([1, 2, 3], lambda x: x > turns) = [] or samples.turns > 0",
    ))
    assert plan.names == ["f0", "f1", "f2", "f3"]
    assert plan.fields == ("score", "tags", "text")  # field_text: the row's own `text` field


def _table(fields: list[dict[str, Any] | None], **columns: list[Any]) -> pa.Table:
    n = len(fields)
    data: dict[str, Any] = {"sample_id": list(range(10, 10 + n))}
    for name, sql_type in BUILTIN_COLUMNS.items():
        default: Any = 0 if sql_type in ("BIGINT", "INTEGER") else ""
        data[name] = columns.get(name, [default] * n)
    data["fields"] = [None if f is None else json.dumps(f) for f in fields]
    return pa.table(data)


def test_first_failing_filter_wins_and_null_fails() -> None:
    plan = check_filters([
        FilterRule(name="length", where="num_trainable between 2 and 10"),
        FilterRule(name="no_refusals", where="not regexp_matches(assistant_text, '(?i)as an ai')"),
        FilterRule(name="scored", where="score >= 0.5"),
    ])
    table = _table(
        [{"score": 1}, {"score": 0.9}, {"score": 0.1}, {}, {"score": 0.7}, None],
        num_trainable=[5, 5, 5, 5, 50, 5],
        assistant_text=["fine", "As an AI, I cannot", "fine", "fine", "As an AI", "fine"],
    )
    result = apply_filters(table, plan)
    assert result.sample_ids.tolist() == [11, 12, 13, 14, 15]
    assert result.reasons(plan) == ["filter:no_refusals", "filter:scored", "filter:scored", "filter:length",
                                    "filter:scored"]
    assert result.null.tolist() == [False, False, True, False, True]  # no score: NULL, which fails
    assert result.messages(plan)[2] == "filter 'scored' is NULL for this sample: score >= 0.5"


def test_row_fields_are_typed_from_their_json_values() -> None:
    plan = check_filters(_rules(
        "n + 1 = 3",  # integers: BIGINT
        "x > 0.25",  # integers and numbers: DOUBLE
        "flag",  # booleans
        "json_extract(meta, '$.lang') = '\"en\"'",  # objects: JSON text
        "json_array_length(tags) = 2",  # lists: JSON text
        "mixed = 'two' or mixed = '2'",  # a number in one row, text in another: each value's text
        "field_text = 'own'",  # the row's `text` field, shadowed by the column
        "\"Odd Key/1\" = 'y'",
    ))
    good = {"n": 2, "x": 1, "flag": True, "meta": {"lang": "en"}, "tags": ["a", "b"], "mixed": 2, "text": "own",
            "Odd Key/1": "y"}
    rows = [good, {**good, "x": 0.2}, {**good, "flag": False}, {**good, "meta": {"lang": "de"}},
            {**good, "tags": ["a"]}, {**good, "mixed": "two"}, {**good, "mixed": "three"}, {**good, "text": "other"},
            {**good, "Odd Key/1": "n"}]
    result = apply_filters(_table(rows), plan)
    assert result.sample_ids.tolist() == [11, 12, 13, 14, 16, 17, 18]
    assert result.failed.tolist() == [1, 2, 3, 4, 5, 6, 7]


def test_a_field_no_row_has_is_an_error_naming_the_filter() -> None:
    plan = check_filters([FilterRule(name="typo", where="scroe > 1"), FilterRule(name="ok", where="score > 1")])
    with pytest.raises(FilterError, match=r"filter 'typo' names 'scroe', which is neither a sample column "
                                          r"\(dataset, .*\) nor a top-level field of any input row"):
        apply_filters(_table([{"score": 2}]), plan)


def test_a_filter_failing_on_the_data_is_named() -> None:
    plan = check_filters([FilterRule(name="ok", where="num_tokens >= 0"),
                          FilterRule(name="cast", where="cast(category as integer) > 1")])
    # The first row it fails on is named (found by bisection), so the user can fix the row or the filter.
    with pytest.raises(FilterError, match=r"filter 'cast' fails on the data, first at b.jsonl row 7: Conversion "
                                          r"Error: .*'math'"):
        apply_filters(_table([{"category": "3"}, {"category": "math"}, {"category": "x"}],
                             source_file=["a.jsonl", "b.jsonl", "b.jsonl"], source_row=[0, 7, 8]), plan)


def test_a_filter_of_the_wrong_type_names_no_row() -> None:
    # A binder error fails on every row alike: naming the first one would point at the wrong thing.
    plan = check_filters([FilterRule(name="cmp", where="category > 1")])
    with pytest.raises(FilterError, match=r"filter 'cmp' fails on the data: Binder Error"):
        apply_filters(_table([{"category": "3"}, {"category": "math"}]), plan)


def test_filters_cannot_reach_files_even_past_the_checks(tmp_path: Any) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    with pytest.raises(FilterError, match="table function read_text"):
        check_filters(_rules(f"read_text('{secret}') is null"))
    # Defence in depth: the connection filters run on refuses file access whatever the SQL.
    import duckdb

    from dataprep.filters import _connect

    con = _connect()
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"select content from read_text('{secret}')")
    with pytest.raises(duckdb.Error):
        con.execute("set enable_external_access = true")


def _columns(row: dict[str, Any], ds: dict[str, Any], fields: tuple[str, ...] = ()) -> dict[str, Any]:
    cfg = DatasetConfig(**ds)
    return sample_columns(row, to_sample(row, cfg, False, "<eos>"), cfg, fields)


def test_sample_columns_per_type() -> None:
    chat = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                              {"from": "gpt", "value": "Hello"}, {"from": "human", "value": "Bye"},
                              {"from": "gpt", "value": "Bye!"}], "score": 3, "meta": {"a": [1]}}
    assert _columns(chat, {"path": "x", "type": "chat_template"}, ("score", "meta", "absent")) == {
        "turns": 5, "system_text": "Be brief.", "user_text": "Hi\nBye", "assistant_text": "Hello\nBye!",
        "text": "Be brief.\nHi\nHello\nBye\nBye!", "fields": '{"score":3,"meta":{"a":[1]}}'}
    alpaca = {"instruction": "Add", "input": "2 and 2", "output": "4"}
    assert _columns(alpaca, {"path": "x", "type": "alpaca"}) == {
        "turns": 1, "system_text": "", "user_text": "Add\n2 and 2", "assistant_text": "4",
        "text": "Add\n2 and 2\n4", "fields": None}
    custom = {"q": "Why?", "a": "Because.", "sys": "You are terse."}
    got = _columns(custom, {"path": "x", "type": {"field_instruction": "q", "field_output": "a",
                                                 "field_system": "sys", "format": "{instruction}",
                                                 "no_input_format": "{instruction}"}})
    assert (got["system_text"], got["user_text"], got["assistant_text"]) == ("You are terse.", "Why?", "Because.")
    io = {"segments": [{"text": "Q: hi", "label": False}, {"text": "A: yo", "label": True}, {"text": "!"}]}
    got = _columns(io, {"path": "x", "type": "input_output"})
    assert (got["user_text"], got["assistant_text"], got["text"]) == ("Q: hi", "A: yo\n!", "Q: hi\nA: yo\n!")
    got = _columns({"text": "Once upon a time"}, {"path": "x", "type": "completion"}, ("text",))
    assert (got["assistant_text"], got["text"]) == ("Once upon a time", "Once upon a time")
    assert got["fields"] == '{"text":"Once upon a time"}'
    got = _columns({"input_ids": [1, 2, 3]}, {"path": "x"})
    assert got == {"turns": 1, "system_text": "", "user_text": "", "assistant_text": "", "text": "",
                   "fields": None}


def test_chunks_of_one_table_share_the_field_types() -> None:
    from dataprep.filters import FilterRunner, merge_types

    assert merge_types({"a": "BIGINT", "b": "NULL", "c": "VARCHAR"}, {"a": "DOUBLE", "b": "BOOLEAN", "d": "JSON"}) == {
        "a": "DOUBLE", "b": "BOOLEAN", "c": "VARCHAR", "d": "JSON"}
    assert merge_types({"a": "UBIGINT"}, {"a": "BIGINT"}) == {"a": "BIGINT"}
    assert merge_types({"a": "BOOLEAN"}, {"a": "BIGINT"}) == {"a": "VARCHAR"}
    plan = check_filters(_rules("try_cast(n as double) >= 2"))
    runner = FilterRunner(plan)
    first, second = _table([{"n": 2}, {"n": 1}]), _table([{"n": "3"}, {"n": 2.5}])
    types = merge_types(runner.field_types(first), runner.field_types(second))
    assert types == {"n": "VARCHAR"}  # an integer in one chunk, text and a number in the other: text everywhere
    assert runner.run(first, types).sample_ids.tolist() == [11]
    assert runner.run(second, types).sample_ids.tolist() == []
    runner.check_fields_seen()
