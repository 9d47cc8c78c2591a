"""The ``spans`` view: every loaded span in the normalized schema, plus the typed facts of ``queries/span_facts.sql``.

Spans live in two places. Parquet files that hold the span facts (``jitrace collect``'s compacted files, written
through span_facts.sql) stay where they are and are read in place: copying millions of spans into the database
file costs more than analyzing them, and the analyzer reads the facts straight from the files, without parsing any
JSON. Records of every other input are stored in ``span_fact_rows`` with their facts computed once, so every step
reads typed columns instead of parsing JSON again: the readers' batches (OTLP JSON, protobuf, Jaeger, Zipkin, ...)
as they come (``insert_with_facts``), the C reader of OTLP JSON lines with the values span_facts.sql reads typed
as it parses them (``fact_inputs``). What waits in ``span_rows`` (Parquet without the facts, such as the receiver's
small files that compaction later deletes; the few spans the C reader leaves to span_facts.sql) is moved there by
``define``, denied spans first. The view is the union of both places.

The files read are listed in the table ``span_files`` (absolute paths): jitrace.duckdb keeps the view, so notebooks
see the spans as long as the input files stay where they were.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from jitrace.analyzer import redact, schema
from jitrace.analyzer.errors import UserError

if TYPE_CHECKING:
    import pyarrow as pa

ROWS_TABLE = "span_rows"  # loaded rows, in the spans schema, until define() stores them with their facts
FACTS_TABLE = "span_fact_rows"  # loaded rows with their facts: what the view reads of them
FILES_TABLE = "span_files"
# Compression chosen up front for the JSON text columns of FACTS_TABLE (no step reads them). DuckDB's own choice
# analyzes each column segment every way first. A span's attributes are unique to it: zstd, which is both faster to
# write and smaller than what DuckDB picks for such text. The resource is shared by the spans of one export, and the
# events and links are mostly empty lists: a dictionary (dict_fsst) stores them smaller than zstd and cheaper to write.
JSON_TEXT_COMPRESSION = {"resource": "dict_fsst", "attributes": "zstd", "events": "dict_fsst", "links": "dict_fsst"}


@functools.cache
def _query(name: str) -> str:
    """A query of queries/, its header comment left out (it names the placeholders the query is filled in at)."""
    lines = (resources.files("jitrace.queries") / name).read_text().splitlines()
    return "\n".join(line for line in lines if not line.startswith("--"))


def facts_sql(relation: str) -> str:
    """span_facts.sql reading ``relation`` (a table name or a parenthesized query in the spans schema) through
    span_fact_inputs.sql."""
    return facts_of_inputs_sql("(" + _query("span_fact_inputs.sql").replace("{spans}", relation) + ")")


def facts_of_inputs_sql(relation: str) -> str:
    """span_facts.sql reading ``relation``: the spans schema plus span_fact_inputs.sql's columns (``r``, ``a``,
    ``checks``), such as the C reader gives them (``fact_inputs``)."""
    return _query("span_facts.sql").replace("{inputs}", relation)


@dataclass(frozen=True)
class FactInputs:
    """span_fact_inputs.sql's parsed values as Arrow types: what a reader that parses the JSON itself gives for
    span_facts.sql (the C reader of OTLP JSON lines), so that the facts' inputs have one definition."""

    resource: pa.StructType  # r: the resource attributes read
    attributes: pa.StructType  # a: the span attributes read
    checks: str  # the DuckDB type of `checks` (a reader that gives none casts NULL to it)


_fact_inputs: list[FactInputs] = []


def fact_inputs(con: duckdb.DuckDBPyConnection) -> FactInputs:
    """span_fact_inputs.sql's ``r`` and ``a`` (Arrow struct types) and the type of ``checks``. Worked out once per
    process, on ``con``."""
    if not _fact_inputs:
        query = f"SELECT r, a, checks FROM ({_query('span_fact_inputs.sql').replace('{spans}', _empty_spans())})"
        arrow = con.sql(query).to_arrow_table().schema
        checks = con.execute(f"DESCRIBE {query}").fetchall()[2][1]
        _fact_inputs.append(FactInputs(arrow.field("r").type, arrow.field("a").type, checks))
    return _fact_inputs[0]


