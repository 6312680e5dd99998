"""Per-row work, in batches: parse -> format -> length bound -> render -> tokenize -> length check.

Runs in worker processes (`dataset_processes` / --workers); results come back in input order, so the
output does not depend on the number of workers. Every row yields exactly one RowResult: kept (with ids and
labels), quarantined (reason, field, message and the original row) or dropped (too long). Deduplication
needs every earlier row, so it happens afterwards, in the main process.

No row can stop the run: a failure the formats do not name (RowError) is caught per row and quarantined as
`row_error` with the exception's type and message; if the batch's one tokenizer call fails, the batch is run
again row by row so that only the failing row is quarantined.

Memory per row is bounded before the expensive steps: a token covers at most `max_token_chars` characters
(the longest piece in the vocabulary), so a row whose text has more than `text_limit` = sequence_len x that x
TEXT_MARGIN characters cannot fit. With excess_length_strategy: drop it is dropped as too_long before it is
rendered or tokenized (num_tokens null); with truncate its rendered text is cut to text_limit characters first,
which still leaves more than sequence_len tokens. The margin covers normalizers that shorten text (NFC).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dataprep import curate
from dataprep.chat_encoder import ChatEncoder
from dataprep.encode import TokenizerInfo, encode, encode_parts, load_tokenizer
from dataprep.formats import Chat, RowError, Segments, Tokens, parse, to_sample
from dataprep.load import RawRow, Unreadable
from dataprep.near_dedup import Signer
from dataprep.render import Rendered, render_segments
from dataprep.sample_columns import sample_columns
from dataprep.template_encoder import TemplateEncoder
from dataprep.template_encoder import cut as _cut
from schemas.config import Config
from schemas.reasons import Reason, Status
from schemas.shard import IGNORE_INDEX

TEXT_MARGIN = 4
# completion / pretrain rows longer than sequence_len are split into chunks rather than dropped, up to this many
# (Axolotl's completion tokenizes at most sequence_len * 64 tokens of a text: completion.py::load); beyond it,
# excess_length_strategy applies to the row.
MAX_CHUNKS = 64
# ... and their text is bounded at CHUNK_TEXT_FACTOR x the one-sequence character bound, not MAX_CHUNKS x: that
# still holds MAX_CHUNKS sequences of text averaging up to 64 characters a token (real text: 3-5), while a
# 50 MB cell is dropped (or cut) before tokenizing, as for other types, instead of costing gigabytes.
CHUNK_TEXT_FACTOR = 8
MESSAGE_CHARS = 2000  # a row_error message is cut here: exception texts may quote the whole row


@dataclass(slots=True)
class RowResult:
    source_row: int
    status: Status
    reason: Reason | None = None
    field: str | None = None
    message: str | None = None
    original: str | None = None  # only for quarantined rows
    content_hash: str | None = None
    input_ids: np.ndarray | None = None
    labels: np.ndarray | None = None
    num_tokens: int | None = None
    num_trainable: int | None = None
    # completion: [start, end) token ranges of the consecutive chunks a row longer than sequence_len becomes;
    # None: the row is one sample. (pretrain rows are cut by the pipeline, which knows where each row ends.)
    chunks: list[tuple[int, int]] | None = None
    # Extra sample-table columns (name -> value, e.g. a MinHash signature) for the stages: see table.py.
    extra: dict[str, Any] | None = None


class RowProcessor:
    """Turns raw rows of one datasets[] entry into RowResults."""

    def __init__(self, cfg: Config, dataset_index: int, tok: TokenizerInfo, template_text: str | None):
        self.cfg = cfg
        self.ds = cfg.datasets[dataset_index]
        self.tok = tok
        self.chunked = self.ds.type in ("completion", "pretrain")
        self.token_limit = cfg.sequence_len * (MAX_CHUNKS if self.chunked else 1)
        self.text_limit = text_limit(tok, cfg.sequence_len) * (CHUNK_TEXT_FACTOR if self.chunked else 1)
        truncate = cfg.excess_length_strategy == "truncate"
        self.chat = chat_encoder_for(cfg, dataset_index, tok, template_text,
                                     cut_at=self.text_limit if truncate else None)
        # near-dedup: each kept row's MinHash signature, from the text its `fields` select (near_dedup.py)
        self.signer = Signer(cfg, self.ds) if cfg.dataset_near_deduplication is not None else None
        self.columns = curate.wanted(cfg)
        self.fields = curate.filter_fields(cfg) if self.columns else ()

    def process(self, batch: list[RawRow]) -> list[RowResult]:
        """One RowResult per raw row, in order; never raises for a row's sake."""
        try:
            return self._process(batch)
        except Exception:
            return [self._process_one(raw) for raw in batch]

    def _process_one(self, raw: RawRow) -> RowResult:
        try:
            return self._process([raw])[0]
        except Exception as e:
            return _row_error(raw, e)

    def _process(self, batch: list[RawRow]) -> list[RowResult]:
        results: list[RowResult] = []
        pending: list[tuple[RowResult, Rendered]] = []
        texts: list[tuple[RowResult, str]] = []  # near-dedup text of each row that may be kept
        chats: list[tuple[int, RawRow, Chat]] = []  # (index in results, row, chat): encoded together below
        for raw in batch:
            try:
                result = self._prepare(raw, pending, chats, len(results), texts)
            except RowError as e:
                result = RowResult(raw.source_row, Status.quarantined, e.reason, _clean_field(e.field),
                                   _clean(e.message), original=_original(raw.payload))
            except Exception as e:  # any other failure is this row's, not the run's
                result = _row_error(raw, e)
            results.append(result)
        if chats:
            assert self.chat is not None
            for (k, raw, _), out in zip(chats, self.chat.encode([c for _, _, c in chats]), strict=True):
                if isinstance(out, RowError):
                    results[k] = RowResult(raw.source_row, Status.quarantined, out.reason, _clean_field(out.field),
                                           _clean(out.message), original=_original(raw.payload))
                else:
                    results[k].input_ids, results[k].labels = out
        if pending:
            # Templates write BOS themselves; other formats get it from the tokenizer, as `tokenizer(prompt)` does.
            add_bos = self.chat is None and self.tok.adds_bos
            encoded = encode(self.tok.tokenizer, [r for _, r in pending], add_special_tokens=add_bos)
            for (result, _), (ids, labels) in zip(pending, encoded, strict=True):
                result.input_ids, result.labels = ids, labels
        for result, raw in zip(results, batch, strict=True):
            if result.status is Status.kept:
                self._check_length(result, raw)
        if self.signer is not None:
            kept = [(r, text) for r, text in texts if r.status is Status.kept]
            self.signer.sign([r for r, _ in kept], [text for _, text in kept])
        return results

    def _prepare(self, raw: RawRow, pending: list[tuple[RowResult, Rendered]],
                 chats: list[tuple[int, RawRow, Chat]], index: int, texts: list[tuple[RowResult, str]]) -> RowResult:
        """parse -> format -> length bound -> render (queued in `pending` for the batch's tokenizer call; chats
        in `chats`, for the batch's chat encoder call); the near-dedup text goes to `texts`."""
        record = parse(raw.payload)
        sample = to_sample(record, self.ds, self.cfg.train_on_inputs, self.tok.eos_text)
        chars = _text_chars(sample)
        drop = self.cfg.excess_length_strategy != "truncate"  # raise: the run stops on the first too_long row
        if chars > self.text_limit and drop:
            per_token = max_token_chars(self.tok)
            return RowResult(raw.source_row, Status.dropped, Reason.too_long, message=(
                f"{chars:,} characters of text cannot fit in {self._fits} (a token is at "
                f"most {per_token} characters; limit {self.text_limit:,} with a x{TEXT_MARGIN} margin): dropped "
                "before tokenizing"))
        result = RowResult(raw.source_row, Status.kept, content_hash=content_hash(sample))
        if self.signer is not None:
            texts.append((result, self.signer.text(record, sample)))
        if self.columns:  # filters / decontaminate: their columns, and the row for a quarantine record
            result.extra = {**sample_columns(record, sample, self.ds, self.fields), "original": _original(raw.payload)}
        if isinstance(sample, Tokens):
            self._pretokenized(result, sample)
        elif isinstance(sample, Segments) and sample.separate:
            parts = sample.parts if drop else _cut_parts(sample.parts, self.text_limit)
            result.input_ids, result.labels = encode_parts(self.tok.tokenizer, parts)
        elif isinstance(sample, Chat):
            chats.append((index, raw, sample))
        else:
            rendered = render_segments(sample)
            # With drop, the text is within text_limit (plus template text) already; with truncate, only the
            # first sequence_len tokens are kept, and they lie well within the first text_limit characters.
            pending.append((result, rendered if drop else _cut(rendered, self.text_limit)))
        return result

    def _pretokenized(self, result: RowResult, sample: Tokens) -> None:
        vocab = self.tok.vocab_size
        bad = next((t for t in sample.input_ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise RowError(Reason.bad_token_ids, f"input id {bad} is outside the tokenizer's vocabulary "
                           f"(0..{vocab - 1}); was it tokenized with another tokenizer?", "input_ids")
        bad = next((t for t in sample.labels if t != IGNORE_INDEX and not 0 <= t < vocab), None)
        if bad is not None:
            raise RowError(Reason.bad_token_ids, f"label {bad} is neither -100 nor a token id", "labels")
        result.input_ids = np.asarray(sample.input_ids, dtype=np.int32)
        result.labels = np.asarray(sample.labels, dtype=np.int32)
        result.labels[0] = IGNORE_INDEX

    def _check_length(self, result: RowResult, raw: RawRow) -> None:
        assert result.input_ids is not None and result.labels is not None
        n = len(result.input_ids)
        trainable = int(np.count_nonzero(result.labels != IGNORE_INDEX))
        limit = self.token_limit
        if trainable == 0:
            _quarantine(result, raw, Reason.no_trainable_tokens, "no token is trained (all labels are -100); "
                        "check roles_to_train / train_on_eos or the row's training flags")
        elif self.cfg.min_sample_len is not None and n < self.cfg.min_sample_len:
            result.status, result.reason = Status.dropped, Reason.too_short
            result.message = f"{n} tokens < min_sample_len {self.cfg.min_sample_len}"
            result.input_ids = result.labels = None
            result.num_tokens, result.num_trainable = n, trainable
        elif n > limit and self.cfg.excess_length_strategy != "truncate":
            result.status, result.reason = Status.dropped, Reason.too_long
            result.message = f"{n} tokens > {self._fits}"
            result.input_ids = result.labels = None
            result.num_tokens, result.num_trainable = n, trainable
        else:
            if n > limit:
                result.input_ids, result.labels = result.input_ids[:limit], result.labels[:limit]
                result.reason = Reason.truncated
                trainable = int(np.count_nonzero(result.labels != IGNORE_INDEX))
                if trainable == 0:
                    _quarantine(result, raw, Reason.no_trainable_tokens, f"no trained token in the first {limit} "
                                "tokens (excess_length_strategy: truncate); raise sequence_len")
                    return
            result.num_tokens, result.num_trainable = len(result.input_ids), trainable
            step = self.cfg.sequence_len
            if self.ds.type == "completion" and result.num_tokens > step:
                result.chunks = [(a, min(a + step, result.num_tokens)) for a in range(0, result.num_tokens, step)]

    @property
    def _fits(self) -> str:
        if self.chunked:
            return (f"{MAX_CHUNKS} chunks of sequence_len {self.cfg.sequence_len} (the most a {self.ds.type} row is "
                    "split into)")
        return f"sequence_len {self.cfg.sequence_len}"


def text_limit(tok: TokenizerInfo, sequence_len: int) -> int:
    """Characters of text beyond which a sample cannot fit in sequence_len tokens (see the module docstring)."""
    return sequence_len * max_token_chars(tok) * TEXT_MARGIN


_MAX_TOKEN_CHARS: dict[int, int] = {}  # id(TokenizerInfo) -> chars; the entry goes when the tokenizer does


def max_token_chars(tok: TokenizerInfo) -> int:
    """The most characters of text one token can stand for: the longest vocabulary piece in characters (a
    byte-level piece has one character per byte, a SentencePiece piece one per character; a byte-fallback
    piece like <0x41> is longer than the byte it stands for). Computed once per tokenizer (~0.1 s)."""
    cached = _MAX_TOKEN_CHARS.get(id(tok))
    if cached is None:
        vocab = tok.tokenizer.get_vocab(with_added_tokens=True)
        cached = _MAX_TOKEN_CHARS[id(tok)] = max((len(piece) for piece in vocab), default=1)
        weakref.finalize(tok, _MAX_TOKEN_CHARS.pop, id(tok), None)
    return cached


def _text_chars(sample: Chat | Segments | Tokens) -> int:
    if isinstance(sample, Chat):
        chars = sum(len(v) for m in sample.messages for k, v in m.items() if k != "role" and isinstance(v, str))
        if sample.tools is not None or any(len(m) > 2 for m in sample.messages):
            chars += len(json.dumps([sample.messages, sample.tools], ensure_ascii=False, default=str))
        return chars
    if isinstance(sample, Segments):
        return sum(len(text) for text, _ in sample.parts)
    return 0  # already tokens: the length check counts them


def _cut_parts(parts: list[tuple[str, bool]], limit: int) -> list[tuple[str, bool]]:
    """The parts cut to `limit` characters in all (see _cut)."""
    out, left = [], limit
    for text, trained in parts:
        if left <= 0:
            break
        out.append((text[:left], trained))
        left -= len(text)
    return out


def _row_error(raw: RawRow, e: BaseException) -> RowResult:
    message = _clean(f"{type(e).__name__}: {e}")
    if len(message) > MESSAGE_CHARS:
        message = message[:MESSAGE_CHARS] + "…"
    return RowResult(raw.source_row, Status.quarantined, Reason.row_error, None,
                     f"{message} (an unexpected failure on this row; please report it)",
                     original=_original(raw.payload))


def _clean(text: str) -> str:
    """Text that Parquet can store: a lone surrogate becomes its escape (\\ud83d) instead of failing the write."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def _clean_field(field: str | None) -> str | None:
    # A field path names the row's own keys, and a key may hold a lone surrogate ({"\\udc00": 1}).
    return None if field is None else _clean(field)


def _quarantine(result: RowResult, raw: RawRow, reason: Reason, message: str) -> None:
    result.status, result.reason, result.message = Status.quarantined, reason, message
    result.original = _original(raw.payload)
    result.input_ids = result.labels = None


def _original(payload: bytes | dict[str, Any] | Unreadable) -> str:
    if isinstance(payload, Unreadable):
        return payload.original
    if isinstance(payload, bytes):
        return payload.decode("utf-8", errors="replace")
    try:
        return _clean(json.dumps(payload, ensure_ascii=False, default=str))
    except (ValueError, RecursionError) as e:  # a record json cannot write back: say so rather than fail
        return f"(the record cannot be shown as JSON: {type(e).__name__})"


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def content_hash(sample: Chat | Segments | Tokens) -> str:
    """Dedup key: the content with Unicode NFC and whitespace runs folded, so reformatted copies match."""
    if isinstance(sample, Chat):
        # Rows with only role and content keep the key they always had; other fields (reasoning, tool calls,
        # tools) are part of the content too, so rows differing only there are not duplicates.
        key: Any = [[m["role"], _norm(m["content"])] if len(m) == 2 and isinstance(m.get("content"), str)
                    else [m["role"], {k: _norm(v) if isinstance(v, str) else v for k, v in sorted(m.items())}]
                    for m in sample.messages]
        if sample.tools is not None:
            key.append(["tools", sample.tools])
    elif isinstance(sample, Segments):
        key = [[_norm(text), trained] for text, trained in sample.parts if text]
    else:
        key = [sample.input_ids, sample.labels]
    blob = json.dumps(key, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


# ---- worker processes: each builds its own tokenizer and processors once.
_worker: dict[str, Any] = {}


def init_worker(cfg_json: str, config_dir: str, templates: list[str | None]) -> None:
    """`templates`: each dataset's chat template text (None for other formats)."""
    cfg = Config.model_validate_json(cfg_json)
    _worker.update(cfg=cfg, templates=templates, processors={},
                   tok=tokenizer_for(cfg, Path(config_dir)))


def tokenizer_for(cfg: Config, config_dir: Path) -> TokenizerInfo:
    name = cfg.tokenizer_config or cfg.base_model
    assert name is not None
    specials = cfg.special_tokens.model_dump() if cfg.special_tokens else None
    if name.startswith("mistral:"):
        # mistral-common takes about a second to import: only for this route.
        from dataprep.mistral import load_mistral_tokenizer

        return load_mistral_tokenizer(name, config_dir, specials, cfg.tokens)
    return load_tokenizer(name, config_dir, specials, cfg.tokens)


def chat_encoder_for(cfg: Config, dataset_index: int, tok: TokenizerInfo, template_text: str | None,
                     name: str | None = None, cut_at: int | None = None) -> ChatEncoder | None:
    """How datasets[dataset_index]'s conversations are encoded, decided here only: by the tokenizer itself when
    it encodes conversations (mistral-common), else by the dataset's chat template (`name` for messages,
    `cut_at` see TemplateEncoder). None for datasets of other types."""
    ds = cfg.datasets[dataset_index]
    if ds.type != "chat_template":
        return None
    if tok.chat_encoding is not None:
        return tok.chat_encoding.encoder(cfg, ds)
    assert template_text is not None
    return TemplateEncoder(cfg, ds, tok, template_text, name, cut_at)


def process_in_worker(job: tuple[int, list[RawRow]]) -> list[RowResult]:
    dataset_index, batch = job
    processors = _worker["processors"]
    if dataset_index not in processors:
        processors[dataset_index] = RowProcessor(_worker["cfg"], dataset_index, _worker["tok"],
                                                   _worker["templates"][dataset_index])
    return processors[dataset_index].process(batch)
