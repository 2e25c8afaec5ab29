"""tus 1.0.0 client: creation, core (HEAD/PATCH), checksum and termination, plus `send`.

Spec: https://tus.io/protocols/resumable-upload (1.0.0), with the concatenation extension when
the server offers it (`create_partial`, `create_final`). What this client relies on:

- every request except OPTIONS carries `Tus-Resumable: 1.0.0` (the spec says a client SHOULD
  NOT send it on OPTIONS);
- the server's offset is the only truth: `send` HEADs before every round and never resumes from
  a local idea of the offset;
- each PATCH carries an `Upload-Checksum` of its own body when the server offers crc32c (else
  sha256, else sha1; `dockd.checksums`), so a chunk damaged in flight is refused (460) and sent
  again instead of stored;
- transient failures (5xx, 408/423/429, 460, timeouts, resets) are retried per request with
  jittered exponential backoff (see `retry.py`); everything else fails at once with an error
  that says why, in words an operator can act on;
- a refusal of the dock itself rather than of one request raises `ServerRefused`: 401/403 (its
  credentials) or a quota (any response naming its limit in `Dockd-Limit`, even a 429 or 507
  that would otherwise be transient; see docs/RECEIVER.md). Retrying soon cannot fix either.

Header values (e.g. `Authorization`) are never logged or put into error messages.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus

import aiohttp
import structlog
from multidict import CIMultiDictProxy
from yarl import URL

from dockd import checksums
from dockd.crypto.receipt import HEADER as RECEIPT_HEADER

from . import uploader
from .buffers import MemoryBudget
from .retry import (
    RetriesExhausted,
    RetryPolicy,
    TransientFailure,
    call_with_retries,
    parse_retry_after,
)
from .uploader import OpenStream, UploadState

__all__ = [
    "MAX_STALLED_ROUNDS",
    "TUS_VERSION",
    "OffsetConflict",
    "RetryPolicy",
    "ServerCapabilities",
    "ServerRefused",
    "ServerRejected",
    "ServerUnavailable",
    "TusClient",
    "TusError",
    "UploadGone",
    "UploadState",
    "encode_metadata",
    "send",
]

TUS_VERSION = "1.0.0"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
CHECKSUM_STATUS = 460  # tus checksum extension: "Checksum Mismatch"
# dockd serve names the quota behind a refusal here (max-size, uploads-per-dock, ...).
LIMIT_HEADER = "Dockd-Limit"
_CREDENTIAL_STATUSES = frozenset({401, 403})
# 501/505 are 5xx but say "never": retrying cannot make a server implement a method.
_TRANSIENT_STATUSES = frozenset({408, 423, 429} | (set(range(500, 600)) - {501, 505}))
_ERROR_EXCERPT_BYTES = 512
# Hashing releases the GIL; above this size it goes to a thread so the loop keeps serving.
_HASH_IN_THREAD_ABOVE = 256 * 1024
# PATCH bodies are written in slices of this size, so the socket applies back-pressure.
_WRITE_SLICE = 256 * 1024
# `send` gives up when this many consecutive rounds end without the server's offset moving.
MAX_STALLED_ROUNDS = 5

_INT = re.compile(r"[0-9]{1,20}")
_METADATA_KEY = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # printable ASCII except space and comma
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")

log = structlog.get_logger()


class TusError(uploader.UploadError):
    """Base of every tus failure; `str()` is a reason an operator can read and act on."""


class UploadGone(TusError, uploader.UploadGone):
    """404/410 on the upload URL: it expired or was terminated; the upload must be recreated."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class OffsetConflict(TusError):
    """409: the server's offset differs from ours; HEAD and continue from the server's offset."""


