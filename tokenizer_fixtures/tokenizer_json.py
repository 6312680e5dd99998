"""A HF tokenizer.json built straight from a vocab GGUF's fields, per style: byte-level BPE (GPT-2 style:
Qwen, Llama 3, ...), SentencePiece BPE (Llama 2, Phi-3) and Gemma 4's SentencePiece-style BPE with merges.
Not transformers' GGUF loader: it misses Llama 3's `ignore_merges`, Qwen2's NFC normaliser and Llama 2's
leading-space handling (see /work/shared/FIXTURES.md).
"""

from __future__ import annotations

from typing import Any

from tokenizer_fixtures.families import Family

# llama.cpp token types (llama.h: enum llama_token_type).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED = 1, 2, 3, 4


def _added(id_: int, content: str, special: bool, rstrip: bool = False) -> dict[str, Any]:
    return {
        "id": id_,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": rstrip,
        "normalized": False,
        "special": special,
    }


def _is_filler(token: str, id_: int) -> bool:
    # llama.cpp's converter pads the vocab up to the embedding size with "[PAD<id>]"; they are not tokens
    # of the real tokenizer (HF's len(tokenizer) stops before them).
    return token == f"[PAD{id_}]"


def _split_merge(merge: str) -> list[str]:
    # llama.cpp splits at the first space after position 0 (llama-vocab.cpp, load: `word.find(' ', 1)`).
    cut = merge.find(" ", 1)
    assert cut > 0, f"merge {merge!r} has no separator"
    return [merge[:cut], merge[cut + 1 :]]


def _bpe_model(
    vocab: dict[str, int],
    merges: list[list[str]],
    *,
    ignore_merges: bool,
    byte_fallback: bool,
    unk: str | None,
) -> dict[str, Any]:
    return {
        "type": "BPE",
        "dropout": None,
        "unk_token": unk,
        "continuing_subword_prefix": None,
        "end_of_word_suffix": None,
        "fuse_unk": byte_fallback,  # SentencePiece fuses runs of unknown pieces; byte-level never has any
        "byte_fallback": byte_fallback,
        "ignore_merges": ignore_merges,
        "vocab": vocab,
        "merges": merges,
    }


def _bytelevel_json(fam: Family, meta: dict[str, Any]) -> dict[str, Any]:
    """GPT-2 style byte-level BPE (Qwen2.5/3, Llama 3): split regex, then bytes mapped to printable chars."""
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta["tokenizer.ggml.token_type"]
    vocab: dict[str, int] = {}
    added: list[dict[str, Any]] = []
    for i, (tok, typ) in enumerate(zip(tokens, types, strict=True)):
        if fam.added_from is not None and i >= fam.added_from:
            continue  # replaced by fam.added below
        if _is_filler(tok, i):
            continue
        if typ in (_CONTROL, _USER_DEFINED):
            # HF keeps added tokens out of model.vocab and lists them under "added_tokens" with their id.
            added.append(_added(i, tok, special=typ == _CONTROL))
        else:
            vocab[tok] = i
    if fam.added_from is not None:
        for k, (content, special) in enumerate(fam.added):
            i = fam.added_from + k
            if i < len(tokens) and not (_is_filler(tokens[i], i) or tokens[i] == content):
                raise ValueError(f"{fam.gguf}: id {i} is {tokens[i]!r}, expected a filler or {content!r}")
            added.append(_added(i, content, special))
    merges = [_split_merge(m) for m in meta["tokenizer.ggml.merges"]]
    bytelevel = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    pre = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": fam.regex}, "behavior": "Isolated", "invert": False},
            bytelevel,
        ],
    }
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"} if fam.nfc else None,
        "pre_tokenizer": pre,
        "post_processor": _post_processor(fam, meta, fallback=bytelevel),
        "decoder": bytelevel,
        "model": _bpe_model(vocab, merges, ignore_merges=fam.ignore_merges, byte_fallback=False, unk=None),
    }


def _spm_merges(tokens: list[str], scores: list[float], mergeable: set[int]) -> list[list[str]]:
    """BPE merges for a SentencePiece-BPE vocab, which stores scores instead of merges.

    SentencePiece merges the adjacent pair whose joined piece has the highest score; as HF BPE ranks that
    is: every split of a piece into two vocab pieces, ordered by the joined piece's score (descending),
    ties by the ids of the halves, as transformers' SentencePieceExtractor does. Only normal pieces can be
    produced by merging (control, unknown and byte pieces never are).
    """
    ids = {t: i for i, t in enumerate(tokens) if i in mergeable}
    ranked: list[tuple[float, int, int, int]] = []
    for piece, pid in ids.items():
        for cut in range(1, len(piece)):
            left, right = ids.get(piece[:cut]), ids.get(piece[cut:])
            if left is not None and right is not None:
                ranked.append((-scores[pid], pid, left, right))
    ranked.sort()
    return [[tokens[left], tokens[right]] for _, _, left, right in ranked]


