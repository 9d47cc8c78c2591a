"""One file's bytes -> rows: detect the format from the content (not the name) and run its reader.

Text files are JSON: a whole document (OTLP, Jaeger, Zipkin; OTLP inside a Jaeger ``/api/v3`` response,
``{"result": ...}``, or a Tempo trace-by-id response, ``{"batches": [...]}`` or ``{"trace": ...}``) or JSON lines
(the Collector's file exporter, OPA decision logs, application logs). Binary files are OTLP protobuf
(length-prefixed messages, or one bare message). Parquet is handled by ``_parquet`` (DuckDB reads it straight into
the table). Zipkin files and Jaeger downloads, told apart by their first bytes, are read as streams (``read_path``).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jitrace.analyzer.errors import UserError
from jitrace.analyzer.load import _applogs, _files, _jaeger, _zipkin
from jitrace.analyzer.otlp import from_json
from jitrace.analyzer.rows import Rows

_KNOWN = ("OTLP JSON/protobuf (also inside Jaeger /api/v3 and Tempo responses), Jaeger JSON, Zipkin v2 JSON, "
          "OTLP/OPA/application JSON-lines logs, jitrace Parquet")
_HEAD_BYTES = 64 * 1024  # what is read of a file to tell whether it is streamed (a Zipkin or Jaeger document)


class UnknownFormat(UserError):
    """A file in no known format: an error for a file named on the command line, skipped inside a folder."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path
OTLP_KEYS = ("resourceSpans", "resourceLogs")
# OTLP signals jitrace does not read. The Collector's file exporter writes them beside the span files, or into the
# same file when one exporter serves several pipelines: such a request is skipped and counted, not a bad record.
OTHER_SIGNALS = ("resourceMetrics", "resourceProfiles")


def other_signal(obj: Any) -> bool:
    """An OTLP export request of another signal only (no spans, no logs)."""
    return (isinstance(obj, dict) and any(k in obj for k in OTHER_SIGNALS)
            and not any(k in obj for k in OTLP_KEYS))


def unknown(path: Path, what: str) -> UserError:
    return UnknownFormat(f"{path}: {what}; expected one of: {_KNOWN}", path)


def unwrap(obj: Any) -> Any:
    """The OTLP request inside a Jaeger ``/api/v3`` response (``{"result": request}``) or a Tempo trace-by-id
    response (``{"batches": [resource spans]}``, ``{"trace": request}``); anything else as it is."""
    if not isinstance(obj, dict) or any(k in obj for k in OTLP_KEYS):
        return obj
    for key in ("result", "trace"):
        if isinstance(obj.get(key), dict):
            inner = obj[key]
            break
    else:
        inner = obj
    if "batches" in inner and not any(k in inner for k in OTLP_KEYS):
        inner = {"resourceSpans": inner["batches"]}
    return inner if any(k in inner for k in OTLP_KEYS) else obj


def read_path(path: Path, rows: Rows, flush: Callable[[Rows], None] | None = None) -> None:
    """One file -> rows: Zipkin files and Jaeger downloads as streams, any other file read whole by ``read`` (``flush``
    takes the rows read so far, to bound memory: a stream's, a protobuf file's)."""
    stream = stream_kind(_files.head(path, _HEAD_BYTES))
    if stream is None:
        read(path, _files.read_bytes(path), rows, flush)
        return
    fmt, where = stream
    with _files.open_stream(path) as f:
        if fmt == "zipkin":
            _zipkin.read_stream(f, rows, str(path), flush, traces=where == "item.item")
        else:
            _jaeger.read_stream(f, lambda: _files.open_stream(path), rows, str(path), flush, prefix=where)


def streamed(path: Path) -> bool:
    """Whether ``read_path`` reads ``path`` as a stream (a Zipkin or Jaeger document)."""
    return stream_kind(_files.head(path, _HEAD_BYTES)) is not None


