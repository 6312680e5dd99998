"""Every row is accounted for: one fixture row per reason code, through the whole pipeline, and the reason,
source location and original text land in samples.parquet / quarantine.parquet / duplicates.parquet.

    .venv/bin/python -m pytest tests/dataprep/test_quarantine.py -v
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from dataprep import sandbox
from dataprep.pipeline import PrepareError
from schemas.reasons import QUARANTINE_REASONS, Reason
from tests.conftest import Prepare, write_jsonl

# Raises when two turns in a row have the same role, trims contents, and leaves out turns that say 'hidden':
# things real templates do (the last one as Qwen3 drops earlier reasoning).
STRICT_TEMPLATE = (
    "{% for m in messages %}{% if loop.index0 > 0 and m['role'] == messages[loop.index0 - 1]['role'] %}"
    "{{ raise_exception('Conversation roles must alternate') }}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{% if m['content'] != 'hidden' %}{{ m['content'] | trim }}{% endif %}"
    "<|im_end|>\n{% endfor %}"
    # and a template that hangs or explodes on some rows (dataprep/sandbox.py limits)
    "{% if messages[-1]['content'] == 'LOOP' %}{% for a in range(100000) %}{% for b in range(100000) %}"
    "{% endfor %}{% endfor %}{% endif %}{% if messages[-1]['content'] == 'HUGE' %}{{ 'x' * 10**10 }}{% endif %}"
)
GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}

CHAT_ROWS: list[tuple[str | dict, str | None]] = [  # (row, expected reason) in file order
    (GOOD, None),
    ('{"messages": [', Reason.malformed_json),
    ("INVALID_UTF8", Reason.invalid_utf8),
    ("[1, 2]", Reason.not_an_object),
    ({"msgs": []}, Reason.missing_field),
    ({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}, Reason.wrong_type),
    ({"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}]}, Reason.empty_content),
    ({"messages": [{"role": "narrator", "content": "Once"}, {"role": "assistant", "content": "x"}]},
     Reason.unknown_role),
    ({"messages": [{"role": "user", "content": "q"},
                   {"role": "assistant", "content": "abc", "detail": [{"begin_offset": 0, "end_offset": 9,
                                                                       "train": True}]}]},
     Reason.bad_training_detail),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                   {"role": "assistant", "content": "c"}]}, Reason.template_error),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "LOOP"}]},
     Reason.template_timeout),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "HUGE"}]},
     Reason.template_too_large),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "hidden"}]},
     Reason.content_not_rendered),
    ({"messages": [{"role": "user", "content": "Only a question?"}]}, Reason.no_trainable_tokens),
    ({"messages": [{"role": "user", "content": "Long?"}, {"role": "assistant", "content": " ".join(["word"] * 400)}]},
     Reason.too_long),
    ({"messages": [{"role": "user", "content": " Hi"}, {"role": "assistant", "content": "Hello!"}]},
     Reason.duplicate),  # same content as GOOD once whitespace is normalised
    ('{"messages": [{"role": "user", "content": "\\ud83d"}]}', Reason.invalid_unicode),
    ('{"messages": [], "meta": ' + "[" * 5000 + "]" * 5000 + "}", Reason.too_deep),
    ('{"messages": [], "id": ' + "9" * 5000 + "}", Reason.number_too_large),
]
# Covered in test_robust_rows.py: a line over the read limit (32 MiB at least) and the last-resort row_error;
# `contaminated` is a stage's (decontamination), tested with it
# (tests/dataprep/test_curation.py).
# malformed_csv is a CSV line's (tests/dataprep/test_hostile_inputs.py).
ELSEWHERE = {str(Reason.line_too_long), str(Reason.row_error), str(Reason.contaminated), str(Reason.malformed_csv)}


@pytest.fixture
def result(tmp_path: Path, prepare: Prepare, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sandbox, "RENDER_SECONDS", 0.5)  # the LOOP row times out faster than the default 5 s
    lines = [row if isinstance(row, str) else json.dumps(row) for row, _ in CHAT_ROWS]
    lines.insert(3, "")  # blank lines are not rows: source_row does not count them
    data = "\n".join(lines).replace("INVALID_UTF8", '{"messages": "caf\udcff"}')
    (tmp_path / "chat.jsonl").write_bytes(data.encode("utf-8", errors="surrogateescape") + b"\n")
    write_jsonl(tmp_path / "tok.jsonl", [{"input_ids": [1, 2, 3]}, {"input_ids": [1, 10**9]}])
    return prepare({
        "chat_template": "jinja", "chat_template_jinja": STRICT_TEMPLATE, "sequence_len": 256,
        "quarantine_max_fraction": 1.0,
        "datasets": [{"path": "chat.jsonl", "type": "chat_template", "message_field_training_detail": "detail"},
                     {"path": "tok.jsonl"}],
    })


def test_every_reason_is_recorded_with_its_source_row(result) -> None:
    samples = pl.read_parquet(result.out / "samples.parquet")
    chat = samples.filter(pl.col("dataset") == "chat.jsonl").sort("source_row")
    assert chat["source_row"].to_list() == list(range(len(CHAT_ROWS)))
    assert chat["reason"].to_list() == [None if r is None else str(r) for _, r in CHAT_ROWS]
    tok = samples.filter(pl.col("dataset") == "tok.jsonl").sort("source_row")
    assert tok["reason"].to_list() == [None, "bad_token_ids"]
    covered = set(chat["reason"].drop_nulls()) | set(tok["reason"].drop_nulls())
    assert covered >= {str(r) for r in QUARANTINE_REASONS} - ELSEWHERE | {"too_long", "duplicate"}


def test_quarantine_table_keeps_location_message_and_original(result) -> None:
    q = pl.read_parquet(result.out / "quarantine.parquet")
    assert len(q) == sum(1 for _, r in CHAT_ROWS if r in QUARANTINE_REASONS) + 1
    bad_json = q.filter(pl.col("reason") == "malformed_json").row(0, named=True)
    assert bad_json["source_row"] == 1 and bad_json["original"] == '{"messages": ['
    assert bad_json["source_file"].endswith("chat.jsonl")
    utf8 = q.filter(pl.col("reason") == "invalid_utf8").row(0, named=True)
    assert utf8["source_row"] == 2 and "\ufffd" in utf8["original"]
    role = q.filter(pl.col("reason") == "unknown_role").row(0, named=True)
    assert role["field"] == "messages[0].role" and "narrator" in role["message"]
    assert "alternate" in q.filter(pl.col("reason") == "template_error")["message"][0]


def test_duplicates_point_at_the_kept_row(result) -> None:
    samples = pl.read_parquet(result.out / "samples.parquet")
    dups = pl.read_parquet(result.out / "duplicates.parquet")
    assert len(dups) == 1
    kept = samples.filter(pl.col("sample_id") == dups["kept_sample_id"][0]).row(0, named=True)
    assert kept["status"] == "kept" and kept["source_row"] == 0


def test_accounting_adds_up(result) -> None:
    acc = result.manifest["accounting"]
    assert acc["input_rows"] == len(CHAT_ROWS) + 2
    assert acc["input_rows"] == acc["kept"] + acc["quarantined"] + acc["duplicates"] + acc["dropped"]
    assert (acc["kept"], acc["duplicates"], acc["dropped"]) == (2, 1, 1)
    samples = pl.read_parquet(result.out / "samples.parquet")
    assert samples["status"].value_counts().sort("status").rows() == sorted(
        [("kept", 2), ("quarantined", acc["quarantined"]), ("duplicate", 1), ("dropped", 1)])


def test_too_much_quarantine_fails_the_run_and_writes_nothing(tmp_path: Path, prepare: Prepare) -> None:
    write_jsonl(tmp_path / "chat.jsonl", [GOOD, {"conversation": []}, {"conversation": []}])
    with pytest.raises(PrepareError, match=r"2 of 3 rows \(67%\) were quarantined.*missing_field"):
        prepare({"datasets": [{"path": "chat.jsonl", "type": "chat_template"}]})
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))


def test_min_sample_len_drops_short_samples_as_axolotl_does(tmp_path: Path, prepare: Prepare, qwen_dir: Path
                                                            ) -> None:
    """Axolotl's min_sample_len: a sample with fewer tokens is dropped (too_short), one of at least that many is
    kept (Axolotl keeps min_sample_len <= length); counted, and named in samples.parquet with its length."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(qwen_dir))
    tok.chat_template = (Path(__file__).parents[2] / "dataprep" / "templates" / "chatml.jinja").read_text()
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello " * k}]}
            for k in (1, 5, 20, 40)]
    lengths = [len(tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"])
               for r in rows]
    write_jsonl(tmp_path / "chat.jsonl", rows)
    cut = lengths[2]  # the third row is exactly min_sample_len long: kept
    result = prepare({"datasets": [{"path": "chat.jsonl", "type": "chat_template"}], "min_sample_len": cut,
                      "dataset_exact_deduplication": False})
    acc = result.manifest["accounting"]
    assert (acc["kept"], acc["dropped"], acc["input_rows"]) == (2, 2, 4)
    samples = pl.read_parquet(result.out / "samples.parquet").sort("source_row")
    assert samples["reason"].to_list() == ["too_short", "too_short", None, None]
    assert samples["num_tokens"].to_list() == lengths
    unset = prepare({"datasets": [{"path": "chat.jsonl", "type": "chat_template"}]}, out_name="unset")
    assert unset.manifest["accounting"]["kept"] == 4
