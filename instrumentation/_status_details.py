"""The denial reason a server sent: the ``google.rpc.ErrorInfo`` reason inside ``grpc-status-details-bin`` (AIP-193)."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"
_MAX_DETAILS_BYTES = 64 * 1024  # a status larger than this is not ours to parse on the hot path


def denial_reason(metadata: Iterable[tuple[str, str | bytes]] | None, max_chars: int = 256) -> str | None:
    """The first ErrorInfo reason in the metadata's rich status, else None. Never raises for a bad status."""
    if not metadata:
        return None
    for key, value in metadata:
        if key != DETAILS_KEY or not isinstance(value, bytes) or len(value) > _MAX_DETAILS_BYTES:
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info) and info.reason:
                    return info.reason[:max_chars]
        return None
    return None
