"""Spans in the normalized schema written as the OpenTelemetry Collector's ClickHouse exporter writes them, for the
ClickHouse parity tests: its ``otel_traces`` table and the rows it inserts.

The table is the exporter's current one (exporter/clickhouseexporter, internal/sqltemplates/traces_table.sql in
opentelemetry-collector-contrib): Map attributes, Nested events and links, partitions by day. Values are what pdata's
``Value.AsString`` gives the exporter: strings as they are, bools as true/false, ints in decimal, doubles as Go's
ES6-style shortest form (1760000000, 0.25, 1e-7), arrays and maps as Go's JSON (compact, <, > and & escaped). An
attribute whose value is null in the normalized JSON is left out, as an OpenTelemetry SDK never exports one.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import pyarrow as pa

# The exporter's DDL, in this file's words; ENGINE and the skip indexes as the exporter creates them.
OTEL_TRACES_DDL = """
CREATE TABLE {name} (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp)
SETTINGS index_granularity = 8192
"""

# traceutil.SpanKindStr and StatusCodeStr (the exporter today), and the enums' own names (older exporters)
KINDS = {"UNSPECIFIED": "Unspecified", "INTERNAL": "Internal", "SERVER": "Server", "CLIENT": "Client",
         "PRODUCER": "Producer", "CONSUMER": "Consumer"}
STATUSES = {"UNSET": "Unset", "OK": "Ok", "ERROR": "Error"}


def go_float(x: float) -> str:
    """A double as pdata's AsString and Go's encoding/json write it: the shortest digits, in plain notation from
    1e-6 up to 1e21 and in exponent notation (e-7, e+21) outside."""
    if math.isnan(x) or math.isinf(x):
        return f"json: unsupported value: {'NaN' if math.isnan(x) else ('+Inf' if x > 0 else '-Inf')}"
    shortest = repr(x)
    if x != 0 and (abs(x) < 1e-6 or abs(x) >= 1e21):
        mantissa, exponent = shortest.split("e")
        return f"{mantissa}e{'-' if int(exponent) < 0 else '+'}{abs(int(exponent))}"
    plain = format(Decimal(shortest), "f")
    return plain.rstrip("0").rstrip(".") if "." in plain else plain


def go_json(value: Any) -> str:
    """Go's json.Marshal of a decoded JSON value (pcommon's AsRaw of a slice or map)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e") \
            .replace("&", "\\u0026").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    if isinstance(value, list):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    return "{" + ",".join(f"{go_json(str(k))}:{go_json(v)}" for k, v in sorted(value.items())) + "}"


def as_string(value: Any) -> str:
    """pcommon.Value.AsString of a decoded attribute value."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    return go_json(value)


def attribute_map(text: str | None) -> list[tuple[str, str]]:
    decoded = json.loads(text) if text else {}
    return [(k, as_string(v)) for k, v in decoded.items() if v is not None]


def exporter_table(rows: list[dict], *, old_spelling: bool = False) -> pa.Table:
    """``rows`` (dicts in the normalized spans schema) as the exporter inserts them into otel_traces.
    ``old_spelling``: SPAN_KIND_SERVER / STATUS_CODE_ERROR, as exporters before traceutil's names wrote them."""
    cols: dict[str, list] = {name: [] for name in (
        "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind", "ServiceName",
        "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes", "Duration", "StatusCode",
        "StatusMessage", "Events.Timestamp", "Events.Name", "Events.Attributes", "Links.TraceId", "Links.SpanId",
        "Links.TraceState", "Links.Attributes")}
    for r in rows:
        start, end = r["start_ns"] or 0, r["end_ns"] or 0
        resource = json.loads(r["resource"]) if r["resource"] else {}
        events = json.loads(r["events"]) if r["events"] else []
        links = json.loads(r["links"]) if r["links"] else []
        kind = r["kind"] or "UNSPECIFIED"
        status = r["status_code"] or "UNSET"
        cols["Timestamp"].append(start)
        cols["TraceId"].append(r["trace_id"] or "")
        cols["SpanId"].append(r["span_id"] or "")
        cols["ParentSpanId"].append(r["parent_span_id"] or "")
        cols["TraceState"].append("")
        cols["SpanName"].append(r["name"] or "")
        cols["SpanKind"].append(f"SPAN_KIND_{kind}" if old_spelling else KINDS[kind])
        service = resource.get("service.name")
        cols["ServiceName"].append(as_string(service) if service is not None else "")
        cols["ResourceAttributes"].append(attribute_map(r["resource"]))
        cols["ScopeName"].append(r.get("scope") or "")
        cols["ScopeVersion"].append("")
        cols["SpanAttributes"].append(attribute_map(r["attributes"]))
        cols["Duration"].append((end - start) % 2**64)
        cols["StatusCode"].append(f"STATUS_CODE_{status}" if old_spelling else STATUSES[status])
        cols["StatusMessage"].append(r.get("status_message") or "")
        cols["Events.Timestamp"].append([e.get("time_ns") or 0 for e in events])
        cols["Events.Name"].append([e.get("name") or "" for e in events])
        cols["Events.Attributes"].append([[(k, as_string(v)) for k, v in (e.get("attributes") or {}).items()
                                           if v is not None] for e in events])
        cols["Links.TraceId"].append([link.get("trace_id") or "" for link in links])
        cols["Links.SpanId"].append([link.get("span_id") or "" for link in links])
        cols["Links.TraceState"].append(["" for _ in links])
        cols["Links.Attributes"].append([[(k, as_string(v)) for k, v in (link.get("attributes") or {}).items()
                                          if v is not None] for link in links])
    text_map = pa.map_(pa.string(), pa.string())
    types = {"Timestamp": pa.timestamp("ns"), "ResourceAttributes": text_map, "SpanAttributes": text_map,
             "Duration": pa.uint64(), "Events.Timestamp": pa.list_(pa.timestamp("ns")),
             "Events.Name": pa.list_(pa.string()), "Events.Attributes": pa.list_(text_map),
             "Links.TraceId": pa.list_(pa.string()), "Links.SpanId": pa.list_(pa.string()),
             "Links.TraceState": pa.list_(pa.string()), "Links.Attributes": pa.list_(text_map)}
    return pa.table({name: pa.array(values, types.get(name, pa.string())) for name, values in cols.items()})


