"""The bounded class of an exception that stopped a clip: the `reason` / `cause` label values.

A reason like "ServerUnavailable: PATCH https://... last failure: 503" becomes
`server_unavailable`, so free text (URLs, paths) never becomes a metric label. Kept apart from
metrics.py because it must know the failures of every layer (camera, uploader, journal
disk), and the metrics are used by those layers.
"""

from __future__ import annotations

import aiohttp

from dockd import camera_read
from dockd.confirm import ConfirmationMismatch, NotConfirmed
from dockd.devices.camera import ClipReplaced, HardLinked, UnsafeFile
from dockd.devices.writers import WriterPresent
from dockd.dockhealth import is_storage_error
from dockd.transport import uploader

# Every value a `reason` / `cause` label can take (documented in docs/OPERATORS.md).
REASON_CLASSES = (
    "server_unavailable",  # retries exhausted on 5xx / 429 / connection errors / timeouts
    "server_rejected",  # a 4xx the server will not change its mind about
    "upload_gone",  # the server lost or expired the upload; a new one is made
    "network",  # connection refused / reset before any response
    "timeout",
    "no_receipt",  # the server did not give a usable confirmation
    "receipt_mismatch",  # the receipt names other bytes
    "clip_changed",  # the camera file changed or was replaced after it was read
    "unsafe_file",  # symlink, FIFO, device... on the camera
    "unreadable",  # I/O error reading the camera
    "internal_error",
    "dock_storage",  # the dock's own state directory is full or failing
    "open_for_writing",  # another process holds the clip open for writing
    "hard_linked",  # the clip's data has other names on the camera
    "operator",  # an operator asked (dockctl retry)
    "other",
)


def reason_class(exc: BaseException) -> str:
    """The bounded label value for an exception that stopped a clip."""
    if is_storage_error(exc):
        return "dock_storage"

    checks: list[tuple[type[BaseException] | tuple[type[BaseException], ...], str]] = [
        (uploader.UploadGone, "upload_gone"),
        (uploader.ServerUnavailable, "server_unavailable"),
        (uploader.UploadRejected, "server_rejected"),
        (uploader.UploadError, "server_rejected"),
        (HardLinked, "hard_linked"),
        (WriterPresent, "open_for_writing"),
        ((camera_read.ClipChangedError, ClipReplaced), "clip_changed"),
        (UnsafeFile, "unsafe_file"),
        (ConfirmationMismatch, "receipt_mismatch"),
        (NotConfirmed, "no_receipt"),
        (TimeoutError, "timeout"),
        (aiohttp.ClientError, "network"),
        (OSError, "unreadable"),
    ]
    for kinds, name in checks:
        if isinstance(exc, kinds):
            return name
    return "other"
