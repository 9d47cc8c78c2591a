"""JSON-lines logs -> log rows: application logs carrying trace context, and OPA decision logs.

Application logs: trace context as ``opentelemetry-instrumentation-logging`` injects it (``otelTraceID``,
``otelSpanID``, ``otelServiceName``) or as ``trace_id``/``span_id`` (also ``traceId``/``spanId``). OPA decision logs
(``decision_id``) become log rows joined to spans by ``trace_id``/``span_id``; their bundle revision is the policy
version (``jit.policy.version``). Bearer tokens and JWTs are redacted from everything stored.
"""

from __future__ import annotations

from typing import Any

from jitrace.analyzer.redact import redact, redact_value
from jitrace.analyzer.rows import BadRecord, Rows, hex_id, parse_time_ns, to_json
from jitrace.instrumentation import contract

_TIME = ("timestamp", "time", "@timestamp", "ts", "asctime", "created")
_LEVEL = ("levelname", "level", "severity", "log.level", "severity_text")
_BODY = ("message", "msg", "body", "event")
_TRACE = ("otelTraceID", "trace_id", "traceId", "trace.id", "traceid")
_SPAN = ("otelSpanID", "span_id", "spanId", "span.id", "spanid")
_SERVICE = ("otelServiceName", "service.name", "service_name", "service")
_CONTEXT = frozenset(("otelTraceSampled",))
# Python logging and common names -> OpenTelemetry SeverityNumber
_SEVERITY = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "NOTICE": 10, "WARN": 13, "WARNING": 13, "ERROR": 17,
             "CRITICAL": 21, "FATAL": 21, "PANIC": 21}


_PY_LEVELNO = {10: 5, 20: 9, 30: 13, 40: 17, 50: 21}


def is_opa(obj: Any) -> bool:
    return isinstance(obj, dict) and "decision_id" in obj


def is_app_log(obj: Any) -> bool:
    return isinstance(obj, dict) and any(k in obj for k in _BODY + _TRACE + _LEVEL)


def _pop(obj: dict, names: tuple[str, ...]) -> Any:
    for name in names:
        if name in obj:
            return obj.pop(name)
    return None


def _id(value: Any, size: int, field: str) -> str | None:
    if value in (None, "", "0", 0):  # the logging instrumentation writes "0" outside a span
        return None
    return hex_id(str(value), size, field, required=False)


def _level(value: Any) -> tuple[int | None, str | None]:
    if value is None:
        return None, None
    if isinstance(value, int) and not isinstance(value, bool):
        if value in _PY_LEVELNO:  # Python's levelno (10 DEBUG ... 50 CRITICAL)
            return _PY_LEVELNO[value], str(value)
        return (value if 1 <= value <= 24 else None), str(value)  # a number outside OTel's range stays text only
    text = str(value)
    return _SEVERITY.get(text.upper()), text


def app_log(obj: dict, where: str) -> tuple:
    obj = dict(obj)
    when = _pop(obj, _TIME)
    time_ns = parse_time_ns(when, "timestamp") if when is not None else None
    number, text = _level(_pop(obj, _LEVEL))
    body = _pop(obj, _BODY)
    trace_id = _id(_pop(obj, _TRACE), 16, "trace_id")
    span_id = _id(_pop(obj, _SPAN), 8, "span_id")
    service = _pop(obj, _SERVICE)
    for key in _CONTEXT:
        obj.pop(key, None)
    return (
        time_ns, time_ns, trace_id, span_id, number, text,
        None if body is None else redact(body) if isinstance(body, str) else to_json(redact_value(body)),
        service if isinstance(service, str) and service else None,
        to_json({"service.name": service}) if isinstance(service, str) and service else "{}",
        to_json(redact_value(obj)),
        None,
        where,
    )


def _decision(result: Any) -> str | None:
    if isinstance(result, dict):
        result = result.get("allow", result.get("allowed"))
    if isinstance(result, bool):
        return contract.DECISION_ALLOW if result else contract.DECISION_DENY
    return None


def opa_log(obj: dict, where: str) -> tuple:
    time_ns = parse_time_ns(obj.get("timestamp"), "timestamp") if obj.get("timestamp") is not None else None
    bundles = obj.get("bundles") or {}
    if not isinstance(bundles, dict):
        raise BadRecord("bundles: expected an object")
    revisions = sorted(str(b.get("revision")) for b in bundles.values() if isinstance(b, dict) and b.get("revision"))
    if not revisions and isinstance(obj.get("revision"), str):  # OPA before bundles{} had one top-level revision
        revisions = [obj["revision"]]
    labels = obj.get("labels") if isinstance(obj.get("labels"), dict) else {}
    path = obj.get("path") or obj.get("query") or ""
    decision = _decision(obj.get("result"))
    attrs: dict[str, Any] = {
        "opa.decision_id": obj.get("decision_id"),
        "opa.path": path,
        contract.POLICY_ENGINE: "opa",
        contract.POLICY_ID: path or None,
    }
    if revisions:
        attrs[contract.POLICY_VERSION] = ",".join(revisions)
    if decision is not None:
        attrs[contract.POLICY_DECISION] = decision
    for key in ("result", "input", "erased", "masked", "req_id", "requested_by", "metrics", "nd_builtin_cache"):
        if key in obj:
            attrs[f"opa.{key}"] = redact_value(obj[key])  # inputs often quote the Authorization header
    attrs = {k: v for k, v in attrs.items() if v is not None}
    body = f"OPA decision {path}: {decision or to_json(redact_value(obj.get('result')))[:200]}"
    return (
        time_ns, time_ns,
        _id(obj.get("trace_id"), 16, "trace_id"),
        _id(obj.get("span_id"), 8, "span_id"),
        9, "INFO", body,
        "opa",
        to_json({"service.name": "opa", "opa.labels": redact_value(labels)}),
        to_json(attrs),
        "opa",
        where,
    )


def add_line(obj: Any, rows: Rows, where: str) -> None:
    try:
        if is_opa(obj):
            rows.logs.append(opa_log(obj, where))
        elif isinstance(obj, dict):
            rows.logs.append(app_log(obj, where))
        else:
            raise BadRecord(f"expected a JSON object, got {type(obj).__name__}")
    except (BadRecord, ValueError, TypeError, OverflowError) as exc:
        rows.bad_record(where, exc)
