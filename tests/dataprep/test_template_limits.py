"""Chat templates run with a wall-clock limit and a size limit (dataprep/sandbox.py): endless nested loops and
`'x' * 10**10` in a template, including one inside a tokenizer folder's tokenizer_config.json, are a config
error at the probe (exit 2, naming the template and the fix); a row that trips a limit is quarantined with
template_timeout / template_too_large and the run goes on. Normal templates render as before (the golden
tests compare every library template with transformers).

    .venv/bin/python -m pytest tests/dataprep/test_template_limits.py -v
"""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from dataprep import sandbox
from dataprep.formats import RowError
from dataprep.render import ChatRenderer, compile_template
from schemas.reasons import Reason, Status
from tests.conftest import Prepare, process_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
ENDLESS = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
PRECOMPUTED_LOOPS = ("{% set r = range(100000) %}{% for a in r %}{% for b in r %}{% for c in r %}"
                     "{% endfor %}{% endfor %}{% endfor %}")
HUGE = "{{ 'x' * 10**10 }}"
CHATML_TAIL = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture
def quick_limit(monkeypatch: pytest.MonkeyPatch) -> float:
    """A 0.5 s render limit instead of 5 s, so that timeouts are fast to test (the mechanism is the same)."""
    monkeypatch.setattr(sandbox, "RENDER_SECONDS", 0.5)
    return 0.5


def _render(source: str) -> str:
    template = compile_template(source, datetime.date(2026, 1, 1))
    renderer = ChatRenderer(template, {}, ["<|im_start|>", "<|im_end|>"], "turn", False)
    return renderer.render_text([{"role": "user", "content": "hi"}], False)


@pytest.mark.parametrize("source", [ENDLESS, PRECOMPUTED_LOOPS,
                                    "{% macro f(n) %}{% for i in range(99999) %}{{ f(n) if n > 99 else '' }}"
                                    "{% endfor %}{% endmacro %}{{ f(1) }}{{ f(2) }}" + ENDLESS])
def test_endless_loops_time_out(quick_limit: float, source: str) -> None:
    start = time.monotonic()
    with pytest.raises(RowError) as e:
        _render(source)
    assert e.value.reason is Reason.template_timeout
    assert "ran for more than 0.5s" in e.value.message
    assert time.monotonic() - start < 5 * quick_limit


@pytest.mark.parametrize("source", [
    HUGE,
    "{{ 'x' * 10000000000 }}",  # a literal: constant folding must not allocate it at compile time either
    "{{ ['x'] * 10**10 }}",
    "{{ 'x'|center(10**10) }}",
    "{{ 'x'|indent(10**10) }}",
    "{{ 'x'.ljust(10**10) }}",
    "{{ 'x'.zfill(10**10) }}",
    "{{ '%10000000000s' % 'x' }}",
    "{{ '%10000000000s'|format('x') }}",
    "{{ '{:>10000000000}'.format('x') }}",
    "{{ '{:>{w}}'.format('x', w=10**10) }}",
    "{{ '%*s' % (10**10, 'x') }}",
    "{{ 2 ** 10000000000 }}",  # jinja's ** is left-associative: 2 ** 10**10 would be (2**10)**10
    "{{ messages|tojson(indent=10**10) }}",
    "{{ lipsum(n=10**9) }}",
    "{{ (['y' * 100000] * 1000)|join }}",
    "{{ ('y' * 100000).join(['a'] * 1000) }}",
    "{{ ('x' * 1000).replace('', 'y' * 10000) }}",
    "{{ ('x' * 1000)|replace('x', 'y' * 10000) }}",
    # doubling: each step is small, the 30th is a gigabyte
    "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{% set ns = namespace(l=['x' * 1000]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
    "{% set a = 'xxxxxxxxxxxxxxxx' %}" + "{% set a = a ~ a %}" * 40 + "{{ a }}",
    "{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}",  # each piece is fine, the output is not
])
def test_huge_values_are_refused_before_they_are_built(source: str) -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(RowError) as e:
        _render(source)
    assert e.value.reason is Reason.template_too_large, e.value.message
    assert "characters allowed for this conversation" in e.value.message
    # ru_maxrss is in KiB on Linux: the peak grew by less than 200 MB (10**10 characters would be 10 GB).
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000


@pytest.mark.parametrize("source", [
    "{% for m in messages %}{{ m.content * 3 }}{{ loop.length }}{{ loop.last }}{% endfor %}",
    "{{ ('a' * 1000) ~ 'b' }}{{ '%5s|%-3d' % ('x', 7) }}{{ '{:>6}'.format('y') }}{{ ['p', 'q']|join(', ') }}",
    "{% for k, v in {'a': 1}.items() %}{{ k }}={{ v }}{% else %}none{% endfor %}"
    "{% for x in [] %}{% else %}E{% endfor %}",
    "{% for x in messages recursive %}{{ x.role }}{% endfor %}{{ range(3)|list|length }}{{ 2 ** 10 }}",
    # big numbers that are values, not sizes (a timestamp): no false alarm
    "{{ '%d' % 1700000000 }} {{ '{}'.format(1700000000) }} {{ '%d'|format(1700000000) }} {{ 1700000000 * 2 }}",
    "{{ 'abc'.find('b', 0, 10**12) }} {{ 'x'|truncate(10**9) }} {{ 'a b'|wordwrap(10**9) }}",
])
def test_ordinary_constructs_still_work(source: str) -> None:
    plain = jinja_render(source)
    assert _render(source) == plain


