"""`decontaminate:`: keep evaluation texts out of training by shared word n-grams.

    decontaminate:
      - path: eval.jsonl      # relative to the config file
        field: question       # a top-level text field, or a list of messages (`messages`: every content)
        ngram: 13             # words (default 13, as in the GPT-3 paper's contamination study)

Texts are normalised the same way on both sides: Unicode NFC, case-folded, every run of punctuation,
symbols and whitespace folded to one space; a word is what lies between. A training sample is `contaminated`
when its `text` (dataprep/sample_columns.py: all its content) shares any run of `ngram` consecutive words
with an eval text. An eval text shorter than `ngram` words has no n-gram: it matches a training sample whose
whole normalised text equals it (and a sample shorter than `ngram` words is compared whole with those). The
first shared n-gram in the sample names the eval file and row (0-based, like source_row) in the quarantine
message: "shares the 13-gram '...' with eval.jsonl row 17". Scripts without spaces between words (Chinese,
Japanese, Thai) are one "word" per run of letters, so they match only on long identical passages.

The index is numpy, not Python objects: each word is hashed from its UTF-8 bytes with a polynomial hash
(vectorised with prefix sums), each n-gram from its words' hashes, both finished with the splitmix64 mixer;
the eval side is one sorted uint64 array (~8 bytes per eval n-gram, 1M eval rows of 50 words: ~300 MB at
most) with the eval row of each hash, and training n-grams are looked up with searchsorted. A false match needs
two different n-grams with the same 64-bit hash: about 1 in 10^5 for 10^9 training n-grams against 10^7 eval
n-grams.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dataprep.formats import RowError, parse
from dataprep.load import InputError, file_format, read_batches
from schemas.config import DatasetConfig, DecontaminateSource

_NON_WORD = re.compile(r"[\W_]+")
_ASCII_NON_WORD = str.maketrans({c: " " for c in map(chr, range(128)) if not c.isalnum()})
_P = np.uint64(0x100000001B3)  # FNV's 64-bit prime: odd, so it has an inverse modulo 2^64
_P_INV = np.uint64(pow(0x100000001B3, -1, 2**64))
_R = np.uint64(0x9E3779B97F4A7C15)  # n-gram combiner over word hashes
_WHOLE = np.uint64(0xD6E8FEB86659FD93)  # marks a whole-text hash (a text shorter than n words)
_BATCH = 1024
_CHUNK_CHARS = 1 << 21


class DecontamError(Exception):
    """An eval file that cannot be used (missing, unreadable, a row without the field): exit 2, one line."""


def normalise(text: str) -> str:
    """NFC, case-folded, punctuation and whitespace runs folded to one space: words joined by single spaces."""
    text = unicodedata.normalize("NFC", text).casefold()
    if text.isascii():  # the same result, 5x faster than the regular expression
        return " ".join(text.translate(_ASCII_NON_WORD).split())
    return _NON_WORD.sub(" ", text).strip()


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads the polynomial hashes' low-entropy bits over all 64."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def word_hashes(normalised: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(hash of every word of every text, in order; words per text). Texts are `normalise`d already."""
    counts = np.array([t.count(" ") + 1 if t else 0 for t in normalised], dtype=np.int64)
    if counts.sum() == 0:
        return np.zeros(0, dtype=np.uint64), counts
    buf = np.frombuffer(" ".join(t for t in normalised if t).encode(), dtype=np.uint8)
    seps = np.flatnonzero(buf == 32)
    starts = np.concatenate(([0], seps + 1))
    ends = np.concatenate((seps, [len(buf)]))
    # H(word) = sum_k (b_k + 1) P^(end-1-k): a prefix sum of (b_k + 1) P^-k, times P^(end-1).
    p_pow, q_pow = _powers(len(buf))
    with np.errstate(over="ignore"):
        prefix = np.concatenate(([np.uint64(0)], np.cumsum((buf.astype(np.uint64) + np.uint64(1)) * q_pow,
                                                           dtype=np.uint64)))
        h = (prefix[ends] - prefix[starts]) * p_pow[ends - 1]
    return _mix(h), counts


_POWERS: list[np.ndarray] = []  # [P^i, P^-i] for i < some length, grown on demand


def _powers(length: int) -> tuple[np.ndarray, np.ndarray]:
    if _POWERS and len(_POWERS[0]) >= length:
        return _POWERS[0][:length], _POWERS[1][:length]
    size = max(length, _CHUNK_CHARS)
    with np.errstate(over="ignore"):
        powers = [np.concatenate(([np.uint64(1)], np.cumprod(np.full(size - 1, base, dtype=np.uint64))))
                  for base in (_P, _P_INV)]
    if size == _CHUNK_CHARS:  # one long text's table is not kept
        _POWERS[:] = powers
    return powers[0][:length], powers[1][:length]


