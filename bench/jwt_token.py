"""The signed token the instrumentation benchmarks send on every call (minted at run time, never stored), and the
key that verifies it: the same claims a JIT grant gives, so jitrace's token facts have their usual work to do."""

from __future__ import annotations

import time
from typing import Any


def bench_token(lifetime_s: int) -> tuple[str, Any]:
    """An RS256 token valid for ``lifetime_s`` from now (audience ``bench``, issuer ``jit-issuer``, a grant window
    around it), and the public key that verifies it."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    token = jwt.encode({"sub": "alice", "iss": "jit-issuer", "aud": "bench", "iat": now, "nbf": now,
                        "exp": now + lifetime_s, "jti": "bench-1", "grant_id": "g-1", "grant_start": now - 60,
                        "grant_end": now + lifetime_s}, key, algorithm="RS256")
    return token, key.public_key()
