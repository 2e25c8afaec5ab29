"""The connection guard on kept-alive connections and at its caps, with short timeouts."""

from __future__ import annotations

import asyncio
import errno
import time

import structlog
from dockd.receiver.connections import install_accept_error_limiter
from support.receiver import running_receiver

OPTIONS = b"OPTIONS /files/ HTTP/1.1\r\nHost: x\r\n\r\n"


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return head


async def _closed_after(reader: asyncio.StreamReader, limit: float) -> float:
    started = time.monotonic()
    while await asyncio.wait_for(reader.read(1024), limit):
        pass
    return time.monotonic() - started


async def test_kept_alive_connections_idle_or_trickling_are_closed(tmp_path):
    async with running_receiver(tmp_path, header_timeout=1.0, keepalive_timeout=2.0) as rx:
        port = rx.running.port
        # Idle after a request: aiohttp's keep-alive timeout closes it.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(OPTIONS)
        assert (await _read_response(reader)).startswith(b"HTTP/1.1 204")
        idle = await _closed_after(reader, 10)
        assert 1.5 <= idle <= 4.0, idle
        writer.close()

        # A second request whose head trickles: the head deadline runs from its first byte.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(OPTIONS)
        assert (await _read_response(reader)).startswith(b"HTTP/1.1 204")
        writer.write(b"OPTIONS /files/ HTTP/1.1\r\n")
        started = time.monotonic()
        answer = b""
        while True:
            try:
                piece = await asyncio.wait_for(reader.read(1024), 0.3)
            except TimeoutError:
                writer.write(b"X")  # a header that never ends
                continue
            if not piece:
                break
            answer += piece
        assert answer.startswith(b"HTTP/1.1 408")
        assert 0.8 <= time.monotonic() - started <= 3.0
        writer.close()
        assert rx.running.guard.timed_out >= 1
        assert rx.running.guard.active == 0


async def test_a_connection_over_the_per_address_cap_gets_503(tmp_path):
    async with running_receiver(tmp_path, max_connections_per_address=2) as rx:
        port = rx.running.port
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await _read_response(reader)).startswith(b"HTTP/1.1 503")
        assert await asyncio.wait_for(reader.read(), 5) is not None  # then closed
        writer.close()
        # Another address is not affected.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=("127.0.0.3", 0)
        )
        writer.write(OPTIONS)
        assert (await _read_response(reader)).startswith(b"HTTP/1.1 204")
        writer.close()
        for _, w in held:
            w.close()
        assert rx.running.guard.refused == 1


async def test_accept_errors_are_logged_at_a_bounded_rate():
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    others: list[str] = []
    loop.set_exception_handler(lambda _loop, context: others.append(context["message"]))
    try:
        install_accept_error_limiter(loop)
        emfile = OSError(errno.EMFILE, "Too many open files")
        with structlog.testing.capture_logs() as logged:
            for _ in range(14_058):  # the count of accept() error lines
                loop.call_exception_handler(
                    {"message": "socket.accept() out of system resource", "exception": emfile}
                )
            loop.call_exception_handler({"message": "something else"})
    finally:
        loop.set_exception_handler(previous)
    failures = [e for e in logged if e["event"] == "connection.accept_failed"]
    assert len(failures) == 1 and "Too many open files" in failures[0]["error"]
    assert others == ["something else"]  # everything else still reaches the old handler
