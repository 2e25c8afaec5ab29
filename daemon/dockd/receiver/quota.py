"""Per-dock quotas on unfinished uploads, and the store's free space, checked at creation.

A dock is the authenticated identity (token name or client-certificate subject); anonymous
clients (loopback only) count as one identity. A creation is refused when it would take the
dock past `max_uploads_per_dock` unfinished uploads or `max_reserved_per_dock` bytes (the sum of
`Upload-Length` of its unfinished uploads), or when its length does not fit in the store's free
space minus what every unfinished upload still has to write.

Each refusal names its limit in the body and in the `Dockd-Limit` header, so a client can tell a
quota from a transient failure of the same status:

    limit                    status
    max-size                 413  Upload-Length above Tus-Max-Size (tus spec)
    reserved-bytes-per-dock  413  the dock's unfinished uploads would reserve too many bytes
    uploads-per-dock         429  the dock has too many unfinished uploads
    store-free-space         507  the store cannot hold it next to the uploads already promised
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dockd.receiver.protocol import ProtocolError

LIMIT_HEADER = "Dockd-Limit"


@dataclass(frozen=True)
class Quotas:
    max_uploads_per_dock: int = 100
    max_reserved_per_dock: int = 2 << 40  # 2 TiB
    # Free space kept back for sidecars, tombstones and the file system's own needs.
    free_space_margin: int = 64 << 20


@dataclass(frozen=True)
class Reservation:
    """What one unfinished upload holds: its dock, Upload-Length and committed offset."""

    dock: str | None
    length: int
    offset: int


def refusal(status: int, limit: str, detail: str) -> ProtocolError:
    return ProtocolError(status, f"quota {limit}: {detail}", {LIMIT_HEADER: limit})


def check_creation(
    quotas: Quotas,
    *,
    dock: str | None,
    length: int,
    unfinished: Iterable[Reservation],
    free: int | None,
) -> None:
    """Raise the ProtocolError that refuses this creation, if any limit says so."""
    count = reserved = still_to_write = 0
    for upload in unfinished:
        still_to_write += upload.length - upload.offset
        if upload.dock == dock:
            count += 1
            reserved += upload.length
    who = f"dock {dock!r}" if dock is not None else "anonymous clients"
    if count + 1 > quotas.max_uploads_per_dock:
        raise refusal(
            429,
            "uploads-per-dock",
            f"{who} has {count} unfinished uploads (limit {quotas.max_uploads_per_dock}); "
            "finish or terminate some first",
        )
    if reserved + length > quotas.max_reserved_per_dock:
        raise refusal(
            413,
            "reserved-bytes-per-dock",
            f"{who} has {reserved} bytes in unfinished uploads; {length} more would pass the "
            f"limit of {quotas.max_reserved_per_dock}",
        )
    if free is None:  # the store has no useful limit (an object store)
        return
    available = free - still_to_write - quotas.free_space_margin
    if length > available:
        raise refusal(
            507,
            "store-free-space",
            f"the store has room for {max(available, 0)} more bytes after the unfinished uploads; "
            f"{length} do not fit",
        )
