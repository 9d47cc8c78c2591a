"""OTLP/HTTP: ``POST /v1/traces``, ``/v1/logs`` and ``/v1/metrics``, protobuf or JSON bodies, optionally gzipped.

Errors follow the OTLP/HTTP spec: 400 for a body that is not an export request, 413 for one over the limit (checked
on the announced length and again while inflating gzip, so a small bomb cannot grow past it), 415 for an unknown
content type; the body of an error is a ``google.rpc.Status`` in the request's encoding.

A peer may be hostile (see ``_access`` for who may send), so every connection is bounded before its body is read,
as the Collector's confighttp server is: a request must arrive whole within ``read_timeout`` (headers and body,
and so must the next one on a kept-alive connection), past which its connection is shut; at most
``max_connections`` are open at once (beyond, 503 and close); the announced Content-Length is taken from the
in-flight budget before the body is read (over it, 503 + Retry-After, body unread); the token is checked before the
body too. A client that goes away mid-request is counted, and said once on stderr, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.rpc import status_pb2

from jitrace.collect._access import Access
from jitrace.collect._budget import RETRY_AFTER_S, Budget, Busy
from jitrace.collect._grpc import Ingest

PATHS = {"/v1/traces": "traces", "/v1/logs": "logs", "/v1/metrics": "metrics"}
_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"
_GRPC_CODE = {400: 3, 401: 16, 404: 5, 413: 8, 415: 3, 411: 3, 429: 8, 503: 14}  # HTTP status -> google.rpc.Code
# sent as is to a connection over the cap, which is then closed (not to a TLS one: it would not parse)
_FULL = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: %d\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
         % RETRY_AFTER_S)


@dataclass(frozen=True)
class Limits:
    max_bytes: int  # per request, after decompression
    budget: Budget  # bytes being read, converted and written at once
    read_timeout: float = 10.0  # seconds for a request to arrive whole (and for an idle kept-alive connection)
    max_connections: int = 64
    access: Access = Access()


class Counters:
    """What the HTTP side refused or lost, for the receiver's stop line; the first loss is said once on stderr."""

    def __init__(self) -> None:
        self.disconnects = self.timeouts = self.full = self.unauthenticated = 0
        self._said = False
        self._lock = threading.Lock()

    def add(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)
            say, self._said = not self._said and name in ("disconnects", "timeouts"), True
        if say:
            print("jitrace collect: an OTLP/HTTP client went away or stalled mid-request; such connections are "
                  "closed and counted, not reported one by one", file=sys.stderr, flush=True)


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


