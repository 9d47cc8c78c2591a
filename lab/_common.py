"""Helpers every lab service shares: waiting without ``time.sleep``, announcing the port, stopping on SIGTERM,
and denials that carry a ``google.rpc.ErrorInfo``.
"""

from __future__ import annotations

import os
import select
import threading

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from jitrace.collect.stop_signals import StopSignals

DOMAIN = "jitrace.lab"
AUDIENCE = "inventory"
ISSUER = "jit-issuer"
# The metadata key by which the gateway asks a backend's slow middleware to hold a call (fault injection).
SLOW_KEY = "lab-slow-s"
# how long an orphaned service may take to exit normally before it leaves with os._exit
ORPHAN_EXIT_S = 5.0


def pause(seconds: float) -> None:
    """Wait ``seconds``. Under libfaketime ``time.sleep`` fails with EINVAL; select does not (docs/contract.md)."""
    if seconds > 0:
        select.select([], [], [], seconds)


def announce_port(port: int) -> None:
    """The runner reads ``PORT <n>`` from a service's stdout: every service binds port 0."""
    print(f"PORT {port}", flush=True)


def run_server(server: grpc.Server, port: int) -> None:
    """Start a service's bound server, tell the runner its port, and serve until stopped (below)."""
    server.start()
    announce_port(port)
    serve_until_stopped(server)


def serve_until_stopped(server: grpc.Server) -> None:
    """Serve until SIGTERM/SIGINT, or until the process that started this one is gone (a runner killed with
    SIGKILL leaves no service behind); then stop the server and return, so the process exits normally and
    OpenTelemetry's exporters flush."""
    stopped = StopSignals()
    # the runner says who it is: a runner killed before this line runs has already left the service to another
    # parent, which os.getppid() alone would take for the runner
    parent = int(os.environ.get("JITRACE_LAB_RUNNER_PID") or os.getppid())
    while not stopped.wait(0.2):
        if os.getppid() != parent:
            # orphaned: whatever flushes at exit has nobody to send to; if exiting hangs, leave anyway
            last_resort = threading.Timer(ORPHAN_EXIT_S, os._exit, (1,))
            last_resort.daemon = True
            last_resort.start()
            break
    server.stop(0.5).wait()


def denial_status(code: grpc.StatusCode, reason: str, message: str) -> grpc.Status:
    """A gRPC status whose details hold an ErrorInfo (AIP-193) with the lab's domain and ``reason``."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN))
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return rpc_status.to_status(status)


def reason_of(error: grpc.RpcError) -> str:
    """The ErrorInfo reason a denial carried, or ''."""
    try:
        trailing = error.trailing_metadata() or ()
        for key, value in trailing:
            if key == "grpc-status-details-bin":
                status = status_pb2.Status.FromString(value)
                for detail in status.details:
                    info = error_details_pb2.ErrorInfo()
                    if detail.Unpack(info):
                        return info.reason
    except Exception:  # noqa: BLE001 - a reason is a nicety; the code is what counts
        return ""
    return ""
