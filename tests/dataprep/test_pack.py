"""Packing invariants, one test each, on real packed shards of the bundled example; plus best-fit decreasing
on synthetic lengths.

    .venv/bin/python -m pytest tests/dataprep/test_pack.py -v
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow.ipc as ipc
import pytest

from dataprep.pack import choose_validation, one_per_row, pack_best_fit

ROOT = Path(__file__).resolve().parents[2]
SEQ = 512


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory, qwen_dir: Path) -> list[dict]:
    from dataprep.pipeline import run_pipeline
    from dataprep.report import Progress
    from schemas.config import config_from_dict

    cfg = config_from_dict({
        "tokenizer_config": str(qwen_dir), "chat_template": "chatml", "sequence_len": SEQ, "sample_packing": True,
        "datasets": [{"path": str(ROOT / "examples/data/alpaca.jsonl"), "type": "alpaca"},
                     {"path": str(ROOT / "examples/data/chat.jsonl"), "type": "chat_template"}],
    })
    out = tmp_path_factory.mktemp("pack") / "out"
    result = run_pipeline(cfg, ROOT / "examples/demo.yaml", out, progress=Progress(enabled=False))
    return [r for s in result.manifest["shards"] for r in ipc.open_file(out / s["file"]).read_all().to_pylist()]


def test_rows_fit_sequence_len(rows: list[dict]) -> None:
    assert all(0 < len(r["input_ids"]) <= SEQ for r in rows)
    assert all(len(r["input_ids"]) == len(r["labels"]) == len(r["position_ids"]) == r["num_tokens"] for r in rows)


def test_cu_seqlens_start_at_zero_end_at_length_and_increase(rows: list[dict]) -> None:
    for r in rows:
        cu = r["cu_seqlens"]
        assert cu[0] == 0 and cu[-1] == len(r["input_ids"])
        assert all(b > a for a, b in itertools.pairwise(cu))
        assert len(cu) == len(r["sample_ids"]) + 1


def test_positions_restart_at_each_boundary(rows: list[dict]) -> None:
    for r in rows:
        cu = r["cu_seqlens"]
        expected = [p for a, b in itertools.pairwise(cu) for p in range(b - a)]
        assert r["position_ids"] == expected


def test_no_cross_document_targets(rows: list[dict]) -> None:
    # The first token of a sample is never a target: it would be predicted from the previous sample.
    for r in rows:
        assert all(r["labels"][start] == -100 for start in r["cu_seqlens"][:-1])


def test_labels_are_ids_or_ignore(rows: list[dict]) -> None:
    for r in rows:
        assert all(lab in (-100, tok) for lab, tok in zip(r["labels"], r["input_ids"], strict=True))
        assert r["num_trainable"] == sum(lab != -100 for lab in r["labels"])


def test_packing_actually_packs(rows: list[dict]) -> None:
    assert max(len(r["sample_ids"]) for r in rows) > 1
    assert sum(r["num_tokens"] for r in rows) / (len(rows) * SEQ) > 0.9


def test_best_fit_decreasing_is_valid_and_tight() -> None:
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.lognormal(5, 1, 5000).astype(np.int64) + 1, 2048)
    ids = np.arange(len(lengths))
    rows = pack_best_fit(lengths, ids, 2048).lists()
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(lengths[row].sum() <= 2048 for row in rows)
    assert lengths.sum() / (len(rows) * 2048) > 0.99
    assert rows == pack_best_fit(lengths, ids, 2048).lists()  # deterministic


def test_oversized_sample_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        pack_best_fit(np.array([10, 20]), np.array([0, 1]), 15)


def test_unpacked_rows_follow_sample_id_order() -> None:
    assert one_per_row(np.array([5, 2, 9])).lists() == [[1], [0], [2]]


def test_validation_choice_depends_on_seed_and_ids_only() -> None:
    ids = np.arange(1000)
    a = choose_validation(ids, 0.1, seed=1)
    assert a.sum() == 100
    assert np.array_equal(a[::-1], choose_validation(ids[::-1], 0.1, seed=1))  # order does not matter
    assert not np.array_equal(a, choose_validation(ids, 0.1, seed=2))
    assert choose_validation(ids, 5, seed=1).sum() == 5 and choose_validation(ids, 0, seed=1).sum() == 0
