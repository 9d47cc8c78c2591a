"""Jaeger JSON -> span rows: the UI's download (``{"data": [trace, ...]}`` or ``{"data": trace}``), a single trace
object (``traceID``, ``spans``, ``processes``), and the storage model's JSON (``traceId`` base64, ``process`` inline,
RFC 3339 ``startTime``, ``"100ns"`` durations, ``vStr``/``vInt64`` tag values).

Jaeger times are microseconds. ``span.kind``, ``otel.status_code`` and friends are tags in Jaeger: they become the
kind, status and scope columns and leave the attributes. A span without ``startTime`` has no start and no end, one
without ``duration`` no end (NULL, never the epoch). Process tags (``hostname``, ``ip``, ...) are resource attributes.

A download is read as a stream (``read_stream``), one trace at a time: memory holds one trace, not the file. A file
cut short loads every span before the cut (those of the cut trace without their process when its ``processes``
were not reached); the rest is one bad record.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import IO, Any

from jitrace.analyzer.rows import (
    BadRecord,
    Rows,
    as_int,
    hex_id,
    ns_in_range,
    parse_time_ns,
    string_arrays,
    to_json,
)

_MAPPED_TAGS = frozenset({"span.kind", "otel.status_code", "otel.status_description", "otel.scope.name",
                          "otel.scope.version", "otel.library.name", "otel.library.version"})
_KINDS = {"server": "SERVER", "client": "CLIENT", "producer": "PRODUCER", "consumer": "CONSUMER",
          "internal": "INTERNAL"}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ns|us|µs|ms|s)$")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


def looks_like(doc: Any) -> bool:
    if isinstance(doc, dict):
        if "data" in doc and isinstance(doc["data"], list | dict):
            return True
        return isinstance(doc.get("spans"), list) and ("traceID" in doc or "processes" in doc or _model_spans(doc))
    return False


def _model_spans(doc: dict) -> bool:
    spans = doc.get("spans") or []
    return bool(spans) and isinstance(spans[0], dict) and "operationName" in spans[0]


def _traces(doc: dict) -> list:
    data = doc.get("data", doc)
    return data if isinstance(data, list) else [data]


def _tag_value(tag: dict) -> Any:
    if "value" in tag:
        value, kind = tag["value"], str(tag.get("type", "")).lower()
        if kind == "int64":
            return as_int(value, f"tags[{tag.get('key')!r}]")
        if kind == "float64":
            if isinstance(value, bool):
                raise BadRecord(f"tags[{tag.get('key')!r}]: not a number")
            return float(value)
        if kind == "bool" and isinstance(value, str):
            return value.lower() == "true"
        return value
    for field in ("vStr", "vBool", "vInt64", "vFloat64", "vBinary"):
        if field in tag:
            value = tag[field]
            if field == "vInt64":
                return as_int(value, f"tags[{tag.get('key')!r}]")
            if field == "vFloat64":
                return float(value)
            return value
    vtype = str(tag.get("vType", "")).upper()
    return {"BOOL": False, "INT64": 0, "FLOAT64": 0.0}.get(vtype, "")  # the model omits zero values


def _tags(tags: Any, field: str) -> dict[str, Any]:
    if not tags:
        return {}
    if not isinstance(tags, list):
        raise BadRecord(f"{field}: expected a list")
    out = {}
    for t in tags:
        if not isinstance(t, dict) or not isinstance(t.get("key"), str):
            raise BadRecord(f"{field}: an entry has no string key")
        out[t["key"]] = _tag_value(t)
    return out


def _duration_ns(value: Any) -> int:
    if isinstance(value, str):
        m = _DURATION.match(value.strip())
        if m is None:
            raise BadRecord(f"duration: {value[:40]!r} is not a duration")
        return int(float(m.group(1)) * _UNIT_NS[m.group(2)])
    return as_int(value, "duration") * 1000


def _start_ns(value: Any) -> int:
    if isinstance(value, str) and not value.isdigit():
        return parse_time_ns(value, "startTime")
    return as_int(value, "startTime") * 1000


def _process(span: dict, processes: dict | None) -> tuple[str | None, str]:
    proc = span.get("process")
    if proc is None and "processID" in span:
        if processes is None:  # a cut trace: its processes were never read
            return None, "{}"
        proc = processes.get(span["processID"])
        if proc is None:
            raise BadRecord(f"processID: {str(span['processID'])[:40]!r} is not in processes")
    if not isinstance(proc, dict):
        return None, "{}"
    service = proc.get("serviceName")
    attrs = _tags(proc.get("tags"), "process.tags")
    if isinstance(service, str):
        attrs["service.name"] = service
    return (service if isinstance(service, str) else None), to_json(attrs)


def _parent(span: dict, trace_id: str) -> str | None:
    refs = span.get("references") or []
    if not isinstance(refs, list):
        raise BadRecord("references: expected a list")
    chosen = None
    for ref in refs:
        if not isinstance(ref, dict):
            raise BadRecord("references: an entry is not an object")
        kind = str(ref.get("refType", "CHILD_OF")).upper()
        ref_trace = hex_id(ref.get("traceID", ref.get("traceId")), 16, "references.traceID", required=False)
        if ref_trace not in (None, trace_id):
            continue  # a link into another trace, not the parent
        if kind == "CHILD_OF" or chosen is None:
            chosen = ref.get("spanID", ref.get("spanId"))
            if kind == "CHILD_OF":
                break
    if chosen is None:
        chosen = span.get("parentSpanID")
    return hex_id(chosen, 8, "references.spanID", required=False)


def _span(span: Any, processes: dict | None, source: str) -> tuple:
    if not isinstance(span, dict):
        raise BadRecord("span: expected an object")
    trace_id = hex_id(span.get("traceID", span.get("traceId")), 16, "traceID")
    tags = string_arrays(_tags(span.get("tags"), "tags"))
    service, resource = _process(span, processes)
    start = _start_ns(span["startTime"]) if span.get("startTime") is not None else None
    end = None
    if start is not None and span.get("duration") is not None:
        end = ns_in_range(start + _duration_ns(span["duration"]), "duration")
    kind = _KINDS.get(str(tags.get("span.kind", "")).lower(), "UNSPECIFIED" if "span.kind" in tags else "INTERNAL")
    code = str(tags.get("otel.status_code", "")).upper()
    if code not in ("OK", "ERROR"):
        code = "ERROR" if tags.get("error") in (True, "true") else "UNSET"
    message = tags.get("otel.status_description")
    scope = tags.get("otel.scope.name", tags.get("otel.library.name"))
    events = []
    for log in span.get("logs") or []:
        if not isinstance(log, dict):
            raise BadRecord("logs: an entry is not an object")
        fields = _tags(log.get("fields"), "logs.fields")
        events.append({"name": str(fields.pop("event", "log")), "time_ns": _start_ns(log.get("timestamp")),
                       "attributes": fields})
    name = span.get("operationName", "")
    return (
        trace_id,
        hex_id(span.get("spanID", span.get("spanId")), 8, "spanID"),
        _parent(span, trace_id),
        name if isinstance(name, str) else str(name),
        kind,
        ns_in_range(start, "startTime") if start is not None else None,
        end,
        code,
        message if isinstance(message, str) else None,
        service,
        resource,
        to_json({k: v for k, v in tags.items() if k not in _MAPPED_TAGS}),
        to_json(events),
        "[]",
        scope if isinstance(scope, str) else None,
        source,
    )


def _add_traces(traces: Iterable[Any], rows: Rows, path: str, flush: Callable[[Rows], None] | None,
                done: list[int]) -> None:
    """Rows of the spans of ``traces``; ``done[0]`` counts the spans seen (the position of the next one)."""
    for trace in traces:
        if not isinstance(trace, dict):
            rows.bad_record(f"{path}#{done[0]}", "trace: expected an object")
            continue
        processes = trace.get("processes") or {}
        spans = trace.get("spans")
        if not isinstance(spans, list) or not isinstance(processes, dict):
            rows.bad_record(f"{path}#{done[0]}", "trace: expected spans (a list) and processes (an object)")
            continue
        for span in spans:
            _add(rows, span, processes, f"{path}#{done[0]}")
            done[0] += 1
        if flush is not None and len(rows.spans) >= FLUSH_SPANS:
            flush(rows)


FLUSH_SPANS = 50_000  # rows a stream holds before they go to DuckDB


def add_doc(doc: dict, rows: Rows, path: str) -> None:
    _add_traces(_traces(doc), rows, path, None, [0])


def read_stream(f: IO[bytes], reopen: Callable[[], IO[bytes]], rows: Rows, path: str,
                flush: Callable[[Rows], None] | None, *, prefix: str) -> None:
    """The spans of a Jaeger file opened as ``f`` (binary), one trace at a time: ``prefix`` is where the traces are
    (``data.item`` for a download's list, ``data`` for one trace, ``""`` for a bare trace object). A cut file is
    read again (``reopen``) for the spans of the cut trace that are whole."""
    import ijson

    done = [0]
    traces_done = [0]

    def traces() -> Any:
        for trace in ijson.items(f, prefix):
            yield trace
            traces_done[0] += 1

    try:
        _add_traces(traces(), rows, path, flush, done)
        return
    except ijson.JSONError as exc:
        why = f"the JSON ends or breaks here, the rest is not read ({exc})"
    except (OSError, EOFError, ValueError) as exc:  # a compressed file cut short or corrupt
        why = f"cannot decompress the rest ({exc})"
    _cut_trace(reopen, rows, path, prefix, done)
    rows.bad_record(f"{path}#{done[0]}", why)


def _cut_trace(reopen: Callable[[], IO[bytes]], rows: Rows, path: str, prefix: str, done: list[int]) -> None:
    """The whole spans of the trace a cut file ends in: its spans after the ``done[0]`` already read."""
    import ijson

    spans = f"{prefix}.spans.item" if prefix else "spans.item"
    seen = 0
    with reopen() as f:
        try:
            for span in ijson.items(f, spans):
                seen += 1
                if seen <= done[0]:
                    continue
                _add(rows, span, None, f"{path}#{done[0]}")
                done[0] += 1
        except (ijson.JSONError, OSError, EOFError, ValueError):
            pass  # the cut, again


def _add(rows: Rows, span: Any, processes: dict | None, where: str) -> None:
    """One span's row, or a bad record naming where it is."""
    try:
        rows.spans.append(_span(span, processes, where))
    except (BadRecord, ValueError, TypeError, OverflowError) as exc:
        rows.bad_record(where, exc)
