"""`emostream bench NAME [args]`: run one of the benchmarks in `benchmarks/` (each prints JSON).

The benchmarks live beside the package in a source checkout (`benchmarks/latency.py`,
`engines.py`, `baseline_lr.py`, `ablations.py`); this command finds and runs them.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def available() -> list[str]:
    return sorted(p.stem for p in BENCHMARKS.glob("*.py") if not p.stem.startswith("_")) if BENCHMARKS.is_dir() else []


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    names = available()
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(f"usage: emostream bench {{{','.join(names) or 'no benchmarks found'}}} [args]\n")
        return 0
    name, rest = args[0], args[1:]
    if name not in names:
        sys.stderr.write(f"emostream bench: unknown benchmark {name!r}; available: {', '.join(names) or 'none'} "
                         f"(they live in {BENCHMARKS}, a source checkout)\n")
        return 2
    saved = sys.argv
    sys.argv = [str(BENCHMARKS / f"{name}.py"), *rest]
    try:
        runpy.run_path(str(BENCHMARKS / f"{name}.py"), run_name="__main__")
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        sys.argv = saved
    return 0