def stream_kind(head: bytes) -> tuple[str, str] | None:
    """("zipkin", where the spans are) or ("jaeger", where the traces are) when ``head``, a file's first bytes,
    starts a Zipkin list of spans or traces, or a Jaeger download (``{"data": ...}``) whose trace shows in it;
    None for anything else (read whole)."""
    import ijson

    head = head.removeprefix(_files.BOM)
    if head.lstrip()[:1] not in (b"[", b"{"):
        return None
    data = None
    try:
        for prefix, event, value in ijson.parse(io.BytesIO(head)):
            if event == "map_key":
                if prefix in ("item", "item.item"):  # the first span's keys
                    if value == "traceId":
                        return "zipkin", prefix
                    if value in OTLP_KEYS:
                        return None
                elif prefix == "" and value in (*OTLP_KEYS, "result", "batches", "trace", "resourceMetrics"):
                    return None
                elif data is not None and prefix == data and value in ("spans", "traceID", "processes"):
                    return "jaeger", data
            elif prefix == "data" and data is None and event in ("start_array", "start_map"):
                data = "data.item" if event == "start_array" else "data"
            elif event == "end_map" and prefix in ("item", "item.item"):
                return None  # a first object without traceId: not Zipkin
    except ijson.JSONError:
        pass  # the head ends inside the document (or it is not one: the whole read says so)
    return None


def read(path: Path, data: bytes, rows: Rows, flush: Callable[[Rows], None] | None = None) -> None:
    try:
        _read(path, data, rows, flush)
    except RecursionError:  # a whole document nested past what Python parses (a line of JSON lines: a bad record)
        raise UserError(f"{path}: JSON nested too deeply to read (deeper than about {_DEPTH} levels)") from None


_DEPTH = 900  # roughly where json.loads and the readers' recursion stop, with Python's default recursion limit


def _read(path: Path, data: bytes, rows: Rows, flush: Callable[[Rows], None] | None) -> None:
    data = data.removeprefix(_files.BOM)
    head = data.lstrip()[:1]
    if head in (b"{", b"["):
        _read_json(path, data.decode("utf-8", errors="replace"), rows)
    elif not head:
        return  # an empty file holds no records
    else:
        try:
            _read_proto(path, data, rows, flush)
        except UserError:
            line = _text_line(data)
            if line is None:
                raise
            raise unknown(path, "plain text that is not JSON (a log, a key, a CSV?)") from None


