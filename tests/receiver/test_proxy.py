"""Behind a TLS-terminating proxy: the receiver names its public origin in Location, and a dock
never follows an upload URL that drops from https:// to http://."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest
from dockd.transport.tus import TusClient, TusError
from support.receiver import Tus, running_receiver

TOKEN = "tok-A-4f0c1e9b7d2a58c3e6f1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_location_uses_the_public_origin(tmp_path, session):
    async with running_receiver(
        tmp_path, tokens={TOKEN: "dock-a"}, public_origin="https://ingest.example.police.uk"
    ) as rx:
        reply = await Tus(session, rx.url, TOKEN).create(10)
        assert reply.status == 201
        assert reply.headers["Location"].startswith("https://ingest.example.police.uk/files/")


def _self_signed(directory: Path) -> tuple[Path, Path]:
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        cwd=directory,
        check=True,
        capture_output=True,
    )  # fmt: skip
    return directory / "cert.pem", directory / "key.pem"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
async def test_a_dock_refuses_an_http_upload_url_from_an_https_endpoint(tmp_path):
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    # A proxy set-up gone wrong: the server believes its public origin is plain http.
    async with running_receiver(
        tmp_path,
        tokens={TOKEN: "dock-a"},
        public_origin="http://127.0.0.1:9",
        ssl_context=server_tls,
    ) as rx:
        assert rx.url.startswith("https://")
        client_tls = ssl.create_default_context(cafile=str(cert))
        connector = aiohttp.TCPConnector(ssl=client_tls)
        async with aiohttp.ClientSession(connector=connector) as session:
            client = TusClient(session, rx.url, headers=AUTH)
            with pytest.raises(TusError, match="plain http:// upload URL"):
                await client.create(10, {})
