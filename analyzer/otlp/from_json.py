"""OTLP JSON (the protobuf JSON mapping, as the Collector's file exporter and OTLP/HTTP JSON write it) -> rows.

Tolerates what real producers do: hex or base64 ids, int or string enums, 64-bit ints as strings, omitted defaults,
the old ``instrumentationLibrarySpans`` name. One span or log record that cannot be read is one bad record.
"""

from __future__ import annotations

from typing import Any

from jitrace.analyzer import schema
from jitrace.analyzer.redact import redact, redact_value
from jitrace.analyzer.rows import BadRecord, Rows, as_int, hex_id, to_json

_KINDS = {i: k for i, k in enumerate(schema.SPAN_KINDS)} | {f"SPAN_KIND_{k}": k for k in schema.SPAN_KINDS}
_STATUS = {i: c for i, c in enumerate(schema.STATUS_CODES)} | {f"STATUS_CODE_{c}": c for c in schema.STATUS_CODES}
_SEVERITY_PREFIX = "SEVERITY_NUMBER_"
_SEVERITY_NAMES = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")


def any_value(v: Any) -> Any:
    """An OTLP ``AnyValue`` object -> the Python value with its JSON type."""
    if not isinstance(v, dict):
        raise BadRecord(f"value: expected an object, got {type(v).__name__}")
    if "stringValue" in v:
        s = v["stringValue"]
        if not isinstance(s, str):
            raise BadRecord("stringValue: not a string")
        return s
    if "intValue" in v:
        return as_int(v["intValue"], "intValue")
    if "doubleValue" in v:
        d = v["doubleValue"]
        if isinstance(d, bool) or not isinstance(d, int | float | str):
            raise BadRecord("doubleValue: not a number")
        try:
            return float(d)  # "NaN", "Infinity" are the proto JSON spelling; to_json makes them strings
        except (ValueError, OverflowError):  # OverflowError: an integer literal past any double
            raise BadRecord(f"doubleValue: {str(d)[:40]!r} is not a number") from None
    if "boolValue" in v:
        b = v["boolValue"]
        if not isinstance(b, bool):
            raise BadRecord("boolValue: not a boolean")
        return b
    if "arrayValue" in v:
        values = _container(v["arrayValue"], "arrayValue").get("values") or []
        if not isinstance(values, list):
            raise BadRecord("arrayValue.values: not a list")
        return [any_value(x) for x in values]
    if "kvlistValue" in v:
        return key_values(_container(v["kvlistValue"], "kvlistValue").get("values"))
    if "bytesValue" in v:
        b = v["bytesValue"]
        if not isinstance(b, str):
            raise BadRecord("bytesValue: not a string")
        return b  # base64 text, as the JSON mapping has it
    return None


