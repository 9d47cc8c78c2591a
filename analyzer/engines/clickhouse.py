"""ClickHouse as an engine: a server over HTTP (clickhouse-connect) or chdb (ClickHouse in-process), and the
``clickhouse://`` / ``chdb://`` URLs that name a table of spans.

    clickhouse://USER@HOST:8123/DB?table=otel_traces     a server; the password from JITRACE_CLICKHOUSE_PASSWORD
                                                           (or USER:PASSWORD@, which then shows in process lists);
                                                           secure=true for HTTPS; logs=otel_logs adds the log table
    chdb:///PATH?table=otel_traces                        a chdb data folder; table=DB.TABLE for another database

Both speak one dialect and run with the settings below, on every query: the semantics the steps of
queries/clickhouse/ are written for. Both libraries are the optional extra ``jitrace[clickhouse]``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from jitrace.analyzer.engines import CLICKHOUSE
from jitrace.analyzer.engines.duckdb import DuckDBEngine
from jitrace.analyzer.errors import UserError
from jitrace.analyzer.outputs.report import printable

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

PASSWORD_ENV = "JITRACE_CLICKHOUSE_PASSWORD"
EXTRA = "pip install 'jitrace[clickhouse]'"

# What the steps assume of every query (queries/clickhouse/*.sql): an unmatched LEFT JOIN side is NULL, not the
# type's default; a name in a query is the column before it is an alias of the same query; times are UTC; numbers
# from text parse to the nearest double (as DuckDB's); the analyzer of ClickHouse 24.3 and later (lambdas in WITH);
# Arrow results with plain strings.
SETTINGS: dict[str, object] = {
    "join_use_nulls": 1,
    "prefer_column_name_to_alias": 1,
    "session_timezone": "UTC",
    "allow_experimental_analyzer": 1,
    "precise_float_parsing": 1,
    "output_format_json_escape_forward_slashes": 0,
    "output_format_arrow_string_as_string": 1,
    "output_format_arrow_low_cardinality_as_dictionary": 0,
    # each statement runs once: compiling its expressions to machine code (LLVM) would cost more than it saves
    "compile_expressions": 0,
    "compile_aggregate_expressions": 0,
    "compile_sort_description": 0,
}


def quote(name: str) -> str:
    """A ClickHouse identifier, quoted (any name, whatever it holds, stays one name)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def literal(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _column_type(kind: pa.DataType) -> str:
    import pyarrow as pa

    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return f"Array({_column_type(kind.value_type)})"
    if pa.types.is_map(kind):
        return f"Map({_column_type(kind.key_type)}, {_column_type(kind.item_type)})"
    if pa.types.is_timestamp(kind):
        return f"DateTime64({ {'s': 0, 'ms': 3, 'us': 6, 'ns': 9}[kind.unit] }, 'UTC')"
    names = {pa.string(): "String", pa.large_string(): "String", pa.bool_(): "Bool", pa.float64(): "Float64",
             pa.float32(): "Float32", pa.int64(): "Int64", pa.int32(): "Int32", pa.int16(): "Int16",
             pa.int8(): "Int8", pa.uint64(): "UInt64", pa.uint32(): "UInt32", pa.uint16(): "UInt16",
             pa.uint8(): "UInt8", pa.date32(): "Date32"}
    if kind not in names:
        raise TypeError(f"no ClickHouse type for Arrow {kind}")
    return names[kind]


def arrow_ddl(name: str, schema: pa.Schema, engine: str = "Memory") -> str:
    """CREATE TABLE for rows of ``schema``: nullable columns Nullable, arrays and maps as they are (ClickHouse has no
    NULL array)."""
    import pyarrow as pa

    cols = []
    for f in schema:
        kind = _column_type(f.type)
        nested = pa.types.is_list(f.type) or pa.types.is_large_list(f.type) or pa.types.is_map(f.type)
        cols.append(f"{quote(f.name)} {f'Nullable({kind})' if f.nullable and not nested else kind}")
    return f"CREATE TABLE {quote(name)} ({', '.join(cols)}) ENGINE = {engine}"


class ClickHouseEngine:
    """The dialect's common part; ``run``, ``arrow``, ``insert`` and ``use`` are the transport's."""

    dialect = CLICKHOUSE
    where = "ClickHouse"

    def run(self, sql: str) -> None:
        raise NotImplementedError

    def arrow(self, sql: str) -> pa.Table:
        raise NotImplementedError

    def insert(self, name: str, table: pa.Table) -> None:
        raise NotImplementedError

    def use(self, database: str | None) -> None:
        """Unqualified names from here on are ``database``'s (None: the connection's own default again)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def create_table(self, name: str, table: pa.Table) -> None:
        self.run(f"DROP TABLE IF EXISTS {quote(name)}")
        self.run(arrow_ddl(name, table.schema))
        if table.num_rows:
            self.insert(name, table)

    def scalar(self, sql: str) -> object:
        table = self.arrow(sql)
        return table.column(0)[0].as_py() if table.num_rows else None

    def pull(self, sql: str, con: duckdb.DuckDBPyConnection, name: str, *, temporary: bool = False) -> None:
        """Create (or replace) the table ``name`` of the local DuckDB ``con`` holding the rows of ``sql`` run here, its
        times plain TIMESTAMPs in UTC as DuckDB's tables hold them."""
        DuckDBEngine(con).create_table(name, naive_times(self.arrow(sql)), temporary=temporary)

    def push(self, con: duckdb.DuckDBPyConnection, sql: str, name: str) -> None:
        """Create (or replace) the table ``name`` here holding the rows of ``sql`` run on the local DuckDB ``con``."""
        self.create_table(name, con.sql(sql).to_arrow_table())


def naive_times(table: pa.Table) -> pa.Table:
    """ClickHouse's times come as UTC timestamps with a zone; DuckDB's tables hold plain TIMESTAMPs in UTC."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type) and f.type.tz is not None:
            table = table.set_column(i, f.name, pc.cast(table.column(i), pa.timestamp(f.type.unit)))
    return table


class ChdbEngine(ClickHouseEngine):
    """chdb: ClickHouse in this process, on a data folder (``path``; None: a temporary one). chdb holds one folder
    per process at a time: close this engine before opening another folder."""

    def __init__(self, path: str | None = None) -> None:
        try:
            from chdb import session
        except ModuleNotFoundError:
            raise UserError(f"chdb:// needs chdb, which is not installed: {EXTRA}") from None
        self.where = f"chdb://{path}" if path else "chdb (in memory)"
        try:  # no progress bars of ClickHouse's own on the terminal: jitrace reports progress itself
            self.session = session.Session(f"{path or ':memory:'}?progress=off")
        except RuntimeError as exc:
            raise UserError(f"{self.where}: cannot open it ({printable(_first_line(exc))})") from None
        for name, value in SETTINGS.items():
            self.session.query(f"SET {name} = {value!r}" if isinstance(value, str) else f"SET {name} = {value}")

    def run(self, sql: str) -> None:
        self.session.query(sql)

    def arrow(self, sql: str) -> pa.Table:
        # chdb's own "ArrowTable" imports pandas, which nothing here needs: the Arrow file it returns, read by pyarrow
        import pyarrow as pa

        result = self.session.query(sql, "Arrow")
        return pa.ipc.open_file(result.bytes()).read_all() if len(result) else pa.table({})

    # Tables move between chdb and the local DuckDB as Parquet files that each reads itself: an Arrow object handed to
    # DuckDB, or to chdb's Python() table function, makes them import pandas, a fixed cost of every run.
    def pull(self, sql: str, con: duckdb.DuckDBPyConnection, name: str, *, temporary: bool = False) -> None:
        with tempfile.TemporaryDirectory(prefix="jitrace-chdb-") as folder:
            path = str(Path(folder) / "rows.parquet")
            Path(path).write_bytes(self.session.query(sql, "Parquet").bytes())
            kinds = con.execute("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?))",
                                [path]).fetchall()
            # a time with a zone (ClickHouse's UTC) as DuckDB's plain TIMESTAMP in UTC
            columns = ", ".join(f"timezone('UTC', {_duck(c)}) AS {_duck(c)}" if kind == "TIMESTAMP WITH TIME ZONE"
                                else _duck(c) for c, kind in kinds)
            con.execute(f"CREATE OR REPLACE {'TEMP ' if temporary else ''}TABLE {_duck(name)} AS "
                        f"SELECT {columns} FROM read_parquet(?)", [path])

    def push(self, con: duckdb.DuckDBPyConnection, sql: str, name: str) -> None:
        with tempfile.TemporaryDirectory(prefix="jitrace-chdb-") as folder:
            path = str(Path(folder) / "rows.parquet")
            con.execute(f"COPY ({sql}) TO {_duck_literal(path)} (FORMAT parquet)")
            self.run(f"DROP TABLE IF EXISTS {quote(name)}")
            # every column Nullable, as create_table makes them from DuckDB's Arrow (whose fields are all nullable)
            self.run(f"CREATE TABLE {quote(name)} ENGINE = Memory AS SELECT * FROM file({literal(path)}, Parquet) "
                     "SETTINGS schema_inference_make_columns_nullable = 1")

    def insert(self, name: str, table: pa.Table) -> None:
        jitrace_rows = table  # noqa: F841  (chdb's Python() finds the object by this name in the caller's frame)
        columns = ", ".join(quote(c) for c in table.column_names)
        self.session.query(f"INSERT INTO {quote(name)} ({columns}) SELECT * FROM Python(jitrace_rows)")

    def use(self, database: str | None) -> None:
        self.session.query(f"USE {quote(database or 'default')}")

    def close(self) -> None:
        self.session.close()


class HttpEngine(ClickHouseEngine):
    """A ClickHouse server over HTTP(S), through clickhouse-connect."""

    def __init__(self, source: Source) -> None:
        try:
            import clickhouse_connect
        except ModuleNotFoundError:
            raise UserError(f"clickhouse:// needs clickhouse-connect, which is not installed: {EXTRA}") from None
        from clickhouse_connect.driver.exceptions import ClickHouseError

        self.where = source.display()
        # the library logs the errors it raises: the one-line UserError below says it once
        logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)
        try:
            self.client = clickhouse_connect.get_client(
                host=source.host, port=source.port, username=source.user or "default",
                password=source.password or "", secure=source.secure, settings=dict(SETTINGS),
                connect_timeout=10, send_receive_timeout=3600, autogenerate_session_id=False)
        except ClickHouseError as exc:
            raise UserError(f"{self.where}: cannot connect ({printable(_first_line(exc))})") from None
        self.home = self.client.database  # the user's default database on the server

    def run(self, sql: str) -> None:
        self.client.command(sql)

    def arrow(self, sql: str) -> pa.Table:
        return self.client.query_arrow(sql, use_strings=True)

    def insert(self, name: str, table: pa.Table) -> None:
        self.client.insert_arrow(name, table, database=self.client.database)

    def use(self, database: str | None) -> None:
        self.client.database = database or self.home

    def close(self) -> None:
        self.client.close()


def _duck(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _duck_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def engine_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a query on either transport raises for an error ClickHouse reports (installed ones only)."""
    found: list[type[BaseException]] = []
    # chdb's queries raise chdb._exceptions.ChdbError, which is not the class chdb exports under that name
    for module in ("chdb", "chdb._exceptions"):
        with contextlib.suppress(ModuleNotFoundError, AttributeError):
            found.append(importlib.import_module(module).ChdbError)
    with contextlib.suppress(ModuleNotFoundError):
        from clickhouse_connect.driver.exceptions import ClickHouseError

        found.append(ClickHouseError)
    return tuple(found)


_NAME = re.compile(r"[^\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Source:
    """A table of spans in ClickHouse, parsed from its URL."""

    kind: str  # "clickhouse" or "chdb"
    database: str
    table: str
    logs_table: str | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    secure: bool = False
    path: str | None = None

    def display(self) -> str:
        """The URL without its password."""
        table = self.table if self.kind == "clickhouse" or self.database == "default" else \
            f"{self.database}.{self.table}"
        query = f"?table={table}" + (f"&logs={self.logs_table}" if self.logs_table else "")
        if self.kind == "chdb":
            return printable(f"chdb://{self.path}{query}")
        user = f"{self.user}@" if self.user else ""
        secure = "&secure=true" if self.secure else ""
        return printable(f"clickhouse://{user}{self.host}:{self.port}/{self.database}{query}{secure}")

    def connect(self) -> ClickHouseEngine:
        return ChdbEngine(self.path) if self.kind == "chdb" else HttpEngine(self)


def parse_url(url: str) -> Source:
    """``clickhouse://USER@HOST:PORT/DB?table=TABLE`` or ``chdb:///PATH?table=TABLE``; anything else is a one-line
    UserError naming what is wrong (never the password)."""
    shown = printable(re.sub(r"(//[^/@:]*):[^@/]*@", r"\1:***@", url))
    forms = "expected clickhouse://USER@HOST:PORT/DB?table=TABLE or chdb:///PATH?table=TABLE"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UserError(f"{shown}: not a ClickHouse URL ({exc}); {forms}") from None
    try:
        params = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)))
    except ValueError:
        raise UserError(f"{shown}: cannot read its query string; {forms}") from None
    unknown = sorted(set(params) - {"table", "logs", "database", "secure"})
    if unknown:
        raise UserError(f"{shown}: unknown parameter {unknown[0]!r} (known: table, logs, database, secure)")
    table = params.get("table", "otel_traces")
    logs = params.get("logs") or None
    for what, value in (("table", table), ("logs", logs)):
        if value is not None and not _NAME.fullmatch(value):
            raise UserError(f"{shown}: {what} must be a table name")
    if parts.scheme == "chdb":
        if parts.netloc or not parts.path or parts.path == "/":
            raise UserError(f"{shown}: expected chdb:///PATH?table=TABLE (three slashes, then the chdb folder)")
        database = params.get("database", "default")
        if "." in table:
            database, table = table.split(".", 1)
        if not Path(parts.path).is_dir():
            raise UserError(f"{shown}: no chdb folder at {printable(parts.path)}")
        return Source("chdb", database, table, logs, path=parts.path)
    if parts.scheme != "clickhouse":
        raise UserError(f"{shown}: {forms}")
    if not parts.hostname:
        raise UserError(f"{shown}: no host; {forms}")
    database = urllib.parse.unquote(parts.path.lstrip("/")) or params.get("database", "default")
    if "/" in database or not _NAME.fullmatch(database):
        raise UserError(f"{shown}: the path must be one database name; {forms}")
    if "." in table:
        database, table = table.split(".", 1)
    secure = params.get("secure", "false").lower()
    if secure not in ("true", "false", "1", "0"):
        raise UserError(f"{shown}: secure must be true or false")
    password = os.environ.get(PASSWORD_ENV) or (urllib.parse.unquote(parts.password) if parts.password else None)
    return Source("clickhouse", database, table, logs, host=parts.hostname,
                  port=port or (8443 if secure in ("true", "1") else 8123),
                  user=urllib.parse.unquote(parts.username) if parts.username else None, password=password,
                  secure=secure in ("true", "1"))