def _text_line(data: bytes) -> str | None:
    """The first line of ``data`` when its start is plain UTF-8 text (a service's log, a key, a CSV), else None.
    Asked only of a file that is neither JSON nor protobuf: it names what the file is instead of calling it binary."""
    sample = data[:4096]
    for cut in range(4):  # the sample may end inside a multi-byte character
        try:
            text = sample[:len(sample) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return None
    if not all(c.isprintable() or c in "\t\r\n" for c in text):
        return None
    return text.split("\n", 1)[0].strip()


def _read_json(path: Path, text: str, rows: Rows) -> None:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        if not exc.msg.startswith("Extra data") and not _any_line_parses(text):  # type: ignore[attr-defined]
            raise UserError(f"{path}: not valid JSON: {exc}") from None
        read_lines(path, text, rows)
        return
    _read_doc(path, doc, rows)


def _any_line_parses(text: str) -> bool:
    for line in text.split("\n")[:1000]:
        try:
            if isinstance(json.loads(line), dict):
                return True
        except ValueError:
            continue
    return False


def _read_doc(path: Path, doc: Any, rows: Rows) -> None:
    where = str(path)
    doc = unwrap(doc)
    if isinstance(doc, dict) and any(k in doc for k in OTLP_KEYS):
        from_json.add_request(doc, rows, where, indexed=True)
    elif other_signal(doc):
        rows.skipped += 1
    elif _jaeger.looks_like(doc):
        _jaeger.add_doc(doc, rows, where)
    elif isinstance(doc, list) and not doc:
        return
    elif _zipkin.looks_like(doc):
        _zipkin.add_doc(doc, rows, where)
    elif isinstance(doc, list) and isinstance(doc[0], dict) and any(k in doc[0] for k in OTLP_KEYS):
        n = 0
        for i, request in enumerate(doc):
            n += from_json.add_request(request, rows, f"{where}#{i}" if not isinstance(request, dict) else where,
                                        first=n, indexed=True)
    elif _applogs.is_opa(doc) or _applogs.is_app_log(doc):
        _applogs.add_line(doc, rows, where)
    else:
        kind = type(doc).__name__ if not isinstance(doc, dict) else "object with keys " + ", ".join(list(doc)[:5])
        raise unknown(path, f"a JSON {kind} in no known trace or log format")


def read_lines(path: Path, text: str, rows: Rows, *, first_line: int = 1, kind: str | None = None) -> str | None:
    """JSON lines; ``first_line`` numbers the text's first line (a range of a file read by ``_parallel`` or left by
    the C reader), ``kind`` ("otlp" or "logs") is what the file holds, else decided by the first line that parses.
    Returns that kind (None while no line has parsed)."""
    for number, line in enumerate(text.split("\n"), first_line):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            kind = _read_line(path, number, line, rows, kind)
        except RecursionError:
            rows.bad_record(where, f"JSON nested too deeply to read (deeper than about {_DEPTH} levels)")
    return kind


def _read_line(path: Path, number: int, line: str, rows: Rows, kind: str | None) -> str | None:
    """One line's records into ``rows``; returns what the file holds (decided here when it was not yet)."""
    where = f"{path}:{number}"
    try:
        obj = json.loads(line)
    except ValueError as exc:
        rows.bad_record(where, f"invalid JSON: {exc.msg} (column {exc.colno})")  # type: ignore[attr-defined]
        return kind
    obj = unwrap(obj)  # a Jaeger /api/v3 stream: one {"result": ...} per line
    is_otlp = isinstance(obj, dict) and any(k in obj for k in OTLP_KEYS)
    skip = not is_otlp and other_signal(obj)
    if kind is None:
        if is_otlp or skip:
            kind = "otlp"
        elif _applogs.is_opa(obj) or _applogs.is_app_log(obj):
            kind = "logs"
        else:
            raise unknown(path, f"line {number} is JSON in no known trace or log format")
    if is_otlp:
        from_json.add_request(obj, rows, where)
    elif skip:
        rows.skipped += 1
    elif kind == "otlp":
        rows.bad_record(where, "expected an OTLP object with resourceSpans or resourceLogs")
    else:
        _applogs.add_line(obj, rows, where)
    return kind


FLUSH_SPANS = 50_000  # spans of a protobuf file's decoded requests held before they go to DuckDB (given a flush)


def _read_proto(path: Path, data: bytes, rows: Rows, flush: Callable[[Rows], None] | None = None) -> None:
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from jitrace.analyzer.otlp import from_protobuf

    messages = _frames(path, memoryview(data), rows)
    held = 0
    for i, (offset, view) in enumerate(messages):
        where = f"{path}@{offset}"
        fast = from_protobuf.spans_table(view, where)  # the C decoder: a trace request it reads whole, or None
        if fast is not None and fast[0].num_rows:
            rows.span_tables.append(fast[0])  # redacted as it is stored (spans_view.insert_with_facts)
            held += fast[0].num_rows
            if flush is not None and held >= FLUSH_SPANS:
                flush(rows)
                held = 0
            continue
        payload = bytes(view)
        # Trace and log requests share field numbers up to a point: a log request may parse as a (wrong) trace
        # request or fail to; a real trace request has 16-byte trace ids.
        try:
            traces = ExportTraceServiceRequest.FromString(payload)
        except DecodeError:
            traces = None
        if traces is not None and _holds_spans(traces):
            # valid OTLP (parsed whole above)
            from_protobuf.add_traces(from_protobuf.parse_traces(payload), rows, where)
            continue
        try:
            logs = ExportLogsServiceRequest.FromString(payload)
        except DecodeError as exc:
            if i == 0 and len(messages) == 1:
                raise unknown(path, f"binary content that is not OTLP protobuf ({exc})") from None
            rows.bad_record(where, f"invalid OTLP protobuf message: {exc}")
            continue
        if any(sl.log_records for rl in logs.resource_logs for sl in rl.scope_logs):
            from_protobuf.add_logs(logs, rows, where)
        elif traces is not None and traces.resource_spans:
            # spans without proper ids: bad records
            from_protobuf.add_traces(from_protobuf.parse_traces(payload), rows, where)
        elif i == 0 and len(messages) == 1 and payload:
            raise unknown(path, "binary content that is not OTLP protobuf")


def _holds_spans(req: Any) -> bool:
    return any(len(s.trace_id) == 16 for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans)


def _frames(path: Path, data: memoryview, rows: Rows) -> list[tuple[int, memoryview]]:
    """Messages of a file: the Collector's file exporter writes each one after its 4-byte big-endian length.

    A file that does not start like that (a message starts with field 1's tag, 0x0a) is one bare message.
    """
    if data[:1] == b"\n":
        return [(0, data)]
    out, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            rows.bad_record(f"{path}@{offset}", "truncated length prefix")
            break
        (size,) = struct.unpack_from(">I", data, offset)
        if offset + 4 + size > len(data):
            if not out:
                raise unknown(path, "binary content that is neither length-prefixed nor bare OTLP protobuf")
            rows.bad_record(f"{path}@{offset}", f"truncated message: {size} bytes announced, "
                            f"{len(data) - offset - 4} present")
            break
        out.append((offset, data[offset + 4:offset + 4 + size]))
        offset += 4 + size
    return out