# COPY options of a file of facts (collect's compaction; the benchmarks' files "as collect writes them"). Row groups
# of 32,768 rows, not DuckDB's 122,880: DuckDB skips a row group by its statistics only when it holds no denied
# span, and the one where the denied spans end is decoded whole. Smaller groups decode fewer allowed spans with the
# denied ones (BENCHMARKS.md, the analyzer at 1M spans).
FACTS_FILE_OPTIONS = "FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 32768"


def facts_file_sql(relation: str) -> str:
    """``relation`` with its facts as a Parquet file of facts is written: the denied spans first.

    The steps that read a denied call's spans whole filter on ``denied``; with the few denied spans in their own row
    groups, DuckDB skips every other row group by its statistics instead of decompressing it (at 10M spans, the
    denied calls' facts are read without decompressing the rest). Write it with ``FACTS_FILE_OPTIONS``."""
    return f"SELECT * FROM ({facts_sql(relation)}) ORDER BY denied DESC"


def _empty_spans() -> str:
    cols = ", ".join(f"NULL::{kind} AS {name}" for name, kind in schema.SPANS)
    return f"(SELECT {cols} WHERE false)"


_fact_types: dict[str, str] = {}


def fact_types(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """The columns span_facts.sql adds to the span columns, in order, with their DuckDB types (as collect writes
    them). Worked out once per process, on ``con``: any connection gives the same answer."""
    if not _fact_types:
        rows = con.execute(f"DESCRIBE SELECT * FROM ({facts_sql(_empty_spans())})").fetchall()
        _fact_types.update((name, kind) for name, kind, *_ in rows if name not in schema.SPANS.names)
    return _fact_types


def fact_columns(con: duckdb.DuckDBPyConnection) -> tuple[str, ...]:
    return tuple(fact_types(con))


def has_facts(con: duckdb.DuckDBPyConnection, file_columns: dict[str, str]) -> bool:
    """Whether a Parquet file's columns ({name: DuckDB type}) hold every fact, of the type span_facts.sql gives it
    (else the view derives them)."""
    return all(file_columns.get(name) == kind for name, kind in fact_types(con).items())


def parquet_columns(con: duckdb.DuckDBPyConnection, paths: list[str]) -> dict[str, dict[str, str]]:
    """Each Parquet file's columns, {name: DuckDB type}, read from its footer (no pyarrow: see schema.Columns). One
    query reads every footer, and one DESCRIBE per distinct schema gives the types (the receiver writes thousands of
    files of one schema). A file whose footer cannot be read is a UserError naming it."""
    try:
        rows = con.execute("SELECT file_name, name, type, type_length, repetition_type, num_children, "
                           "converted_type, scale, precision, logical_type FROM parquet_schema(?)",
                           [exact_list(paths)]).fetchall()
    except duckdb.Error as exc:
        for path in paths:  # which file
            try:
                con.execute("SELECT count(*) FROM parquet_schema(?)", [exact(path)]).fetchall()
            except duckdb.Error as one:
                raise UserError(f"{path}: unreadable Parquet: {str(one).splitlines()[0]}") from None
        raise UserError(f"{paths[0]}: unreadable Parquet: {str(exc).splitlines()[0]}") from None
    layouts: dict[str, list[tuple]] = {}
    for file_name, *element in rows:
        layouts.setdefault(file_name, []).append(tuple(element))
    typed: dict[tuple, dict[str, str]] = {}
    out = {}
    for path in paths:
        layout = tuple(layouts[path]) if path in layouts else (path,)  # a name DuckDB spelled otherwise: its own
        if layout not in typed:
            described = con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [exact(path)]).fetchall()
            typed[layout] = {name: kind for name, kind, *_ in described}
        out[path] = typed[layout]
    return out


