"""A seeded, fault-injecting TCP proxy for HTTP/1.1 between the dock and the receiver.

Each client connection is forwarded to the upstream server. Request heads are parsed (only to
count requests and to recognise a PATCH's offset and length); for each request the proxy draws a
fault from a seeded RNG:

    pass              forward untouched
    reset_request     close both sides part-way through the request body (RST)
    reset_response    forward the request, close part-way through the response
    stall             hold the request for `stall_seconds` before forwarding (a client timeout)
    drip              forward the response a few bytes at a time
    truncate          forward the response head and only part of the body, then close
    http_500/503/507  answer the request itself (503 with Retry-After) without forwarding
    lose_response     forward the whole request (the server acts on it), drop the response

`log` records every fault with the request line, the PATCH's Upload-Offset and Content-Length, so
a test can tell which faults hit a completing request ("the final response was lost").
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from dataclasses import dataclass, field

FAULTS = (
    "pass",
    "reset_request",
    "reset_response",
    "stall",
    "drip",
    "truncate",
    "http_500",
    "http_503",
    "http_507",
    "lose_response",
)


@dataclass
class FaultRecord:
    fault: str
    method: str
    path: str
    offset: int | None
    length: int | None


@dataclass
class FaultProxy:
    upstream_port: int
    seed: int
    fault_rate: float = 0.3
    stall_seconds: float = 3.0
    enabled: bool = True
    force_next_patch: str | None = None  # a fault for the next PATCH, whatever the RNG says
    log: list[FaultRecord] = field(default_factory=list)
    port: int = 0
    _server: asyncio.base_events.Server | None = None

    async def start(self) -> FaultProxy:
        self._rng = random.Random(self.seed)
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server.close_clients() if hasattr(self._server, "close_clients") else None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def url(self, path: str = "/files/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _draw(self) -> str:
        if not self.enabled or self._rng.random() >= self.fault_rate:
            return "pass"
        return self._rng.choice(FAULTS[1:])

    async def _client(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            _reset(cwriter)
            return
        try:
            while await self._one_request(creader, cwriter, ureader, uwriter):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            _reset(uwriter)
            _reset(cwriter)

    async def _one_request(self, creader, cwriter, ureader, uwriter) -> bool:
        head = await creader.readuntil(b"\r\n\r\n")
        method, path, headers = _parse_head(head)
        body_length = int(headers.get("content-length", "0") or 0)
        offset = int(headers["upload-offset"]) if "upload-offset" in headers else None
        fault = self._draw()
        if method == "PATCH" and self.force_next_patch is not None:
            fault, self.force_next_patch = self.force_next_patch, None
        self.log.append(
            FaultRecord(fault, method, path, offset, body_length if method == "PATCH" else None)
        )
        if fault.startswith("http_"):
            status = int(fault[5:])
            reason = {
                500: "Internal Server Error",
                503: "Service Unavailable",
                507: "Insufficient Storage",
            }
            extra = "Retry-After: 1\r\n" if status == 503 else ""
            cwriter.write(
                f"HTTP/1.1 {status} {reason[status]}\r\nTus-Resumable: 1.0.0\r\n{extra}"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await cwriter.drain()
            return False
        if fault == "stall":
            await asyncio.sleep(self.stall_seconds)
        uwriter.write(head)
        remaining = body_length
        cut = self._rng.randint(0, max(body_length - 1, 0)) if fault == "reset_request" else None
        while remaining:
            piece = await creader.read(min(remaining, 1 << 16))
            if not piece:
                raise ConnectionError("client closed mid-body")
            if cut is not None and body_length - remaining + len(piece) > cut:
                uwriter.write(piece[: cut - (body_length - remaining)])
                await uwriter.drain()
                return False  # both sides reset by the caller
            uwriter.write(piece)
            remaining -= len(piece)
        await uwriter.drain()
        response_head = await ureader.readuntil(b"\r\n\r\n")
        _version, status, rheaders = _parse_head(response_head)
        response_body = await _read_body(ureader, method, status, rheaders)
        response = response_head + response_body
        if fault == "lose_response":
            return False
        if fault in ("reset_response", "truncate"):
            keep = (
                len(response_head) + (len(response_body) // 2)
                if fault == "truncate"
                else self._rng.randint(1, max(len(response) - 1, 1))
            )
            cwriter.write(response[:keep])
            await cwriter.drain()
            return False
        if fault == "drip":
            for i in range(0, len(response), 7):
                cwriter.write(response[i : i + 7])
                await cwriter.drain()
                await asyncio.sleep(0.002)
        else:
            cwriter.write(response)
            await cwriter.drain()
        return rheaders.get("connection", "").lower() != "close"


async def _read_body(
    reader: asyncio.StreamReader, method: str, status: str, headers: dict[str, str]
) -> bytes:
    """The raw response body bytes as framed on the wire (HEAD/204/304 have none)."""
    if method == "HEAD" or status in ("204", "304") or status.startswith("1"):
        return b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        raw = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            raw += size_line
            size = int(size_line.split(b";")[0], 16)
            raw += await reader.readexactly(size + 2)
            if size == 0:
                return raw
    length = int(headers.get("content-length", "0") or 0)
    return await reader.readexactly(length) if length else b""


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    first = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return first[0], first[1] if len(first) > 1 else "", headers


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), like a crashed peer or a middlebox dropping the flow."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
