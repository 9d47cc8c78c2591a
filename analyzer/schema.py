"""The normalized tables every loader produces, and the Parquet files ``jitrace collect`` writes.

One schema for spans and one for logs, whatever the input format, so the SQL in ``queries/`` reads one shape.

spans
    trace_id        32 lower-case hex digits
    span_id         16 lower-case hex digits
    parent_span_id  16 lower-case hex digits, NULL for a root (or a parent that was not recorded)
    name            span name (for gRPC: ``package.Service/Method``)
    kind            SERVER, CLIENT, INTERNAL, PRODUCER, CONSUMER or UNSPECIFIED
    start_ns        Unix nanoseconds in the clock of the host that recorded the span; NULL when the input has no
                    start (0, OpenTelemetry's "not set", reads as NULL in the ``spans`` view)
    end_ns          Unix nanoseconds, same clock; NULL when the input has no end (a Zipkin span without duration)
    status_code     UNSET, OK or ERROR (OpenTelemetry span status, *not* the gRPC status)
    status_message  text, may be NULL
    service         resource ``service.name`` (NULL when absent)
    resource        JSON object of resource attributes, values with their JSON types
    attributes      JSON object of span attributes; ints stay JSON integers, doubles JSON numbers with a
                    fraction or exponent, arrays JSON arrays
    events          JSON array of ``{"name", "time_ns", "attributes"}``
    links           JSON array of ``{"trace_id", "span_id", "attributes"}``
    scope           instrumentation scope name
    source          where the record came from: ``path`` or ``path:line`` / ``path#index``

logs
    time_ns, observed_ns   Unix nanoseconds (time may be NULL: then observed)
    trace_id, span_id      hex, NULL when the record carries no trace context
    severity_number        int (OpenTelemetry SeverityNumber), severity_text
    body                   text (structured bodies as JSON text)
    service, resource, attributes, scope, source  as for spans

Ids are always lower-case hex here, whatever the input used (hex, upper-case hex, base64).

In DuckDB, ``spans`` is a view (analyzer/steps/spans_view.py) with these columns followed by the typed facts of
queries/span_facts.sql (``domain``, ``rpc_*``, ``grpc_status`` and ``grpc_status_attribute``, one ``jit_*`` column per
contract attribute, ``check_events``, ``stream_check``). ``jitrace collect``'s compacted files hold those facts too
and are read in place; loaders of other inputs store rows of this schema with their facts (spans_view.py).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

# The span columns that hold strings from the wire: redacted before anything stores them (analyzer/redact.py).
SPAN_TEXT_COLUMNS = ("name", "status_message", "resource", "attributes", "events", "links")
SPAN_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")  # index = OTLP enum value
STATUS_CODES = ("UNSET", "OK", "ERROR")  # index = OTLP enum value


class Columns(tuple):
    """A table's columns, in order: (name, DuckDB type) pairs. Plain data, so that reading Parquet into DuckDB (the
    analyzer's path for `jitrace collect`'s files) never imports pyarrow; ``arrow`` builds the
    Arrow schema for the code that writes or builds Arrow tables."""

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self]


SPANS = Columns(
    (
        ("trace_id", "VARCHAR"),
        ("span_id", "VARCHAR"),
        ("parent_span_id", "VARCHAR"),
        ("name", "VARCHAR"),
        ("kind", "VARCHAR"),
        ("start_ns", "BIGINT"),
        ("end_ns", "BIGINT"),
        ("status_code", "VARCHAR"),
        ("status_message", "VARCHAR"),
        ("service", "VARCHAR"),
        ("resource", "VARCHAR"),
        ("attributes", "VARCHAR"),
        ("events", "VARCHAR"),
        ("links", "VARCHAR"),
        ("scope", "VARCHAR"),
        ("source", "VARCHAR"),
    )
)

LOGS = Columns(
    (
        ("time_ns", "BIGINT"),
        ("observed_ns", "BIGINT"),
        ("trace_id", "VARCHAR"),
        ("span_id", "VARCHAR"),
        ("severity_number", "INTEGER"),
        ("severity_text", "VARCHAR"),
        ("body", "VARCHAR"),
        ("service", "VARCHAR"),
        ("resource", "VARCHAR"),
        ("attributes", "VARCHAR"),
        ("scope", "VARCHAR"),
        ("source", "VARCHAR"),
    )
)


@functools.cache
def arrow(columns: Columns) -> pa.Schema:
    """The Arrow schema of ``columns`` (the receiver's Parquet files and the loaders' Arrow tables)."""
    import pyarrow as pa

    types = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "INTEGER": pa.int32()}
    return pa.schema([(name, types[kind]) for name, kind in columns])


def columns_with_source(columns: Columns, has_source: bool) -> str:
    """A SELECT list of a schema's columns over ``read_parquet(..., filename = true)``: a record's ``source`` is its
    file, unless the file already says where the record came from."""
    source = "coalesce(source, filename)" if has_source else "filename"
    return ", ".join(f"{source} AS source" if n == "source" else n for n in columns.names)


def duckdb_ddl(table: str, columns: Columns) -> str:
    """``CREATE TABLE`` for a schema above. JSON text stays VARCHAR, as in Parquet, so the ``spans`` view's branches
    (analyzer/steps/spans_view.py) share one type; DuckDB's JSON functions read it as it is."""
    return f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(f'{name} {kind}' for name, kind in columns)})"
