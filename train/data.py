"""The streaming loader: prepared Arrow shards -> micro-batches of torch tensors, zero-copy until the batch.

    open_prepared(dir)            checks the manifest and every shard, memory-maps the shards (pa.memory_map +
                                  ipc.open_file: nothing is read until a row is used)
    check_tokenizer(data, ...)    the model can embed every id, and its tokenizer is the one the shards used
    iterate_batches(data, ...)    (Batch, LoaderState) forever (train) or for `epochs` epochs (eval)

A row of a split is addressed by its global index: shards in manifest order, rows in file order. Each epoch
`e` orders the split's rows by a permutation drawn from (seed, e) (or keeps file order without shuffle) and
deals them in rounds of micro_batch_size * world_size rows: in a full round, rank r takes the r-th slice of
micro_batch_size rows. The last round of an epoch usually holds fewer rows (R); they are split as evenly as
possible (each rank gets R // world_size or one more), so no row is dropped or repeated within an epoch, and
every rank runs the same number of micro-batches (needed for collective ops). When R < world_size the ranks
left without a row get a padding-only micro-batch (1x1, no token counted, nothing trained), which adds nothing
to a token-weighted loss. With world_size=1 that never happens.

Micro-batches are padded to their longest row. Padding has input id PAD_TOKEN_ID, label -100, sample id -1,
and position_ids 0,1,2,... so position-based masking treats it as one more document; cu_seqlens includes it
as a sequence. Token columns are int32 in the shards and become int64 only here, while the batch is built.

Batches are built a chunk of consecutive micro-batches at a time, across epochs too (train/deal.py says which
rows; train/assemble.py builds them: ~256k tokens, one copy per row, a fixed number of numpy/torch calls per
chunk), then yielded one by one; the first iteration of a split also gathers every row's sample ids and run
lengths once (_rows). A chunk starts wherever iteration starts, so a resumed run builds exactly the batches it
would have built. With prefetch=True the next chunk is built on a background thread (train/prefetch.py) while
the consumer takes this one's batches; the position yielded with each batch is still the consumer's. It is off by
default: on an idle CPU it costs more than it hides (bench/RESULTS.md), and a daemon thread still inside torch
when a torchrun worker exits aborted that worker ("terminate called without an active exception").

Worked example, micro_batch_size 2, rows [a a a b b] (samples 7, 8) and [c c c] (sample 9):

    input_ids     a a a b b | c c c 0 0
    labels        as in the shards | as in the shards, -100 -100
    position_ids  0 1 2 0 1 | 0 1 2 0 1
    sample_ids    7 7 7 8 8 | 9 9 9 -1 -1
    cu_seqlens    [0, 3, 5, 8, 10]   (over the flattened 2 x 5 tokens), max_seqlen 3
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import torch

from dataprep.outdir import NotPrepared, open_prepared_dir
from dataprep.shards import ShardPathError, manifest_problem, shard_path
from schemas.shard import FORMAT_VERSION, SHARD_SCHEMA
from train.assemble import CHUNK_TOKENS, PAD_TOKEN_ID, Batch, Chunk, Rows, assemble, ranges
from train.data_checks import samples_problem, unknown_sample
from train.deal import Plan, Span, plan
from train.prefetch import prefetched

__all__ = ["PAD_TOKEN_ID", "Batch", "DataError", "LoaderState", "PreparedData", "batches_per_epoch",
           "check_tokenizer", "iterate_batches", "open_prepared"]

# Files that define a tokenizer's vocabulary; the other tokenizer files (tokenizer_config.json with a chat
# template, special_tokens_map.json) legitimately differ between a base model and the prepared tokenizer/.
VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "tekken.json", "vocab.json", "merges.txt", "vocab.txt",
               "spiece.model", "sentencepiece.bpe.model")
PREFETCH_THREADS = 1
PREPARE_FIX = "run `tessera prepare CONFIG --force` to rebuild it"


class DataError(Exception):
    """A prepared directory that cannot be trained on; the message names the file and the fix."""


class LoaderState(NamedTuple):
    """Immutable; a NamedTuple rather than a frozen dataclass because one is made per micro-batch and a frozen
    dataclass costs ~7x as much to create (object.__setattr__ per field)."""

    epoch: int = 0  # 0-based epoch
    index: int = 0  # micro-batches this rank has already taken in this epoch

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> LoaderState:
        return cls(epoch=int(d["epoch"]), index=int(d["index"]))


START = LoaderState()  # a fresh run's position
_new_state = partial(tuple.__new__, LoaderState)  # LoaderState((epoch, index)) without a Python frame


@dataclass
class _Split:
    chunks: list[Chunk]
    # Per row (not per token), int32 [N, 8]: its chunk; where its tokens, sample ids and cu_seqlens start and
    # end in that chunk's values; its trained tokens. One array, so that a micro-batch gets everything it needs
    # about its rows in one call.
    where: np.ndarray
    lengths: np.ndarray  # [N]
    assembly: Rows | None = None  # built on first use by iterate_batches (_rows)

    @property
    def rows(self) -> int:
        return len(self.lengths)


class PreparedData:
    """An opened prepared directory (open_prepared). The memory maps stay open while this object lives."""

    def __init__(self, dir: Path, manifest: dict[str, Any], dataset_names: list[str], dataset_of: np.ndarray,
                 splits: dict[str, _Split]):
        self.dir = dir
        self.manifest = manifest
        self.dataset_names = dataset_names
        self.dataset_of = dataset_of
        self._splits = splits
        self._max_token_id: int | None = None
        self._lookup: torch.Tensor | None = None  # built on first use by token_datasets

    def num_rows(self, split: str) -> int:
        return self._splits[split].rows if split in self._splits else 0

    def num_tokens(self, split: str) -> int:
        return int(self._splits[split].lengths.sum()) if split in self._splits else 0

    def token_datasets(self, sample_ids: torch.Tensor) -> torch.Tensor:
        """Index into dataset_names of every token of Batch.sample_ids (int64, -1 on padding): what loss per
        dataset groups by."""
        if self._lookup is None:  # sample id -> dataset index, plus a trailing -1 that padding is pointed at
            self._lookup = torch.from_numpy(np.append(self.dataset_of, np.int32(-1)).astype(np.int64))
        return self._lookup[torch.where(sample_ids < 0, len(self.dataset_of), sample_ids)]

    def max_token_id(self) -> int:
        if self._max_token_id is None:
            self._max_token_id = max((int(c.ids.max()) for s in self._splits.values() for c in s.chunks
                                      if len(c.ids)), default=-1)
        return self._max_token_id

    def split(self, name: str) -> _Split:
        if name not in self._splits or not self._splits[name].rows:
            have = ", ".join(f"{k} ({v.rows} rows)" for k, v in self._splits.items()) or "none"
            fix = "set val_set_size > 0 and re-prepare" if name == "val" else "check the datasets and re-prepare"
            raise DataError(f"{self.dir / 'manifest.json'}: split '{name}' has no rows (splits: {have}); {fix}")
        return self._splits[name]


def open_prepared(prepared_dir: Path) -> PreparedData:
    # Resolved once and held (a shared lock on the version folder): if prepare swaps in a new version meanwhile,
    # this run keeps reading the one it opened, and that version is not deleted under it.
    try:
        root = open_prepared_dir(Path(prepared_dir))
    except NotPrepared:
        root = Path(prepared_dir).resolve()  # not complete: _read_manifest says exactly what is wrong and the fix
    manifest = _read_manifest(root)
    chunks: dict[str, list[tuple[Chunk, pa.RecordBatch]]] = {}
    for info in manifest["shards"]:
        chunks.setdefault(info["split"], []).extend(_open_shard(root, info))
    names = [d["path"] for d in manifest["config"]["datasets"]]
    dataset_of = _dataset_of(root, len(names))
    for split in chunks.values():
        for chunk, _ in split:
            if (sample := unknown_sample(dataset_of, chunk.sids)) is not None:
                raise DataError(f"{chunk.path} holds sample {sample}, which {root / 'samples.parquet'} has no kept "
                                f"row for; {PREPARE_FIX}")
    return PreparedData(root, manifest, names, dataset_of, {k: _index(v) for k, v in chunks.items()})


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / "manifest.json"
    if not root.is_dir():
        raise DataError(f"{root}: no prepared directory there; run `tessera prepare CONFIG` first")
    if not path.is_file():
        raise DataError(f"{path} is missing, so {root} is not a complete prepared directory (an interrupted "
                        f"prepare?); {PREPARE_FIX}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is corrupt ({e}); {PREPARE_FIX}") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path} is corrupt (not a JSON object); {PREPARE_FIX}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(f"{path}: format_version {version!r}, but this Tessera reads format_version "
                        f"{FORMAT_VERSION}; {PREPARE_FIX} with this version")
    missing = [k for k in ("shards", "config", "tokenizer", "accounting") if k not in manifest]
    if not missing and (problem := manifest_problem(manifest)) is not None:
        raise DataError(f"{path} is corrupt ({problem}); {PREPARE_FIX}")
    if missing or not manifest["accounting"].get("balanced", False):
        what = f"no {', '.join(missing)}" if missing else "its row accounting does not balance"
        raise DataError(f"{path} is incomplete ({what}); {PREPARE_FIX}")
    return manifest


def _open_shard(root: Path, info: dict[str, Any]) -> list[tuple[Chunk, pa.RecordBatch]]:
    try:
        path = shard_path(root, info["file"])
    except ShardPathError as e:
        raise DataError(str(e)) from None
    if not path.is_file():
        raise DataError(f"{path} is listed in the manifest but missing; {PREPARE_FIX}")
    size = path.stat().st_size
    if "bytes" in info and size != info["bytes"]:
        raise DataError(f"{path} has {size:,} bytes, the manifest says {info['bytes']:,} (replaced or truncated "
                        f"since prepare); {PREPARE_FIX}")
    try:
        source = pa.memory_map(str(path), "r")
        reader = ipc.open_file(source)
        batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        source.seek(0)
        whole = source.read_buffer()  # the whole mapping, zero-copy: what Chunk.tokens views
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path} is not a readable Arrow file ({e}); {PREPARE_FIX}") from None
    version = (reader.schema.metadata or {}).get(b"tessera.format_version", b"?").decode()
    if not reader.schema.equals(SHARD_SCHEMA, check_metadata=False) or version != str(FORMAT_VERSION):
        raise DataError(f"{path}: shard schema or format_version {version} is not the one this Tessera reads "
                        f"({FORMAT_VERSION}); {PREPARE_FIX}")
    chunks = [(_chunk(path, b, whole), b) for b in batches]
    rows = sum(b.num_rows for b in batches)
    tokens = sum(len(c.ids) for c, _ in chunks)
    if rows != info["rows"] or tokens != info["tokens"]:
        raise DataError(f"{path} holds {rows} rows / {tokens} tokens, the manifest says {info['rows']} / "
                        f"{info['tokens']}; {PREPARE_FIX}")
    return chunks


def _values(batch: pa.RecordBatch, name: str) -> np.ndarray:
    col = batch.column(name)
    # .values is the whole child array; the offsets (below) index into it, so a sliced array reads right too.
    return col.values.to_numpy(zero_copy_only=True)


def _offsets(batch: pa.RecordBatch, name: str) -> np.ndarray:
    return batch.column(name).offsets.to_numpy(zero_copy_only=True)


def _chunk(path: Path, b: pa.RecordBatch, whole: pa.Buffer) -> Chunk:
    ids, labels, positions = (_values(b, k) for k in ("input_ids", "labels", "position_ids"))
    return Chunk(path, ids, labels, positions, _tokens(b, whole, ids, labels, positions), _values(b, "cu_seqlens"),
                 _values(b, "sample_ids"))


def _tokens(b: pa.RecordBatch, whole: pa.Buffer, *columns: np.ndarray) -> np.ndarray | None:
    """The three int32 token columns as one [3, tokens] view when they sit at one stride in the file with the
    same list offsets (so a row's slice is the same in all three), else None (three copies per row)."""
    at = [c.__array_interface__["data"][0] for c in columns]
    step = at[1] - at[0]
    same = all(np.array_equal(_offsets(b, "input_ids"), _offsets(b, k)) for k in ("labels", "position_ids"))
    if not (same and len(columns[0]) and step > 0 and step % 4 == 0 and at[2] - at[1] == step
            and whole.address <= at[0] and at[2] + 4 * len(columns[0]) <= whole.address + whole.size):
        return None
    return np.ndarray((3, len(columns[0])), np.int32, buffer=whole, offset=at[0] - whole.address,
                      strides=(step, 4))


def _index(chunks: list[tuple[Chunk, pa.RecordBatch]]) -> _Split:
    parts = []
    for i, (_, b) in enumerate(chunks):
        tok, sid, cu = _offsets(b, "input_ids"), _offsets(b, "sample_ids"), _offsets(b, "cu_seqlens")
        parts.append(np.stack([np.full(b.num_rows, i, np.int32), tok[:-1], tok[1:], sid[:-1], sid[1:], cu[:-1],
                               cu[1:], b.column("num_trainable").to_numpy()], axis=1))
    where = np.concatenate(parts).astype(np.int32) if parts else np.zeros((0, 8), np.int32)
    return _Split([c for c, _ in chunks], where, (where[:, 2] - where[:, 1]).astype(np.int64))


def _dataset_of(root: Path, datasets: int) -> np.ndarray:
    path = root / "samples.parquet"
    try:
        t = pq.read_table(path, columns=["sample_id", "dataset_index", "status"])
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"{path} is missing or unreadable ({e}); {PREPARE_FIX}") from None
    sample_id = t.column("sample_id").to_numpy()
    kept = pc.equal(t.column("status"), "kept").to_numpy(zero_copy_only=False).astype(bool)
    if (problem := samples_problem(sample_id, t.column("dataset_index").to_numpy()[kept], datasets)) is not None:
        raise DataError(f"{path} is corrupt ({problem}); {PREPARE_FIX}")
    out = np.full(int(sample_id.max()) + 1 if len(sample_id) else 0, -1, np.int32)
    out[sample_id[kept]] = t.column("dataset_index").to_numpy()[kept]
    return out


