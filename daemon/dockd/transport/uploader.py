"""The dock's seam to the ingest side: what the pipeline needs from any uploader.

The pipeline (and the manifest sender in custody/attest.py) hold an `Uploader` and catch only the
errors below; neither knows which protocol or HTTP library carries the bytes. `TusClient`
(transport/tus.py) is the production implementation: it maps every HTTP and connection failure
onto these errors. Tests use `support.fake_uploader.FakeUploader`, which keeps uploads in memory
and signs real receipts.

Per-request retries and the bandwidth limit belong to the implementation (tus retries each
request with `retry.py`; the token bucket paces request bodies), so an error seen here has
already outlasted them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

# `open_stream(offset)` yields the upload's bytes from exactly `offset`, in blocks.
OpenStream = Callable[[int], AsyncIterator[bytes]]


@dataclass(frozen=True)
class UploadState:
    """What the server holds of one upload: the only truth about how far it got."""

    url: str
    offset: int
    length: int | None
    receipt: str | None  # the server's signed receipt (wire text) once the upload is complete


class UploadError(Exception):
    """Base of every uploader failure; `str()` is a reason an operator can read and act on.

    Raised as is for a server that breaks the protocol (impossible offsets, missing fields):
    retrying later with the slow back-off is all the dock can do.
    """


class UploadGone(UploadError):
    """The server no longer has the upload (expired or terminated): it must be created again."""


class UploadRejected(UploadError):
    """The server refuses this request as made; asking again the same way will not change that."""


class UploadRefused(UploadRejected):
    """The server refuses this dock, not this request: its credentials or one of its quotas.

    `kind` is "credentials" or "quota" (`limit` names which). Every clip would get the same answer,
    so callers retry at the slow back-off maximum and show the reason to the operator.
    """

    def __init__(self, message: str, *, kind: str, limit: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.limit = limit


class ServerUnavailable(UploadError):
    """Transient failures that outlasted the implementation's retries; try the operation later.

    `retry_after` is the server's latest hint (seconds) for when to try again, if it gave one.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Uploader(Protocol):
    """Create an upload, send it from wherever the server stands, ask what the server holds."""

    async def create(self, length: int, metadata: Mapping[str, str | bytes]) -> str:
        """Make a new upload of `length` bytes described by `metadata`; return its URL."""
        ...

    async def send(
        self,
        url: str,
        length: int,
        open_stream: OpenStream,
        on_progress: Callable[[int], None] | None = None,
    ) -> UploadState:
        """Drive the upload to completion from the server's own offset; return the final state.

        Resumes from what the server holds, never from a local idea of the offset; calls
        `on_progress(offset)` as the server acknowledges bytes.
        """
        ...

    async def status(self, url: str) -> UploadState:
        """The server's view of the upload now: offset, length and, once complete, the receipt."""
        ...

    # One camera read per clip: the ciphertext goes to a partial upload while it is hashed; the
    # final upload, made of it with the full metadata (custody hash included), gets the receipt.

    async def supports_concatenation(self) -> bool:
        """Whether the server can make a final upload of partial ones (tus concatenation)."""
        ...

    async def create_partial(self, length: int) -> str:
        """Make a partial upload of `length` bytes (no metadata, never confirmed on its own)."""
        ...

    async def create_final(
        self, partials: Sequence[str], metadata: Mapping[str, str | bytes]
    ) -> str:
        """Make the final upload of the finished `partials` (in order); return its URL.

        Raises UploadGone when a partial no longer exists on the server.
        """
        ...

    async def terminate(self, url: str) -> None:
        """End an unfinished upload on the server (one already gone counts as ended): a partial
        that will never be finished must not hold the dock's unfinished-upload quota there."""
        ...
