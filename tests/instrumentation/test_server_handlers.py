"""The server interceptor wraps each method handler once (not per call), keeps the handler's shape and serializers,
and keeps its cache bounded."""

from __future__ import annotations

import grpc

from jitrace.instrumentation import _server, _server_call


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