def check_tokenizer(data: PreparedData, vocab_size: int, tokenizer_dir: Path | None) -> None:
    """Refuse a model that cannot embed every id of the shards, or whose tokenizer is not the one they used."""
    largest = data.max_token_id()
    if largest >= vocab_size:
        raise DataError(f"{data.dir}: the shards hold token id {largest}, but the model has only {vocab_size} "
                        f"embedding rows; use the model the data was prepared for, or re-prepare with "
                        f"tokenizer_config set to this model's tokenizer")
    if tokenizer_dir is None:
        return
    tokenizer_dir = Path(tokenizer_dir)
    theirs = {p.name: p for p in sorted(tokenizer_dir.glob("*")) if p.name in VOCAB_FILES and p.is_file()}
    if not theirs:
        return  # the model folder has no tokenizer of its own: nothing to compare
    tok = data.manifest["tokenizer"]
    # The source tokenizer's files, and the copy in prepared/tokenizer/ (a tokenizer changed by special_tokens
    # is re-serialised there); a model trained by Tessera ships the latter.
    known = [tok.get("files") or {}, tok.get("saved") or {}]
    common = [name for name in theirs if any(name in k for k in known)]
    recorded = sorted({n for k in known for n in k if n in VOCAB_FILES})
    if not common:
        raise DataError(f"{tokenizer_dir} has {', '.join(theirs)} but the shards were prepared with "
                        f"{', '.join(recorded) or 'no vocabulary file'} ({tok.get('path')}); set tokenizer_config "
                        f"to {tokenizer_dir} and re-prepare")
    for name in common:
        digest = hashlib.sha256(theirs[name].read_bytes()).hexdigest()
        if all(k.get(name) != digest for k in known if name in k):
            raise DataError(f"{theirs[name]} differs from the {name} the shards were prepared with "
                            f"({tok.get('path')}): the token ids would mean other tokens; set tokenizer_config to "
                            f"{tokenizer_dir} and re-prepare (`tessera prepare CONFIG`)")


