"""``make bench``: run every ``bench/bench_*.py`` and write BENCHMARKS.md.

Each module provides ``TITLE`` and ``run(quick: bool) -> str`` returning a Markdown section (tables with the
ratios measured side by side in this one run; absolute times on a noisy machine mean little on their own).
``python -m bench NAME...`` runs only the named modules and replaces their sections in the file, keeping the others
and the header (each section says when it ran);
``--quick`` runs small sizes (a smoke test).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", help="bench modules to run (default: all), e.g. instrumentation")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the benchmarks run, measures little")
    parser.add_argument("--out", default=str(HERE.parent / "BENCHMARKS.md"))
    args = parser.parse_args()
    names = args.names or sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    sections = []
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"== {module.TITLE}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        body = module.run(quick=args.quick)
        took = time.perf_counter() - started
        sections.append(f"## {module.TITLE}\n\n{body.strip()}\n\n_took {took:.0f} s; run {_now()} UTC_\n")
        print(body, file=sys.stderr)
    header = (
        "# Benchmarks\n\n"
        f"Written by `make bench` on {_now()} UTC; {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
        f"{' (--quick: sizes too small to judge by)' if args.quick else ''}.\n"
        "Ratios are taken side by side in one run; absolute figures vary with the machine's load.\n\n"
    )
    out = Path(args.out)
    if args.names and out.exists():  # a partial run replaces its own sections, keeps the others and the header
        old = out.read_text()
        header, sections = _header(old), _merge(old, sections)
    out.write_text(header + "\n".join(sections))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _now() -> str:
    return f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}"


def _header(old: str) -> str:
    """The text of ``old`` before its first section: a partial run keeps it (notes on the whole run included)."""
    return old.split("\n## ", 1)[0].rstrip("\n") + "\n\n"


def _merge(old: str, new: list[str]) -> list[str]:
    """The sections of ``old`` (after its header) with those titled as in ``new`` replaced; new titles at the end."""
    parts = old.split("\n## ")[1:]
    kept = ["## " + part.rstrip("\n") + "\n" for part in parts]
    by_title = {section.split("\n", 1)[0]: section for section in new}
    merged = [by_title.pop(section.split("\n", 1)[0], section) for section in kept]
    return merged + list(by_title.values())


if __name__ == "__main__":
    sys.exit(main())
