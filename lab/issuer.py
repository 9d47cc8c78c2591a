"""The JIT issuer: an access request is approved, opens a grant window, and is answered with a signed JWT.

Run as its own process: ``opentelemetry-instrument python -m jitrace.lab.issuer --key K --stray-key S``.
Faults the lab injects here are asked for by the request's ``flavor``: a token signed with a key the backends do
not trust (``bad_signature``, like a key rotated on one side only) or for another audience (``wrong_audience``).
"""

from __future__ import annotations

import argparse
import logging
import time
import uuid
from concurrent import futures
from pathlib import Path

import grpc
import jwt

from jitrace.instrumentation import record_issue
from jitrace.lab import _common, jitlab_pb2, jitlab_pb2_grpc

_log = logging.getLogger("jitrace.lab.issuer")


class Issuer(jitlab_pb2_grpc.IssuerServicer):
    def __init__(self, key: bytes, stray_key: bytes) -> None:
        self._key = key
        self._stray_key = stray_key

    def RequestAccess(self, request: jitlab_pb2.AccessRequest, context: grpc.ServicerContext) -> jitlab_pb2.AccessGrant:
        # JWT times are whole seconds (PyJWT compares int(exp)): lifetimes round up, so a token lives at least
        # lifetime - 1 s after it is minted.
        now = int(time.time())
        lifetime = max(1, int(-(-request.lifetime_s // 1))) if request.lifetime_s > 0 else 60
        grant_start = now + int(request.grant_delay_s)
        grant_end = grant_start + (int(request.grant_duration_s) if request.grant_duration_s > 0 else 3600)
        grant_id = f"g-{uuid.uuid4().hex[:12]}"
        claims = {
            "sub": request.subject,
            "iss": _common.ISSUER,
            "aud": "billing" if request.flavor == "wrong_audience" else _common.AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex[:16],
            "role": request.role,
            "grant_id": grant_id,
            "grant_start": grant_start,
            "grant_end": grant_end,
        }
        key = self._stray_key if request.flavor == "bad_signature" else self._key
        token = jwt.encode(claims, key, algorithm="ES256")
        record_issue(token, grant_id=grant_id, grant_start=grant_start, grant_end=grant_end)
        _log.info("grant %s approved for %s as %s, token %s", grant_id, request.subject, request.role, claims["jti"])
        return jitlab_pb2.AccessGrant(token=token, grant_id=grant_id, grant_start=grant_start, grant_end=grant_end)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the lab's JIT issuer")
    parser.add_argument("--key", required=True, help="PEM private key that signs tokens")
    parser.add_argument("--stray-key", required=True, help="PEM private key the backends do not trust")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    issuer = Issuer(Path(args.key).read_bytes(), Path(args.stray_key).read_bytes())
    jitlab_pb2_grpc.add_IssuerServicer_to_server(issuer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    _common.run_server(server, port)


if __name__ == "__main__":
    main()