def batches_per_epoch(data: PreparedData, split: str, micro_batch_size: int, world_size: int = 1) -> int:
    """Micro-batches per rank per epoch, the same on every rank (see the module docstring)."""
    return math.ceil(data.num_rows(split) / (micro_batch_size * world_size))


def iterate_batches(data: PreparedData, split: str, micro_batch_size: int, *, seed: int, rank: int = 0,
                    world_size: int = 1, start: LoaderState = START, shuffle: bool = True,
                    epochs: int | None = None, prefetch: bool = False) -> Iterator[tuple[Batch, LoaderState]]:
    """Yields (batch, state_after); state_after resumes at the next micro-batch, so a checkpoint that stores
    it resumes exactly. epochs=None cycles forever. prefetch builds the next chunk's arrays on a background
    thread (train/prefetch.py) while this one's batches are consumed; it changes nothing that is yielded."""
    if micro_batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"micro_batch_size {micro_batch_size}, rank {rank}, world_size {world_size}: need "
                         f"micro_batch_size >= 1 and 0 <= rank < world_size")
    rows = data.split(split)
    n = batches_per_epoch(data, split, micro_batch_size, world_size)
    epoch, index = start.epoch, start.index
    if index > n:
        raise DataError(f"loader position {start} is past the end of an epoch of '{split}' in {data.dir} ({n} "
                        f"micro-batches per rank): the checkpoint was saved on other data or another "
                        f"micro_batch_size/world_size; resume with the same ones or start fresh")
    if index == n:
        epoch, index = epoch + 1, 0
    table = _rows(rows)
    # Micro-batches are built a chunk at a time (train/assemble.py); the chunk's size bounds its buffer even if
    # every row were padded to the longest one. A chunk may span epochs, so a small split (the demo's 23 rows)
    # does not pay the per-chunk calls every epoch.
    per_chunk = max(1, CHUNK_TOKENS // (micro_batch_size * max(1, int(rows.lengths.max()))))
    plans = plan(rows.rows, n, per_chunk, micro_batch_size, seed, rank, world_size, shuffle, epoch, index, epochs)

    def build(p: Plan) -> tuple[Iterator[Batch], list[Span]]:  # the heavy part: on the prefetch thread
        picked, counts, spans = p
        return assemble(rows.chunks, table, picked, counts), spans

    for built, spans in prefetched(plans, build, PREFETCH_THREADS) if prefetch else map(build, plans):
        yield from zip(built, _states(spans), strict=True)


def _states(spans: list[Span]) -> Iterator[LoaderState]:
    """The state after each micro-batch of a chunk, made in C as they are yielded (not a chunk's worth at once:
    see train/assemble.py, _views, on the garbage collector): two lists of ints, then one tuple per state."""
    epochs: list[int] = []
    index: list[int] = []
    for epoch, first, last, n in spans:
        epochs += repeat(epoch, last - first)
        index += range(first + 1, last + 1)
        if last == n:
            epochs[-1], index[-1] = epoch + 1, 0
    return map(_new_state, zip(epochs, index, strict=True))


def _rows(split: _Split) -> Rows:
    """What train/assemble.py needs about every row of a split (its samples' ids and lengths from cu_seqlens
    included), gathered once; rows whose sample_ids and cu_seqlens disagree are refused here, before the first
    batch."""
    if split.assembly is not None:
        return split.assembly
    w = split.where.astype(np.int64)
    chunk = w[:, 0]
    cu_base = np.cumsum([0] + [len(c.cu) for c in split.chunks])[chunk]
    sid_base = np.cumsum([0] + [len(c.sids) for c in split.chunks])[chunk]
    cu_start, cu_end = cu_base + w[:, 5], cu_base + w[:, 6]
    start, count = sid_base + w[:, 3], w[:, 4] - w[:, 3]
    cu = np.concatenate([c.cu for c in split.chunks]).astype(np.int64)
    bad = (cu_end - cu_start - 1 != count) | (cu_end <= cu_start)
    if not bad.any():
        bad = (cu[cu_start] != 0) | (cu[cu_end - 1] != split.lengths)
    length = np.zeros(sum(len(c.sids) for c in split.chunks), np.int64)
    if not bad.any():
        length[ranges(start, count)] = np.diff(cu)[ranges(cu_start, count)]
        bad[np.repeat(np.arange(split.rows), count)[length[ranges(start, count)] <= 0]] = True
    if bad.any():
        files = sorted({str(split.chunks[c].path) for c in np.unique(chunk[bad]).tolist()})
        raise DataError(f"{', '.join(files)}: rows whose sample_ids and cu_seqlens disagree; {PREPARE_FIX}")
    table = np.stack([chunk, w[:, 1], w[:, 2], w[:, 7], start, count], axis=1)
    split.assembly = Rows(table, np.concatenate([c.sids for c in split.chunks]).astype(np.int64), length)
    return split.assembly
