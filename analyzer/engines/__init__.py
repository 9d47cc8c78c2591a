"""The engines the SQL steps run on: DuckDB over files (``jitrace analyze FILES``) and ClickHouse where the
OpenTelemetry Collector's exporter stores the spans (``jitrace analyze clickhouse://...`` over HTTP, or
``chdb:///PATH`` in-process).

An engine runs SQL, returns Arrow, and creates a table from Arrow; its ``dialect`` says which form of the steps of
queries/steps.toml it runs (``queries/steps/`` for DuckDB, ``queries/clickhouse/steps/`` for ClickHouse: hand-written
for each engine, held equal by the parity tests). The ClickHouse path lives in this package alone (``run.py``); the
DuckDB pipeline (analyzer/steps/) does not know it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import pyarrow as pa

DUCKDB, CLICKHOUSE = "duckdb", "clickhouse"
SCHEMES = ("clickhouse://", "chdb://")


class Engine(Protocol):
    """What a step runner needs of a database."""

    dialect: str

    def run(self, sql: str) -> None:
        """Run one statement (or, for DuckDB, a script)."""

    def arrow(self, sql: str) -> pa.Table:
        """The rows of a query."""

    def create_table(self, name: str, table: pa.Table) -> None:
        """Create (or replace) the table ``name`` holding ``table``'s rows, in the current database."""

    def close(self) -> None: ...


def is_url(text: str) -> bool:
    """Whether an analyze input names a ClickHouse source instead of files."""
    return text.startswith(SCHEMES)


_TOKEN = re.compile(r"""
    (?P<comment>--[^\n]*|/\*.*?\*/)
  | (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|`(?:[^`\\]|\\.|``)*`)
  | (?P<semicolon>;)
  | (?P<other>[^'"`;/-]+|[/-])
""", re.VERBOSE | re.DOTALL)


def split_statements(script: str) -> list[str]:
    """The statements of a SQL script, in order: split at the semicolons that are not in a string, a quoted name or a
    comment. Comments before a statement's code are left out, and so is a statement of nothing but comments."""
    statements, current, code = [], [], False
    for match in _TOKEN.finditer(script):
        kind, text = match.lastgroup, match.group()
        if kind == "semicolon":
            if code:
                statements.append("".join(current).strip())
            current, code = [], False
            continue
        if kind == "comment" and not code:
            continue  # a comment before a statement's code is not part of it
        current.append(text)
        if kind != "comment" and text.strip():
            code = True
    if code:
        statements.append("".join(current).strip())
    return statements


_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def expand(sql: str, values: dict[str, str]) -> str:
    """``sql`` with each ``{{name}}`` replaced by ``values[name]`` (SQL text the caller made safe: numbers, quoted
    names); a name without a value is a KeyError naming it."""
    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"no value for {{{{{name}}}}}")
        return values[name]

    return _PLACEHOLDER.sub(value, sql)