class ServerRejected(TusError, uploader.UploadRejected):
    """A response that retrying will not fix (400, 401, 403, 412, 413, 415, a redirect...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ServerRefused(ServerRejected, uploader.UploadRefused):
    """The server refuses this dock, not this request: its credentials or one of its quotas.

    `kind` is "credentials" (401/403) or "quota" (`limit` names which). Every clip would get the
    same answer, so the dock waits the slow back-off between tries rather than the fast one.
    """

    def __init__(self, status: int, message: str, *, kind: str, limit: str | None = None) -> None:
        uploader.UploadRefused.__init__(self, message, kind=kind, limit=limit)
        self.status = status


class ServerUnavailable(TusError, uploader.ServerUnavailable):
    """Transient failures that were still failing after `RetryPolicy.attempts`.

    `retry_after` is the most recent `Retry-After` the server sent (seconds), if any: a hint for
    when the caller should try the whole operation again.
    """


@dataclass(frozen=True)
class ServerCapabilities:
    version: str  # the server's preferred protocol version (first of Tus-Version)
    extensions: frozenset[str]
    checksum_algorithms: frozenset[str]
    max_size: int | None


@dataclass(frozen=True)
class _Reply:
    """A final (non-transient) response, detached from the connection."""

    status: int
    headers: CIMultiDictProxy[str]
    excerpt: str  # sanitised start of the body, read only for unexpected statuses


def encode_metadata(metadata: Mapping[str, str | bytes]) -> str | None:
    """The `Upload-Metadata` header value, or None when there is nothing to send.

    Values are base64 of their bytes (str values as UTF-8); an empty value is sent as the bare
    key, which the spec allows. Keys must be non-empty printable ASCII without spaces or
    commas, since they travel unencoded.
    """
    pairs = []
    for key, value in metadata.items():
        if not isinstance(key, str) or not _METADATA_KEY.fullmatch(key):
            raise ValueError(
                f"tus metadata key {key!r} must be non-empty printable ASCII without spaces "
                "or commas"
            )
        if isinstance(value, str):
            raw = value.encode("utf-8")
        elif isinstance(value, bytes | bytearray):
            raw = bytes(value)
        else:
            raise TypeError(f"tus metadata value for {key!r} must be str or bytes")
        pairs.append(f"{key} {base64.b64encode(raw).decode('ascii')}" if raw else key)
    return ",".join(pairs) or None


class TusClient:
    """One tus endpoint, reached through the caller's `aiohttp.ClientSession`.

    The session owns connection pooling and TLS (verification stays on: the caller configures
    it, this client never relaxes it). `headers` (e.g. `Authorization`) go on every request.
    Two concerns are handed in rather than built in: `retry` (per request, `retry.py`) and
    `throttle`, the dock's bandwidth limit (`bandwidth.TokenBucket.acquire`), awaited before each
    slice of a PATCH body goes out so a whole block is paced rather than sent in one burst.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: str,
        *,
        headers: Mapping[str, str] | None = None,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen dataclass, safe to share
        throttle: Callable[[int], Awaitable[None]] | None = None,
        memory: MemoryBudget | None = None,
    ) -> None:
        parsed = URL(endpoint)
        if not parsed.is_absolute() or parsed.scheme not in ("http", "https"):
            raise ValueError(
                f"tus endpoint must be an absolute http(s) URL, got {_redact(parsed)!r}"
            )
        for name, value in (headers or {}).items():
            # Refuse header injection early, without echoing a value that may be a secret.
            if any(c in name + value for c in "\r\n\0"):
                raise ValueError(f"header {name!r} contains a line break or NUL")
        self._session = session
        self._endpoint = parsed
        self._headers = dict(headers or {})
        self._retry = retry
        self._timeout = aiohttp.ClientTimeout(total=retry.request_timeout)
        self._capabilities: ServerCapabilities | None = None
        self._capabilities_lock = asyncio.Lock()
        # The dock's bandwidth limit (bandwidth.TokenBucket.acquire): awaited before each slice
        # of a PATCH body goes out, so a whole block is paced rather than sent in one burst.
        self._throttle = throttle
        # The dock's memory budget (buffers.py): each round reserves its stream's blocks from it
        # before the stream allocates any, so parallel uploads wait rather than multiply RSS.
        self._memory = memory

    def reserve_stream(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold one upload stream's share of the memory budget (nothing if there is none)."""
        return self._memory.stream() if self._memory is not None else contextlib.nullcontext()

    @property
    def endpoint(self) -> str:
        return str(self._endpoint)

    async def capabilities(self) -> ServerCapabilities:
        """OPTIONS on the endpoint; cached after the first success."""
        async with self._capabilities_lock:
            if self._capabilities is None:
                self._capabilities = await self._fetch_capabilities()
            return self._capabilities

    async def create(self, length: int, metadata: Mapping[str, str | bytes]) -> str:
        """POST a new upload of `length` bytes; return its absolute URL.

        Not idempotent: if a response is lost and the POST is retried, the server may keep an
        orphan upload until it expires. That costs space, never correctness.
        """
        await self._check_length(length)
        headers = {"Upload-Length": str(length)}
        encoded = encode_metadata(metadata)
        if encoded is not None:  # some servers reject an empty Upload-Metadata header
            headers["Upload-Metadata"] = encoded
        return await self._post(headers)

    async def supports_concatenation(self) -> bool:
        """Whether the server offers the tus concatenation extension (OPTIONS, cached)."""
        return "concatenation" in (await self.capabilities()).extensions

    async def create_partial(self, length: int) -> str:
        """POST a partial upload (`Upload-Concat: partial`) of `length` bytes."""
        await self._check_length(length)
        async with self._asking_for_concatenation():
            return await self._post({"Upload-Length": str(length), "Upload-Concat": "partial"})

    async def create_final(
        self, partials: Sequence[str], metadata: Mapping[str, str | bytes]
    ) -> str:
        """POST the final upload of `partials` (`Upload-Concat: final;<url> ...`, no length).

        A 404/410 means a partial is gone (expired, or already used by a final upload whose
        answer was lost): UploadGone, so the caller starts the clip again.
        """
        if not partials or any(" " in url for url in partials):
            raise ValueError("partial upload URLs must be non-empty and without spaces")
        headers = {"Upload-Concat": "final;" + " ".join(partials)}
        encoded = encode_metadata(metadata)
        if encoded is not None:
            headers["Upload-Metadata"] = encoded
        async with self._asking_for_concatenation():
            return await self._post(headers, gone_if_missing=True)

    @contextlib.asynccontextmanager
    async def _asking_for_concatenation(self) -> AsyncIterator[None]:
        """A concatenation request the server rejects (not a refusal of the dock) may mean the
        server behind the URL no longer offers it (e.g. replaced by the multi-node deployment):
        the cached OPTIONS answer is dropped, so the clip's next try asks again and can take
        the two passes instead of being refused for as long as the dock runs."""
        try:
            yield
        except ServerRefused:
            raise
        except ServerRejected:
            async with self._capabilities_lock:
                self._capabilities = None
            raise

    async def _check_length(self, length: int) -> None:
        if length < 0:
            raise ValueError("upload length must not be negative")
        caps = await self.capabilities()
        if caps.max_size is not None and length > caps.max_size:
            raise ServerRefused(
                413,
                f"server refuses: max-size (upload of {length} bytes exceeds the server's "
                f"Tus-Max-Size of {caps.max_size} bytes at {_redact(self._endpoint)}; "
                "nothing was sent)",
                kind="quota",
                limit="max-size",
            )

    async def _post(self, headers: Mapping[str, str], *, gone_if_missing: bool = False) -> str:
        """One creation request (no body, no Content-Type: the spec's creation request is
        empty); the new upload's absolute URL."""
        reply = await self._exchange("POST", self._endpoint, headers)
        if reply.status != 201:
            raise self._rejection("POST", self._endpoint, reply, upload_url=gone_if_missing)
        location = reply.headers.get("Location")
        if not location:
            raise TusError(
                f"POST {_redact(self._endpoint)}: server answered 201 without a Location header "
                "(not a tus creation endpoint?)"
            )
        url = self._endpoint.join(URL(location))
        if url.scheme not in ("http", "https"):
            raise TusError(f"POST {_redact(self._endpoint)}: server gave a non-HTTP upload URL")
        if self._endpoint.scheme == "https" and url.scheme != "https":
            # The token and every byte would go in clear: typically a TLS-terminating proxy in
            # front of a server that does not know its public URL (dockd serve --public-origin).
            raise TusError(
                f"POST {_redact(self._endpoint)}: server gave a plain http:// upload URL for an "
                f"https:// endpoint ({_redact(url)}); not used. Behind a TLS proxy, the server "
                "must know its public origin"
            )
        return str(url)

    async def head(self, url: str) -> UploadState:
        """The server's view of an upload: offset (always), length (if known), receipt."""
        target = URL(url)
        reply = await self._exchange("HEAD", target, {"Cache-Control": "no-store"})
        if reply.status not in (200, 204):
            raise self._rejection("HEAD", target, reply, upload_url=True)
        offset = _required_int(reply.headers, "Upload-Offset", "HEAD", target)
        length = _optional_int(reply.headers, "Upload-Length", "HEAD", target)
        if length is not None and offset > length:
            raise TusError(
                f"HEAD {_redact(target)}: server reports offset {offset} beyond length {length}"
            )
        return UploadState(url, offset, length, reply.headers.get(RECEIPT_HEADER))

    async def patch(self, url: str, offset: int, data: bytes) -> int:
        """Append `data` at `offset`; return the server's new `Upload-Offset`.

        The returned offset may be less than `offset + len(data)` if the server stored only part
        of the body; it is never outside that range (else TusError).
        """
        target = URL(url)
        headers = {"Content-Type": OFFSET_CONTENT_TYPE, "Upload-Offset": str(offset)}
        checksum = await self._checksum_header(data)
        if checksum is not None:
            headers["Upload-Checksum"] = checksum
        # An explicit length keeps aiohttp from chunking the streamed body (see _exchange).
        headers["Content-Length"] = str(len(data))
        reply = await self._exchange(
            "PATCH", target, headers, data=data, also_transient=frozenset({CHECKSUM_STATUS})
        )
        if reply.status == 409:
            raise OffsetConflict(
                f"PATCH {_redact(target)}: server's offset is not {offset} (409 Conflict)"
            )
        if reply.status not in (200, 204):  # 1.0.0 says 204; 200 was allowed before
            raise self._rejection("PATCH", target, reply, upload_url=True)
        new_offset = _required_int(reply.headers, "Upload-Offset", "PATCH", target)
        if not offset <= new_offset <= offset + len(data):
            raise TusError(
                f"PATCH {_redact(target)}: server acknowledged offset {new_offset} for "
                f"{len(data)} bytes sent at {offset}; that is impossible"
            )
        return new_offset

    async def status(self, url: str) -> UploadState:
        """`Uploader.status`: a HEAD."""
        return await self.head(url)

    async def send(
        self,
        url: str,
        length: int,
        open_stream: OpenStream,
        on_progress: Callable[[int], None] | None = None,
    ) -> UploadState:
        """`Uploader.send`: the resumable HEAD/PATCH loop (module-level `send`)."""
        return await send(self, url, length, open_stream, on_progress)

    async def terminate(self, url: str) -> None:
        """DELETE the upload. An upload that is already gone counts as terminated."""
        target = URL(url)
        reply = await self._exchange("DELETE", target, {})
        if reply.status in (200, 204, 404, 410):
            return
        raise self._rejection("DELETE", target, reply, upload_url=False)

    # -- internals -------------------------------------------------------------------------

    async def _fetch_capabilities(self) -> ServerCapabilities:
        reply = await self._exchange("OPTIONS", self._endpoint, {}, tus_resumable=False)
        if reply.status not in (200, 204):
            raise self._rejection("OPTIONS", self._endpoint, reply, upload_url=False)
        versions = _header_list(reply.headers, "Tus-Version")
        if not versions:
            raise TusError(
                f"OPTIONS {_redact(self._endpoint)}: no Tus-Version header; is this a tus endpoint?"
            )
        if TUS_VERSION not in versions:
            raise ServerRejected(
                reply.status,
                f"OPTIONS {_redact(self._endpoint)}: server speaks tus {_clean(', '.join(versions))}, "
                f"not {TUS_VERSION}",
            )
        max_size = _optional_int(reply.headers, "Tus-Max-Size", "OPTIONS", self._endpoint)
        return ServerCapabilities(
            version=versions[0],
            extensions=frozenset(_header_list(reply.headers, "Tus-Extension")),
            checksum_algorithms=frozenset(_header_list(reply.headers, "Tus-Checksum-Algorithm")),
            max_size=max_size,
        )

    async def _checksum_header(self, data: bytes) -> str | None:
        algorithm = checksums.choose((await self.capabilities()).checksum_algorithms)
        if algorithm is None:
            return None
        if algorithm == "crc32c" or len(data) <= _HASH_IN_THREAD_ABOVE:
            # CRC32C of an 8 MiB block takes ~0.3 ms: cheaper inline than a thread hand-off.
            raw = checksums.digest_of(algorithm, data)
        else:
            raw = await asyncio.to_thread(checksums.digest_of, algorithm, data)
        return f"{algorithm} {base64.b64encode(raw).decode('ascii')}"

    async def _exchange(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        *,
        data: bytes | None = None,
        also_transient: frozenset[int] = frozenset(),
        tus_resumable: bool = True,
    ) -> _Reply:
        """One request with retries; returns the first non-transient response."""
        # Protocol headers win over caller headers of the same name.
        request_headers = {**self._headers, **headers}
        if tus_resumable:
            request_headers["Tus-Resumable"] = TUS_VERSION
        transient = _TRANSIENT_STATUSES | also_transient
        what = f"{method} {_redact(url)}"

        async def attempt() -> _Reply:
            try:
                async with self._session.request(
                    method,
                    url,
                    headers=request_headers,
                    # Fed in slices, fresh for every attempt: aiohttp would hand a large bytes
                    # body to the socket in one piece (and warn that it may stall the loop).
                    data=None if data is None else _slices(data, self._throttle),
                    timeout=self._timeout,
                    allow_redirects=False,  # never replay a PATCH (or credentials) elsewhere
                    # aiohttp labels even a bodiless POST application/octet-stream; PATCH sets
                    # its own type, so the automatic one is only ever misleading.
                    skip_auto_headers=("Content-Type",),
                    raise_for_status=False,  # statuses are ours to judge, whatever the session says
                ) as response:
                    excerpt = ""
                    if response.status >= 300:
                        excerpt = _sanitise(await response.content.read(_ERROR_EXCERPT_BYTES))
                    # A named quota is a refusal, whatever its status (429 and 507 included).
                    if response.status in transient and LIMIT_HEADER not in response.headers:
                        raise TransientFailure(
                            _status_text(response.status, excerpt),
                            _retry_after(response.headers),
                        )
                    return _Reply(response.status, response.headers, excerpt)
            except aiohttp.ClientSSLError as exc:
                # A certificate problem does not heal by retrying; say so at once.
                raise TusError(f"{what}: TLS failed: {exc}") from exc
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                raise TransientFailure(_exception_text(exc)) from exc
            except TimeoutError as exc:
                raise TransientFailure(
                    f"no complete response within {self._retry.request_timeout:g} s"
                ) from exc
            except aiohttp.ClientError as exc:
                raise TusError(f"{what}: {_exception_text(exc)}") from exc

        try:
            return await call_with_retries(self._retry, attempt, what=what)
        except RetriesExhausted as exhausted:
            raise ServerUnavailable(
                f"{what}: server unavailable after {exhausted.attempts} attempts; "
                f"last failure: {exhausted.last.cause}",
                exhausted.retry_after,
            ) from exhausted

    def _rejection(self, method: str, url: URL, reply: _Reply, *, upload_url: bool) -> TusError:
        where = f"{method} {_redact(url)}"
        detail = f": {reply.excerpt}" if reply.excerpt else ""
        if upload_url and reply.status in (404, 410):
            return UploadGone(
                f"{where}: upload no longer exists on the server ({reply.status}); "
                "it must be created again",
                reply.status,
            )
        refused = _refusal(method, where, reply)
        if refused is not None:
            return refused
        if reply.status == 412:
            offered = _clean(reply.headers.get("Tus-Version", "unknown"))
            return ServerRejected(
                412, f"{where}: server does not accept tus {TUS_VERSION} (it offers {offered})"
            )
        if 300 <= reply.status < 400:
            return ServerRejected(
                reply.status,
                f"{where}: server redirects ({reply.status}) to "
                f"{_redirect_target(reply.headers)}; configure that URL instead",
            )
        return ServerRejected(
            reply.status, f"{where}: server refused with {_status_text(reply.status, '')}{detail}"
        )


def _refusal(method: str, where: str, reply: _Reply) -> ServerRefused | None:
    """The dock's credentials or a quota refused, in words that say what to check."""
    detail = f": {reply.excerpt}" if reply.excerpt else ""
    limit = reply.headers.get(LIMIT_HEADER)
    if limit is not None:
        name = _clean(limit)[:40] or "unnamed limit"
        return ServerRefused(
            reply.status,
            f"server refuses: {name} (HTTP {reply.status} to {where}{detail})",
            kind="quota",
            limit=name,
        )
    # A DELETE refused with 403 is about the upload (a completed one is kept as evidence).
    if reply.status in _CREDENTIAL_STATUSES and method != "DELETE":
        return ServerRefused(
            reply.status,
            f"server rejects this dock's credentials (HTTP {reply.status}): check [server] "
            f"token_file (or client_cert) and [dock] id against the server's ({where}{detail})",
            kind="credentials",
        )
    return None


async def send(
    client: TusClient,
    url: str,
    length: int,
    open_stream: Callable[[int], AsyncIterator[bytes]],
    on_progress: Callable[[int], None] | None = None,
) -> UploadState:
    """Drive one upload to completion and return the final HEAD state (with any receipt).

    `open_stream(offset)` must yield the upload's bytes from exactly `offset`, in blocks; each
    block becomes one PATCH. Every round starts with a HEAD, so a restart resumes from what the
    server holds, never from a local guess. A 409 or a short acknowledgement ends the round
    (the stream is closed) and the next round starts from the server's offset again.

    Raises TusError when the server misbehaves in a way that would loop forever: its offset goes
    backwards past bytes it acknowledged, or no progress after MAX_STALLED_ROUNDS rounds.
    """
    where = _redact(URL(url))
    acknowledged = 0  # highest offset the server has confirmed holding
    previous: int | None = None  # the server's offset when the last round started
    stalled = 0
    while True:
        state = await client.head(url)
        _check_round_start(where, state, length, acknowledged)
        if state.offset == length:
            return state
        stalled = stalled + 1 if previous is not None and state.offset <= previous else 0
        if stalled >= MAX_STALLED_ROUNDS:
            raise TusError(
                f"upload {where} made no progress in {stalled} rounds; the server stays at "
                f"offset {state.offset} of {length}"
            )
        previous = state.offset
        acknowledged = await _send_round(
            client, url, where, length, state.offset, open_stream, on_progress
        )


async def _send_round(
    client: TusClient,
    url: str,
    where: str,
    length: int,
    offset: int,
    open_stream: Callable[[int], AsyncIterator[bytes]],
    on_progress: Callable[[int], None] | None,
) -> int:
    """PATCH blocks from `offset` until the stream ends or the server disagrees.

    Returns the highest offset the server acknowledged. The stream is closed on every exit path:
    it may hold a worker thread and an open file.
    """
    async with client.reserve_stream():  # the stream's blocks are allocated only within
        return await _stream_round(client, url, where, length, offset, open_stream, on_progress)


async def _stream_round(
    client: TusClient,
    url: str,
    where: str,
    length: int,
    offset: int,
    open_stream: Callable[[int], AsyncIterator[bytes]],
    on_progress: Callable[[int], None] | None,
) -> int:
    stream = open_stream(offset)
    try:
        async for block in stream:
            if not block:
                continue
            if offset + len(block) > length:
                raise TusError(
                    f"upload {where}: the data source yielded more than the declared {length} bytes"
                )
            try:
                new_offset = await client.patch(url, offset, block)
            except OffsetConflict:
                log.info("tus.offset_conflict", upload=where, offset=offset)
                return offset
            if new_offset > offset and on_progress is not None:
                on_progress(new_offset)
            if new_offset != offset + len(block):
                log.info(
                    "tus.short_ack", upload=where, offset=offset, sent=len(block), acked=new_offset
                )
                return new_offset
            offset = new_offset
        if offset != length:
            raise TusError(
                f"upload {where}: the data source ended at byte {offset} of the declared {length}"
            )
        return offset
    finally:
        await _close(stream)


def _check_round_start(where: str, state: UploadState, length: int, acknowledged: int) -> None:
    if state.length is not None and state.length != length:
        raise TusError(
            f"upload {where}: server expects {state.length} bytes but we are sending {length}"
        )
    if state.offset > length:
        raise TusError(f"upload {where}: server offset {state.offset} is past {length}")
    if state.offset < acknowledged:
        raise TusError(
            f"upload {where}: server offset went back from {acknowledged} to {state.offset}; "
            "it lost bytes it had acknowledged"
        )


async def _close(stream: AsyncIterator[bytes]) -> None:
    aclose: Callable[[], Awaitable[None]] | None = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def _slices(
    data: bytes, throttle: Callable[[int], Awaitable[None]] | None = None
) -> AsyncIterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), _WRITE_SLICE):
        piece = view[start : start + _WRITE_SLICE]
        if throttle is not None:
            await throttle(len(piece))
        yield piece


