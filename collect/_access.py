"""Who may send to the receiver: TLS (``--tls-cert``/``--tls-key``) and a bearer token (``--auth-token-file``).

As the OpenTelemetry Collector's receivers do (configtls, the bearertokenauth extension): with a token, a request
without ``authorization: Bearer <token>`` is refused before anything is read or stored (gRPC UNAUTHENTICATED, HTTP
401); the comparison takes constant time. The token is never printed, in errors or answers. A receiver reachable
beyond loopback without TLS or a token is warned about at start: anyone who can connect can write spans, and
without TLS the spans (and the token) cross the network in clear.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jitrace.analyzer.errors import UserError

if TYPE_CHECKING:
    import ssl  # imported where a context is made: `jitrace analyze` imports this module (via compact), never TLS

_SCHEME = b"bearer "


@dataclass(frozen=True)
class Access:
    token: bytes | None = None  # the bearer token requests must carry; None: no authentication
    cert_file: str | None = None  # PEM certificate chain and its key, for TLS; None: plain text
    key_file: str | None = None

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    def allows(self, authorization: str | bytes | None) -> bool:
        """Whether an ``authorization`` header (or gRPC metadata value) carries the token; True without a token."""
        if self.token is None:
            return True
        if authorization is None:
            return False
        value = authorization.encode("latin-1", "replace") if isinstance(authorization, str) else authorization
        value = value.strip()
        scheme, given = value[:len(_SCHEME)], value[len(_SCHEME):].strip()
        # compare_digest: the time taken does not tell how much of a guess was right
        return hmac.compare_digest(scheme.lower(), _SCHEME) & hmac.compare_digest(given, self.token)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The HTTP side's TLS context (TLS 1.2 at least), or None without TLS."""
        if self.cert_file is None:
            return None
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def grpc_credentials(self):
        """The gRPC side's ``grpc.ServerCredentials``, or None without TLS."""
        if self.cert_file is None:
            return None
        import grpc

        pair = (Path(self.key_file).read_bytes(), Path(self.cert_file).read_bytes())
        return grpc.ssl_server_credentials([pair])


def load(tls_cert: str | None, tls_key: str | None, token_file: str | None) -> Access:
    """Read and check the options' files; a problem is a one-line UserError that never quotes the token."""
    if (tls_cert is None) != (tls_key is None):
        raise UserError("--tls-cert and --tls-key go together")
    token = None
    if token_file is not None:
        try:
            token = Path(token_file).read_bytes().strip()
        except OSError as exc:
            raise UserError(f"--auth-token-file {token_file}: {exc.strerror or exc}") from None
        if not token:
            raise UserError(f"--auth-token-file {token_file}: the file is empty")
        if any(b < 0x21 or b > 0x7e for b in token):
            raise UserError(f"--auth-token-file {token_file}: the token must be one line of printable ASCII "
                            "without spaces (as an HTTP header carries it)")
    access = Access(token=token, cert_file=tls_cert, key_file=tls_key)
    try:
        access.ssl_context()  # a certificate and key that do not load, or do not match
    except OSError as exc:  # ssl.SSLError is one
        raise UserError(f"--tls-cert {tls_cert} / --tls-key {tls_key}: cannot be used: "
                        f"{getattr(exc, 'reason', None) or exc.strerror or exc}") from None
    return access


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one (an unresolvable name counts as not)."""
    host = host.strip("[]")
    if not host:
        return False  # "" binds every interface
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def exposure_warning(flag: str, addr: str | None, access: Access) -> str | None:
    """The warning line for a listener reachable from other machines without TLS or a token, else None."""
    if addr is None or is_loopback(addr.rpartition(":")[0]):
        return None
    if not access.tls and access.token is None:
        why = "without TLS or authentication: anyone who can connect can write spans, and they travel in clear"
    elif not access.tls:
        why = "without TLS: the spans and the bearer token travel in clear"
    elif access.token is None:
        why = "without authentication: anyone who can connect can write spans"
    else:
        return None
    return (f"jitrace collect: warning: {flag} {addr} is reachable beyond this machine {why} "
            "(see --tls-cert/--tls-key and --auth-token-file)")
