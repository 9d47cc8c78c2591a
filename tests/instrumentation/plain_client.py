"""The "plain client" of the auto-instrumentation tests: no OpenTelemetry or jitrace code at all.

Reads JIT_TARGET (host:port) and JIT_TOKENS (a JSON file: case name -> token, or null for no token); calls the
plain service with each case, every shape (JIT_AIO=1: with grpc.aio), and prints one JSON line per call.
"""

from __future__ import annotations

import asyncio
import json
import os

import grpc
import grpc.aio
import plain_service as svc


def _metadata(token: str | None) -> tuple | None:
    return (("authorization", f"Bearer {token}"),) if token else None


def sync_calls(target: str, tokens: dict[str, str | None]) -> list[dict]:
    out = []
    with grpc.insecure_channel(target) as channel:
        for case, token in tokens.items():
            for shape, method in svc.SHAPES.items():
                kw = {"metadata": _metadata(token), "timeout": 20}
                try:
                    if shape == "unary":
                        channel.unary_unary(method)(svc.PERMISSION, **kw)
                    elif shape == "server_stream":
                        list(channel.unary_stream(method)(svc.PERMISSION, **kw))
                    elif shape == "client_stream":
                        channel.stream_unary(method)(iter([svc.PERMISSION, b"more"]), **kw)
                    else:
                        list(channel.stream_stream(method)(iter([svc.PERMISSION, b"more"]), **kw))
                    code = "OK"
                except grpc.RpcError as err:
                    code = err.code().name
                out.append({"case": case, "shape": shape, "code": code})
    return out


async def aio_calls(target: str, tokens: dict[str, str | None]) -> list[dict]:
    out = []
    async with grpc.aio.insecure_channel(target) as channel:
        for case, token in tokens.items():
            for shape, method in svc.SHAPES.items():
                kw = {"metadata": _metadata(token), "timeout": 20}
                try:
                    if shape == "unary":
                        await channel.unary_unary(method)(svc.PERMISSION, **kw)
                    elif shape == "server_stream":
                        [r async for r in channel.unary_stream(method)(svc.PERMISSION, **kw)]
                    elif shape == "client_stream":
                        await channel.stream_unary(method)(iter([svc.PERMISSION, b"more"]), **kw)
                    else:
                        [r async for r in channel.stream_stream(method)(iter([svc.PERMISSION, b"more"]), **kw)]
                    code = "OK"
                except grpc.aio.AioRpcError as err:
                    code = err.code().name
                out.append({"case": case, "shape": shape, "code": code})
    return out


def main() -> None:
    with open(os.environ["JIT_TOKENS"]) as f:
        tokens = json.load(f)
    target = os.environ["JIT_TARGET"]
    aio = os.environ.get("JIT_AIO") == "1"
    results = asyncio.run(aio_calls(target, tokens)) if aio else sync_calls(target, tokens)
    for row in results:
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
