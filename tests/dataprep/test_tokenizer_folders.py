"""Tokenizer folders as transformers writes them: folders saved by the installed transformers'
`save_pretrained` (chat_template.jinja, additional_chat_templates/, the legacy in-config template, a
processor's chat_template.json, a legacy special_tokens_map.json), a SentencePiece-only Llama 2 folder
(tokenizer.model built offline from llama.cpp's llama-spm vocabulary), what `prepare` saves into
prepared/<name>/tokenizer, and damaged files (a one-line error naming the file, exit 1). AutoTokenizer of the
installed transformers is the reference throughout.

    .venv/bin/python -m pytest tests/dataprep/test_tokenizer_folders.py -v
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from transformers import AutoTokenizer

from dataprep.encode import TokenizerError, load_tokenizer
from tests.conftest import Prepare, write_jsonl
from tokenizer_fixtures.build import reference_vectors
from tokenizer_fixtures.gguf_meta import read_gguf_metadata
from tokenizer_fixtures.sdist import cache_root

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
TOOL_TEMPLATE = "{{ 'tools: ' }}" + TEMPLATE
CHATS = [{"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": f"{i}!"}]}
         for i in range(12)]


def hf_template(hf) -> str | None:
    """The template apply_chat_template uses without tools, or None when there is none."""
    try:
        return hf.get_chat_template()
    except ValueError:
        return None


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, qwen_dir: Path) -> dict[str, Path]:
    """The Qwen2.5 fixture re-saved by transformers in each layout it writes (or wrote) templates in."""
    root = tmp_path_factory.mktemp("saved")
    hf = AutoTokenizer.from_pretrained(str(qwen_dir))
    folders = {}

    def save(name: str, template, **kwargs) -> None:
        hf.chat_template = template
        hf.save_pretrained(str(root / name), **kwargs)
        folders[name] = root / name

    save("jinja", TEMPLATE)  # transformers >= 4.43: chat_template.jinja, none in tokenizer_config.json
    save("none", None)
    save("named", {"default": TEMPLATE, "tool_use": TOOL_TEMPLATE})  # + additional_chat_templates/tool_use.jinja
    save("in_config", TEMPLATE, save_jinja_files=False)  # before 4.43: tokenizer_config.json's chat_template
    save("in_config_list", {"default": TEMPLATE, "tool_use": TOOL_TEMPLATE}, save_jinja_files=False)
    save("only_named", {"tool_use": TOOL_TEMPLATE})  # no default: apply_chat_template without tools fails
    # Both a file and a config entry: AutoTokenizer reads the file.
    save("both", TEMPLATE)
    cfg = json.loads((root / "both/tokenizer_config.json").read_text())
    (root / "both/tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": "{{ 'stale' }}"}))
    # A multimodal processor's legacy chat_template.json: AutoProcessor reads it, AutoTokenizer does not.
    save("processor", None)
    (root / "processor/chat_template.json").write_text(json.dumps({"chat_template": TEMPLATE}))
    return folders


@pytest.mark.parametrize("name", ["jinja", "none", "named", "in_config", "in_config_list", "only_named", "both"])
def test_templates_and_tokens_as_autotokenizer_reads_them(saved: dict[str, Path], name: str) -> None:
    info = load_tokenizer(str(saved[name]), Path("."))
    hf = AutoTokenizer.from_pretrained(str(saved[name]))
    assert info.chat_template == hf_template(hf)
    expected_named = hf.chat_template if isinstance(hf.chat_template, dict) else (
        {"default": hf.chat_template} if hf.chat_template else {})
    assert info.folder is not None and info.folder.templates == expected_named
    assert info.variables.get("eos_token") == hf.eos_token
    assert info.variables.get("pad_token") == hf.pad_token
    text = "Hello <|im_start|>user\n wörld  12345 <|im_end|>"
    assert info.tokenizer.encode(text, add_special_tokens=False).ids == hf.encode(text, add_special_tokens=False)


def test_processor_chat_template_json_is_the_last_resort(saved: dict[str, Path]) -> None:
    assert load_tokenizer(str(saved["processor"]), Path(".")).chat_template == TEMPLATE


def test_legacy_special_tokens_map_overrides_config_without_added_tokens_decoder(tmp_path: Path, qwen_dir: Path
                                                                                 ) -> None:
    folder = tmp_path / "legacy"
    shutil.copytree(qwen_dir, folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.pop("added_tokens_decoder", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    (folder / "special_tokens_map.json").write_text(json.dumps({"eos_token": {"content": "<|endoftext|>"}}))
    hf = AutoTokenizer.from_pretrained(str(folder))
    assert hf.eos_token == "<|endoftext|>"
    assert load_tokenizer(str(folder), Path(".")).variables["eos_token"] == "<|endoftext|>"


def test_tokenizer_default_on_a_save_pretrained_folder(prepare: Prepare, tmp_path: Path,
                                                       saved: dict[str, Path]) -> None:
    """The issue: `chat_template: tokenizer_default` failed on every folder transformers >= 4.43 writes."""
    write_jsonl(tmp_path / "chats.jsonl", CHATS)
    result = prepare({"tokenizer_config": str(saved["named"]), "chat_template": "tokenizer_default",
                      "datasets": [{"path": "chats.jsonl", "type": "chat_template"}]})
    assert result.manifest["accounting"]["kept"] == len(CHATS)
    out = tmp_path / "out/tokenizer"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "additional_chat_templates/tool_use.jinja", "chat_template.jinja", "tokenizer.json", "tokenizer_config.json"]
    assert "chat_template" not in json.loads((out / "tokenizer_config.json").read_text())
    hf = AutoTokenizer.from_pretrained(str(out))
    assert hf.chat_template == {"default": TEMPLATE, "tool_use": TOOL_TEMPLATE}
    assert (out / "tokenizer.json").read_bytes() == (saved["named"] / "tokenizer.json").read_bytes()


def test_saved_folder_carries_the_template_used(prepare: Prepare, tmp_path: Path, saved: dict[str, Path]) -> None:
    write_jsonl(tmp_path / "chats.jsonl", CHATS)
    prepare({"tokenizer_config": str(saved["in_config"]), "chat_template": "chatml",
             "special_tokens": {"pad_token": "<|im_end|>"},
             "datasets": [{"path": "chats.jsonl", "type": "chat_template"}]})
    out = tmp_path / "out/tokenizer"
    hf = AutoTokenizer.from_pretrained(str(out))
    assert hf.chat_template == (ROOT / "dataprep/templates/chatml.jinja").read_text()
    assert hf.pad_token == "<|im_end|>"
    assert "chat_template" not in json.loads((out / "tokenizer_config.json").read_text())


# ---- SentencePiece-only folders


def build_llama2_sentencepiece(folder: Path) -> Path:
    """A Llama 2 folder as Meta shipped it before tokenizer.json existed: tokenizer.model (a SentencePiece BPE
    ModelProto made from llama.cpp's llama-spm vocabulary) + tokenizer_config.json."""
    from sentencepiece import SentencePieceProcessor
    from sentencepiece import sentencepiece_model_pb2 as pb

    vectors = reference_vectors("llama2")  # extracts llama.cpp's models/ into the fixture cache if needed
    meta = read_gguf_metadata(cache_root() / "models" / "ggml-vocab-llama-spm.gguf")
    model = pb.ModelProto()
    for piece, score, kind in zip(meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.scores"],
                                  meta["tokenizer.ggml.token_type"], strict=True):
        model.pieces.add(piece=piece, score=score, type=kind)  # GGUF token types use SentencePiece's numbering
    spec = model.trainer_spec
    spec.model_type, spec.vocab_size, spec.byte_fallback = pb.TrainerSpec.BPE, len(model.pieces), True
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 0, 1, 2, -1
    norm = model.normalizer_spec
    norm.name, norm.add_dummy_prefix, norm.remove_extra_whitespaces, norm.escape_whitespaces = \
        "identity", True, False, True
    folder.mkdir(parents=True)
    (folder / "tokenizer.model").write_bytes(model.SerializeToString())
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "model_max_length": 4096}))
    # The model file is right: SentencePiece itself reproduces llama.cpp's reference tokenizations.
    sp = SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    assert all(sp.encode(text) == ids for text, ids in vectors)
    return folder


