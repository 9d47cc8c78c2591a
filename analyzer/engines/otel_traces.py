"""The ``otel_traces`` source: the OpenTelemetry Collector's ClickHouse exporter table, read as the ``spans`` the
steps expect (queries/clickhouse/span_facts.sql), over a required time range; and ``install-facts``, which stores
the facts in the table itself (MATERIALIZED columns, and an index on ``denied``) so that no run computes them again.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

from jitrace.analyzer.engines import expand, split_statements
from jitrace.analyzer.engines.clickhouse import ClickHouseEngine, literal, quote
from jitrace.analyzer.errors import UserError
from jitrace.analyzer.outputs.report import printable

# The exporter's columns the facts are computed from (Events.* are its Nested event columns).
REQUIRED_COLUMNS = ("Timestamp", "TraceId", "SpanId", "ParentSpanId", "SpanName", "SpanKind", "ServiceName",
                    "ResourceAttributes", "SpanAttributes", "Duration", "StatusCode", "Events.Timestamp",
                    "Events.Name", "Events.Attributes")
DENIED_INDEX = "jitrace_denied"  # install-facts' skip index on the `denied` fact
FACTS_MARKER = "-- facts"


@dataclass(frozen=True)
class Item:
    name: str
    expression: str


def _text() -> str:
    return (resources.files("jitrace.queries") / "clickhouse" / "span_facts.sql").read_text()


def _items(select_list: str) -> list[Item]:
    """``expression AS name`` items of a SELECT list, split at the commas outside parentheses and strings."""
    items, depth, start, quote_char, i = [], 0, 0, "", 0
    while i < len(select_list):
        c = select_list[i]
        if quote_char:
            if c == "\\":
                i += 1
            elif c == quote_char:
                quote_char = ""
        elif c in "'`\"":
            quote_char = c
        elif c == "-" and select_list.startswith("--", i):
            i = select_list.find("\n", i) if "\n" in select_list[i:] else len(select_list)
            continue
        elif c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == "," and depth == 0:
            items.append(select_list[start:i])
            start = i + 1
        i += 1
    items.append(select_list[start:])
    out = []
    for raw in items:
        code = "\n".join(line for line in raw.splitlines() if not line.strip().startswith("--")).strip()
        match = re.fullmatch(r"(.*)\s+AS\s+(\w+)", code, re.DOTALL)
        if not match:
            raise ValueError(f"span_facts.sql: not an 'expression AS name' item: {code[:80]!r}")
        out.append(Item(match.group(2), match.group(1).strip()))
    return out


@functools.cache
def items() -> tuple[tuple[Item, ...], tuple[Item, ...]]:
    """span_facts.sql's SELECT list: (the span columns, the facts)."""
    text = _text()
    body = text[text.index("\nSELECT\n") + len("\nSELECT\n"):text.rindex("\nFROM {{source}}")]
    base, facts = body.split(FACTS_MARKER + "\n", 1)
    return tuple(_items(base.rstrip().rstrip(","))), tuple(_items(facts))


def fact_names() -> tuple[str, ...]:
    return tuple(item.name for item in items()[1])


def table_name(database: str, table: str) -> str:
    return f"{quote(database)}.{quote(table)}"


def columns(engine: ClickHouseEngine, database: str, table: str) -> dict[str, tuple[str, str]]:
    """The table's columns: {name: (type, default_kind)}; a missing table is a UserError naming it."""
    found = engine.arrow(f"SELECT name, type, default_kind FROM system.columns WHERE database = {literal(database)} "
                         f"AND table = {literal(table)} ORDER BY position").to_pylist()
    if not found:
        exists = engine.scalar(f"SELECT count() FROM system.databases WHERE name = {literal(database)}")
        what = f"table {database}.{table}" if exists else f"database {database}"
        raise UserError(printable(f"{engine.where}: no {what}"))
    return {row["name"]: (row["type"], row["default_kind"]) for row in found}


