"""Mistral models through the whole pipeline: `tokenizer_config: mistral:<file>` encodes chats (tool calls too) with
mistral-common (the reference vLLM uses), the shards hold exactly its ids, the saved tokenizer loads as
transformers' MistralCommonBackend, and `tessera golden` compares against mistral-common.

    .venv/bin/python -m pytest tests/dataprep/test_mistral_pipeline.py -v
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.ipc as ipc
import pytest

from dataprep.cli import main
from dataprep.formats import Chat
from dataprep.pipeline import PrepareError
from tests.conftest import Prepare, write_jsonl

CHATS = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi  there [INST] </s>"},
                  {"role": "assistant", "content": "Hello!   "}, {"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": "4"}]},
    {"messages": [{"role": "user", "content": "Only a question?"}]},  # finetuning mode needs a final answer
    {"messages": [{"role": "user", "content": "東京?"}, {"role": "assistant", "content": "首都です。\n"}]},
]


TOKENIZERS = ["mistral:tekken_240911.json", "mistral:mistral_instruct_tokenizer_240323.model.v3"]


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_mistral_chats_are_encoded_by_mistral_common(tmp_path: Path, prepare: Prepare, tokenizer: str) -> None:
    write_jsonl(tmp_path / "chat.jsonl", CHATS)
    result = prepare({"tokenizer_config": tokenizer, "quarantine_max_fraction": 0.5,
                      "datasets": [{"path": "chat.jsonl", "type": "chat_template"}]})
    from dataprep.mistral import MistralChatEncoder

    enc = MistralChatEncoder(tokenizer, tmp_path)
    samples = pl.read_parquet(result.out / "samples.parquet").sort("sample_id")
    assert samples["status"].to_list() == ["kept", "quarantined", "kept"]
    for row in samples.filter(pl.col("status") == "kept").iter_rows(named=True):
        shard = ipc.open_file(result.out / row["shard"]).read_all()
        ids = shard.column("input_ids")[row["shard_row"]].as_py()
        labels = shard.column("labels")[row["shard_row"]].as_py()
        a = row["row_offset"]
        messages = CHATS[row["source_row"]]["messages"]
        chat = Chat(messages, [m["role"] == "assistant" for m in messages], [None] * len(messages))
        assert ids[a:a + row["num_tokens"]] == enc.reference_ids(chat)
        trained = [t for t in labels[a:a + row["num_tokens"]] if t != -100]
        assert trained.count(enc.eos_id) == sum(m["role"] == "assistant" for m in messages)
    from transformers.tokenization_mistral_common import MistralCommonBackend

    saved = MistralCommonBackend.from_pretrained(str(result.out / "tokenizer"), mode="finetuning")
    assert saved.apply_chat_template(CHATS[0]["messages"], tokenize=True)["input_ids"] == enc.reference_ids(
        Chat(CHATS[0]["messages"], [False] * 5, [None] * 5))
    assert result.manifest["probes"][0]["end_of_turn"] == ["</s>"]


def test_golden_compares_with_mistral_common(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jsonl(tmp_path / "chat.jsonl", [CHATS[0], CHATS[2]])
    cfg = tmp_path / "m.yaml"
    cfg.write_text(json.dumps({"tokenizer_config": "mistral:tekken_240911.json",
                               "datasets": [{"path": "chat.jsonl", "type": "chat_template"}]}))
    assert main(["golden", str(cfg)]) == 0
    assert "golden: 2 samples match the inference path" in capsys.readouterr().out


def test_non_chat_formats_are_refused_with_a_mistral_tokenizer(tmp_path: Path, prepare: Prepare) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"instruction": "x", "output": "y"}])
    with pytest.raises(PrepareError, match="other formats are not supported with it yet"):
        prepare({"tokenizer_config": "mistral:tekken_240911.json", "datasets": [{"path": "a.jsonl", "type": "alpaca"}]})


def test_tool_calls_through_the_pipeline_and_golden(tmp_path: Path, prepare: Prepare,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Tool-call rows with a SentencePiece v3 tokenizer (it loads faster than tekken): kept with exactly
    mistral-common's ids, the one it cannot encode (content and calls in one message before v7) quarantined with
    the field, and `tessera golden` compares ids and labels of every kept row."""
    from tests.golden.test_mistral_tools import ROWS, from_openai_ids

    shapes = list(ROWS)
    write_jsonl(tmp_path / "tools.jsonl", [ROWS[s] for s in shapes])
    config = {"tokenizer_config": "mistral:mistral_instruct_tokenizer_240323.model.v3", "quarantine_max_fraction": 0.5,
              "sequence_len": 2048,
              "datasets": [{"path": "tools.jsonl", "type": "chat_template"}]}
    result = prepare(config)
    samples = pl.read_parquet(result.out / "samples.parquet").sort("source_row")
    status = dict(zip(shapes, samples["status"].to_list(), strict=True))
    assert status == {s: "quarantined" if s == "content_and_call" else "kept" for s in shapes}
    quarantine = pl.read_parquet(result.out / "quarantine.parquet")
    assert quarantine["field"].to_list() == ["messages[1].content"]
    for row in samples.filter(pl.col("status") == "kept").iter_rows(named=True):
        shard = ipc.open_file(result.out / row["shard"]).read_all()
        ids = shard.column("input_ids")[row["shard_row"]].as_py()
        a = row["row_offset"]
        assert ids[a:a + row["num_tokens"]] == from_openai_ids("v3", ROWS[shapes[row["source_row"]]])
    (tmp_path / "m.yaml").write_text(json.dumps(config))
    assert main(["golden", str(tmp_path / "m.yaml")]) == 0
    assert "golden: 5 samples match the inference path (ids and labels)" in capsys.readouterr().out