def jinja_render(source: str) -> str:
    """The same template in transformers' plain sandbox (no limits), the reference."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(source).render(messages=[{"role": "user", "content": "hi"}], add_generation_prompt=False)


def test_rows_that_trip_a_limit_are_quarantined(quick_limit: float, qwen_dir: Path) -> None:
    """The limits depend on the row: only the rows that trip them are quarantined, with their reason."""
    template = ("{% if 'LOOP' in messages[-1].content %}" + ENDLESS + "{% endif %}"
                "{% if 'HUGE' in messages[-1].content %}" + HUGE + "{% endif %}" + CHATML_TAIL)
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}]}
            for answer in ("fine", "LOOP", "HUGE", "fine too")]
    results = process_rows(qwen_dir, {"type": "chat_template"}, rows, chat_template="jinja",
                           chat_template_jinja=template)
    assert [r.status for r in results] == [Status.kept, Status.quarantined, Status.quarantined, Status.kept]
    assert [r.reason for r in results[1:3]] == [Reason.template_timeout, Reason.template_too_large]
    assert "ran for more than 0.5s" in results[1].message and '"LOOP"' in results[1].original


def test_quarantined_rows_are_counted_through_the_pipeline(quick_limit: float, tmp_path: Path,
                                                          prepare: Prepare) -> None:
    template = "{% if 'HUGE' in messages[-1].content %}" + HUGE + "{% endif %}" + CHATML_TAIL
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(9)]
    rows.append({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "HUGE"}]})
    write_jsonl(tmp_path / "chat.jsonl", rows)
    result = prepare({"chat_template": "jinja", "chat_template_jinja": template,
                      "datasets": [{"path": "chat.jsonl", "type": "chat_template"}]})
    acc = result.manifest["accounting"]
    assert (acc["input_rows"], acc["kept"], acc["quarantined"], acc["balanced"]) == (10, 9, 1, True)
    q = pl.read_parquet(result.out / "quarantine.parquet").row(0, named=True)
    assert (q["reason"], q["source_row"]) == ("template_too_large", 9)


def _hostile_tokenizer(tmp_path: Path, qwen_dir: Path, template: str) -> Path:
    tok = tmp_path / "hostile-tokenizer"
    shutil.copytree(qwen_dir, tok)
    config = json.loads((tok / "tokenizer_config.json").read_text())
    config["chat_template"] = template
    (tok / "tokenizer_config.json").write_text(json.dumps(config))
    for extra in ("chat_template.jinja", "chat_template.json"):  # transformers >= 4.43 saves it here instead
        (tok / extra).unlink(missing_ok=True)
    return tok


@pytest.mark.parametrize(("template", "says"), [(ENDLESS, "ran for more than 5s"),
                                                (HUGE, "builds a string of 10,000,000,000 characters")])
def test_hostile_tokenizer_template_is_a_config_error(tmp_path: Path, qwen_dir: Path, template: str,
                                                      says: str) -> None:
    """A downloaded tokenizer_config.json is code too: the probe stops the run before any row, exit 2."""
    tok = _hostile_tokenizer(tmp_path, qwen_dir, template + CHATML_TAIL)
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "q"},
                                                        {"role": "assistant", "content": "a"}]}])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"tokenizer_config: {tok}\nchat_template: tokenizer_default\n"
                   "datasets:\n  - path: chat.jsonl\n    type: chat_template\n")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "dataprep.cli", "prepare", str(cfg), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert proc.returncode == 2, proc.stderr
    [error] = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "the chat template 'tokenizer_default' cannot render a 5-message probe conversation" in error
    assert says in error and "tokenizer_config.json" in error and "set chat_template to a library template" in error
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()
    # One time limit, not one per render: the header probe's failure is reported, not retried.
    assert time.monotonic() - start < 60


def test_template_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "q"}]}])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tokenizer_config: fixture:qwen2.5\nchat_template: jinja\n"
                   "chat_template_jinja: '{% for m in messages %}{{ m.content }}'\n"
                   "datasets:\n  - path: chat.jsonl\n    type: chat_template\n")
    proc = subprocess.run([sys.executable, "-m", "dataprep.cli", "prepare", str(cfg), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: datasets[0] (chat.jsonl): the chat template 'jinja' is not valid Jinja "
                                  "(template line 1: Unexpected end of template.")
    assert "Traceback" not in proc.stderr
