"""Zipkin v2 JSON -> span rows: a list of spans (``/api/v2/trace``), or a list of traces (``/api/v2/traces``).

Zipkin times are microseconds; every tag is a string. A span without ``kind`` is a local span (INTERNAL). Shared
server spans (``"shared": true``, B3 single-id) keep the client's span id: the analyzer pairs them as such. A span
without ``timestamp`` has no start and no end, one without ``duration`` no end (NULL, never the epoch).

A file is read as a stream (``read_stream``): one span at a time, so memory does not grow with the file. A file cut
short loads every span before the cut; the rest is one bad record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any

from jitrace.analyzer.rows import BadRecord, Rows, as_int, hex_id, ns_in_range, string_arrays, to_json

_KINDS = {"SERVER", "CLIENT", "PRODUCER", "CONSUMER"}


def looks_like(doc: Any) -> bool:
    if not isinstance(doc, list) or not doc:
        return False
    first = next((t[0] for t in doc if isinstance(t, list) and t), None) if isinstance(doc[0], list) else doc[0]
    return isinstance(first, dict) and "traceId" in first and "id" in first


def _span(s: Any, source: str) -> tuple:
    if not isinstance(s, dict):
        raise BadRecord("span: expected an object")
    kind = s.get("kind")
    if kind is not None and kind not in _KINDS:
        raise BadRecord(f"kind: unknown value {str(kind)[:40]!r}")
    tags = s.get("tags") or {}
    if not isinstance(tags, dict):
        raise BadRecord("tags: expected an object")
    local = s.get("localEndpoint") or {}
    if not isinstance(local, dict):
        raise BadRecord("localEndpoint: expected an object")
    service = local.get("serviceName")
    resource = {"service.name": service} if isinstance(service, str) else {}
    address = local.get("ipv4") or local.get("ipv6")  # the host's address: its clock domain (span_facts.sql)
    if isinstance(address, str):
        resource["host.ip"] = address
    attrs = string_arrays(dict(tags))
    remote = s.get("remoteEndpoint")
    if isinstance(remote, dict):
        for key, attr in (("serviceName", "peer.service"), ("ipv4", "net.peer.ip"), ("ipv6", "net.peer.ip"),
                          ("port", "net.peer.port")):
            if key in remote:
                attrs[attr] = remote[key]
    if s.get("shared"):
        attrs["zipkin.shared"] = True
    start = as_int(s.get("timestamp"), "timestamp", None)
    duration = as_int(s.get("duration"), "duration", None) if start is not None else None
    end = ns_in_range((start + duration) * 1000, "duration") if duration is not None else None
    start = ns_in_range(start * 1000, "timestamp") if start is not None else None
    events = [{"name": a.get("value", ""), "time_ns": as_int(a.get("timestamp"), "annotations.timestamp") * 1000,
               "attributes": {}} for a in (s.get("annotations") or []) if isinstance(a, dict)]
    error = tags.get("error")
    name = s.get("name") or ""
    return (
        hex_id(s.get("traceId"), 16, "traceId"),
        hex_id(s.get("id"), 8, "id"),
        hex_id(s.get("parentId"), 8, "parentId", required=False),
        name if isinstance(name, str) else str(name),
        kind or "INTERNAL",
        start,
        end,
        "ERROR" if error is not None else "UNSET",
        error if isinstance(error, str) and error else None,
        service if isinstance(service, str) else None,
        to_json(resource),
        to_json(attrs),
        to_json(events),
        "[]",
        None,
        source,
    )


def _add(items: Any, rows: Rows, path: str, flush: Callable[[Rows], None] | None) -> int:
    """Rows of the spans in ``items`` (spans, or traces: lists of spans); returns how many were seen."""
    n = 0
    for item in items:
        for s in item if isinstance(item, list) else (item,):
            where = f"{path}#{n}"
            try:
                rows.spans.append(_span(s, where))
            except (BadRecord, ValueError, TypeError, OverflowError) as exc:
                rows.bad_record(where, exc)
            n += 1
            if flush is not None and len(rows.spans) >= FLUSH_SPANS:
                flush(rows)
    return n


FLUSH_SPANS = 50_000  # rows a stream holds before they go to DuckDB


def add_doc(doc: list, rows: Rows, path: str) -> None:
    _add(doc, rows, path, None)


def read_stream(f: IO[bytes], rows: Rows, path: str, flush: Callable[[Rows], None] | None, *,
                traces: bool = False) -> None:
    """The spans of a Zipkin file opened as ``f`` (binary), read one at a time (``traces``: a list of traces, whose
    spans are read one at a time too); ``flush`` takes the rows so far."""
    import ijson

    counted = [0]

    def items() -> Any:
        for item in ijson.items(f, "item.item" if traces else "item"):
            yield item
            counted[0] += 1

    try:
        _add(items(), rows, path, flush)
    except ijson.JSONError as exc:
        rows.bad_record(f"{path}#{counted[0]}", f"the JSON ends or breaks here, the rest is not read ({exc})")
    except (OSError, EOFError, ValueError) as exc:  # a compressed file cut short or corrupt
        rows.bad_record(f"{path}#{counted[0]}", f"cannot decompress the rest ({exc})")