def _container(value: Any, field: str) -> dict:
    """An ArrayValue / KeyValueList object (absent or null: empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRecord(f"{field}: expected an object, got {type(value).__name__}")
    return value


_MISS = object()
# (AnyValue field, JSON type) -> converter, for the spellings nearly every producer uses; the rest take any_value
_FAST: dict[tuple[str, type], Any] = {
    ("stringValue", str): None, ("boolValue", bool): None, ("intValue", str): int, ("intValue", int): None,
    ("doubleValue", float): None, ("doubleValue", int): float,
}
_INT_RANGE = range(-(2**63), 2**63)


def key_values(kvs: Any) -> dict[str, Any]:
    """An OTLP ``KeyValue`` list -> a dict with typed values."""
    if not kvs:
        return {}
    if type(kvs) is not list:
        raise BadRecord("attributes: expected a list")
    out = {}
    for kv in kvs:
        try:  # the common case in a few C calls; anything unusual falls through to the careful path below
            key, value = kv["key"], kv["value"]
            if type(key) is str and len(value) == 1:
                ((field, x),) = value.items()
                conv = _FAST.get((field, type(x)), _MISS)
                if conv is None:
                    out[key] = x
                    continue
                if conv is int:
                    n = int(x)
                    if n in _INT_RANGE:
                        out[key] = n
                        continue
                elif conv is not _MISS:
                    out[key] = conv(x)
                    continue
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            pass
        if not isinstance(kv, dict):
            raise BadRecord("attributes: an entry is not an object")
        key = kv.get("key")
        if not isinstance(key, str):
            raise BadRecord("attributes: an entry has no string key")
        try:
            out[key] = any_value(kv.get("value", {}))
        except BadRecord as exc:
            raise BadRecord(f"attributes[{key[:60]!r}].{exc}") from None
    return out


def _enum(table: dict, value: Any, field: str, default: str) -> str:
    if value is None:
        return default
    try:
        return table[value]
    except (KeyError, TypeError):
        raise BadRecord(f"{field}: unknown value {str(value)[:40]!r}") from None


def _resource(res: Any) -> tuple[str | None, str]:
    attrs = key_values((res or {}).get("attributes") if isinstance(res, dict | type(None)) else _not_obj("resource"))
    service = attrs.get("service.name")
    return (service if isinstance(service, str) else None), to_json(attrs)


def _not_obj(field: str):
    raise BadRecord(f"{field}: expected an object")


def _scope_name(scope: Any) -> str | None:
    if isinstance(scope, dict):
        name = scope.get("name")
        return name if isinstance(name, str) else None
    return None


def _list(obj: dict, *names: str) -> list:
    for name in names:
        value = obj.get(name)
        if value is not None:
            if not isinstance(value, list):
                raise BadRecord(f"{name}: expected a list")
            return value
    return []


def _id(value: Any, size: int, field: str, required: bool = True) -> str | None:
    """``hex_id`` with a fast path for the usual well-formed hex id."""
    if type(value) is str and len(value) == 2 * size:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            pass
        else:
            if len(raw) == size and raw.count(0) != size:
                return raw.hex()
    return hex_id(value, size, field, required=required)


def _ns(value: Any, field: str) -> int:
    if type(value) is str:
        try:
            n = int(value)
        except ValueError:
            pass
        else:
            if n in _INT_RANGE:
                return n
    return as_int(value, field)


def _span(s: Any, service: str | None, resource: str, scope: str | None, source: str) -> tuple:
    if type(s) is not dict:
        raise BadRecord("span: expected an object")
    status = s.get("status") or {}
    if type(status) is not dict:
        raise BadRecord("status: expected an object")
    attrs = s.get("attributes")
    events = s.get("events")
    links = s.get("links")
    message = status.get("message")
    name = s.get("name", "")
    if type(name) is not str:
        raise BadRecord("name: not a string")
    return (
        _id(s.get("traceId"), 16, "traceId"),
        _id(s.get("spanId"), 8, "spanId"),
        _id(s.get("parentSpanId"), 8, "parentSpanId", required=False),
        name,
        _enum(_KINDS, s.get("kind"), "kind", "UNSPECIFIED"),
        _ns(s.get("startTimeUnixNano"), "startTimeUnixNano"),
        _ns(s.get("endTimeUnixNano"), "endTimeUnixNano"),
        _enum(_STATUS, status.get("code"), "status.code", "UNSET"),
        message if isinstance(message, str) and message else None,
        service,
        resource,
        to_json(key_values(attrs)) if attrs else "{}",
        _events(events) if events else "[]",
        _links(links) if links else "[]",
        scope,
        source,
    )


def _entries(value: Any, field: str) -> list[dict]:
    """A span's list of events or links, each an object (else BadRecord naming ``field``)."""
    if not isinstance(value, list):
        raise BadRecord(f"{field}: expected a list")
    if not all(isinstance(entry, dict) for entry in value):
        raise BadRecord(f"{field}: an entry is not an object")
    return value


def _events(events: Any) -> str:
    return to_json([{"name": e.get("name", ""), "time_ns": as_int(e.get("timeUnixNano"), "events.timeUnixNano"),
                     "attributes": key_values(e.get("attributes"))} for e in _entries(events, "events")])