OTEL_LOGS_DDL = """
CREATE TABLE {name} (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TimestampTime DateTime DEFAULT toDateTime(Timestamp),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    TraceFlags UInt8,
    SeverityText LowCardinality(String) CODEC(ZSTD(1)),
    SeverityNumber UInt8,
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Body String CODEC(ZSTD(1)),
    ResourceSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion LowCardinality(String) CODEC(ZSTD(1)),
    ScopeAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    LogAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1))
) ENGINE = MergeTree
PARTITION BY toDate(TimestampTime)
PRIMARY KEY (ServiceName, TimestampTime)
ORDER BY (ServiceName, TimestampTime, Timestamp)
SETTINGS index_granularity = 8192
"""


def exporter_logs_table(rows: list[dict]) -> pa.Table:
    """Log records in the normalized logs schema as the exporter inserts them into otel_logs (the record's time, else
    its observed time, as Timestamp)."""
    text_map = pa.map_(pa.string(), pa.string())
    cols: dict[str, list] = {"Timestamp": [], "TraceId": [], "SpanId": [], "TraceFlags": [], "SeverityText": [],
                             "SeverityNumber": [], "ServiceName": [], "Body": [], "ResourceSchemaUrl": [],
                             "ResourceAttributes": [], "ScopeSchemaUrl": [], "ScopeName": [], "ScopeVersion": [],
                             "ScopeAttributes": [], "LogAttributes": []}
    for r in rows:
        resource = json.loads(r["resource"]) if r.get("resource") else {}
        cols["Timestamp"].append(r["time_ns"] or r["observed_ns"] or 0)
        cols["TraceId"].append(r["trace_id"] or "")
        cols["SpanId"].append(r["span_id"] or "")
        cols["TraceFlags"].append(0)
        cols["SeverityText"].append(r["severity_text"] or "")
        cols["SeverityNumber"].append(r["severity_number"] or 0)
        service = resource.get("service.name", r.get("service"))
        cols["ServiceName"].append(as_string(service) if service is not None else "")
        cols["Body"].append(r["body"] or "")
        cols["ResourceSchemaUrl"].append("")
        cols["ResourceAttributes"].append(attribute_map(r.get("resource")))
        cols["ScopeSchemaUrl"].append("")
        cols["ScopeName"].append(r.get("scope") or "")
        cols["ScopeVersion"].append("")
        cols["ScopeAttributes"].append([])
        cols["LogAttributes"].append(attribute_map(r.get("attributes")))
    types = {"Timestamp": pa.timestamp("ns"), "TraceFlags": pa.uint8(), "SeverityNumber": pa.uint8(),
             "ResourceAttributes": text_map, "ScopeAttributes": text_map, "LogAttributes": text_map}
    return pa.table({name: pa.array(values, types.get(name, pa.string())) for name, values in cols.items()})


def load_otel(engine, database: str, spans: list[dict], logs: list[dict] = (), *, old_spelling: bool = False) -> None:
    """A fresh ``database`` on a ClickHouse ``engine`` holding ``spans`` in otel_traces and ``logs`` in otel_logs,
    as the exporter writes them."""
    engine.run(f"DROP DATABASE IF EXISTS `{database}`")
    engine.run(f"CREATE DATABASE `{database}`")
    engine.run(OTEL_TRACES_DDL.format(name=f"`{database}`.otel_traces"))
    engine.run(OTEL_LOGS_DDL.format(name=f"`{database}`.otel_logs"))
    engine.use(database)
    try:
        engine.insert("otel_traces", exporter_table(spans, old_spelling=old_spelling))
        if logs:
            table = exporter_logs_table(list(logs))
            engine.insert("otel_logs", table.select([c for c in table.column_names if c != "TimestampTime"]))
    finally:
        engine.use(None)
