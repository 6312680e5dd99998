"""Build real Hugging Face tokenizers offline from the llama-cpp-python sdist, and cache them.

No machine in this project reaches a model hub, but PyPI is reachable. The llama-cpp-python sdist vendors
llama.cpp's `models/` folder: vocab-only GGUF files (`ggml-vocab-<x>.gguf`), llama.cpp's own reference
tokenizations of 46 strings next to each (`.gguf.inp` / `.gguf.out`, produced by the model's real HF tokenizer
with `encode(text, add_special_tokens=False)`), and the official chat templates (`models/templates/*.jinja`).

For each family the builder makes a `tokenizers.Tokenizer` straight from the GGUF fields (tokens, merges or
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

Usage (`make fixtures` runs the first with --all; `python -m dataprep.fetch_tokenizers` and `tessera
fetch-tokenizers` are the same command):

    python -m tokenizer_fixtures                 # qwen2.5 only
    python -m tokenizer_fixtures --all           # every family
    python -m tokenizer_fixtures --family llama3 --family phi3.5

From code: `build.tokenizer_dir("qwen2.5")` returns the cached folder (building it, and downloading the sdist,
if missing); `sdist.template_path("Qwen-Qwen2.5-7B-Instruct")` returns an official template. The runtime
reaches this package only through dataprep/fetch_tokenizers.py, when a config names `fixture:<family>`.

The package sits beside tests/ because it makes test data, not prepared data: nothing in dataprep/ imports it
for a config with a real tokenizer folder, and its one extra dependency (gguf) is the `fixtures` extra.

    families.py        the families: GGUF file, pre-tokenizer, special tokens, template (no gguf import)
    sdist.py           the pinned sdist: download, extraction of models/ and templates/, the cache folder
    gguf_meta.py       GGUF key/value metadata, read fast
    tokenizer_json.py  tokenizer.json from GGUF fields, per style (byte-level BPE, SentencePiece BPE, Gemma 4)
    verify.py          llama.cpp's reference vectors, and the folder through AutoTokenizer
    build.py           one family: build, verify, cache atomically (SOURCE.json last)
    __main__.py        the command line
"""
