"""Connection hygiene below aiohttp: a header-read deadline, connection caps, and accept errors
logged at a bounded rate.

aiohttp has no header-read timeout: a client that connects and sends nothing, or trickles a
request head one byte at a time, holds a socket (and a file descriptor) for as long as it likes.
`ConnectionGuard` is the protocol factory handed to `loop.create_server`; each connection gets a
`_GuardedProtocol` that forwards everything to aiohttp's own protocol and adds:

* a deadline for the request head: `header_timeout` seconds from the accept (first request) or
  from the first byte of the next request on a kept-alive connection, until the blank line that
  ends the head arrives. Missing it closes the connection (408 if some of a head arrived).
  Bodies are not its business: the receiver cuts off a stalled body itself (`--idle-timeout`);
* caps on concurrent connections, in total and per client address (an IPv6 client counts per
  /64, the block one host is usually given; IPv4-mapped addresses count as IPv4): a connection
  over a cap gets 503 (closed at once, before aiohttp sees it).

With TLS the guard sits below the handshake: the listener is plain TCP, the caps count the socket
from its accept and the head deadline runs from then too, and the guard upgrades the connection
itself (`loop.start_tls`). Letting asyncio do TLS in `create_server` would call the guard only
after the handshake, so silent sockets would escape both the caps and the deadline.

Between requests on a kept-alive connection aiohttp's own `keepalive_timeout` applies. The
middleware tells the guard when a request has been answered (`request_done`), so the next head
gets a fresh deadline.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("dockd.receiver")

_END_OF_HEAD = b"\r\n\r\n"


def _raw_response(status: str, body: bytes, *extra: bytes) -> bytes:
    """A complete HTTP/1.1 response that closes the connection, written without aiohttp."""
    head = [b"HTTP/1.1 " + status.encode(), b"Connection: close", *extra]
    head += [b"Content-Type: text/plain", b"Content-Length: " + str(len(body)).encode()]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


_REFUSED = _raw_response("503 Service Unavailable", b"too many connections\n", b"Retry-After: 5")
_HEAD_TIMEOUT = _raw_response("408 Request Timeout", b"request head did not arrive in time\n")


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0  # seconds for a request head to arrive completely
    max_connections: int = 1000  # concurrent connections, all clients together
    max_per_address: int = 64  # concurrent connections from one client address


class RateLimitedLog:
    """At most one log line per `interval` seconds per event; the line says how many it hid."""

    def __init__(self, interval: float = 10.0) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._hidden: Counter[str] = Counter()

    def error(self, event: str, **fields: Any) -> None:
        now = time.monotonic()
        last = self._last.get(event)
        if last is not None and now - last < self._interval:
            self._hidden[event] += 1
            return
        self._last[event] = now
        log.error(event, suppressed=self._hidden.pop(event, 0), **fields)


def address_key(host: str) -> str:
    """What one client is, for the per-address cap: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class ConnectionGuard:
    """Protocol factory wrapping aiohttp's: counts connections and enforces the head deadline."""

    def __init__(self, limits: ConnectionLimits, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context  # TLS is done by the guard, after admission
        # aiohttp's protocol factory (`AppRunner.server`), set once the runner is set up.
        self.inner: Callable[[], asyncio.Protocol] | None = None
        self.limits = limits
        self.active = 0
        self.by_address: Counter[str] = Counter()
        self.refused = 0  # connections closed by a cap (tests and metrics read these)
        self.timed_out = 0  # connections closed for a late request head
        self._by_transport: dict[int, _GuardedProtocol] = {}
        self.warnings = RateLimitedLog()

    def __call__(self) -> asyncio.Protocol:
        return _GuardedProtocol(self)

    def request_done(self, transport: asyncio.BaseTransport | None) -> None:
        """A request on this connection has been answered: the next head gets a new deadline."""
        if transport is not None:
            protocol = self._by_transport.get(id(transport))
            if protocol is not None:
                protocol.request_done()

    # -- bookkeeping for _GuardedProtocol --

    def _admit(self, protocol: _GuardedProtocol) -> bool:
        address = protocol.address
        if self.active >= self.limits.max_connections:
            cap = "max_connections"
        elif self.by_address[address] >= self.limits.max_per_address:
            cap = "max_per_address"
        else:
            self.active += 1
            self.by_address[address] += 1
            return True
        self.refused += 1
        self.warnings.error("connection.refused", cap=cap, peer=address, active=self.active)
        return False

    def _register(self, protocol: _GuardedProtocol, transport: asyncio.BaseTransport) -> None:
        self._by_transport[id(transport)] = protocol

    def _release(self, protocol: _GuardedProtocol) -> None:
        self.active -= 1
        self.by_address[protocol.address] -= 1
        if self.by_address[protocol.address] <= 0:
            del self.by_address[protocol.address]
        self._by_transport.pop(id(protocol.transport), None)


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind a request-head deadline."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._inner: Any = None
        self.transport: asyncio.Transport | None = None
        self.address = "?"
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_head = True  # between requests, or inside a head
        self._tail = b""  # last bytes seen, so a head end split across reads is found
        self._partial = False  # some of a head has arrived
        self._admitted = False  # counted by the guard (released exactly once)
        self._handshake: asyncio.Task[None] | None = None
        # Decrypted bytes that arrive between the end of the TLS handshake and start_tls
        # returning (the client sends its request at once): kept for aiohttp's protocol.
        self._early: list[bytes] = []
        self._early_eof = False

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.address = address_key(str(peer[0])) if isinstance(peer, tuple) and peer else "?"
        if not self._guard._admit(self):
            if self._guard.ssl_context is None:  # a TLS client could not read a plain 503
                transport.write(_REFUSED)
            transport.close()
            return
        self._admitted = True
        self._arm()  # from the accept: covers the TLS handshake and the first head
        if self._guard.ssl_context is None:
            self._start_inner(transport)
        else:
            transport.pause_reading()  # the ClientHello waits for the TLS layer (start_tls resumes)
            self._handshake = asyncio.get_running_loop().create_task(self._upgrade(transport))

    async def _upgrade(self, transport: asyncio.Transport) -> None:
        assert self._guard.ssl_context is not None
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(
                transport,
                self,
                self._guard.ssl_context,
                server_side=True,
                ssl_handshake_timeout=self._guard.limits.header_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, asyncio.CancelledError):
            transport.close()
            self._release_once()
            return
        if tls is None or tls.is_closing():
            self._release_once()
            return
        self._start_inner(tls)

    def _start_inner(self, transport: asyncio.Transport) -> None:
        assert self._guard.inner is not None, "ConnectionGuard.inner is set before serving"
        self.transport = transport
        self._guard._register(self, transport)
        self._inner = self._guard.inner()
        self._inner.connection_made(transport)
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)
        if self._early_eof:
            self.eof_received()

    def _release_once(self) -> None:
        if self._admitted:
            self._admitted = False
            self._disarm()
            self._guard._release(self)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            if self._admitted and sum(map(len, self._early)) < 1 << 16:
                self._early.append(data)
            return
        if self._reading_head:
            if self._deadline is None:  # first byte of the next request on a kept-alive one
                self._arm()
            self._partial = True
            seen = self._tail + data
            if _END_OF_HEAD in seen:
                self._reading_head = self._partial = False
                self._disarm()
            self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is None:
            self._early_eof = self._admitted
            return True  # keep the transport open until aiohttp's protocol has seen the bytes
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._release_once()
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # -- the deadline --

    def request_done(self) -> None:
        self._reading_head, self._partial, self._tail = True, False, b""
        self._disarm()  # armed again by the first byte of the next request

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._guard.limits.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        self._guard.timed_out += 1
        if self._partial:
            self.transport.write(_HEAD_TIMEOUT)
        self.transport.close()


def install_accept_error_limiter(loop: asyncio.AbstractEventLoop) -> None:
    """Log `accept()` failures (EMFILE, ENFILE, ENOBUFS, ENOMEM) at most once per 10 s.

    asyncio reports each one to the loop's exception handler and retries a second later; with
    the descriptor table full that is a flood of identical tracebacks that buries everything else.
    """
    previous = loop.get_exception_handler()
    limited = RateLimitedLog()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            limited.error("connection.accept_failed", error=str(context.get("exception")))
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