def _spm_json(fam: Family, meta: dict[str, Any]) -> dict[str, Any]:
    """SentencePiece BPE (Llama 2, Phi-3): spaces become U+2581 and a leading one is prepended."""
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta["tokenizer.ggml.token_type"]
    scores: list[float] = meta["tokenizer.ggml.scores"]
    keep = [i for i, t in enumerate(tokens) if not _is_filler(t, i)]
    vocab = {tokens[i]: i for i in keep}  # SentencePiece's model vocab holds every piece, specials included
    normal = {i for i in keep if types[i] == _NORMAL}
    added = []
    for i in keep:
        if types[i] in (_CONTROL, _USER_DEFINED, _UNKNOWN):
            # llama.cpp (llama-vocab.cpp, "phi-3" branch): Phi-3's special tokens strip the whitespace to
            # their right, except <unk>, <s>, <|endoftext|>; that mirrors rstrip in Phi-3's tokenizer.json.
            rstrip = fam.rstrip_specials and tokens[i] not in ("<unk>", "<s>", "<|endoftext|>")
            # USER_DEFINED = an added token the HF tokenizer does not mark special (Phi-3's "</s>").
            added.append(_added(i, tokens[i], special=types[i] != _USER_DEFINED, rstrip=rstrip))
    # The legacy Llama normaliser: prepend U+2581 to every text segment (also after a special token, as
    # llama.cpp's SPM path does with add_space_prefix) and turn spaces into U+2581.
    normalizer = {
        "type": "Sequence",
        "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        ],
    }
    decoder = {
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ],
    }
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": None,
        "post_processor": _post_processor(fam, meta, fallback=None),
        "decoder": decoder,
        "model": _bpe_model(
            vocab, _spm_merges(tokens, scores, normal), ignore_merges=False, byte_fallback=True, unk=fam.unk
        ),
    }


def _gemma4_json(fam: Family, meta: dict[str, Any]) -> dict[str, Any]:
    """Gemma 4: SentencePiece-style BPE with explicit merges, spaces as U+2581, no prefix space."""
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta["tokenizer.ggml.token_type"]
    vocab = {t: i for i, t in enumerate(tokens)}
    added = [
        _added(i, t, special=types[i] == _CONTROL)
        for i, t in enumerate(tokens)
        if types[i] in (_CONTROL, _USER_DEFINED)
    ]
    merges = [_split_merge(m) for m in meta["tokenizer.ggml.merges"]]
    normalizer = {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}
    decoder = {
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
        ],
    }
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": {
            "type": "Split",
            "pattern": {"Regex": r"\n+"},
            "behavior": "Isolated",
            "invert": False,
        },
        "post_processor": _post_processor(fam, meta, fallback=None),
        "decoder": decoder,
        "model": _bpe_model(vocab, merges, ignore_merges=False, byte_fallback=True, unk=fam.unk),
    }


def _post_processor(fam: Family, meta: dict[str, Any], fallback: dict[str, Any] | None) -> dict[str, Any] | None:
    """BOS on `add_special_tokens=True` for families that add one; otherwise the style's default."""
    if not fam.add_bos:
        return fallback
    assert fam.bos is not None, f"{fam.name}: add_bos needs a bos token"
    bos_id = meta["tokenizer.ggml.bos_token_id"]
    assert meta["tokenizer.ggml.tokens"][bos_id] == fam.bos, f"{fam.name}: GGUF bos id {bos_id} is not {fam.bos}"
    bos = {"SpecialToken": {"id": fam.bos, "type_id": 0}}
    return {
        "type": "TemplateProcessing",
        "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, bos, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {fam.bos: {"id": fam.bos, "ids": [bos_id], "tokens": [fam.bos]}},
    }


_BUILDERS = {"bytelevel": _bytelevel_json, "spm": _spm_json, "gemma4": _gemma4_json}


def build_tokenizer_json(fam: Family, meta: dict[str, Any]) -> dict[str, Any]:
    return _BUILDERS[fam.style](fam, meta)
