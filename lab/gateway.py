"""The gateway: takes one task per call from the traffic driver and calls a backend replica the way it says.

It fetches tokens from the JIT issuer and calls the backends unary or streaming, through sync ``grpc`` or
``grpc.aio``, with jitrace's call credentials. The faults a client can cause are chosen per task
(``token_mode``): ``fresh`` (a token fetched for this call), ``stale`` (a token fetched, held, then sent without
refreshing), ``refreshing`` (one refreshing credential per subject, kept across calls: it renews a token only when
*this host's clock* says it is about to expire), ``none`` (no credentials).

The gateway answers the driver with the call's outcome and trace id instead of failing its own call, so each
trace holds exactly one denied call: the gateway -> backend one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
from opentelemetry import trace

from jitrace.instrumentation import bearer_credentials, refreshing_credentials
from jitrace.lab import _common, jitlab_pb2, jitlab_pb2_grpc

_log = logging.getLogger("jitrace.lab.gateway")
_REFRESH_BEFORE_S = 1.0


def _local() -> grpc.ChannelCredentials:
    return grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)


class Gateway(jitlab_pb2_grpc.GatewayServicer):
    def __init__(self, issuer: str, replicas: dict[str, str]) -> None:
        self._issuer = jitlab_pb2_grpc.IssuerStub(grpc.insecure_channel(issuer))
        self._replicas = replicas
        self._stubs = {name: jitlab_pb2_grpc.InventoryStub(grpc.secure_channel(addr, _local()))
                       for name, addr in replicas.items()}
        self._refreshing: dict[tuple[str, str], grpc.CallCredentials] = {}
        self._lock = threading.Lock()

    def _fetch(self, task: jitlab_pb2.Task) -> str:
        grant = self._issuer.RequestAccess(jitlab_pb2.AccessRequest(
            subject=task.subject, role=task.role, lifetime_s=task.lifetime_s, grant_delay_s=task.grant_delay_s,
            grant_duration_s=task.grant_duration_s, flavor=task.flavor))
        return grant.token

    def _credentials(self, task: jitlab_pb2.Task) -> grpc.CallCredentials | None:
        mode = task.token_mode or "fresh"
        if mode == "none":
            return None
        if mode == "refreshing":
            with self._lock:
                key = (task.subject, task.role)
                if key not in self._refreshing:
                    fetch_task = jitlab_pb2.Task()
                    fetch_task.CopyFrom(task)
                    self._refreshing[key] = refreshing_credentials(lambda: self._fetch(fetch_task),
                                                                   refresh_before_s=_REFRESH_BEFORE_S)
                return self._refreshing[key]
        token = self._fetch(task)
        if mode == "stale":
            _common.pause(task.hold_s)  # the client keeps using the token it has, and never refreshes it
        return bearer_credentials(token)

    def Do(self, task: jitlab_pb2.Task, context: grpc.ServicerContext) -> jitlab_pb2.Outcome:
        trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")
        try:
            credentials = self._credentials(task)
        except grpc.RpcError as err:  # the issuer failed: not a denial of the backend call
            return jitlab_pb2.Outcome(trace_id=trace_id, code=err.code().value[0], detail="issuer failed")
        metadata = ((_common.SLOW_KEY, str(task.slow_s)),) if task.slow_s > 0 else ()
        request: Any
        if task.method == "Watch":
            request = jitlab_pb2.WatchRequest(key="k", events=task.events or 1, interval_s=task.interval_s)
        else:
            request = jitlab_pb2.Item(key="k", value="v")
        try:
            if task.aio:
                asyncio.run(self._call_aio(task, request, credentials, metadata))
            else:
                self._call_sync(task, request, credentials, metadata)
        except grpc.RpcError as err:
            reason = _common.reason_of(err)
            _log.info("call %s on %s ended %s %s", task.method, task.replica, err.code().name, reason)
            return jitlab_pb2.Outcome(trace_id=trace_id, code=err.code().value[0], reason=reason,
                                      detail=err.details() or "")
        return jitlab_pb2.Outcome(trace_id=trace_id, code=0)

    def _call_sync(self, task: jitlab_pb2.Task, request: Any, credentials: Any, metadata: Any) -> None:
        stub = self._stubs[task.replica]
        if task.method == "Watch":
            for _ in stub.Watch(request, credentials=credentials, metadata=metadata, timeout=30):
                pass
        else:
            getattr(stub, task.method)(request, credentials=credentials, metadata=metadata, timeout=30)

    async def _call_aio(self, task: jitlab_pb2.Task, request: Any, credentials: Any, metadata: Any) -> None:
        # A channel per call: grpc.aio channels belong to the event loop that made them (one asyncio.run per call).
        async with grpc.aio.secure_channel(self._replicas[task.replica], _local()) as channel:
            stub = jitlab_pb2_grpc.InventoryStub(channel)
            if task.method == "Watch":
                async for _ in stub.Watch(request, credentials=credentials, metadata=metadata, timeout=30):
                    pass
            else:
                await getattr(stub, task.method)(request, credentials=credentials, metadata=metadata, timeout=30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the lab's gateway")
    parser.add_argument("--issuer", required=True, help="HOST:PORT of the issuer")
    parser.add_argument("--replica", action="append", default=[], metavar="NAME=HOST:PORT")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    replicas = dict(r.split("=", 1) for r in args.replica)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    jitlab_pb2_grpc.add_GatewayServicer_to_server(Gateway(args.issuer, replicas), server)
    port = server.add_insecure_port("127.0.0.1:0")
    _common.run_server(server, port)


if __name__ == "__main__":
    main()