@pytest.fixture(scope="module")
def llama2_spm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_llama2_sentencepiece(tmp_path_factory.mktemp("spm") / "llama2")


def test_sentencepiece_only_folder_is_converted_as_transformers_does(llama2_spm: Path) -> None:
    info = load_tokenizer(str(llama2_spm), Path("."))
    hf = AutoTokenizer.from_pretrained(str(llama2_spm))
    assert info.folder is not None and info.folder.converted
    texts = [text for text, _ in reference_vectors("llama2")]
    for text in [*texts, "Hello world", " leading space", "naïve café 日本語"]:
        assert info.tokenizer.encode(text).ids == hf.encode(text), text
    assert info.adds_bos and info.variables["bos_token"] == "<s>"
    assert "tokenizer.model" in info.files


def test_prepare_with_a_sentencepiece_folder(prepare: Prepare, tmp_path: Path, llama2_spm: Path) -> None:
    write_jsonl(tmp_path / "text.jsonl", [{"text": f"Document number {i}."} for i in range(8)])
    result = prepare({"tokenizer_config": str(llama2_spm),
                      "datasets": [{"path": "text.jsonl", "type": "completion"}]})
    assert any("tokenizer.model was converted by transformers" in w for w in result.manifest["warnings"])
    assert "transformers" in result.manifest["tokenizer"]["files"]
    out = tmp_path / "out/tokenizer"
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    hf, saved = AutoTokenizer.from_pretrained(str(llama2_spm)), AutoTokenizer.from_pretrained(str(out))
    assert saved.encode("Document number 3.") == hf.encode("Document number 3.")


