"""Under TLS (the required mode off loopback) the connection caps and the head deadline hold from
the accept, not from the end of the handshake.

Found in review: with asyncio doing TLS in `create_server`, the guard saw a connection only after
its handshake, so sockets that connected and sent nothing were neither counted nor refused, and
one address could hold thousands of descriptors. The guard now admits at accept and upgrades the
connection itself.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from pathlib import Path

import aiohttp
from support.receiver import running_receiver

TOKEN = "t" * 32


def _self_signed(directory: Path) -> tuple[Path, Path]:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        cwd=directory, check=True, capture_output=True,
    )  # fmt: skip
    return directory / "cert.pem", directory / "key.pem"


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(100), 0.05) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def test_silent_tls_sockets_are_capped_and_timed_out_while_a_dock_is_served(tmp_path: Path):
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    async with running_receiver(
        tmp_path,
        tokens={TOKEN: "dock-a"},
        ssl_context=server_tls,
        max_connections=20,
        max_connections_per_address=5,
        header_timeout=2.0,
    ) as rx:
        port = int(rx.url.split(":")[2].split("/")[0])
        opened = [
            await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
            for _ in range(50)
        ]
        await asyncio.sleep(0.5)
        closed = [await _closed(reader) for reader, _w in opened]
        assert sum(not c for c in closed) <= 5, "one address held more sockets than its cap"
        # A real TLS client from another address is still served meanwhile.
        client_tls = ssl.create_default_context(cafile=str(cert))
        async with (
            aiohttp.ClientSession() as session,
            session.options(rx.url, ssl=client_tls) as reply,
        ):
            assert reply.status == 204
        started = time.monotonic()
        while not all([await _closed(reader) for reader, _w in opened]):
            assert time.monotonic() - started < 6, "silent sockets outlived the head deadline"
            await asyncio.sleep(0.2)
        for _r, writer in opened:
            writer.close()


def test_one_client_is_an_ipv4_address_or_an_ipv6_slash_64():
    from dockd.receiver.connections import address_key

    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"  # IPv4-mapped counts as IPv4
    assert address_key("fe80::1%eth0") == address_key("fe80::2")
