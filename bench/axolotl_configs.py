"""How many Axolotl-shaped configs Tessera takes unchanged: each config of a corpus through validation and
`tessera prepare`, reported by key family and by dataset type.

    python bench/axolotl_configs.py                           # tests/schemas/axolotl_corpus (+ rejected/)
    python bench/axolotl_configs.py --corpus DIR --no-prepare # validate only, any folder of Axolotl YAMLs
    python bench/axolotl_configs.py --markdown                # the tables as bench/RESULTS.md has them

"Unchanged" means the file as written: it validates as `tessera prepare` validates it (a trainer key's value that
`tessera train` would reject, such as `optimizer: adamw_bnb_8bit`, is a warning there: counted apart) and `tessera
prepare CONFIG --out TMP` exits 0, run in this process through the CLI's own `main`. A config's families are those
of its top-level keys (schemas/axolotl_keys.py TOP_FAMILIES; a key given empty does not count, since it is unset);
its dataset types are its `datasets[].type` values as written. Keys are counted by what load_config did with them:
supported (a field), renamed (read under Tessera's name), not used (accepted, listed in the run's note), empty
(unset) or an error. Configs under `rejected/` are expected to fail and say so in an `# expect-error:` line; they
are counted like the others.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataprep.cli import main as tessera  # noqa: E402
from schemas.axolotl_compat import family  # noqa: E402
from schemas.config import Config, ConfigError, key_report, load_config  # noqa: E402


@dataclass
class Outcome:
    name: str
    families: set[str]
    types: set[str]
    keys: Counter[str] = field(default_factory=Counter)
    valid: bool = False
    prepared: bool | None = None  # None: not run (invalid, or --no-prepare)
    why: str = ""
    seconds: float = 0.0
    trainer_warnings: list[str] = field(default_factory=list)  # trainer values tessera train would reject

    @property
    def unchanged(self) -> bool:
        return self.valid and self.prepared is not False


def run_one(path: Path, corpus: Path, out: Path | None) -> Outcome:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raw = {}
    raw = raw if isinstance(raw, dict) else {}
    given = {k for k, v in raw.items() if v is not None}
    types = {_type_name(ds.get("type")) for ds in raw.get("datasets") or [] if isinstance(ds, dict)}
    o = Outcome(path.relative_to(corpus).as_posix(), {_family(k) for k in given}, types or {"(none)"})
    o.keys["empty"] = sum(1 for v in raw.values() if v is None)
    warnings: list[str] = []
    try:
        cfg = load_config(path, warnings=warnings, for_prepare=True)
    except ConfigError as e:
        o.why = e.problems[0].split(": ", 1)[-1]
        o.keys["error"] = len(e.problems)
        return o
    o.valid = True
    o.trainer_warnings = [w for w in warnings if "tessera train will stop" in w]
    report = key_report(cfg)
    o.keys["renamed"] = len(report.renamed)
    o.keys["not used"] = len(report.not_used)
    o.keys["supported"] = len([k for k in given if k in Config.model_fields])
    if out is not None:
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            code = tessera(["prepare", str(path), "--out", str(out / o.name.replace("/", "_")), "--force"])
        o.seconds = time.perf_counter() - started
        o.prepared = code == 0
        if code:
            errors = [line for line in err.getvalue().splitlines() if line.startswith("error:")]
            o.why = f"prepare exit {code}: {errors[0] if errors else err.getvalue().strip()[-300:]}"
    return o


def _family(key: str) -> str:
    if (f := family(key)) != "tessera" or key in Config.model_fields:
        return f
    return "unknown key"


def _type_name(value: Any) -> str:
    if isinstance(value, dict):
        return "custom instruct (mapping)"
    return "(pre-tokenized)" if value in (None, "") else str(value)


def table(outcomes: list[Outcome], attr: str, title: str, markdown: bool) -> list[str]:
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        for g in getattr(o, attr):
            groups[g].append(o)
    rows = [(g, len(os), sum(o.unchanged for o in os)) for g, os in sorted(groups.items())]
    if markdown:
        lines = [f"| {title} | configs | pass unchanged |", "|---|---:|---:|"]
        lines += [f"| {g} | {n} | {ok} ({ok / n:.0%}) |" for g, n, ok in rows]
    else:
        lines = [f"{title:<28} {'configs':>8} {'unchanged':>10}"] + [f"{g:<28} {n:>8} {ok:>10}" for g, n, ok in rows]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "tests" / "schemas" / "axolotl_corpus")
    parser.add_argument("--no-prepare", action="store_true", help="validate only")
    parser.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    args = parser.parse_args(argv)
    paths = sorted(args.corpus.rglob("*.y*ml"))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="axolotl-bench-") as tmp:
        outcomes = [run_one(p, args.corpus, None if args.no_prepare else Path(tmp)) for p in paths]
    total = time.perf_counter() - started
    ok = sum(o.unchanged for o in outcomes)
    valid = sum(o.valid for o in outcomes)
    keys = sum((o.keys for o in outcomes), Counter())
    shown = args.corpus.relative_to(ROOT) if args.corpus.is_relative_to(ROOT) else args.corpus
    print(f"{len(outcomes)} configs from {shown}: "
          f"{valid} validate, {ok} pass unchanged ({'validate only' if args.no_prepare else 'validate + prepare'}); "
          f"{total:.0f} s on {platform.machine()} Python {platform.python_version()}")
    print("top-level keys: " + ", ".join(f"{k} {n}" for k, n in sorted(keys.items())))
    warned = [o for o in outcomes if o.trainer_warnings]
    reasons = Counter(w.split(": ", 2)[1].split(" (tessera prepare")[0] for o in warned for w in o.trainer_warnings)
    print(f"{len(warned)} of the {valid} that validate have trainer values tessera train would stop on: "
          + "; ".join(f"{r} ({n})" for r, n in reasons.most_common(6)))
    for title, attr in (("key family", "families"), ("dataset type", "types")):
        print()
        print("\n".join(table(outcomes, attr, title, args.markdown)))
    print()
    for o in outcomes:
        if not o.unchanged:
            print(f"{'- ' if args.markdown else ''}{o.name}: {o.why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
