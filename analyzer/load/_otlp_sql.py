"""OTLP JSON lines of spans, the common case, converted by DuckDB (C++) instead of the Python reader.

``read_ndjson_objects`` + ``json_transform`` into the export request's shape (``read_json`` with the same columns
is 5x slower on the Collector's long lines), two UNNESTs, and SQL macros that build the attribute JSON text as
``_rows.to_json`` spells it. Measured on the bench file (100k spans, 773 B/span): ~2.3 CPU-s instead of ~5-7 for
the Python reader. It takes only what it converts exactly as the Python reader would: anything else (a bad or
short id, a nested array or a kvlist, an int or time not in canonical form, a line that is not JSON, a missing
key) makes the statement fail via ``error()``, nothing of the file is inserted, and the caller reads the file
with the Python reader, which names every bad record with its file and position. Files with blank lines (line
numbers would differ), logs, or the old ``instrumentationLibrary*`` names go to the Python reader directly.

Known leniency (hostile input only): a ``boolValue``/``intValue``/``doubleValue`` given as the other JSON type
(``"true"``, ``7``) is taken by value, and a repeated attribute key keeps both entries in the JSON text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb

_V = "VARCHAR"  # numbers land here as their text: ints and times are then checked to be canonical
_SCALAR = {"stringValue": "JSON", "intValue": _V, "doubleValue": _V, "boolValue": "BOOLEAN", "arrayValue": "JSON",
           "kvlistValue": "JSON", "bytesValue": _V}
_ATTRS = [{"key": _V, "value": _SCALAR | {"arrayValue": {"values": [_SCALAR]}}}]
_SPAN = {"traceId": _V, "spanId": _V, "parentSpanId": _V, "name": _V, "kind": _V, "startTimeUnixNano": _V,
         "endTimeUnixNano": _V, "status": {"code": _V, "message": _V}, "attributes": _ATTRS,
         "events": [{"name": _V, "timeUnixNano": _V, "attributes": _ATTRS}],
         "links": [{"traceId": _V, "spanId": _V, "attributes": _ATTRS}]}
# json_transform's structure (not a cast: a cast insists on every key); missing keys are NULL
_REQUEST = json.dumps({"resourceSpans": [{"resource": {"attributes": _ATTRS},
                                          "scopeSpans": [{"scope": {"name": _V}, "spans": [_SPAN]}]}]})

# Each macro yields JSON text exactly as ``_rows.to_json`` spells the Python reader's value (same types; NaN and
# infinities as strings), or calls error() for anything the Python reader would treat differently or reject.
_MACROS = r"""
CREATE OR REPLACE TEMP MACRO jt_fail(what) AS error('jitrace-sql-fallback: ' || what);
-- A value this path cannot spell exactly as the Python reader (a nested array or kvlist, an int that is not in
-- canonical form: TRY_CAST alone would take '12.5' as 13, a non-finite double) becomes a NUL byte, which to_json
-- never writes (it escapes it): one check per finished column (jt_ok) instead of error() calls inside the lambdas,
-- which cost three times more.
CREATE OR REPLACE TEMP MACRO jt_scalar(v) AS CASE
    WHEN v.stringValue IS NOT NULL THEN CASE WHEN starts_with(v.stringValue, '"') THEN v.stringValue::VARCHAR END
    WHEN v.intValue IS NOT NULL THEN CASE WHEN TRY_CAST(v.intValue AS BIGINT)::VARCHAR = v.intValue THEN v.intValue END
    WHEN v.doubleValue IS NOT NULL THEN CASE WHEN isfinite(TRY_CAST(v.doubleValue AS DOUBLE))
                                             THEN v.doubleValue::DOUBLE::VARCHAR
                                             WHEN TRY_CAST(v.doubleValue AS DOUBLE) IS NOT NULL  -- as str(float)
                                             THEN '"' || lower(v.doubleValue::DOUBLE::VARCHAR) || '"' END
    WHEN v.boolValue IS NOT NULL THEN v.boolValue::VARCHAR
    WHEN v.bytesValue IS NOT NULL THEN to_json(v.bytesValue)::VARCHAR
    WHEN v.arrayValue IS NULL AND v.kvlistValue IS NULL THEN 'null' END;
CREATE OR REPLACE TEMP MACRO jt_value(v) AS CASE WHEN v.arrayValue IS NULL THEN jt_scalar(v)
    ELSE '[' || array_to_string(list_transform(v.arrayValue."values", lambda x: coalesce(jt_scalar(x), chr(0))), ',')
         || ']' END;
CREATE OR REPLACE TEMP MACRO jt_attrs(a) AS CASE WHEN a IS NULL OR len(a) = 0 THEN '{}' ELSE
    '{' || array_to_string(list_transform(a, lambda x: coalesce(to_json(x.key)::VARCHAR || ':' || jt_value(x.value),
                                                                  chr(0))), ',') || '}' END;
CREATE OR REPLACE TEMP MACRO jt_ok(text) AS CASE WHEN contains(text, chr(0)) THEN jt_fail('value') ELSE text END;
CREATE OR REPLACE TEMP MACRO jt_time(x) AS CASE WHEN x IS NULL THEN 0
    WHEN TRY_CAST(x AS BIGINT)::VARCHAR = x THEN x::BIGINT ELSE jt_fail('time') END;
CREATE OR REPLACE TEMP MACRO jt_id(x, size) AS CASE
    WHEN x IS NULL OR x = '' THEN NULL
    WHEN len(x) = 2 * size AND regexp_full_match(x, '[0-9a-fA-F]+') THEN lower(x)
    WHEN len(x) = 4 * ceil(size / 3) AND octet_length(from_base64(x)) = size THEN lower(hex(from_base64(x)))
    ELSE jt_fail('id') END;
