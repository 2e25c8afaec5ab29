"""Store errors as tus refusals: the one place that decides what a backend failure means to a client.

StoreFull         507  nothing of the chunk counts; the client may retry later
StoreUnavailable  503  + Retry-After: the backend is down; nothing acknowledged is lost
Fenced            409  another node holds the upload now; HEAD tells the offset
NotFound          404
any other         500
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import structlog

from dockd.receiver.protocol import ProtocolError
from dockd.receiver.storage.api import Fenced, NotFound, StoreError, StoreFull, StoreUnavailable

log = structlog.get_logger("dockd.receiver")


def storage_refusal(
    exc: StoreError,
    *,
    upload: str | None = None,
    headers: Mapping[str, str] | None = None,
    what: str = "the chunk was not stored",
) -> ProtocolError:
    """The refusal for a store error; the connection closes (the body may be half read)."""
    sent = dict(headers or {})
    # Event names upload.disk_full / upload.disk_error predate the store interface; operators
    # alert on them (docs/RECEIVER.md), so they stay whatever the backend.
    if isinstance(exc, StoreFull):
        log.error("upload.disk_full", upload=upload)
        return ProtocolError(507, f"insufficient storage: {what}", sent, close_connection=True)
    if isinstance(exc, StoreUnavailable):
        log.warning("upload.store_unavailable", upload=upload, error=str(exc))
        sent["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return ProtocolError(
            503, f"storage unavailable, retry later: {what}", sent, close_connection=True
        )
    if isinstance(exc, Fenced):
        log.warning("upload.fenced", upload=upload, error=str(exc))
        return ProtocolError(409, f"upload taken over by another node: {what}", sent)
    if isinstance(exc, NotFound):
        return ProtocolError(404, "no such upload", sent)
    log.error("upload.disk_error", upload=upload, error=str(exc))
    return ProtocolError(500, f"storage error: {what}", sent, close_connection=True)
