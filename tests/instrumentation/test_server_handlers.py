"""The server interceptor wraps each method handler once (not per call), keeps the handler's shape and serializers,
and keeps its cache bounded; a server with no interceptor of its own gets its handlers wrapped as they are
registered, whichever way."""

from __future__ import annotations

import time
from concurrent import futures

import grpc
import helpers
import plain_service as svc
import pytest

from jitrace.instrumentation import _server, _server_call
from jitrace.instrumentation import contract as c


def _handler(name: str) -> grpc.RpcMethodHandler:
    def behaviour(request, context):
        return name

    return grpc.unary_stream_rpc_method_handler(behaviour, request_deserializer=bytes, response_serializer=bytes)


def test_a_handler_is_wrapped_once_and_keeps_its_shape():
    handler = _handler("a")
    first = _server_call.wrap_handler(handler, _server._wrap_behavior)
    assert _server_call.wrap_handler(handler, _server._wrap_behavior) is first
    assert first.response_streaming and not first.request_streaming
    assert (first.request_deserializer, first.response_serializer) == (bytes, bytes)
    assert first.unary_stream is not handler.unary_stream


def test_the_cache_is_bounded_and_never_confuses_handlers():
    for i in range(2 * _server_call._WRAPPED_MAX + 5):
        handler = _handler(str(i))  # a new handler each time (some servers build them per call)
        wrapped = _server_call.wrap_handler(handler, _server._wrap_behavior)
        # the entry is this handler's own (held, so its id cannot be reused by another handler while cached)
        cache = _server_call._wrapped[_server._wrap_behavior]
        assert cache[id(handler)] == (handler, wrapped)
        assert len(cache) <= _server_call._WRAPPED_MAX


# --- a server with no interceptor of its own: jitrace wraps its handlers as they are registered --------------------
class _OwnGenericHandler(grpc.GenericRpcHandler):
    """A generic handler that is not grpc's dictionary one."""

    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self.inner = inner

    def service(self, handler_call_details):
        return self.inner.service(handler_call_details)


def _registered(server: grpc.Server, generic: grpc.GenericRpcHandler) -> None:
    server.add_registered_method_handlers(
        svc.SERVICE, {name.rsplit("/", 1)[1]: h for name, h in generic._method_handlers.items()})


REGISTRATIONS = {
    "handlers=": lambda server, generic: None,
    "add_generic_rpc_handlers, grpc's dictionary handler": lambda server, generic: server.add_generic_rpc_handlers(
        (generic,)),
    "add_generic_rpc_handlers, another handler": lambda server, generic: server.add_generic_rpc_handlers(
        (_OwnGenericHandler(generic),)),
    "add_registered_method_handlers": _registered,
}


@pytest.mark.parametrize("registration", list(REGISTRATIONS))
def test_handlers_registered_any_way_carry_the_facts_without_an_interceptor(registration, exporter, verifier, mint):
    """On a server whose only interceptor is OpenTelemetry's, every way of registering a handler gives OpenTelemetry's
    span the call's facts and the client the echo, with no interceptor of jitrace's in grpc's pipeline."""
    generic = svc.sync_handler(verifier)
    pool = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(pool, handlers=[generic] if registration == "handlers=" else None)
    REGISTRATIONS[registration](server, generic)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        pipeline = [type(i).__module__.split(".")[0] for i in server._state.interceptor_pipeline.interceptors]
        assert pipeline == ["opentelemetry"]
        with helpers.raw_channel(f"127.0.0.1:{port}") as channel:
            method = channel.unary_unary(svc.UNARY, _registered_method=registration.startswith("add_registered"))
            _, call = method.with_call(svc.PERMISSION, metadata=helpers.call_metadata(mint(), sent_ns=time.time_ns()),
                                       timeout=10)
        assert call.code() is grpc.StatusCode.OK
        assert c.METADATA_CLOCK in dict(call.trailing_metadata())
        facts = helpers.jit_attrs(helpers.server_span(exporter))
        assert facts[c.TOKEN_VERDICT] == c.VERDICT_VALID
        assert facts[c.TOKEN_PRESENT] is True
        assert c.AUTH_WAIT_S in facts and c.CLOCK_PEER_SENT_NS in facts
    finally:
        server.stop(None)
        pool.shutdown(wait=False)


def test_a_generic_handler_that_fails_or_finds_nothing_is_served_as_grpc_would():
    """The wrapper around another generic handler hands back what it gives: None (no such method) as None, an odd
    handler as it is (counted), never raising for it."""

    class Odd(grpc.GenericRpcHandler):
        def __init__(self, answer):
            self.answer = answer
            self.extra = "kept"

        def service(self, handler_call_details):
            return self.answer

    (none,) = _server.wrap_generic_handlers([Odd(None)])
    assert none.service(None) is None
    assert none.extra == "kept"
    odd = object()
    (wrapped,) = _server.wrap_generic_handlers([Odd(odd)])
    assert wrapped.service(None) is odd


def test_registering_what_grpc_refuses_fails_as_it_would_without_jitrace(otel):
    """Not an iterable of handlers, not a mapping of method handlers: grpc's own error, jitrace's counted."""
    server = grpc.server(None)
    try:
        with pytest.raises(TypeError):
            server.add_generic_rpc_handlers(42)
        with pytest.raises((TypeError, AttributeError)):
            server.add_registered_method_handlers(svc.SERVICE, 42)
    finally:
        server.stop(None)
