"""Template-free dataset types as Axolotl defines them: input_output (each segment tokenized on its own, no
BOS added), completion (texts longer than sequence_len split into consecutive chunks) and pretraining_dataset
(documents concatenated with EOS and cut into sequence_len rows), with their accounting in samples.parquet.

Run: PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_dataset_types.py -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import mistral_common
import polars as pl
import pyarrow as pa
import pytest

from dataprep.fetch_tokenizers import tokenizer_dir
from schemas.reasons import Reason, Status
from schemas.shard import IGNORE_INDEX
from tests.conftest import Prepare, _tokenizer, process_rows, write_jsonl

# docs/dataset-formats/template_free.qmd: the first row of its output.jsonl and the ids `axolotl preprocess
# --debug` prints for it with Mistral-7B-v0.1's tokenizer.
DOCS_ROW = {"segments": [{"label": True, "text": "<s>Hello\n"}, {"label": True, "text": "hi there!. "},
                         {"label": False, "text": "goodbye "}, {"label": True, "text": "farewell</s>"}]}
DOCS_IDS = [1, 22557, 13, 12014, 736, 28808, 28723, 28705, 1179, 17664, 28705, 19111, 5458, 2]
DOCS_MASKED = {8, 9, 10}  # good, bye, ' ' (label false)


@pytest.fixture(scope="module")
def mistral_v01(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Mistral-7B-v0.1's SentencePiece model (mistral-common ships it as tokenizer.model.v1), as a folder that
    transformers converts the way it converts the model's own (legacy: true: no prefix space after <s>)."""
    folder = tmp_path_factory.mktemp("mistral-7b-v0.1")
    shutil.copyfile(Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1", folder / "tokenizer.model")
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "add_bos_token": True, "legacy": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_input_output_gives_the_docs_ids(mistral_v01: Path) -> None:
    [r] = process_rows(mistral_v01, {"type": "input_output"}, [DOCS_ROW])
    assert r.status is Status.kept and r.input_ids is not None and r.labels is not None
    # No BOS of Tessera's own (the tokenizer adds one to plain text): the <s> is the row's.
    assert r.input_ids.tolist() == DOCS_IDS
    # The docs' labels, except the first token: Tessera never makes a sample's first token a target (the shift
    # never uses it; schemas/shard.py).
    want = [IGNORE_INDEX if i in DOCS_MASKED or i == 0 else t for i, t in enumerate(DOCS_IDS)]
    assert r.labels.tolist() == want


def test_input_output_segment_edges_are_token_edges(qwen_dir: Path) -> None:
    """Each segment tokenized alone: the ids are the concatenation of the segments' own ids, even where the
    whole text would tokenize differently across an edge."""
    segments = [("The answer is", False), (" forty-two", True), ("!!", False), ("!!", True)]
    [r] = process_rows(qwen_dir, {"type": "input_output"},
                       [{"segments": [{"text": t, "label": lab} for t, lab in segments]}])
    tok = _tokenizer(str(qwen_dir)).tokenizer
    pieces = [tok.encode(t, add_special_tokens=False).ids for t, _ in segments]
    assert r.input_ids is not None and r.labels is not None
    assert r.input_ids.tolist() == [i for p in pieces for i in p]
    assert r.input_ids.tolist() != tok.encode("".join(t for t, _ in segments), add_special_tokens=False).ids
    want = [i if lab else IGNORE_INDEX for p, (_, lab) in zip(pieces, segments, strict=True) for i in p]
    assert r.labels.tolist() == want


def test_input_output_adds_no_bos_even_where_the_tokenizer_would() -> None:
    llama2 = tokenizer_dir("llama2")  # adds <s> to plain text
    [r] = process_rows(llama2, {"type": "input_output"}, [{"segments": [{"text": "Hi", "label": True},
                                                                        {"text": " there", "label": True}]}])
    tok = _tokenizer(str(llama2))
    assert tok.adds_bos and r.input_ids is not None
    assert tok.tokenizer.token_to_id("<s>") not in r.input_ids.tolist()


def _words(n: int) -> str:
    return " ".join(f"w{i % 97}" for i in range(n))


def _shard_rows(out: Path, split: str = "train") -> list[dict[str, Any]]:
    rows = []
    for path in sorted((out / "shards").glob(f"{split}-*.arrow")):
        with pa.memory_map(str(path)) as source:
            rows += pa.ipc.open_file(source).read_all().to_pylist()
    return rows


def test_completion_longer_than_sequence_len_becomes_consecutive_chunks(tmp_path: Path, prepare: Prepare,
                                                                        qwen_dir: Path) -> None:
    long_text, short_text = _words(40), "a short one"
    write_jsonl(tmp_path / "c.jsonl", [{"text": short_text}, {"text": long_text}])
    result = prepare({"sequence_len": 32, "datasets": [{"path": "c.jsonl", "type": "completion"}]})
    tok = _tokenizer(str(qwen_dir)).tokenizer
    whole = [*tok.encode(long_text).ids, tok.token_to_id("<|im_end|>")]  # Qwen adds no BOS; EOS only at the end
    n = -(-len(whole) // 32)
    assert n >= 3
    samples = pl.read_parquet(result.out / "samples.parquet").sort("sample_id")
    chunks = samples.filter(pl.col("source_row") == 1)
    assert chunks["chunk"].to_list() == list(range(n)) and chunks["status"].to_list() == ["kept"] * n
    assert chunks["sample_id"].to_list() == list(range(1, n + 1))  # consecutive ids after the short row's 0
    assert chunks["num_tokens"].to_list() == [32] * (n - 1) + [len(whole) - 32 * (n - 1)]
    assert samples.filter(pl.col("source_row") == 0)["chunk"].to_list() == [None]
    by_id = {sid: row for row in _shard_rows(result.out) for sid in row["sample_ids"]}
    assert [t for sid in range(1, n + 1) for t in by_id[sid]["input_ids"]] == whole
    for sid in range(1, n + 1):  # every chunk is all trained, but its first token
        labels = by_id[sid]["labels"]
        assert labels[0] == IGNORE_INDEX and labels[1:] == by_id[sid]["input_ids"][1:]
    acc, stats = result.manifest["accounting"], result.manifest["stats"]
    assert (acc["input_rows"], acc["kept"], acc["balanced"]) == (2, 2, True)
    assert (stats["samples"], stats["chunked_rows"]) == (n + 1, 1)


def test_chunks_of_one_row_stay_in_one_split(tmp_path: Path, prepare: Prepare) -> None:
    write_jsonl(tmp_path / "c.jsonl", [{"text": _words(30 + i)} for i in range(12)])
    result = prepare({"sequence_len": 16, "val_set_size": 0.5,
                      "datasets": [{"path": "c.jsonl", "type": "completion"}]})
    samples = pl.read_parquet(result.out / "samples.parquet")
    splits = samples.group_by("source_row").agg(pl.col("split").n_unique().alias("n"), pl.len().alias("chunks"))
    assert splits["n"].max() == 1 and splits["chunks"].min() >= 2
    assert set(samples["split"]) == {"train", "val"}


def test_completion_beyond_64_chunks_follows_excess_length_strategy(qwen_dir: Path) -> None:
    [r] = process_rows(qwen_dir, {"type": "completion"}, [{"text": _words(400)}], sequence_len=8)
    assert r.status is Status.dropped and r.reason is Reason.too_long and "64 chunks of sequence_len 8" in r.message
    [r] = process_rows(qwen_dir, {"type": "completion"}, [{"text": _words(400)}], sequence_len=8,
                       excess_length_strategy="truncate")
    assert r.status is Status.kept and r.reason is Reason.truncated and r.chunks is not None
    assert len(r.chunks) == 64 and r.num_tokens == 512


def test_pretraining_dataset_is_one_stream_cut_into_sequence_len_rows(tmp_path: Path, prepare: Prepare,
                                                                      qwen_dir: Path) -> None:
    docs = [_words(n) for n in (3, 25, 7, 40, 1, 12)]
    write_jsonl(tmp_path / "docs.jsonl", [{"body": d} for d in docs])
    write_jsonl(tmp_path / "sft.jsonl", [{"text": "a supervised row"}])
    result = prepare({"sequence_len": 16, "val_set_size": 1,
                      "datasets": [{"path": "sft.jsonl", "type": "completion"}],
                      "pretraining_dataset": [{"path": "docs.jsonl", "type": "pretrain", "text_column": "body"}]})
    tok = _tokenizer(str(qwen_dir)).tokenizer
    eos = tok.token_to_id("<|im_end|>")
    stream = [t for d in docs for t in [*tok.encode(d).ids, eos]]
    rows = [r for r in _shard_rows(result.out) if r["sample_ids"][0] != 0]  # sample 0: the completion row (val)
    assert [t for r in rows for t in r["input_ids"]] == stream
    assert [r["num_tokens"] for r in rows] == [16] * (len(stream) // 16) + ([len(stream) % 16] * (len(stream) % 16 > 0))
    samples = pl.read_parquet(result.out / "samples.parquet")
    pretrain = samples.filter(pl.col("dataset") == "docs.jsonl")
    assert sorted(set(pretrain["source_row"])) == list(range(len(docs)))  # every document has its rows
    assert set(pretrain["split"]) == {"train"} and set(pretrain["format"]) == {"pretrain"}
    assert samples.filter(pl.col("dataset") == "sft.jsonl")["split"].to_list() == ["val"]
    acc = result.manifest["accounting"]
    assert (acc["input_rows"], acc["kept"], acc["balanced"]) == (7, 7, True)
    assert result.manifest["stats"]["samples"] == len(pretrain) + 1
    assert [d["type"] for d in result.manifest["config"]["datasets"]] == ["completion", "pretrain"]


def test_golden_compares_input_output_and_named_types_with_the_inference_path(
        tmp_path: Path, qwen_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dataprep.cli import main

    write_jsonl(tmp_path / "io.jsonl", [{"segments": [{"text": "Q: two plus two?", "label": False},
                                                      {"text": " A: four.", "label": True}]}])
    write_jsonl(tmp_path / "j.jsonl", [{"question": "Has a red spot.", "category": "SPACE", "answer": "Jupiter"}])
    config = {"tokenizer_config": str(qwen_dir), "datasets": [{"path": "io.jsonl", "type": "input_output"},
                                                              {"path": "j.jsonl", "type": "jeopardy"}]}
    (tmp_path / "c.yaml").write_text(json.dumps(config), encoding="utf-8")
    assert main(["golden", str(tmp_path / "c.yaml"), "--samples", "2"]) == 0
    assert "golden: 2 samples match the inference path (ids and labels)" in capsys.readouterr().out
