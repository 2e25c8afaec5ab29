"""HAProxy in front of three `dockd serve` nodes: round-robin per request, and /ready decides
which nodes get requests.

Each node here has its own file store (shared state comes with the S3 store), so the requests
are ones any node answers alike: OPTIONS, the tus capability discovery.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dockd.crypto import receipt
from support.haproxy import HAProxy, haproxy_binary
from support.receiver import TUS, ReceiverProcess, Tus

pytestmark = pytest.mark.pg

REPO = Path(__file__).resolve().parents[2]
TOKEN = "tok-haproxy-3f9a0c7e2b5d41e8a6c9"


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[ReceiverProcess]]:
    started = [ReceiverProcess(tmp_path / f"node{i}").start() for i in (1, 2, 3)]
    try:
        yield started
    finally:
        for node in started:
            if node.process is not None:
                node.stop()


@pytest.fixture
def proxy(nodes: list[ReceiverProcess]) -> Iterator[HAProxy]:
    with HAProxy([f"127.0.0.1:{node.port}" for node in nodes]) as haproxy:
        yield haproxy


async def _who_answers(url: str, count: int) -> list[str]:
    """The node behind each of `count` requests sent on ONE kept-alive client connection."""
    answered = []
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(count):
            async with session.options(url, headers=TUS) as response:
                assert response.status == 204
                answered.append(response.headers["X-Dockd-Node"])
    return answered


async def test_consecutive_requests_on_one_connection_hit_different_nodes(
    proxy: HAProxy,
) -> None:
    answered = await _who_answers(proxy.url, 9)
    assert all(a != b for a, b in itertools.pairwise(answered)), answered
    assert sorted(set(answered)) == ["node1", "node2", "node3"]
    assert [answered.count(name) for name in ("node1", "node2", "node3")] == [3, 3, 3]
    print(f"\nHAProxy start until 3 nodes UP: {proxy.timings['start_s']:.2f} s; order {answered}")


async def test_a_node_that_fails_its_health_check_gets_no_requests(
    proxy: HAProxy, nodes: list[ReceiverProcess]
) -> None:
    nodes[1].kill9()
    proxy.wait_for_states({"node1": "UP", "node2": "DOWN", "node3": "UP"}, timeout=10)
    answered = await _who_answers(proxy.url, 6)
    assert set(answered) == {"node1", "node3"}
    nodes[1].restart()
    proxy.wait_for_states({"node2": "UP"}, timeout=10)
    assert "node2" in await _who_answers(proxy.url, 3)


def test_the_example_configuration_is_valid(tmp_path: Path) -> None:
    """config/haproxy.cfg.example passes `haproxy -c` (with a throwaway certificate in place)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ingest.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = tmp_path / "ingest.pem"
    pem.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    example = (REPO / "config" / "haproxy.cfg.example").read_text()
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        example.replace("/etc/haproxy/ingest.example.police.uk.pem", str(pem)).replace(
            "log /dev/log local0", "log stdout local0"
        )
    )
    binary = haproxy_binary()
    assert binary is not None
    checked = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_8_mib_patches_stream_through_the_proxy_and_locations_name_it(
    tmp_path: Path,
) -> None:
    """The example's timeouts and streaming carry a dock's 8 MiB PATCHes; with --public-origin
    the node's Location sends the dock back through the proxy, never around it."""
    haproxy = HAProxy(["127.0.0.1:0"])  # the node's port is known once it runs
    node = ReceiverProcess(
        tmp_path / "node", tokens={TOKEN: "dock-1"}, extra_args=["--public-origin", haproxy.origin]
    ).start()
    try:
        haproxy.backends = [f"127.0.0.1:{node.port}"]
        with haproxy:
            data = secrets.token_bytes(20 << 20)
            async with aiohttp.ClientSession() as session:
                tus = Tus(session, haproxy.url, TOKEN)
                location, last = await tus.upload(data, chunk=8 << 20)
            assert location.startswith(haproxy.url)
            assert last.status == 204 and "Dockd-Receipt" in last.headers
            signed = receipt.verify(last.headers["Dockd-Receipt"], node.public_key)
            assert signed.sha256 == hashlib.sha256(data).hexdigest()
            assert signed.length == len(data)
    finally:
        node.stop()
