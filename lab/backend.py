"""A backend replica: the inventory service behind a JIT access check.

Each replica enforces one revision of the access policy (a file in ``lab/policies/``) with pycasbin. A call is
allowed when its bearer token verifies (``jwt.decode``, leeway 0 unless told), the JIT grant window in the token
holds now, and the token's role may do the method. Denials are PERMISSION_DENIED or UNAUTHENTICATED with an
ErrorInfo reason. ``Watch`` streams check the token again before every event: a stream can outlive its token.

A slow middleware (a server interceptor before the access check) holds calls that ask for it with the metadata
``lab-slow-s``: the lab's way to queue a call behind slow middleware.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import casbin
import grpc
import jwt

from jitrace.instrumentation import record_policy_decision
from jitrace.lab import _common, jitlab_pb2, jitlab_pb2_grpc, scenarios

_log = logging.getLogger("jitrace.lab.backend")
_UNAUTH = grpc.StatusCode.UNAUTHENTICATED
_DENIED = grpc.StatusCode.PERMISSION_DENIED
_PERMISSION = {"Read": "read", "Write": "write", "Watch": "read"}


class Denied(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason = code, reason


class SlowMiddleware(grpc.ServerInterceptor):
    """Holds a call for ``lab-slow-s`` seconds before the handler (and so before the access check) runs."""

    def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        delay = next((float(v) for k, v in handler_call_details.invocation_metadata or () if k == _common.SLOW_KEY), 0)
        if handler is None or delay <= 0 or handler.unary_unary is None and handler.unary_stream is None:
            return handler

        # Wrap the behaviour, not intercept_service: the wait must happen inside the call, after the
        # instrumentation saw the call arrive (that is what jit.auth.wait_s measures).
        def wrap(behavior: Any) -> Any:
            def held(request: Any, context: grpc.ServicerContext) -> Any:
                _common.pause(delay)
                return behavior(request, context)

            return held

        if handler.unary_unary is not None:
            return handler._replace(unary_unary=wrap(handler.unary_unary))
        return handler._replace(unary_stream=wrap(handler.unary_stream))


class Inventory(jitlab_pb2_grpc.InventoryServicer):
    def __init__(self, replica: str, version: str, public_key: bytes, leeway: float, details: bool = True,
                 jitrace: bool = True) -> None:
        self._replica, self._version, self._key, self._leeway = replica, version, public_key, leeway
        self._details, self._jitrace = details, jitrace
        self._enforcer = casbin.Enforcer(*scenarios.policy_files(version))
        # jitrace's pycasbin hook reads which policy and revision decided from these attributes.
        self._enforcer.jitrace_policy_id = "inventory"
        self._enforcer.jitrace_policy_version = version
        self._lock = threading.Lock()
        self._items: dict[str, str] = {}

    # --- the access check ---------------------------------------------------------------------------------------
    def _token(self, context: grpc.ServicerContext) -> str:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                return value[len("Bearer ") :]
        raise Denied(_UNAUTH, "TOKEN_MISSING", "no bearer token on the call")

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            return jwt.decode(token, self._key, algorithms=["ES256"], audience=_common.AUDIENCE,
                              issuer=_common.ISSUER, leeway=self._leeway)
        except jwt.ExpiredSignatureError as exc:
            raise Denied(_UNAUTH, "TOKEN_EXPIRED", "token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise Denied(_UNAUTH, "TOKEN_NOT_YET_VALID", "token not yet valid") from exc
        except jwt.InvalidTokenError as exc:  # signature, audience, issuer, malformed
            raise Denied(_UNAUTH, "TOKEN_INVALID", f"token invalid: {type(exc).__name__}") from exc

    def authorize(self, context: grpc.ServicerContext, method: str) -> dict[str, Any]:
        claims = self._verify(self._token(context))
        role = str(claims.get("role", ""))
        grant = {k: claims.get(k) for k in ("grant_id", "grant_start", "grant_end")}
        required = f"inventory:{_PERMISSION[method]}"
        now = time.time()
        start, end = grant["grant_start"], grant["grant_end"]
        if isinstance(start, int | float) and isinstance(end, int | float) and not (
            start - self._leeway <= now <= end + self._leeway
        ):
            if self._jitrace:  # a service that does not know jitrace only logs (below, in _deny)
                record_policy_decision("deny", engine="jit-grant", policy_id="grant-window", rule="grant_window",
                                       required=required, granted=[role], **grant)
            raise Denied(_DENIED, "GRANT_NOT_ACTIVE", "the JIT grant is not active now")
        subject = str(claims.get("sub", ""))
        with self._lock:
            # The JIT grant binds the subject to its role; pycasbin's decision is recorded by jitrace's hook.
            if role and not self._enforcer.has_role_for_user(subject, role):
                self._enforcer.add_role_for_user(subject, role)
            allowed = self._enforcer.enforce(subject, "inventory", _PERMISSION[method])
        if not allowed:
            raise Denied(_DENIED, "PERMISSION_MISSING", f"role {role} may not {_PERMISSION[method]}")
        return claims

    def _deny(self, context: grpc.ServicerContext, denied: Denied, method: str) -> None:
        _log.warning("replica %s denied %s: %s (%s)", self._replica, method, denied.reason, denied)
        if not self._details:  # a legacy service: a bare status, no ErrorInfo saying why
            context.abort(denied.code, "access denied")
        context.abort_with_status(_common.denial_status(denied.code, denied.reason, str(denied)))

    # --- the methods --------------------------------------------------------------------------------------------
    def Read(self, request: jitlab_pb2.Item, context: grpc.ServicerContext) -> jitlab_pb2.Item:
        try:
            self.authorize(context, "Read")
        except Denied as denied:
            self._deny(context, denied, "Read")
        return jitlab_pb2.Item(key=request.key, value=self._items.get(request.key, ""))

    def Write(self, request: jitlab_pb2.Item, context: grpc.ServicerContext) -> jitlab_pb2.Item:
        try:
            self.authorize(context, "Write")
        except Denied as denied:
            self._deny(context, denied, "Write")
        self._items[request.key] = request.value
        return request

    def Watch(self, request: jitlab_pb2.WatchRequest, context: grpc.ServicerContext) -> Iterator[jitlab_pb2.Item]:
        try:
            self.authorize(context, "Watch")
            token = self._token(context)
            for n in range(max(1, request.events)):
                if n:
                    _common.pause(request.interval_s)
                    self._verify(token)  # the stream lives on: is its token still good?
                yield jitlab_pb2.Item(key=request.key, value=f"event {n}")
        except Denied as denied:
            self._deny(context, denied, "Watch")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="a backend replica of the lab")
    parser.add_argument("--replica", required=True)
    parser.add_argument("--policy", default="v2", help="policy revision: a file in lab/policies/")
    parser.add_argument("--public-key", required=True)
    parser.add_argument("--leeway", type=float, default=0.0)
    parser.add_argument("--no-error-details", action="store_true", help="deny without an ErrorInfo (a legacy service)")
    parser.add_argument("--no-jitrace", action="store_true",
                        help="a service that does not know jitrace: no record_policy_decision calls (it only logs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("casbin").setLevel(logging.WARNING)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), interceptors=[SlowMiddleware()])
    service = Inventory(args.replica, args.policy, Path(args.public_key).read_bytes(), args.leeway,
                        details=not args.no_error_details, jitrace=not args.no_jitrace)
    jitlab_pb2_grpc.add_InventoryServicer_to_server(service, server)
    # Local credentials: gRPC sends call credentials (the bearer token) only over a secure or local channel.
    port = server.add_secure_port("127.0.0.1:0", grpc.local_server_credentials(grpc.LocalConnectionType.LOCAL_TCP))
    _common.run_server(server, port)


if __name__ == "__main__":
    main()