CREATE OR REPLACE TEMP MACRO jt_nonzero(x) AS CASE WHEN ltrim(x, '0') = '' THEN NULL ELSE x END;
CREATE OR REPLACE TEMP MACRO jt_required(x) AS coalesce(jt_nonzero(x), jt_fail('missing id'));
CREATE OR REPLACE TEMP MACRO jt_kind(k) AS CASE coalesce(k, '0')
    WHEN '0' THEN 'UNSPECIFIED' WHEN '1' THEN 'INTERNAL' WHEN '2' THEN 'SERVER' WHEN '3' THEN 'CLIENT'
    WHEN '4' THEN 'PRODUCER' WHEN '5' THEN 'CONSUMER'
    ELSE CASE WHEN k IN ('SPAN_KIND_UNSPECIFIED', 'SPAN_KIND_INTERNAL', 'SPAN_KIND_SERVER', 'SPAN_KIND_CLIENT',
                         'SPAN_KIND_PRODUCER', 'SPAN_KIND_CONSUMER') THEN k[11:] ELSE jt_fail('kind') END END;
CREATE OR REPLACE TEMP MACRO jt_status(c) AS CASE coalesce(c, '0')
    WHEN '0' THEN 'UNSET' WHEN '1' THEN 'OK' WHEN '2' THEN 'ERROR'
    WHEN 'STATUS_CODE_UNSET' THEN 'UNSET' WHEN 'STATUS_CODE_OK' THEN 'OK' WHEN 'STATUS_CODE_ERROR' THEN 'ERROR'
    ELSE jt_fail('status') END;
CREATE OR REPLACE TEMP MACRO jt_events(e) AS CASE WHEN e IS NULL OR len(e) = 0 THEN '[]' ELSE
    '[' || array_to_string(list_transform(e, lambda x: '{"name":' || to_json(coalesce(x.name, ''))::VARCHAR
        || ',"time_ns":' || jt_time(x.timeUnixNano)::VARCHAR || ',"attributes":' || jt_attrs(x.attributes) || '}'),
        ',') || ']' END;
CREATE OR REPLACE TEMP MACRO jt_links(l) AS CASE WHEN l IS NULL OR len(l) = 0 THEN '[]' ELSE
    '[' || array_to_string(list_transform(l, lambda x: '{"trace_id":'
        || to_json(jt_required(jt_id(x.traceId, 16)))::VARCHAR
        || ',"span_id":' || to_json(jt_required(jt_id(x.spanId, 8)))::VARCHAR
        || ',"attributes":' || jt_attrs(x.attributes) || '}'), ',') || ']' END;
"""

# chr(0) spelled as a literal: the call is not folded inside lambdas and costs as much as the rest together
_MACROS = _MACROS.replace("chr(0)", "'\x00'")

_QUERY = """
INSERT INTO spans
WITH lines AS (
    SELECT row_number() OVER () AS line, json_transform(json, '{request}') AS request
    FROM read_ndjson_objects(?, compression = ?, maximum_object_size = 1073741824)
), resources AS (
    SELECT line, r.resource AS resource, r.scopeSpans AS scopes
    FROM (SELECT line, unnest(coalesce(request.resourceSpans, jt_fail('no resourceSpans'))) AS r FROM lines)
), scoped AS (
    SELECT line, jt_ok(jt_attrs(resource.attributes)) AS resource_json,
           list_filter(resource.attributes, lambda a: a.key = 'service.name')[-1].value.stringValue ->> '$' AS service,
           unnest(coalesce(scopes, [])) AS ss
    FROM resources
), spans_ AS (
    SELECT line, resource_json, service, ss.scope.name AS scope, unnest(coalesce(ss.spans, [])) AS s FROM scoped
), rows_ AS (
    SELECT jt_required(jt_id(s.traceId, 16)) AS trace_id, jt_required(jt_id(s.spanId, 8)) AS span_id,
           jt_nonzero(jt_id(s.parentSpanId, 8)) AS parent_span_id, coalesce(s.name, '') AS name,
           jt_kind(s.kind) AS kind, jt_time(s.startTimeUnixNano) AS start_ns, jt_time(s.endTimeUnixNano) AS end_ns,
           jt_status(s.status.code) AS status_code, nullif(s.status.message, '') AS status_message, service,
           resource_json AS resource, jt_attrs(s.attributes) AS attributes, jt_events(s.events) AS events,
           jt_links(s.links) AS links, scope, ? || ':' || line::VARCHAR AS source
    FROM spans_
)
SELECT trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, status_code, status_message, service,
       resource, jt_ok(attributes), jt_ok(events), jt_ok(links), scope, source
FROM rows_
"""

_BLANK_LINE = re.compile(rb"\n[ \t\r]*\n")
_COMPRESSION = {b"\x1f\x8b": "gzip", b"\x28\xb5": "zstd"}


def applies(data: bytes) -> bool:
    """Whether ``data`` (the file's decompressed bytes) is JSON lines of span exports this path may take."""
    body = data.rstrip()
    return (body[:1] == b"{" and b"\n" in body and _BLANK_LINE.search(body) is None
            and b'"resourceLogs"' not in data and b'"instrumentationLibrary' not in data
            and b'"resourceSpans"' in data)


def insert(con: duckdb.DuckDBPyConnection, path: Path, raw_head: bytes) -> int | None:
    """Insert the file's spans into ``spans``; None (nothing inserted) when the Python reader must take it."""
    compression = _COMPRESSION.get(raw_head[:2], "none")
    try:
        con.execute(_MACROS)
        (count,) = con.execute(_QUERY.format(request=_REQUEST), [str(path), compression, str(path)]).fetchone()
    except duckdb.Error:
        return None  # statement-atomic: nothing of this file went in
    return int(count)
