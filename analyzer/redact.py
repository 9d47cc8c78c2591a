"""Credentials never reach anything jitrace stores: bearer tokens, JWTs and Basic credentials are replaced by
``[REDACTED]`` in every string loaded from spans, events, tags and logs.

One pattern, written for both engines that apply it: Python's ``re`` (row by row, in the loaders) and RE2 (DuckDB's
``regexp_replace`` over the rows a run copied in, pyarrow's ``replace_substring_regex`` in the receiver's writer).
After ``Bearer`` or ``Basic`` a value is taken for a credential when it has a character no English word has (a dot,
digit or symbol) or is 16 characters or longer: "no bearer token on the call" keeps its words, "Bearer abc.def" does
not. Anything shaped like a JWT (``eyJ...``) is a credential wherever it stands.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

REDACTED = "[REDACTED]"
_TOKEN_CHARS = r"[A-Za-z0-9._~+/=-]"
PATTERN = (rf"(?i)((?:bearer|basic)\s+)(?:{_TOKEN_CHARS}*[0-9._~+/=-]{_TOKEN_CHARS}*|{_TOKEN_CHARS}{{16,}})"
           r"|eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
REPLACEMENT = r"\1" + REDACTED  # RE2's spelling; an unmatched group is empty
_SECRET = re.compile(PATTERN)
# What every match contains, case folded: a string without any of them is left alone without running the pattern.
_HINTS = ("eyj", "bearer", "basic")


def redact(text: str) -> str:
    """``text`` with every credential replaced by ``[REDACTED]``."""
    low = text.lower()
    if not any(hint in low for hint in _HINTS):
        return text
    return _SECRET.sub(lambda m: (m.group(1) or "") + REDACTED, text)


def redact_value(value: Any) -> Any:
    """A decoded JSON value with every string in it redacted (keys stay: they are attribute names)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    return value


def sql_hint(column: str) -> str:
    """A cheap SQL test that ``column`` may hold a credential (the pattern runs only where it holds)."""
    return "(" + " OR ".join(f"{column} ILIKE '%{hint}%'" for hint in _HINTS) + ")"


def sql_redacted(column: str) -> str:
    """``column`` with every credential replaced, as an SQL expression: the pattern runs only where ``sql_hint``
    holds (for rows redacted as they are stored, where ``redact_table`` rewrites a stored table)."""
    pattern, replacement = (f"'{text}'" for text in (PATTERN.replace("'", "''"), REPLACEMENT.replace("'", "''")))
    return (f"CASE WHEN {sql_hint(column)} THEN regexp_replace({column}, {pattern}, {replacement}, 'g') "
            f"ELSE {column} END")


def redact_table(con: duckdb.DuckDBPyConnection, table: str, columns: tuple[str, ...]) -> None:
    """Redact the text ``columns`` of a DuckDB ``table`` in place, touching only the rows that may hold one."""
    for column in columns:
        con.execute(f"UPDATE {table} SET {column} = regexp_replace({column}, ?, ?, 'g') WHERE {sql_hint(column)}",
                    [PATTERN, REPLACEMENT])


def redact_arrow(batch: pa.Table, columns: tuple[str, ...]) -> pa.Table:
    """``batch`` with its text ``columns`` redacted (the receiver's files, before they are written)."""
    import pyarrow.compute as pc

    for column in columns:
        index = batch.schema.get_field_index(column)
        if index < 0:
            continue
        values = batch.column(index)
        hinted = pc.any(pc.or_kleene(pc.or_kleene(pc.match_substring(values, "eyj", ignore_case=True),
                                                  pc.match_substring(values, "bearer", ignore_case=True)),
                                     pc.match_substring(values, "basic", ignore_case=True))).as_py()
        if hinted:
            batch = batch.set_column(index, column,
                                     pc.replace_substring_regex(values, PATTERN, REPLACEMENT))
    return batch