def check(engine: ClickHouseEngine, database: str, table: str) -> frozenset[str]:
    """Check that ``database.table`` has the exporter's columns the facts need (a UserError naming the first one
    missing); returns the facts it holds as columns (``install_facts``; all of them, or some after an upgrade of
    jitrace added facts since)."""
    cols = columns(engine, database, table)
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        raise UserError(printable(f"{engine.where}: {database}.{table} is not an OpenTelemetry Collector traces table "
                                  f"(no column {missing[0]})"))
    return frozenset(name for name in fact_names() if name in cols)


def spans_view(database: str, table: str, since_ns: int, until_ns: int, stored: frozenset[str] = frozenset()) -> str:
    """CREATE VIEW spans: span_facts.sql over the table's rows whose start is in [since, until) (the partitions of
    other days are never read), each fact read from the table's column of that name when it is ``stored``, else
    computed."""
    base, facts = items()
    listed = [f"{i.expression} AS {i.name}" for i in base]
    listed += [i.name if i.name in stored else f"{i.expression} AS {i.name}" for i in facts]
    return ("CREATE VIEW spans AS SELECT\n    " + ",\n    ".join(listed) + f"\nFROM {table_name(database, table)}\n"
            f"WHERE Timestamp >= fromUnixTimestamp64Nano(toInt64({int(since_ns)}))\n"
            f"  AND Timestamp < fromUnixTimestamp64Nano(toInt64({int(until_ns)}))")


def fact_types(engine: ClickHouseEngine, database: str, table: str) -> dict[str, str]:
    """Each fact's ClickHouse type, as the expressions give it over this table."""
    _, facts = items()
    listed = ", ".join(f"{i.expression} AS {i.name}" for i in facts)
    rows = engine.arrow(f"DESCRIBE (SELECT {listed} FROM {table_name(database, table)})")
    return dict(zip(rows.column("name").to_pylist(), rows.column("type").to_pylist(), strict=True))


def install_facts(engine: ClickHouseEngine, database: str, table: str, *, materialize: bool = True,
                  say=lambda _m: None) -> list[str]:
    """Add every fact to ``database.table`` as a MATERIALIZED column (new rows get them as they are inserted), and a
    skip index on ``denied``; with ``materialize``, compute them for the rows already there too (a mutation: the
    equivalent of compaction). Columns already there are left as they are. Returns the names added."""
    check(engine, database, table)
    existing = columns(engine, database, table)
    types = fact_types(engine, database, table)
    target = table_name(database, table)
    added = []
    for item in items()[1]:
        if item.name in existing:
            continue
        engine.run(f"ALTER TABLE {target} ADD COLUMN IF NOT EXISTS {quote(item.name)} {types[item.name]} "
                   f"MATERIALIZED {item.expression}")
        added.append(item.name)
    indexed = engine.scalar(f"SELECT count() FROM system.data_skipping_indices WHERE database = {literal(database)} "
                            f"AND table = {literal(table)} AND name = {literal(DENIED_INDEX)}")
    if not indexed:
        engine.run(f"ALTER TABLE {target} ADD INDEX IF NOT EXISTS {quote(DENIED_INDEX)} denied TYPE minmax "
                   "GRANULARITY 1")
    if not added and indexed:
        return added
    say(f"added {len(added)} fact column(s){'' if indexed else f' and the index {DENIED_INDEX}'} to "
        f"{database}.{table}")
    if materialize:  # a mutation per column, waited for (mutations_sync = 2: on every replica)
        for name in added:
            engine.run(f"ALTER TABLE {target} MATERIALIZE COLUMN {quote(name)} SETTINGS mutations_sync = 2")
        if not indexed:
            engine.run(f"ALTER TABLE {target} MATERIALIZE INDEX {quote(DENIED_INDEX)} SETTINGS mutations_sync = 2")
        say("computed them for the rows already stored")
    return added


def step_statements(script: str, values: dict[str, str]) -> list[str]:
    """A step file's statements with its placeholders filled."""
    return [expand(s, values) for s in split_statements(script)]
