"""OTLP/HTTP: ``POST /v1/traces`` and ``/v1/logs``, protobuf or JSON bodies, optionally gzip-compressed.

Errors follow the OTLP/HTTP spec: 400 for a body that is not an export request, 413 for one over the limit (checked
on the announced length and again while inflating gzip, so a small bomb cannot grow past it), 415 for an unknown
content type; the body of an error is a ``google.rpc.Status`` in the request's encoding.
"""

from __future__ import annotations

import json
import threading
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.rpc import status_pb2

from jitrace.analyzer.collect._budget import RETRY_AFTER_S, Busy
from jitrace.analyzer.collect._grpc import Ingest

PATHS = {"/v1/traces": "traces", "/v1/logs": "logs"}
_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"
_GRPC_CODE = {400: 3, 404: 5, 413: 8, 415: 3, 411: 3, 429: 8, 503: 14}  # HTTP status -> google.rpc.Code


class _TooLarge(Exception):
    pass


def _gunzip(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(body, limit + 1)
    if len(out) > limit:
        raise _TooLarge
    if not inflater.eof:
        raise ValueError("truncated gzip body")
    return out


def make_handler(ingest: Ingest, max_bytes: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the SDK's exporter reuses its connection
        server_version = "jitrace-collect"

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
            pass  # one line per request on stderr would cost more than the request

        def _reply(self, status: int, body: bytes, content_type: str, retry_after: int | None = None) -> None:
            self.send_response(status)
            if retry_after is not None:
                self.send_header("Retry-After", str(retry_after))
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str, as_json: bool, retry_after: int | None = None) -> None:
            code = _GRPC_CODE.get(status, 2)
            if as_json:
                body, ctype = json.dumps({"code": code, "message": message}).encode(), _JSON
            else:
                body, ctype = status_pb2.Status(code=code, message=message).SerializeToString(), _PROTOBUF
            self._reply(status, body, ctype, retry_after)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            as_json = ctype == _JSON
            kind = PATHS.get(self.path.split("?")[0])
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self.close_connection = True
                return self._error(411, "Content-Length is required", as_json)
            size = int(length)
            if size > max_bytes:
                self.close_connection = True  # the body is not read: the connection cannot be reused
                return self._error(413, f"body of {size} bytes exceeds the limit of {max_bytes}", as_json)
            body = self.rfile.read(size)
            if kind is None:
                return self._error(404, f"no OTLP endpoint at {self.path[:100]}", as_json)
            if ctype not in (_PROTOBUF, _JSON):
                return self._error(415, f"Content-Type {ctype[:60]!r} is neither {_PROTOBUF} nor {_JSON}", as_json)
            try:
                if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
                    body = _gunzip(body, max_bytes)
                rejected, message = ingest(kind, body, "json" if as_json else "protobuf")
            except Busy as exc:  # the OTLP spec's throttling answer: the exporter retries after Retry-After
                return self._error(503, str(exc), as_json, RETRY_AFTER_S)
            except _TooLarge:
                return self._error(413, f"inflated body exceeds the limit of {max_bytes} bytes", as_json)
            except (ValueError, zlib.error, UnicodeDecodeError) as exc:  # DecodeError is a ValueError... not always
                return self._error(400, f"not an OTLP {kind} export request: {str(exc)[:200]}", as_json)
            except OSError as exc:
                return self._error(503, f"cannot write the batch: {exc}", as_json)
            except Exception as exc:  # protobuf's DecodeError and friends
                return self._error(400, f"not an OTLP {kind} export request: {str(exc)[:200]}", as_json)
            field = "rejectedSpans" if kind == "traces" else "rejectedLogRecords"
            if as_json:
                resp = {"partialSuccess": {field: rejected, "errorMessage": message}} if rejected else {}
                return self._reply(200, json.dumps(resp).encode(), _JSON)
            return self._reply(200, _partial(kind, rejected, message), _PROTOBUF)

        def do_GET(self) -> None:  # noqa: N802
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, "OTLP/HTTP takes POST", False)

    return Handler


def _partial(kind: str, rejected: int, message: str) -> bytes:
    if not rejected:
        return b""
    if kind == "traces":
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as m

        return m.ExportTraceServiceResponse(partial_success=m.ExportTracePartialSuccess(
            rejected_spans=rejected, error_message=message)).SerializeToString()
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as m

    return m.ExportLogsServiceResponse(partial_success=m.ExportLogsPartialSuccess(
        rejected_log_records=rejected, error_message=message)).SerializeToString()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


class _SharedPortServer(_Server):
    allow_reuse_port = True  # `jitrace collect --workers`: the kernel spreads connections over the processes


def create_server(addr: str, ingest: Ingest, max_bytes: int,
                  reuse_port: bool = False) -> tuple[ThreadingHTTPServer, threading.Thread, int]:
    host, _, port = addr.rpartition(":")
    cls = _SharedPortServer if reuse_port else _Server
    server = cls((host.strip("[]") or "127.0.0.1", int(port)), make_handler(ingest, max_bytes))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="jitrace-collect-http", daemon=True)
    thread.start()
    return server, thread, server.server_address[1]