def _header_list(headers: CIMultiDictProxy[str], name: str) -> list[str]:
    return [item.strip().lower() for item in headers.get(name, "").split(",") if item.strip()]


def _required_int(headers: CIMultiDictProxy[str], name: str, method: str, url: URL) -> int:
    value = _optional_int(headers, name, method, url)
    if value is None:
        raise TusError(f"{method} {_redact(url)}: response lacks the {name} header")
    return value


def _optional_int(headers: CIMultiDictProxy[str], name: str, method: str, url: URL) -> int | None:
    """A non-negative integer header; a malformed one is a protocol violation, not a guess."""
    value = headers.get(name)
    if value is None:
        return None
    if not _INT.fullmatch(value.strip()):
        raise TusError(
            f"{method} {_redact(url)}: {name} is not a non-negative integer: "
            f"{_sanitise(value.encode()[:40])!r}"
        )
    return int(value)


def _retry_after(headers: CIMultiDictProxy[str]) -> float | None:
    return parse_retry_after(headers.get("Retry-After"))


def _status_text(status: int, excerpt: str) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Checksum Mismatch" if status == CHECKSUM_STATUS else "unknown status"
    text = f"HTTP {status} ({phrase})"
    return f"{text}: {excerpt}" if excerpt else text


def _exception_text(exc: BaseException) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _sanitise(raw: bytes) -> str:
    """A server's error body as one short printable line (it may be hostile or binary)."""
    return _clean(raw.decode("utf-8", errors="replace"))


def _clean(text: str) -> str:
    """Server-supplied text fit for a log line or an operator's screen."""
    return _UNPRINTABLE.sub(" ", text).strip()[:200]


def _redirect_target(headers: CIMultiDictProxy[str]) -> str:
    location = headers.get("Location")
    if location is None:
        return "nowhere"
    try:
        return _redact(URL(location))
    except ValueError:
        return _clean(location)


def _redact(url: URL) -> str:
    """A URL fit for logs and messages: no userinfo, query or fragment (they may hold tokens)."""
    if not url.is_absolute():
        return str(url.with_query(None).with_fragment(None))
    return str(url.with_user(None).with_query(None).with_fragment(None))
