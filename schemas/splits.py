"""Split specs in `datasets`' syntax (ReadInstruction.from_spec): `train`, `test[:20%]`, `train[100:200]`,
`train[10%:20%]`, `train[-50:]`, `train[:10%](pct1_dropremainder)`, parts joined with `+`. Bounds become row
ranges exactly as datasets computes them (`_rel_to_abs_instr`), rounding included.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_SPEC = re.compile(r"^(?P<split>\w+(?:\.\w+)*)(?:\[(?:(?P<from>-?[\d_]+)(?P<from_pct>%)?)?:"
                   r"(?:(?P<to>-?[\d_]+)(?P<to_pct>%)?)?\])?(?:\((?P<rounding>[^)]*)\))?$")


@dataclass(frozen=True, slots=True)
class SplitPart:
    """One `+`-separated part of a split spec, e.g. test[10%:20%]."""

    split: str
    start: int | None
    stop: int | None
    percent: bool
    rounding: str  # closest | pct1_dropremainder

    def bounds(self, n: int) -> tuple[int, int]:
        """[start, stop) of a split of n rows, as datasets' _rel_to_abs_instr computes it."""
        if self.percent:
            to_abs = _pct_closest if self.rounding == "closest" else _pct1_dropremainder
            a = 0 if self.start is None else to_abs(self.start, n)
            b = n if self.stop is None else to_abs(self.stop, n)
        else:
            a = 0 if self.start is None else self.start
            b = n if self.stop is None else self.stop
        a = max(n + a, 0) if a < 0 else a
        b = max(n + b, 0) if b < 0 else b
        return min(a, n), min(b, n)


def _pct_closest(boundary: int, n: int) -> int:
    return round(boundary * n / 100.0)  # round half to even, as datasets does


def _pct1_dropremainder(boundary: int, n: int) -> int:
    if n < 100:
        raise ValueError("pct1_dropremainder rounding on a split with fewer than 100 rows always selects nothing; "
                         "use the default rounding")
    return boundary * math.trunc(n / 100.0)


def parse_split(spec: str) -> list[SplitPart]:
    """datasets' ReadInstruction.from_spec, raising ValueError with the fix."""
    parts = []
    for sub in re.split(r"\s*\+\s*", spec.strip()):
        m = _SPEC.match(sub)
        if not m:
            raise ValueError(f"split '{spec}': '{sub}' is not a split or slice; write e.g. train, test, "
                             "train[:20%], train[100:200] or train[10%:20%]")
        percent = bool(m["from_pct"] or m["to_pct"])
        rounding = m["rounding"]
        if rounding is not None and not percent:
            raise ValueError(f"split '{spec}': a rounding ({rounding}) only applies to percent slices")
        if rounding not in (None, "closest", "pct1_dropremainder"):
            raise ValueError(f"split '{spec}': rounding must be closest or pct1_dropremainder, not '{rounding}'")
        start = int(m["from"]) if m["from"] else None
        stop = int(m["to"]) if m["to"] else None
        if percent and any(b is not None and abs(b) > 100 for b in (start, stop)):
            raise ValueError(f"split '{spec}': percent bounds must be between -100 and 100")
        parts.append(SplitPart(m["split"], start, stop, percent, rounding or "closest"))
    return parts
