"""train/data.py, the streaming loader, on real prepared shards (the real Qwen2.5 tokenizer, run_pipeline):
exact tokens against pyarrow's own reading, padding, rank disjointness and coverage, determinism, per-epoch
reshuffle, exact resume from a LoaderState, unpacked data, and every refusal (manifest, shards, tokenizer).

Run: PYTHONPATH=$PWD .venv/bin/python -m pytest tests/train/test_data.py -q
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
import torch

from dataprep.fetch_tokenizers import tokenizer_dir
from dataprep.pipeline import run_pipeline
from dataprep.report import Progress
from schemas.config import config_from_dict
from train.data import (
    PAD_TOKEN_ID,
    Batch,
    DataError,
    LoaderState,
    batches_per_epoch,
    check_tokenizer,
    iterate_batches,
    open_prepared,
)

QWEN_VOCAB = 151936  # Qwen2.5's embedding rows (its tokenizer has 151,665 ids)


def _alpaca(i: int) -> dict[str, str]:
    # Lengths vary with i so that rows differ in length and padding shows up.
    return {"instruction": f"Question {i}: " + "tell me more " * (i % 7), "input": "",
            "output": f"Answer {i}." * (1 + i % 4)}


def _chat(i: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"Chat {i} " + "and so on " * (i % 5)},
                         {"role": "assistant", "content": f"Reply {i}."}]}


def _build(base: Path, packing: bool) -> Path:
    data = base / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "alpaca.jsonl").write_text("".join(json.dumps(_alpaca(i)) + "\n" for i in range(23)))
    (data / "chat.jsonl").write_text("".join(json.dumps(_chat(i)) + "\n" for i in range(14)))
    cfg = config_from_dict({
        "tokenizer_config": str(tokenizer_dir("qwen2.5")), "chat_template": "chatml",
        "datasets": [{"path": str(data / "alpaca.jsonl"), "type": "alpaca"},
                     {"path": str(data / "chat.jsonl"), "type": "chat_template"}],
        "sequence_len": 128, "sample_packing": packing, "val_set_size": 0.2,
    })
    out = base / "prepared"
    run_pipeline(cfg, base / "config.yaml", out, progress=Progress(enabled=False))
    return out


def _arrow_rows(out: Path, split: str) -> list[dict[str, Any]]:
    """Every row of a split in manifest order, as pyarrow itself reads it."""
    manifest = json.loads((out / "manifest.json").read_text())
    return [r for s in manifest["shards"] if s["split"] == split
            for r in ipc.open_file(out / s["file"]).read_all().to_pylist()]


def _rows_of(batch: Batch) -> list[tuple[int, ...]]:
    """Each row of a batch as the tuple of its sample ids (unique per shard row)."""
    return [tuple(dict.fromkeys(x for x in row if x >= 0)) for row in batch.sample_ids.tolist()]


def _epoch(data: Any, split: str, mbs: int, **kw: Any) -> list[Batch]:
    return [b for b, _ in iterate_batches(data, split, mbs, epochs=1, **kw)]


@pytest.mark.parametrize("fixture", ["packed", "unpacked"])
def test_tokens_exactly_as_pyarrow_reads_them(fixture: str, request: pytest.FixtureRequest) -> None:
    out = request.getfixturevalue(fixture)
    data = open_prepared(out)
    for split in ("train", "val"):
        rows = _arrow_rows(out, split)
        assert data.num_rows(split) == len(rows) > 0
        batches = _epoch(data, split, 1, seed=0, shuffle=False)
        assert len(batches) == len(rows)
        for b, row in zip(batches, rows, strict=True):
            n = row["num_tokens"]
            assert b.input_ids.dtype == b.labels.dtype == b.position_ids.dtype == b.sample_ids.dtype == torch.int64
            assert b.cu_seqlens.dtype == torch.int32
            assert b.input_ids.shape == (1, n)
            assert b.input_ids[0].tolist() == row["input_ids"]
            assert b.labels[0].tolist() == row["labels"]
            assert b.position_ids[0].tolist() == row["position_ids"]
            assert b.cu_seqlens.tolist() == row["cu_seqlens"]
            assert b.sample_ids[0].tolist() == np.repeat(row["sample_ids"], np.diff(row["cu_seqlens"])).tolist()
            assert b.max_seqlen == max(np.diff(row["cu_seqlens"]))
            assert b.num_tokens == n and b.num_trainable == row["num_trainable"]
            assert b.num_trainable == int((b.labels != -100).sum())
    if fixture == "unpacked":  # one sample per row
        assert all(len(r["sample_ids"]) == 1 for r in _arrow_rows(out, "train"))
    else:
        assert any(len(r["sample_ids"]) > 1 for r in _arrow_rows(out, "train"))


@pytest.mark.parametrize("fixture", ["packed", "unpacked"])
def test_padding_to_the_longest_row(fixture: str, request: pytest.FixtureRequest) -> None:
    data = open_prepared(request.getfixturevalue(fixture))
    seen_padding = False
    for b in _epoch(data, "train", 3, seed=1):
        t = b.input_ids.shape[1]
        lengths = (b.sample_ids >= 0).sum(1)
        assert t == int(lengths.max()) and b.num_tokens == int(lengths.sum())
        flat_cu = b.cu_seqlens.tolist()
        assert flat_cu[0] == 0 and flat_cu[-1] == b.input_ids.numel()
        assert all(x < y for x, y in itertools.pairwise(flat_cu))
        assert b.max_seqlen == max(np.diff(flat_cu))
        # position_ids restart at 0 exactly at the cu_seqlens boundaries, padding runs included.
        pos = b.position_ids.flatten()
        starts = torch.zeros_like(pos, dtype=torch.bool)
        starts[flat_cu[:-1]] = True
        assert torch.equal(pos == 0, starts)
        for i, n in enumerate(lengths.tolist()):
            if n < t:
                seen_padding = True
                assert (b.labels[i, n:] == -100).all() and (b.sample_ids[i, n:] == -1).all()
                assert (b.input_ids[i, n:] == PAD_TOKEN_ID).all()
                assert b.position_ids[i, n:].tolist() == list(range(t - n))
                assert i * t + n in flat_cu and (i + 1) * t in flat_cu
    assert seen_padding


@pytest.mark.parametrize(("mbs", "world_size"), [(1, 1), (2, 1), (3, 1), (1, 2), (2, 2), (3, 2), (2, 3), (1, 4),
                                                 (4, 4), (1, 7)])
def test_ranks_disjoint_cover_the_split_and_take_the_same_number_of_batches(unpacked: Path, mbs: int,
                                                                            world_size: int) -> None:
    data = open_prepared(unpacked)
    all_rows = {tuple(r["sample_ids"]) for r in _arrow_rows(unpacked, "train")}
    n = batches_per_epoch(data, "train", mbs, world_size)
    for shuffle in (True, False):
        seen: list[tuple[int, ...]] = []
        for rank in range(world_size):
            batches = _epoch(data, "train", mbs, seed=3, rank=rank, world_size=world_size, shuffle=shuffle)
            assert len(batches) == n
            assert all(b.input_ids.shape[0] <= mbs for b in batches)
            seen += [r for b in batches for r in _rows_of(b) if r]
        assert sorted(seen) == sorted(all_rows)  # every row exactly once over all ranks


def test_rank_without_a_row_gets_a_padding_only_batch(unpacked: Path) -> None:
    data = open_prepared(unpacked)
    rows = data.num_rows("train")
    world_size = next(w for w in range(2, rows) if rows % w)  # the last round has fewer rows than ranks
    last = [_epoch(data, "train", 1, seed=0, rank=r, world_size=world_size)[-1] for r in range(world_size)]
    empty = [b for b in last if b.num_tokens == 0]
    assert len(empty) == world_size - rows % world_size
    for b in empty:
        assert b.labels.tolist() == [[-100]] and b.sample_ids.tolist() == [[-1]] and b.num_trainable == 0
        assert b.cu_seqlens.tolist() == [0, 1] and b.max_seqlen == 1


def test_deterministic_per_seed_and_reshuffled_every_epoch(unpacked: Path) -> None:
    data = open_prepared(unpacked)
    n = batches_per_epoch(data, "train", 2)

    def order(seed: int, epochs: int) -> list[tuple[int, ...]]:
        return [r for b, _ in iterate_batches(data, "train", 2, seed=seed, epochs=epochs) for r in _rows_of(b)]

    run = order(5, 3)
    assert run == order(5, 3)
    assert run != order(6, 3)
    per_epoch = len(run) // 3
    epochs = [run[i * per_epoch:(i + 1) * per_epoch] for i in range(3)]
    assert epochs[0] != epochs[1] != epochs[2]
    assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(epochs[2])
    # Cycling forever continues the same sequence past the end of the asked-for epochs.
    forever = iterate_batches(data, "train", 2, seed=5)
    assert [r for _, (b, _) in zip(range(3 * n), forever, strict=False) for r in _rows_of(b)] == run
    # eval order: file order, once.
    assert order_noshuffle(data) == [tuple(r["sample_ids"]) for r in _arrow_rows(data.dir, "val")]


def order_noshuffle(data: Any) -> list[tuple[int, ...]]:
    return [r for b in _epoch(data, "val", 2, seed=9, shuffle=False) for r in _rows_of(b)]


def test_resume_from_a_loader_state_gives_the_same_remaining_batches(packed: Path) -> None:
    data = open_prepared(packed)
    n = batches_per_epoch(data, "train", 1, 2)
    assert n >= 3
    total = 4 * n + 1
    reference = [(b, s) for _, (b, s) in zip(range(total), iterate_batches(data, "train", 1, seed=7, rank=1,
                                                                             world_size=2), strict=False)]
    assert reference[n - 1][1] == LoaderState(1, 0) and reference[n][1] == LoaderState(1, 1)
    for stop in (0, 1, n - 1, n, n + 1, 2 * n + 1, 4 * n):
        # The state after batch `stop - 1` as a checkpoint stores it (through JSON), read by a fresh open.
        saved = json.dumps(reference[stop - 1][1].to_dict()) if stop else json.dumps(LoaderState().to_dict())
        state = LoaderState.from_dict(json.loads(saved))
        resumed = iterate_batches(open_prepared(packed), "train", 1, seed=7, rank=1, world_size=2, start=state)
        got = [x for _, x in zip(range(total - stop), resumed, strict=False)]
        assert len(got) == total - stop
        for (want, want_state), (batch, batch_state) in zip(reference[stop:], got, strict=True):
            assert batch_state == want_state
            for f in ("input_ids", "labels", "position_ids", "sample_ids", "cu_seqlens"):
                assert torch.equal(getattr(batch, f), getattr(want, f))


def test_position_past_an_epoch_is_refused(packed: Path) -> None:
    data = open_prepared(packed)
    n = batches_per_epoch(data, "train", 1)
    with pytest.raises(DataError, match="past the end of an epoch"):
        next(iterate_batches(data, "train", 1, seed=0, start=LoaderState(0, n + 1)))
    # index == n is the start of the next epoch.
    _, state = next(iterate_batches(data, "train", 1, seed=0, start=LoaderState(0, n)))
    assert state == LoaderState(1, 1)


def test_dataset_of_and_token_datasets(packed: Path) -> None:
    data = open_prepared(packed)
    assert data.dataset_names == [str(packed.parent / "data" / f) for f in ("alpaca.jsonl", "chat.jsonl")]
    samples = pq.read_table(packed / "samples.parquet").to_pylist()
    for s in samples:
        assert data.dataset_of[s["sample_id"]] == (s["dataset_index"] if s["status"] == "kept" else -1)
    b = next(iterate_batches(data, "train", 4, seed=0))[0]
    ds = data.token_datasets(b.sample_ids)
    assert torch.equal(ds == -1, b.sample_ids == -1)
    assert set(ds[ds >= 0].tolist()) <= {0, 1}


def test_zero_copy_views_and_symlinks_resolved_once(packed: Path, tmp_path: Path) -> None:
    link = tmp_path / "current"
    link.symlink_to(packed)
    data = open_prepared(link)
    assert data.dir == packed.resolve()
    chunk = data.split("train").chunks[0]
    # Views into the read-only memory map, not copies.
    assert not chunk.ids.flags.owndata and not chunk.ids.flags.writeable
    assert chunk.ids.dtype == np.int32


def test_check_tokenizer(packed: Path, tmp_path: Path) -> None:
    data = open_prepared(packed)
    qwen = tokenizer_dir("qwen2.5")
    check_tokenizer(data, QWEN_VOCAB, qwen)
    check_tokenizer(data, QWEN_VOCAB, packed / "tokenizer")  # the copy prepare saved (what final/ ships)
    check_tokenizer(data, QWEN_VOCAB, None)
    (tmp_path / "no_tokenizer").mkdir()
    (tmp_path / "no_tokenizer" / "config.json").write_text("{}")
    check_tokenizer(data, QWEN_VOCAB, tmp_path / "no_tokenizer")
    with pytest.raises(DataError, match=r"token id \d+, but the model has only 1000 embedding rows"):
        check_tokenizer(data, 1000, None)
    check_tokenizer(data, data.max_token_id() + 1, None)
    changed = tmp_path / "changed"
    shutil.copytree(qwen, changed)
    (changed / "tokenizer.json").write_text((qwen / "tokenizer.json").read_text() + " ")
    with pytest.raises(DataError, match=r"tokenizer\.json differs from the tokenizer\.json the shards"):
        check_tokenizer(data, QWEN_VOCAB, changed)
    with pytest.raises(DataError, match=r"differs|prepared with"):
        check_tokenizer(data, QWEN_VOCAB, tokenizer_dir("llama2"))


def _copy(packed: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(packed, out)
    return out


def _edit_manifest(out: Path, edit: Any) -> None:
    m = json.loads((out / "manifest.json").read_text())
    edit(m)
    (out / "manifest.json").write_text(json.dumps(m))


def _edit_samples(out: Path, edit: Any) -> None:
    pq.write_table(edit(pq.read_table(out / "samples.parquet")), out / "samples.parquet")


@pytest.mark.parametrize(("damage", "message"), [
    (lambda o: (o / "manifest.json").unlink(), r"manifest.json is missing.*tessera prepare CONFIG --force"),
    (lambda o: (o / "manifest.json").write_text('{"format_version": 1, '), r"manifest.json is corrupt"),
    (lambda o: _edit_manifest(o, lambda m: m.update(format_version=99)), r"format_version 99, but this Tessera"),
    (lambda o: _edit_manifest(o, lambda m: m.pop("shards")), r"manifest.json is incomplete \(no shards\)"),
    (lambda o: _edit_manifest(o, lambda m: m["accounting"].update(balanced=False)), r"does not balance"),
    (lambda o: (o / "shards" / "val-00000.arrow").unlink(), r"val-00000.arrow is listed in the manifest but miss"),
    (lambda o: (o / "shards" / "train-00000.arrow").open("ab").write(b"x"), r"train-00000.arrow has [\d,]+ bytes"),
    (lambda o: _edit_manifest(o, lambda m: m["shards"][0].update(rows=m["shards"][0]["rows"] + 1)),
     r"holds \d+ rows / \d+ tokens, the manifest says"),
    (lambda o: (o / "shards" / "train-00000.arrow").write_bytes(b"not arrow"), r"bytes, the manifest says"),
    (lambda o: (o / "samples.parquet").unlink(), r"samples.parquet is missing or unreadable"),
    # A manifest edited into another shape: one line naming the field (these were KeyError/TypeError tracebacks)
    (lambda o: _edit_manifest(o, lambda m: m.update(shards=5)), r"corrupt \('shards' is a int, not a list\)"),
    (lambda o: _edit_manifest(o, lambda m: m["shards"][0].pop("split")), r"shards\[0\]\.split is None, not a str"),
    (lambda o: _edit_manifest(o, lambda m: m["shards"][0].update(rows="3")), r"shards\[0\]\.rows is '3', not a"),
    (lambda o: _edit_manifest(o, lambda m: m["shards"][0].update(bytes="3")), r"shards\[0\]\.bytes is '3', not a"),
    (lambda o: _edit_manifest(o, lambda m: m.update(accounting=[])), r"'accounting' is not an object"),
    (lambda o: _edit_manifest(o, lambda m: m["config"].pop("datasets")), r"config\.datasets is not a list"),
    (lambda o: _edit_manifest(o, lambda m: m["shards"].append(m["shards"][0])), r"is listed twice"),
    (lambda o: _edit_manifest(o, lambda m: m["shards"][0].update(file="../copy/" + m["shards"][0]["file"])),
     r"is not a path inside the directory"),
    # samples.parquet that does not match the shards: an IndexError or a 3 TiB allocation later on
    (lambda o: _edit_samples(o, lambda t: t.set_column(0, "sample_id", pc.add(t["sample_id"], 10**12))),
     r"samples.parquet is corrupt \(sample ids run from"),
    (lambda o: _edit_samples(o, lambda t: t.slice(0, 0)), r"holds sample \d+, which .*samples.parquet has no kept"),
    (lambda o: _edit_samples(o, lambda t: t.set_column(t.schema.get_field_index("dataset_index"), "dataset_index",
                                                       pc.add(t["dataset_index"], 7))), r"dataset_index is \d+, but"),
])
def test_refuses_a_damaged_prepared_dir(packed: Path, tmp_path: Path, damage: Any, message: str) -> None:
    out = _copy(packed, tmp_path)
    damage(out)
    with pytest.raises(DataError, match=message) as e:
        open_prepared(out)
    assert "\n" not in str(e.value)


def test_refuses_an_unreadable_shard_and_a_missing_dir(packed: Path, tmp_path: Path) -> None:
    out = _copy(packed, tmp_path)
    shard = out / "shards" / "train-00000.arrow"
    size = shard.stat().st_size
    shard.write_bytes(b"\0" * size)  # same size, not Arrow
    with pytest.raises(DataError, match="not a readable Arrow file"):
        open_prepared(out)
    with pytest.raises(DataError, match="no prepared directory there"):
        open_prepared(tmp_path / "nothing")
    data = open_prepared(packed)
    with pytest.raises(DataError, match="split 'test' has no rows"):
        next(iterate_batches(data, "test", 1, seed=0))