def ensure(con: duckdb.DuckDBPyConnection, *, view: bool = True) -> None:
    """Create ``span_rows``, ``span_files`` and (unless ``view`` is False: the caller defines it once it has added
    spans) the view if they are not there yet."""
    con.execute(schema.duckdb_ddl(ROWS_TABLE, schema.SPANS))
    columns = [f"{name} {kind}" + (f" USING COMPRESSION {JSON_TEXT_COMPRESSION[name]}" if name in JSON_TEXT_COMPRESSION
                                   else "")
               for name, kind in schema.SPANS] + [f"{n} {k}" for n, k in fact_types(con).items()]
    con.execute(f"CREATE TABLE IF NOT EXISTS {FACTS_TABLE} ({', '.join(columns)})")
    con.execute(f"CREATE TABLE IF NOT EXISTS {FILES_TABLE} (path VARCHAR, has_source BOOLEAN)")
    if not view:
        return
    # the current database's views only (the view is created there): duckdb_views() then renders no other view's SQL
    query = "SELECT count(*) FROM duckdb_views() WHERE database_name = current_database() AND view_name = 'spans'"
    if not con.execute(query).fetchone()[0]:
        define(con)


def add_files(con: duckdb.DuckDBPyConnection, files: list[Path], has_source: bool) -> int:
    """Add Parquet files in the span schema; returns how many spans they hold.

    Files that hold the span facts (collect's compacted files, or any written through span_facts.sql) are read in
    place: the view lists them once ``define`` runs again (load_into does, after the last file). Any other Parquet
    is copied into ``span_rows``: such a file may be a receiver's small file that compaction will delete, and the
    database must not point at a file that goes away.
    """
    if not files:
        return 0
    in_place, copied = [], []
    needed = set(schema.SPANS.names) - {"source"}
    paths = [str(path) for path in files]
    columns = parquet_columns(con, paths)
    for path in paths:
        missing = sorted(needed - set(columns[path]))
        if missing:
            raise UserError(f"{path}: Parquet without jitrace's span columns (missing {', '.join(missing[:5])})")
        entry = (str(Path(path).resolve()), has_source and "source" in columns[path])
        (in_place if has_facts(con, columns[path]) else copied).append(entry)
    count = con.execute("SELECT sum(num_rows) FROM parquet_file_metadata(?)", [exact_list(paths)]).fetchone()[0] or 0
    for has_src in (True, False):
        group = [p for p, s in copied if s == has_src]
        if group:
            cols = schema.columns_with_source(schema.SPANS, has_src)
            con.execute(f"INSERT INTO {ROWS_TABLE} SELECT {cols} FROM {_read(group)}")
    if in_place:
        con.executemany(f"INSERT INTO {FILES_TABLE} VALUES (?, ?)", in_place)
    return int(count)


def count(con: duckdb.DuckDBPyConnection) -> int:
    """How many spans the view holds, from the files' footers and the table (counting the view itself would run
    span_facts.sql over every copied row of an older database)."""
    total = con.execute(f"SELECT (SELECT count(*) FROM {ROWS_TABLE}) + (SELECT count(*) FROM {FACTS_TABLE})"
                        ).fetchall()[0][0]
    paths = [r[0] for r in con.execute(f"SELECT path FROM {FILES_TABLE}").fetchall()]
    if paths:  # fetchall: no result is left unfinished on ``con`` (a relation's reader may follow)
        total += con.execute(f"SELECT sum(num_rows) FROM parquet_file_metadata({sql_list(exact_list(paths))})"
                             ).fetchall()[0][0]
    return int(total)


def _read(paths: list[str]) -> str:
    return (f"read_parquet({sql_list(exact_list(paths))}, filename = true, union_by_name = true, "
            "hive_partitioning = false)")


def sql_string(text: str) -> str:
    """A SQL string literal (a quote in a path must not end it)."""
    return "'" + text.replace("'", "''") + "'"


def sql_list(texts: list[str]) -> str:
    return "[" + ", ".join(sql_string(t) for t in texts) + "]"


