"""The denial reason a server sent: the ``google.rpc.ErrorInfo`` reason inside ``grpc-status-details-bin`` (AIP-193)."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"
_MAX_DETAILS_BYTES = 64 * 1024  # a status larger than this is not ours to parse on the hot path


def denial_reason(metadata: Iterable[tuple[str, str | bytes]] | None, max_chars: int = 256) -> str | None:
    """The first ErrorInfo reason in the metadata's rich status, else None. Never raises for a bad status."""
    for key, value in metadata or ():
        if key == DETAILS_KEY:
            return reason_of(value, max_chars)
    return None


def reason_of(details: str | bytes, max_chars: int = 256) -> str | None:
    """The first ErrorInfo reason of one ``grpc-status-details-bin`` value (a client may see it as latin-1 text),
    else None; a status too big or not a status gives None."""
    if isinstance(details, str):
        details = details.encode("latin-1", errors="replace")
    if not isinstance(details, bytes) or len(details) > _MAX_DETAILS_BYTES:
        return None
    try:
        status = status_pb2.Status.FromString(details)
    except DecodeError:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.reason:
                return info.reason[:max_chars]
    return None
