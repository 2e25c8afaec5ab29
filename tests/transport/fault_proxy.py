"""A reverse proxy that sits between the tus client and the real receiver and misbehaves on cue.

Everything passes through to the real server unless a fault is queued for the next request of a
method. The proxy records every request it sees (method, headers, declared body size, arrival
time), so tests can assert what the client actually put on the wire.

Faults (queued per method with `FaultProxy.queue`):

- `Pass()`: forward untouched (to let a fault hit a later request of the same method).
- `Answer(status, headers)`: answer directly; the real server never sees the request.
- `DropMidBody(after)`: forward only the first `after` body bytes to the real server (which sees
  a truncated request, as after a network cut), then cut both connections.
- `Corrupt()`: flip one byte of the body and forward it, headers unchanged, so the real server
  sees a checksum that does not match.
- `Truncate(keep)`: forward only the first `keep` body bytes as a complete, smaller request
  (without its Upload-Checksum), like a server that stored part of a body and acknowledged that.
- `Stall()`: never answer; hold the request until the client gives up and hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict

_HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Transfer-Encoding",
        "Content-Length",
        "Host",
        "TE",
        "Trailer",
        "Upgrade",
        "Proxy-Authorization",
        "Proxy-Connection",
        "Content-Encoding",
    )
)
# A client that gave up hangs up within its own timeout; this only bounds a broken test.
_STALL_LIMIT_S = 30.0


@dataclass(frozen=True)
class Pass:
    pass


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DropMidBody:
    after: int


@dataclass(frozen=True)
class Corrupt:
    pass


@dataclass(frozen=True)
class Truncate:
    keep: int


@dataclass(frozen=True)
class Stall:
    pass


Fault = Pass | Answer | DropMidBody | Corrupt | Truncate | Stall


@dataclass(frozen=True)
class Seen:
    """One request as it reached the proxy."""

    method: str
    path: str
    headers: CIMultiDict[str]
    declared_length: int  # Content-Length the client announced (0 when absent)
    arrived: float  # time.monotonic()
    fault: Fault | None

    @property
    def offset(self) -> int | None:
        value = self.headers.get("Upload-Offset")
        return int(value) if value is not None else None


class _Upstream(Exception):
    """The forward-half of a DropMidBody fault, cut on purpose."""


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.seen: list[Seen] = []
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    def queue(self, method: str, *faults: Fault) -> None:
        """Apply `faults`, in order, to the next requests of `method` (one fault each)."""
        self._faults[method.upper()].extend(faults)

    def requests(self, method: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method.upper()]

    async def start(self) -> FaultProxy:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        queued = self._faults[request.method]
        fault = queued.popleft() if queued else None
        self.seen.append(
            Seen(
                request.method,
                request.path,
                CIMultiDict(request.headers),
                request.content_length or 0,
                time.monotonic(),
                fault,
            )
        )
        if isinstance(fault, Answer):
            return web.Response(status=fault.status, headers=fault.headers)
        if isinstance(fault, Stall):
            return await self._stall(request)
        if isinstance(fault, DropMidBody):
            return await self._drop_mid_body(request, fault.after)
        body = await request.read() if request.can_read_body else None
        headers = self._upstream_headers(request)
        if isinstance(fault, Corrupt) and body:
            middle = len(body) // 2
            body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]
        if isinstance(fault, Truncate) and body is not None:
            body = body[: fault.keep]
            headers.popall("Upload-Checksum", None)
        return await self._forward(request, headers, body)

    def _upstream_headers(self, request: web.Request) -> CIMultiDict[str]:
        return CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP
        )

    async def _forward(
        self, request: web.Request, headers: CIMultiDict[str], body: bytes | None
    ) -> web.Response:
        assert self._session is not None
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=None if body is None else io.BytesIO(body),  # raw bytes > 1 MiB make aiohttp warn
            allow_redirects=False,
            skip_auto_headers=("Content-Type",),  # pass on exactly the client's own type
        ) as upstream:
            payload = await upstream.read()
            headers = CIMultiDict(
                (k, v) for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP
            )
        location = headers.get("Location")
        if location is not None and location.startswith(self.upstream):
            headers["Location"] = self.url + location[len(self.upstream) :]
        return web.Response(status=upstream.status, headers=headers, body=payload or None)

    async def _drop_mid_body(self, request: web.Request, after: int) -> web.StreamResponse:
        """Give the real server a truncated PATCH, then hang up on the client."""
        assert self._session is not None
        prefix = await request.content.readexactly(after)
        headers = self._upstream_headers(request)
        headers["Content-Length"] = str(request.content_length)

        async def truncated() -> AsyncIterator[bytes]:
            yield prefix
            await asyncio.sleep(0.05)  # let the server consume the prefix before the cut
            raise _Upstream("cut")

        try:
            async with self._session.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=truncated()
            ) as upstream:
                await upstream.read()
        except (aiohttp.ClientError, _Upstream):
            pass
        return self._hang_up(request)

    async def _stall(self, request: web.Request) -> web.StreamResponse:
        # Drain the body: while it sits unread, aiohttp stops reading the socket and would never
        # notice the client hanging up.
        with contextlib.suppress(ConnectionError, HttpProcessingError, aiohttp.ClientError):
            await request.read()
        deadline = time.monotonic() + _STALL_LIMIT_S
        while time.monotonic() < deadline:
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            await asyncio.sleep(0.02)
        return self._hang_up(request)

    @staticmethod
    def _hang_up(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            transport.abort()  # RST-like: the client sees a reset, not a response
        # aiohttp needs a return value; it is never written to the closed socket.
        return web.Response(status=599)