def exact(path: str) -> str:
    """``path`` for DuckDB's file functions, which expand ``*``, ``?`` and ``[`` as a glob: escaped so that it names
    that one file (a file called ``a*.parquet`` must not also read ``ab.parquet``)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def exact_list(paths: list[str]) -> list[str]:
    return [exact(p) for p in paths]


def _redacted(relation: str) -> str:
    """The spans of ``relation`` with their text columns redacted (redact.sql_redacted), as a parenthesized query:
    what every row stored in ``FACTS_TABLE`` from SQL goes through."""
    text = set(schema.SPAN_TEXT_COLUMNS)
    columns = ", ".join(f"{redact.sql_redacted(name)} AS {name}" if name in text else name
                        for name in schema.SPANS.names)
    return f"(SELECT {columns} FROM {relation})"


def insert_with_facts(con: duckdb.DuckDBPyConnection, relation: str) -> None:
    """Insert the spans of ``relation`` (a table or registered name in the spans schema) into ``FACTS_TABLE`` with
    their facts, their text redacted on the way: stored once, where ``span_rows`` would store them twice (there, then
    with their facts in ``define``). The rows keep the order they came in, as the C reader's do."""
    con.execute(f"INSERT INTO {FACTS_TABLE} BY NAME SELECT * FROM ({facts_sql(_redacted(relation))})")


def store_facts(con: duckdb.DuckDBPyConnection) -> None:
    """Move the rows of ``span_rows`` into ``span_fact_rows`` with their facts, their text redacted on the way (rows
    copied in as they were, such as Parquet of another writer's): span_facts.sql runs once over them, denied spans
    first (the steps' filters on ``denied`` then skip the row groups without one)."""
    if not con.execute(f"SELECT EXISTS (FROM {ROWS_TABLE})").fetchone()[0]:
        return
    con.execute(f"INSERT INTO {FACTS_TABLE} BY NAME {facts_file_sql(_redacted(ROWS_TABLE))}")
    con.execute(f"DROP TABLE {ROWS_TABLE}")
    con.execute(schema.duckdb_ddl(ROWS_TABLE, schema.SPANS))


def define(con: duckdb.DuckDBPyConnection, *, temp: bool = False) -> None:
    """(Re)create the view over ``span_fact_rows`` and every file in ``span_files``, after storing the rows loaded
    into ``span_rows`` with their facts (``store_facts``). ``temp``: a TEMP view, which hides a view of the same
    name in the database, and nothing is stored: how a notebook reads a database file it did not write
    (analyzer/notebook.py); rows still in ``span_rows`` there (a database of an older jitrace) get their facts from
    span_facts.sql when read.

    A table is a branch of the view only when it holds rows (or nothing else is read): span_facts.sql over
    ``span_rows`` is planned again wherever a step reads the view, even over an empty table.
    Rows inserted later need ``define`` again; load_into calls it once loading is done."""
    if not temp:
        store_facts(con)
    base = list(schema.SPANS.names)
    facts = list(fact_columns(con))
    out_cols = ", ".join(base + facts)
    groups: dict[bool, list[str]] = {}
    for path, has_source in con.execute(f"SELECT path, has_source FROM {FILES_TABLE}").fetchall():
        groups.setdefault(has_source, []).append(path)
    has_rows = con.execute(f"SELECT EXISTS (FROM {ROWS_TABLE})").fetchone()[0]
    try:
        has_facts_rows = con.execute(f"SELECT EXISTS (FROM {FACTS_TABLE})").fetchone()[0]
    except duckdb.CatalogException:  # a database of an older jitrace, opened by a notebook: its rows have no facts
        has_facts_rows = False
    branches = [f"SELECT {out_cols} FROM {FACTS_TABLE}"] if has_facts_rows else []
    if has_rows or not (groups or branches):
        branches.append(f"SELECT {out_cols} FROM ({facts_sql(ROWS_TABLE)})")
    for has_source, paths in sorted(groups.items()):
        cols = schema.columns_with_source(schema.SPANS, has_source)
        branches.append(f"SELECT {cols}, {', '.join(facts)} FROM {_read(paths)}")
    con.execute(f"CREATE OR REPLACE {'TEMP ' if temp else ''}VIEW spans AS\n" + "\nUNION ALL\n".join(branches))
