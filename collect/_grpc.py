"""OTLP/gRPC: ``TraceService/Export``, ``LogsService/Export`` and ``MetricsService/Export`` on a plain gRPC server.

The server is built with ``grpc._server.create_server`` rather than ``grpc.server``: OpenTelemetry's (and jitrace's)
gRPC instrumentation replace ``grpc.server`` to add their interceptors, and a receiver in an instrumented process must
not trace its own Export calls (each would export a span, which would be received, which would export a span...).
Requests arrive as bytes so that a bad payload is our INVALID_ARGUMENT, not a crash in a deserializer; an oversize one
is refused by gRPC itself with RESOURCE_EXHAUSTED (``grpc.max_receive_message_length``).

Against a hostile peer (as the Collector's gRPC receiver): at most ``max_concurrent`` calls are in progress at once
and as many streams per connection (beyond, RESOURCE_EXHAUSTED at once, which exporters retry); with TLS the port
speaks TLS only; with a token a call without ``authorization: Bearer <token>`` is UNAUTHENTICATED, stored nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from jitrace.collect._access import Access
from jitrace.collect._budget import RETRY_AFTER_S, Busy

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"

# (kind, request bytes) -> (records rejected, error message); raises ValueError for a payload that is not OTLP
Ingest = Callable[[str, bytes, str], tuple[int, str]]


def _throttle(context: grpc.ServicerContext, message: str) -> None:
    """RESOURCE_EXHAUSTED with a RetryInfo, where the OTLP exporters look for it (the SDK reads the
    ``google.rpc.retryinfo-bin`` trailer; others the status details)."""
    from google.protobuf import any_pb2, duration_pb2
    from google.rpc import error_details_pb2, status_pb2

    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=RETRY_AFTER_S))
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message=message, details=[detail])
    context.set_trailing_metadata((("google.rpc.retryinfo-bin", info.SerializeToString()),
                                   ("grpc-status-details-bin", status.SerializeToString())))
    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def _handler(kind: str, ingest: Ingest, response_type, partial_type, rejected_field: str, access: Access,
             refused: Callable[[], None]):
    def export(request: bytes, context: grpc.ServicerContext) -> bytes:
        if access.token is not None:
            given = next((v for k, v in context.invocation_metadata() if k == "authorization"), None)
            if not access.allows(given):
                refused()
                context.abort(grpc.StatusCode.UNAUTHENTICATED,
                              "a bearer token is required (authorization: Bearer <token>)")
        try:
            rejected, message = ingest(kind, request, "protobuf")
        except Busy as exc:
            _throttle(context, str(exc))
        except (DecodeError, ValueError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not an OTLP {kind} export request: {exc}")
        except OSError as exc:  # the batch is not on disk: the exporter must retry
            context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot write the batch: {exc}")
        if not rejected:
            return b""  # an empty Export*ServiceResponse
        partial = partial_type(error_message=message, **{rejected_field: rejected})
        return response_type(partial_success=partial).SerializeToString()

    return grpc.unary_unary_rpc_method_handler(export)  # no (de)serializers: bytes in, bytes out


def create_server(addr: str, ingest: Ingest, max_bytes: int, workers: int = 8, reuse_port: bool = False, *,
                  max_concurrent: int = 64, access: Access | None = None,
                  refused: Callable[[], None] = lambda: None) -> tuple[grpc.Server, int]:
    """Serve OTLP/gRPC on ``addr``; ``refused`` is called for each call refused for its missing token."""
    access = access or Access()
    handlers = (
        grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": _handler(
            "traces", ingest, trace_service_pb2.ExportTraceServiceResponse,
            trace_service_pb2.ExportTracePartialSuccess, "rejected_spans", access, refused)}),
        grpc.method_handlers_generic_handler(LOGS_SERVICE, {"Export": _handler(
            "logs", ingest, logs_service_pb2.ExportLogsServiceResponse,
            logs_service_pb2.ExportLogsPartialSuccess, "rejected_log_records", access, refused)}),
        grpc.method_handlers_generic_handler(METRICS_SERVICE, {"Export": _handler(
            "metrics", ingest, metrics_service_pb2.ExportMetricsServiceResponse,
            metrics_service_pb2.ExportMetricsPartialSuccess, "rejected_data_points", access, refused)}),
    )
    # SO_REUSEPORT only when asked (``jitrace collect --workers``): otherwise two receivers could silently split
    # one port between them
    options = [("grpc.max_receive_message_length", max_bytes), ("grpc.so_reuseport", int(reuse_port)),
               ("grpc.max_concurrent_streams", max_concurrent)]
    pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jitrace-collect-grpc")
    try:
        from grpc import _server

        server = _server.create_server(pool, handlers, (), options, max_concurrent, None, False)
    except (ImportError, TypeError, AttributeError):  # a grpcio whose private factory changed: the public one
        server = grpc.server(pool, handlers=handlers, interceptors=(), options=options,
                             maximum_concurrent_rpcs=max_concurrent)
    credentials = access.grpc_credentials()
    port = server.add_secure_port(addr, credentials) if credentials else server.add_insecure_port(addr)
    if port == 0:
        raise OSError(f"cannot listen on {addr}")
    server.start()
    return server, port
