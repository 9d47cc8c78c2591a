"""``python -m bench NAME`` keeps the other sections of BENCHMARKS.md: a partial run must not erase figures."""

from __future__ import annotations

from bench.__main__ import _header, _merge

OLD = "# Benchmarks\n\nheader\n\n## A\n\nold a\n\n## B\n\nold b\n\n_took 3 s_\n"


def test_a_partial_run_replaces_its_section_and_keeps_the_others():
    merged = _merge(OLD, ["## B\n\nnew b\n", "## C\n\nnew c\n"])
    assert [s.split("\n", 1)[0] for s in merged] == ["## A", "## B", "## C"]
    assert "old a" in merged[0] and "new b" in merged[1] and "old b" not in "".join(merged)


def test_a_partial_run_keeps_the_header_and_its_notes():
    assert _header(OLD) == "# Benchmarks\n\nheader\n\n"