def make_handler(ingest: Ingest, limits: Limits, counters: Counters) -> type[BaseHTTPRequestHandler]:
    max_bytes, budget, access = limits.max_bytes, limits.budget, limits.access

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the SDK's exporter reuses its connection
        server_version = "jitrace-collect"
        # each read and write of the socket (a client that does not read its answer); a request's deadline is
        # _Server's, which acts first, so that a request cut short is told from an idle connection
        timeout = limits.read_timeout + 1
        server: _Server

        def handle_one_request(self) -> None:
            self.server.arm(self.client_address)  # this request (or the idle wait for it) has read_timeout
            self.raw_requestline, lost = b"", None
            try:
                super().handle_one_request()
                lost = self._lost
            except OSError as exc:  # gone, reset or stalled: the client's doing, not an error of ours
                lost = "timeouts" if isinstance(exc, TimeoutError) else "disconnects"
            if self.server.expired(self.client_address):  # shut by the deadline: idle, or mid-request
                lost = "timeouts" if self.raw_requestline else None
                self.close_connection = True
            if lost:
                self.close_connection = True
                counters.add(lost)

        _lost: str | None = None  # set by do_POST when the body did not arrive whole

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
            pass  # one line per request on stderr would cost more than the request

        def _reply(self, status: int, body: bytes, content_type: str, retry_after: int | None = None) -> None:
            self.send_response(status)
            if retry_after is not None:
                self.send_header("Retry-After", str(retry_after))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="jitrace collect"')
            if self.close_connection:
                self.send_header("Connection", "close")
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
            # Every refusal below comes before the body is read: the connection cannot be reused
            self.close_connection = True
            if not access.allows(self.headers.get("Authorization")):
                counters.add("unauthenticated")
                return self._error(401, "a bearer token is required (authorization: Bearer <token>)", as_json)
            if length is None or not length.isdigit():
                return self._error(411, "Content-Length is required", as_json)
            size = int(length)
            if size > max_bytes:
                return self._error(413, f"body of {size} bytes exceeds the limit of {max_bytes}", as_json)
            if kind is None:
                return self._error(404, f"no OTLP endpoint at {self.path[:100]}", as_json)
            if ctype not in (_PROTOBUF, _JSON):
                return self._error(415, f"Content-Type {ctype[:60]!r} is neither {_PROTOBUF} nor {_JSON}", as_json)
            try:
                budget.acquire(size)  # before reading: a body being read is memory held, however slowly it comes
            except Busy as exc:  # the OTLP spec's throttling answer: the exporter retries after Retry-After
                return self._error(503, str(exc), as_json, RETRY_AFTER_S)
            try:
                body = self.rfile.read(size)
                if len(body) < size:  # the client went away mid-body (or its deadline shut the connection)
                    self._lost = "disconnects"
                    return None
                self.server.disarm(self.client_address)  # read whole: converting and writing is ours to bound
                self.close_connection = False
                return self._export(kind, body, as_json)
            finally:
                budget.release(size)

        def _export(self, kind: str, body: bytes, as_json: bool) -> None:
            inflated = 0
            try:
                if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
                    body = _gunzip(body, max_bytes)
                    budget.acquire(len(body))
                    inflated = len(body)
                rejected, message = ingest(kind, body, "json" if as_json else "protobuf")
            except Busy as exc:
                return self._error(503, str(exc), as_json, RETRY_AFTER_S)
            except _TooLarge:
                return self._error(413, f"inflated body exceeds the limit of {max_bytes} bytes", as_json)
            except (ValueError, zlib.error, UnicodeDecodeError) as exc:  # DecodeError is a ValueError... not always
                return self._error(400, f"not an OTLP {kind} export request: {str(exc)[:200]}", as_json)
            except OSError as exc:
                return self._error(503, f"cannot write the batch: {exc}", as_json)
            except Exception as exc:  # protobuf's DecodeError and friends
                return self._error(400, f"not an OTLP {kind} export request: {str(exc)[:200]}", as_json)
            finally:
                budget.release(inflated)
            field = {"traces": "rejectedSpans", "logs": "rejectedLogRecords"}.get(kind, "rejectedDataPoints")
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
    if kind == "metrics":
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mm

        return mm.ExportMetricsServiceResponse(partial_success=mm.ExportMetricsPartialSuccess(
            rejected_data_points=rejected, error_message=message)).SerializeToString()
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as m

    return m.ExportLogsServiceResponse(partial_success=m.ExportLogsPartialSuccess(
        rejected_log_records=rejected, error_message=message)).SerializeToString()


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` of them, each request bounded by a deadline: a watchdog
    thread shuts the socket of a connection whose request has not arrived whole in time (a read timeout on each
    recv alone would let a client that sends a byte now and then hold its thread for ever)."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], limits: Limits,
                 counters: Counters) -> None:
        self.limits, self.counters = limits, counters
        self.ssl_context = limits.access.ssl_context()
        self._conns: dict[tuple, list] = {}  # client address -> [socket, deadline (inf: not reading)]
        self._conns_lock = threading.Lock()
        self._closed = threading.Event()
        super().__init__(address, handler)
        self._watchdog = threading.Thread(target=self._watch, name="jitrace-collect-http-deadlines", daemon=True)
        self._watchdog.start()

    def process_request(self, request: socket.socket, client_address: tuple) -> None:
        with self._conns_lock:
            full = len(self._conns) >= self.limits.max_connections
            if not full:
                self._conns[client_address] = [request, time.monotonic() + self.limits.read_timeout]
        if full:
            self.counters.add("full")
            if self.ssl_context is None:
                try:
                    request.setblocking(False)
                    request.send(_FULL)
                except OSError:
                    pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread: the connection is not held
            self._forget(client_address)
            raise

    def process_request_thread(self, request: socket.socket, client_address: tuple) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(client_address)

    def finish_request(self, request: socket.socket, client_address: tuple) -> None:
        if self.ssl_context is not None:  # the handshake here, in the connection's thread, under its deadline
            try:
                request.settimeout(self.limits.read_timeout)
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except OSError:  # a plain-text client, a scanner, or one that stalled: nothing was received
                self.counters.add("timeouts" if self.expired(client_address) else "disconnects")
                return None
            with self._conns_lock:
                if client_address in self._conns:
                    self._conns[client_address][0] = request
        super().finish_request(request, client_address)

    def handle_error(self, request: socket.socket, client_address: tuple) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # gone or reset while we answered: counted, quietly
            self.counters.add("disconnects")
        else:
            super().handle_error(request, client_address)

    def arm(self, client_address: tuple) -> None:
        self._set_deadline(client_address, time.monotonic() + self.limits.read_timeout)

    def disarm(self, client_address: tuple) -> None:
        self._set_deadline(client_address, math.inf)

    def expired(self, client_address: tuple) -> bool:
        with self._conns_lock:
            entry = self._conns.get(client_address)
            return entry is not None and entry[1] == -math.inf

    def _set_deadline(self, client_address: tuple, deadline: float) -> None:
        with self._conns_lock:
            entry = self._conns.get(client_address)
            if entry is not None and entry[1] != -math.inf:
                entry[1] = deadline

    def _forget(self, client_address: tuple) -> None:
        with self._conns_lock:
            self._conns.pop(client_address, None)

    def _watch(self) -> None:
        tick = min(1.0, self.limits.read_timeout / 4)
        while not self._closed.wait(tick):
            now = time.monotonic()
            with self._conns_lock:
                late = [entry for entry in self._conns.values() if entry[1] < now]
                for entry in late:
                    entry[1] = -math.inf  # expired: its thread counts it as a timeout
            for sock, _ in late:
                # the socket class's own shutdown, not SSLSocket's (which would drop its TLS state mid-read)
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()


class _SharedPortServer(_Server):
    allow_reuse_port = True  # `jitrace collect --workers`: the kernel spreads connections over the processes


def create_server(addr: str, ingest: Ingest, limits: Limits, counters: Counters,
                  reuse_port: bool = False) -> tuple[ThreadingHTTPServer, threading.Thread, int]:
    """Serve OTLP/HTTP on ``addr``; ``ingest`` converts and writes a body (``limits.budget`` is taken here)."""
    host, _, port = addr.rpartition(":")
    cls = _SharedPortServer if reuse_port else _Server
    server = cls((host.strip("[]") or "127.0.0.1", int(port)), make_handler(ingest, limits, counters), limits,
                 counters)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="jitrace-collect-http", daemon=True)
    thread.start()
    return server, thread, server.server_address[1]
