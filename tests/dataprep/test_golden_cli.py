"""`tessera golden`: passes on the bundled example, fails with a token-level diff when the template is wrong
for the tokenizer or differs from the base tokenizer's own template.

    .venv/bin/python -m pytest tests/dataprep/test_golden_cli.py -v
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dataprep.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "examples/demo.yaml")


def test_bundled_example_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["golden", DEMO, "--samples", "15"]) == 0
    out = capsys.readouterr().out
    assert "golden: 45 samples match the inference path (ids and labels)" in out


def test_wrong_template_fails_with_a_diff(capsys: pytest.CaptureFixture[str]) -> None:
    # A Llama 3.1 template on a Qwen tokenizer: its <|eot_id|> is plain text here, split into pieces.
    code = main(["golden", DEMO, "--samples", "3", "--set", "chat_template=llama3_1",
                 "--set", "datasets.1.train_on_eos=none", "--set", "datasets.2.train_on_eos=none"])
    out = capsys.readouterr().out
    assert code == 1
    assert "mismatch(es); first at examples/data/chat.jsonl:0 against the saved tokenizer + template" in out
    assert "first divergence at token" in out and "'_id'" in out


def test_template_other_than_the_base_tokenizers_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["golden", DEMO, "--samples", "3", "--set", "chat_template=chatml"])
    out = capsys.readouterr().out
    assert code == 1 and "against the base tokenizer's own chat template" in out
    assert "Serve with the tokenizer saved in the prepared directory" in out
    assert main(["golden", DEMO, "--samples", "3", "--set", "chat_template=chatml", "--against", "saved"]) == 0


@pytest.mark.parametrize("n", ["0", "-5"])
def test_no_samples_to_compare_is_a_usage_error(n: str, capsys: pytest.CaptureFixture[str]) -> None:
    # It compared one sample per dataset and reported success.
    with pytest.raises(SystemExit) as e:
        main(["golden", DEMO, "--samples", n])
    assert e.value.code == 2 and "compare at least 1 sample per dataset" in capsys.readouterr().err
