"""An in-memory `Uploader` that signs real receipts: pipeline tests without an HTTP server.

It behaves as an honest ingest server would at the seam (offsets only move forward, a receipt is
signed with the test key over the SHA-256 of exactly the bytes received, a resumed send starts
from the server's own offset) and can be told to misbehave in the ways the dock must survive:

- `unavailable_for(n)`: the next n calls fail with `ServerUnavailable` (`unavailable = True`:
  every call, until set back to False);
- `refuse(kind)`: every call fails with `UploadRefused` until `refuse(None)`;
- `forget(url)`: the upload is gone (expired or terminated on the server);
- `sign_other_bytes()`: receipts name another SHA-256 than the bytes received;
- `lose_response_after_commit()`: the next send stores every byte, then its answer is lost;
- `lose_final_response()`: the next final upload (concatenation) is made, its answer lost;
- `lose_uploads()`: every upload is gone when it is next used (a partial at its final's
  creation, after all its bytes arrived; any other upload at its first PATCH), until
  `lose_uploads(False)`: a server that keeps losing them;
- `pause()` / `resume()`: sends wait between blocks; `block_delay`: a slow link (an unplug or a
  replace lands mid-upload).

Memory stays bounded: an upload keeps a running hash and, only with `keep_bytes=True`, its bytes
(for the tests that decrypt what was stored).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import itertools
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dockd.crypto import receipt
from dockd.transport.uploader import (
    OpenStream,
    ServerUnavailable,
    UploadError,
    UploadGone,
    UploadRefused,
    UploadRejected,
    UploadState,
)

BASE_URL = "https://ingest.invalid/files/"


@dataclass
class FakeUpload:
    url: str
    length: int
    metadata: dict[str, str]
    offset: int = 0
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    data: bytearray | None = None
    receipt: str | None = None
    received: int = 0  # every byte sent to this upload, resends included
    partial: bool = False  # tus concatenation: never confirmed on its own

    @property
    def sha256(self) -> str:
        return self.hasher.hexdigest()


class FakeUploader:
    """See the module docstring. Every knob is a plain attribute or method, set between awaits."""

    url = BASE_URL  # what a dock config names as [server] url (nothing connects to it)

    def __init__(self, signing_key: Ed25519PrivateKey | None, *, keep_bytes: bool = False) -> None:
        self._key = signing_key
        self._keep_bytes = keep_bytes
        self._ids = itertools.count(1)
        self.uploads: dict[str, FakeUpload] = {}
        self.calls: Counter[str] = Counter()
        self._unavailable = 0
        self._refusal: str | None = None
        self._other_bytes = False
        self._lose_response = False
        self._open = asyncio.Event()
        self._open.set()
        self.blocks = 0  # blocks received by all sends (one block is one PATCH over tus)
        self.unavailable = False
        self.block_delay = 0.0
        # Offer tus concatenation (the dock's one pass); off: the two-pass fallback.
        self.concatenation = False
        self._finals: dict[str, str] = {}  # used partial -> the final made of it
        self._lose_final = False
        self._lose_uploads = False

    # -- faults ------------------------------------------------------------------------------

    def unavailable_for(self, calls: int) -> None:
        self._unavailable = calls

    def refuse(self, kind: str | None) -> None:
        self._refusal = kind

    def forget(self, url: str) -> None:
        self.uploads.pop(url, None)

    def sign_other_bytes(self) -> None:
        self._other_bytes = True

    def lose_response_after_commit(self) -> None:
        self._lose_response = True

    def lose_final_response(self) -> None:
        """The next final upload is made, but its answer is lost (as a kill -9 of the dock
        between the POST and the journal would lose it)."""
        self._lose_final = True

    def lose_uploads(self, lose: bool = True) -> None:
        self._lose_uploads = lose

    def pause(self) -> None:
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    # -- what the server holds -------------------------------------------------------------

    def completed(self, kind: str | None = None) -> list[FakeUpload]:
        """Finished uploads; `kind` "clip" or "manifest" selects by what the metadata says."""
        done = [u for u in self.uploads.values() if u.offset == u.length and not u.partial]
        if kind == "manifest":
            return [u for u in done if u.metadata.get("type") == "dockd-manifest-v1"]
        if kind == "clip":
            return [u for u in done if u.metadata.get("type") != "dockd-manifest-v1"]
        return done

    def received(self) -> dict[str, int]:
        """Bytes sent to each upload (resends included), by upload id."""
        return {url.rsplit("/", 1)[-1]: u.received for url, u in self.uploads.items()}

    def stored_objects(self, directory: Path) -> list[dict[str, Any]]:
        """Completed clip uploads as `support.dock.stored_objects` gives them for the receiver:
        metadata, length, and the bytes written to `directory` (`data_path`) for decrypt checks."""
        directory.mkdir(parents=True, exist_ok=True)
        out = []
        for upload in self.completed("clip"):
            assert upload.data is not None, "FakeUploader(keep_bytes=True) keeps the bytes"
            path = directory / f"{upload.url.rsplit('/', 1)[-1]}.bin"
            path.write_bytes(upload.data)
            out.append(
                {
                    "metadata": dict(upload.metadata),
                    "length": upload.length,
                    "sha256": upload.sha256,
                    "data_path": path,
                }
            )
        return out

    # -- the Uploader interface ------------------------------------------------------------

    async def create(self, length: int, metadata: Mapping[str, str | bytes]) -> str:
        self._gate("create")
        url = f"{BASE_URL}{next(self._ids):08d}"
        text = {k: v.decode() if isinstance(v, bytes) else v for k, v in metadata.items()}
        self.uploads[url] = FakeUpload(
            url, length, text, data=bytearray() if self._keep_bytes else None
        )
        return url

    async def supports_concatenation(self) -> bool:
        return self.concatenation

    async def create_partial(self, length: int) -> str:
        if not self.concatenation:  # as `dockd serve` on a store without it: 400
            raise UploadRejected("fake: concatenation is not supported")
        url = await self.create(length, {})
        self.uploads[url].partial = True
        return url

    async def create_final(
        self, partials: Sequence[str], metadata: Mapping[str, str | bytes]
    ) -> str:
        """As our receiver: the final takes over the finished partial's bytes and hash."""
        assert len(partials) == 1
        if not self.concatenation:
            raise UploadRejected("fake: concatenation is not supported")
        self._gate("create_final")
        if self._lose_uploads:
            self.forget(partials[0])
        made = self._finals.get(partials[0])
        if made in self.uploads and self.uploads[made].metadata == dict(metadata):
            return made  # the same request again (its answer lost): the same final
        partial = self._upload(partials[0])
        if not partial.partial or partial.offset != partial.length:
            raise UploadError("fake: not a finished partial upload")
        url = await self.create(partial.length, metadata)
        final = self.uploads[url]
        final.offset, final.hasher, final.data = partial.offset, partial.hasher, partial.data
        del self.uploads[partials[0]]
        self._finals[partials[0]] = url
        self._complete(final)
        if self._lose_final:
            self._lose_final = False
            raise ServerUnavailable("fake: the final upload was made, but its answer was lost")
        return url

    async def terminate(self, url: str) -> None:
        """As tus termination: the upload is gone; one already gone counts as terminated."""
        self._gate("terminate")
        self.forget(url)

    async def status(self, url: str) -> UploadState:
        self._gate("status")
        upload = self._upload(url)
        return UploadState(url, upload.offset, upload.length, upload.receipt)

    async def send(
        self,
        url: str,
        length: int,
        open_stream: OpenStream,
        on_progress: Callable[[int], None] | None = None,
    ) -> UploadState:
        self._gate("send")
        if self._lose_uploads and not self._upload(url).partial:
            self.forget(url)
        upload = self._upload(url)
        if upload.length != length:  # as TusClient's send: the server expects other bytes
            raise UploadError(f"fake: server expects {upload.length} bytes, not {length}")
        if upload.offset == length:  # complete already (an answer was lost): send nothing
            return UploadState(url, upload.offset, upload.length, upload.receipt)
        stream = open_stream(upload.offset)
        try:
            async for block in stream:
                await self._open.wait()
                upload = self._upload(url)  # forgotten while paused: gone
                if upload.offset + len(block) > length:
                    raise UploadError(f"fake: the data source yielded more than {length} bytes")
                upload.hasher.update(block)
                if upload.data is not None:
                    upload.data += block
                upload.offset += len(block)
                upload.received += len(block)
                self.blocks += 1
                if on_progress is not None:
                    on_progress(upload.offset)
                await asyncio.sleep(self.block_delay)  # let others run, as a socket write would
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        if upload.offset != length:
            raise UploadError(f"fake: the data source ended at byte {upload.offset} of {length}")
        if not upload.partial:
            self._complete(upload)
        if self._lose_response:
            self._lose_response = False
            raise ServerUnavailable("fake: the server stored every byte, but its answer was lost")
        return UploadState(url, upload.offset, upload.length, upload.receipt)

    # -- internals ---------------------------------------------------------------------------

    def _gate(self, call: str) -> None:
        self.calls[call] += 1
        if self._refusal is not None:
            raise UploadRefused(
                f"fake: server refuses this dock ({self._refusal})", kind=self._refusal
            )
        if self.unavailable or self._unavailable > 0:
            self._unavailable = max(self._unavailable - 1, 0)
            raise ServerUnavailable("fake: server unavailable", retry_after=0.0)

    def _upload(self, url: str) -> FakeUpload:
        try:
            return self.uploads[url]
        except KeyError:
            raise UploadGone(f"fake: upload {url} no longer exists on the server") from None

    def _complete(self, upload: FakeUpload) -> None:
        if upload.receipt is not None or self._key is None:
            return
        sha256 = upload.sha256
        if self._other_bytes:
            sha256 = hashlib.sha256(b"other bytes" + sha256.encode()).hexdigest()
        upload.receipt = receipt.sign(
            self._key,
            upload=upload.url.rsplit("/", 1)[-1],
            length=upload.length,
            sha256=sha256,
            completed=dt.datetime.now(dt.UTC),
        )


def stored_objects_of(server: Any, scratch: Path) -> list[dict[str, Any]]:
    """What `server` (a FakeUploader or a receiver with a `store`) holds, in one shape."""
    if isinstance(server, FakeUploader):
        return server.stored_objects(scratch)
    from support.dock import stored_objects

    return stored_objects(server.store)