def ngram_hashes(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hashes, text index, first word of the n-gram) of every word n-gram of every text, in text then word
    order; a text shorter than n words (but not empty) gives one whole-text hash at word 0."""
    # In chunks of ~_CHUNK_CHARS of text: the hashing holds ~30 bytes per character of its input.
    out, start, size = [], 0, 0
    for i, t in enumerate(texts):
        size += len(t)
        if size >= _CHUNK_CHARS or i == len(texts) - 1:
            hashes, owner, pos = _ngram_hashes(texts[start:i + 1], n)
            out.append((hashes, owner + start, pos))
            start, size = i + 1, 0
    if not out:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return tuple(np.concatenate(parts) for parts in zip(*out, strict=True))  # type: ignore[return-value]


def _ngram_hashes(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    words, counts = word_hashes([normalise(t) for t in texts])
    owner = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
    first = np.concatenate(([0], np.cumsum(counts)[:-1])) if len(counts) else counts
    position = np.arange(len(words), dtype=np.int64) - np.repeat(first, counts)
    grams = np.zeros(0, dtype=np.uint64)
    gram_owner = gram_pos = np.zeros(0, dtype=np.int64)
    if len(words) >= n:
        with np.errstate(over="ignore"):
            acc = np.zeros(len(words) - n + 1, dtype=np.uint64)
            for i in range(n):
                acc = acc * _R + words[i:len(words) - n + 1 + i]
        inside = owner[:len(acc)] == owner[n - 1:]  # the n words belong to one text
        grams, gram_owner, gram_pos = _mix(acc[inside]), owner[:len(acc)][inside], position[:len(acc)][inside]
    short = np.flatnonzero((counts > 0) & (counts < n))
    if len(short):
        whole = np.empty(len(short), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j, t in enumerate(short.tolist()):
                acc1 = np.uint64(counts[t]) ^ _WHOLE
                for w in words[first[t]:first[t] + counts[t]]:
                    acc1 = acc1 * _R + w
                whole[j] = acc1
        grams = np.concatenate((grams, _mix(whole)))
        gram_owner = np.concatenate((gram_owner, short))
        gram_pos = np.concatenate((gram_pos, np.zeros(len(short), dtype=np.int64)))
        order = np.lexsort((gram_pos, gram_owner))
        grams, gram_owner, gram_pos = grams[order], gram_owner[order], gram_pos[order]
    return grams, gram_owner, gram_pos


@dataclass
class EvalIndex:
    """The eval n-grams of every `decontaminate` entry with the same n: sorted hashes and, per hash, the first
    eval row that has it (entry index into `files`, row)."""

    n: int
    hashes: np.ndarray  # uint64, sorted, unique
    entry: np.ndarray  # int32
    row: np.ndarray  # int64


@dataclass
class Decontamination:
    indexes: list[EvalIndex]  # one per distinct n, in config order
    files: list[str]  # per decontaminate entry: its path as written in the config
    sha256: list[str]
    rows: list[int]  # eval rows read per entry
    ngrams: list[int]  # n per entry

    def manifest(self) -> list[dict[str, Any]]:
        """Per entry: path, sha256, eval rows, n, and distinct n-grams in the index it shares with its n."""
        by_n = {ix.n: len(ix.hashes) for ix in self.indexes}
        return [{"path": f, "sha256": h, "rows": r, "ngram": n, "index_ngrams": by_n[n]}
                for f, h, r, n in zip(self.files, self.sha256, self.rows, self.ngrams, strict=True)]


def eval_path(source: DecontaminateSource, config_dir: Path) -> Path:
    path = Path(source.path)
    return path if path.is_absolute() else config_dir / path


def build_index(sources: list[DecontaminateSource], config_dir: Path) -> Decontamination:
    """Reads every eval file (raising DecontamError naming the file and row of a problem) into the indexes."""
    parts: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    sha, rows = [], []
    for e, source in enumerate(sources):
        path = eval_path(source, config_dir)
        if not path.is_file():
            raise DecontamError(f"decontaminate[{e}]: eval file {path} not found; fix `path` (relative to the "
                                "config file)")
        try:
            sha.append(hashlib.sha256(path.read_bytes()).hexdigest())
        except OSError as err:
            raise DecontamError(f"decontaminate[{e}]: eval file {path} cannot be read ({err.strerror}); make it "
                                "readable (chmod a+r)") from None
        count = 0
        for rownums, texts in _eval_texts(path, source.field, e):
            hashes, owner, _ = ngram_hashes(texts, source.ngram)
            parts.setdefault(source.ngram, []).append(
                (hashes, np.full(len(hashes), e, dtype=np.int32), rownums[owner]))
            count += len(texts)
        rows.append(count)
    indexes = []
    for n in dict.fromkeys(s.ngram for s in sources):
        hashes = np.concatenate([p[0] for p in parts.get(n, [])] or [np.zeros(0, np.uint64)])
        entry = np.concatenate([p[1] for p in parts.get(n, [])] or [np.zeros(0, np.int32)])
        row = np.concatenate([p[2] for p in parts.get(n, [])] or [np.zeros(0, np.int64)])
        # Stable: of the eval rows sharing an n-gram, the first (file order, then row) is the one named.
        order = np.argsort(hashes, kind="stable")
        hashes, entry, row = hashes[order], entry[order], row[order]
        keep = np.concatenate(([True], hashes[1:] != hashes[:-1])) if len(hashes) else np.zeros(0, bool)
        indexes.append(EvalIndex(n, hashes[keep], entry[keep], row[keep]))
    return Decontamination(indexes, [s.path for s in sources], sha, rows, [s.ngram for s in sources])


def _eval_texts(path: Path, field: str, e: int) -> Iterable[tuple[np.ndarray, list[str]]]:
    try:
        fmt = file_format(path, DatasetConfig(path=str(path)))
        for batch in read_batches(path, fmt, _BATCH):
            texts = []
            for raw in batch:
                where = f"decontaminate[{e}]: {path} row {raw.source_row}"
                try:
                    record = parse(raw.payload)
                except RowError as err:
                    raise DecontamError(f"{where}: {err.message}; fix or remove the row") from None
                texts.append(eval_text(record, field, where))
            yield np.array([raw.source_row for raw in batch], dtype=np.int64), texts
    except InputError as err:
        raise DecontamError(f"decontaminate[{e}]: {err}") from None


def eval_text(record: dict[str, Any], field: str, where: str) -> str:
    """The text of one eval row: a string field, or every message's content (`content`, ShareGPT's `value`,
    or text parts) of a list of messages, joined with newlines."""
    if field not in record:
        raise DecontamError(f"{where}: no field '{field}' (the row has {', '.join(map(str, record)) or 'none'}); "
                            "set `field` to the eval text's field")
    value = record[field]
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for m in value:
            content = m.get("content", m.get("value")) if isinstance(m, dict) else m
            if isinstance(content, list):  # OpenAI content parts
                content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
            if isinstance(content, str):
                texts.append(content)
        return "\n".join(texts)
    raise DecontamError(f"{where}: '{field}' is a {type(value).__name__}; `field` must name text or a list of "
                        "messages")


@dataclass
class Contaminated:
    """Training samples that share an n-gram with an eval text, in input order."""

    index: np.ndarray  # int64: positions in the texts given to `find_contaminated`
    entry: np.ndarray  # int32: decontaminate entry of the matching eval row
    eval_row: np.ndarray  # int64
    messages: list[str]


def find_contaminated(texts: list[str], dec: Decontamination) -> Contaminated:
    """The texts that share an n-gram (or, shorter than n words, their whole text) with an eval row. With
    several n, the first in config order that matches names the eval row."""
    found: dict[int, tuple[int, int, str]] = {}
    for ix in dec.indexes:
        if len(ix.hashes) == 0:
            continue
        todo = [i for i in range(len(texts)) if i not in found]
        hashes, owner, pos = ngram_hashes([texts[i] for i in todo], ix.n)
        at = np.minimum(np.searchsorted(ix.hashes, hashes), len(ix.hashes) - 1)
        hit = np.flatnonzero(ix.hashes[at] == hashes)
        # ngram_hashes lists a text's n-grams in word order: its first hit is its first shared n-gram.
        owners, first = np.unique(owner[hit], return_index=True)
        for o, h in zip(owners.tolist(), hit[first].tolist(), strict=True):
            words = normalise(texts[todo[o]]).split(" ")
            shown = " ".join(words[pos[h]:pos[h] + ix.n])
            e, row = int(ix.entry[at[h]]), int(ix.row[at[h]])
            what = f"the {ix.n}-gram '{shown}'" if len(words) >= ix.n else f"its whole text '{shown}'"
            found[todo[o]] = (e, row, f"shares {what} with {dec.files[e]} row {row}")
    order = sorted(found)
    return Contaminated(np.array(order, dtype=np.int64), np.array([found[i][0] for i in order], dtype=np.int32),
                        np.array([found[i][1] for i in order], dtype=np.int64), [found[i][2] for i in order])
