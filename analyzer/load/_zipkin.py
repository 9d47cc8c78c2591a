"""Zipkin v2 JSON -> span rows: a list of spans (``/api/v2/trace``), or a list of traces (``/api/v2/traces``).

Zipkin times are microseconds; every tag is a string. A span without ``kind`` is a local span (INTERNAL). Shared
server spans (``"shared": true``, B3 single-id) keep the client's span id: the analyzer pairs them as such.
"""

from __future__ import annotations

from typing import Any

from jitrace.analyzer.load._rows import BadRecord, Rows, as_int, hex_id, ns_in_range, to_json

_KINDS = {"SERVER", "CLIENT", "PRODUCER", "CONSUMER"}


def looks_like(doc: Any) -> bool:
    if not isinstance(doc, list) or not doc:
        return False
    first = doc[0][0] if isinstance(doc[0], list) and doc[0] else doc[0]
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
    for key, attr in (("ipv4", "host.ip"), ("ipv6", "host.ip")):
        if isinstance(local.get(key), str):
            resource[attr] = local[key]
    attrs = dict(tags)
    remote = s.get("remoteEndpoint")
    if isinstance(remote, dict):
        for key, attr in (("serviceName", "peer.service"), ("ipv4", "net.peer.ip"), ("ipv6", "net.peer.ip"),
                          ("port", "net.peer.port")):
            if key in remote:
                attrs[attr] = remote[key]
    if s.get("shared"):
        attrs["zipkin.shared"] = True
    start = as_int(s.get("timestamp"), "timestamp") * 1000
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
        ns_in_range(start, "timestamp"),
        ns_in_range(start + as_int(s.get("duration"), "duration") * 1000, "duration"),
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


def add_doc(doc: list, rows: Rows, path: str) -> None:
    spans = [s for trace in doc for s in trace] if doc and isinstance(doc[0], list) else doc
    for n, s in enumerate(spans):
        where = f"{path}#{n}"
        try:
            rows.spans.append(_span(s, where))
        except (BadRecord, ValueError, TypeError, OverflowError) as exc:
            rows.bad_record(where, exc)