# ---- damaged files: one line on stderr, naming the file, exit 1


def damage(kind: str, folder: Path) -> str:
    if kind == "truncated tokenizer.json":
        data = (folder / "tokenizer.json").read_bytes()
        (folder / "tokenizer.json").write_bytes(data[: len(data) // 2])
        return "tokenizer.json"
    if kind == "invalid tokenizer_config.json":
        (folder / "tokenizer_config.json").write_text('{"eos_token": "<|im_end|>",')
        return "tokenizer_config.json"
    if kind == "garbage tokenizer.model":
        (folder / "tokenizer.model").write_bytes(b"\x00\xffnot a sentencepiece model" * 50)
        return "tokenizer.model"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["truncated tokenizer.json", "invalid tokenizer_config.json",
                                  "garbage tokenizer.model"])
def test_damaged_tokenizer_files_are_a_one_line_error(tmp_path: Path, qwen_dir: Path, llama2_spm: Path,
                                                      kind: str) -> None:
    folder = tmp_path / "tok"
    shutil.copytree(llama2_spm if kind.endswith(".model") else qwen_dir, folder)
    file = damage(kind, folder)
    with pytest.raises(TokenizerError, match=file):
        load_tokenizer(str(folder), Path("."))
    write_jsonl(tmp_path / "text.jsonl", [{"text": "x"}])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"tokenizer_config": str(folder), "datasets": [
        {"path": "text.jsonl", "type": "completion"}]}))
    proc = subprocess.run([sys.executable, "-m", "dataprep.cli", "prepare", str(tmp_path / "c.yaml"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(folder / file) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()



@pytest.mark.parametrize("key", ["eos_token", "bos_token"])
def test_a_special_token_that_is_not_in_the_vocabulary_is_an_error(tmp_path: Path, qwen_dir: Path, key: str) -> None:
    # It was tokenized as text: the EOS after every alpaca output became 7 trained pieces, `<`, `|`, `not`, …,
    # and the model would never learn to stop (transformers adds such a token to the vocabulary instead).
    folder = tmp_path / "tok"
    shutil.copytree(qwen_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, key: "<|notatoken|>"}))
    with pytest.raises(TokenizerError, match=rf"tokenizer_config.json: {key} '<\|notatoken\|>' is not a token of "
                                             rf"tokenizer.json, .*set special_tokens: {{{key}: \.\.\.}}"):
        load_tokenizer(str(folder), Path("."))
    # special_tokens in the config adds it, as Axolotl does
    info = load_tokenizer(str(folder), Path("."), special_tokens={key: "<|im_end|>"})
    assert info.variables[key] == "<|im_end|>"