def _links(links: Any) -> str:
    return to_json([{"trace_id": hex_id(ln.get("traceId"), 16, "links.traceId"),
                     "span_id": hex_id(ln.get("spanId"), 8, "links.spanId"),
                     "attributes": key_values(ln.get("attributes"))} for ln in _entries(links, "links")])


def severity_number(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadRecord("severityNumber: not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.startswith(_SEVERITY_PREFIX):
        rest = value[len(_SEVERITY_PREFIX):]
        if rest == "UNSPECIFIED":
            return 0
        base = rest.rstrip("0123456789")
        if base in _SEVERITY_NAMES:
            return 1 + 4 * _SEVERITY_NAMES.index(base) + (int(rest[len(base):]) - 1 if rest[len(base):] else 0)
    raise BadRecord(f"severityNumber: unknown value {str(value)[:40]!r}")


def _log(r: Any, service: str | None, resource: str, scope: str | None, source: str) -> tuple:
    if not isinstance(r, dict):
        raise BadRecord("logRecord: expected an object")
    body = r.get("body")
    body_value = any_value(body) if body is not None else None
    if body_value is None:
        body_text = None
    elif isinstance(body_value, str):
        body_text = redact(body_value)
    else:
        body_text = to_json(redact_value(body_value))
    attrs = r.get("attributes")
    text = r.get("severityText")
    observed = as_int(r.get("observedTimeUnixNano"), "observedTimeUnixNano", None)
    time_ns = as_int(r.get("timeUnixNano"), "timeUnixNano", None) or observed
    return (
        time_ns,
        observed,
        hex_id(r.get("traceId"), 16, "traceId", required=False),
        hex_id(r.get("spanId"), 8, "spanId", required=False),
        severity_number(r.get("severityNumber")),
        text if isinstance(text, str) and text else None,
        body_text,
        service,
        resource,
        to_json(redact_value(key_values(attrs))) if attrs else "{}",
        scope,
        source,
    )


def add_request(obj: Any, rows: Rows, where: str, *, first: int = 0, indexed: bool = False) -> int:
    """Rows from one export request object (``resourceSpans`` and/or ``resourceLogs``); returns records seen.

    Positions: a record's source is ``where`` (``path:line`` for JSON lines), or ``where#N`` when ``indexed``
    (whole files), N counting records from ``first``; a bad record is reported as ``where#N``.
    """
    if not isinstance(obj, dict):
        rows.bad_record(where, "expected a JSON object with resourceSpans or resourceLogs")
        return 0
    n = first
    for key, per_scope, items, make, out in (
        ("resourceSpans", ("scopeSpans", "instrumentationLibrarySpans"), "spans", _span, rows.spans),
        ("resourceLogs", ("scopeLogs", "instrumentationLibraryLogs"), "logRecords", _log, rows.logs),
    ):
        resources = obj.get(key)
        if resources is None:
            continue
        if not isinstance(resources, list):
            rows.bad_record(where, f"{key}: expected a list")
            continue
        for rs in resources:
            try:
                if not isinstance(rs, dict):
                    raise BadRecord(f"{key}: an entry is not an object")
                service, resource = _resource(rs.get("resource"))
                scopes = _list(rs, *per_scope)
            except BadRecord as exc:
                rows.bad_record(where, exc)
                continue
            for ss in scopes:
                try:
                    if not isinstance(ss, dict):
                        raise BadRecord(f"{per_scope[0]}: an entry is not an object")
                    scope = _scope_name(ss.get("scope") or ss.get("instrumentationLibrary"))
                    records = _list(ss, items)
                except BadRecord as exc:
                    rows.bad_record(where, exc)
                    continue
                for rec in records:
                    try:
                        out.append(make(rec, service, resource, scope, f"{where}#{n}" if indexed else where))
                    except BadRecord as exc:
                        rows.bad_record(f"{where}#{n}", exc)
                    n += 1
    return n - first
