"""A tus 1.0 server (core + creation) that signs real receipts for bytes other than the ones sent.

The reference receiver never lies, so nothing else in the suite can show what the dock does when a
server stores other bytes, or signs a receipt that names other bytes. This one keeps every upload
in memory (test clips are small), signs a genuine `Dockd-Receipt` with the test's server key, and
tells one lie, chosen per test:

    server = await start_lying_server(keys.server_signing_key, Lie.CORRUPT_BYTE)
    server.url          # creation endpoint for the dock's [server] url
    server.stored(id)   # the bytes it kept for an upload
    await server.stop()
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dockd.crypto import receipt
from dockd.crypto.keys import load_signing_key

TUS = {"Tus-Resumable": "1.0.0"}


class Lie(enum.Enum):
    HONEST = "honest"  # the control: stores what it got and signs exactly that
    CORRUPT_BYTE = "corrupt_byte"  # stores other bytes (one flipped) and signs their true hash
    LAST_HEX_DIGIT = (
        "last_hex_digit"  # stores the right bytes; the hash it signs differs at the end
    )
    OTHER_UPLOAD = "other_upload"  # the receipt names another upload id
    OTHER_LENGTH = "other_length"  # the receipt names one byte more than was stored


def flip_last_hex_digit(digest: str) -> str:
    """The same hex digest but for its last digit: what a prefix comparison cannot tell apart."""
    return digest[:-1] + ("0" if digest[-1] != "0" else "1")


@dataclass
class _Upload:
    length: int
    data: bytearray = field(default_factory=bytearray)
    receipt: str | None = None


@dataclass
class LyingServer:
    url: str
    lie: Lie
    runner: web.AppRunner
    uploads: dict[str, _Upload]

    def stored(self, upload_id: str) -> bytes:
        return bytes(self.uploads[upload_id].data)

    async def stop(self) -> None:
        await self.runner.cleanup()


def _finish(upload_id: str, upload: _Upload, lie: Lie, key: Ed25519PrivateKey) -> None:
    """Complete an upload: apply the lie to what is kept and to what is signed."""
    if lie is Lie.CORRUPT_BYTE and upload.data:
        upload.data[len(upload.data) // 2] ^= 0x01  # same length, other bytes
    digest = hashlib.sha256(upload.data).hexdigest()
    signed_id, signed_length = upload_id, len(upload.data)
    if lie is Lie.LAST_HEX_DIGIT:
        digest = flip_last_hex_digit(digest)
    elif lie is Lie.OTHER_UPLOAD:
        signed_id = secrets.token_hex(8)
    elif lie is Lie.OTHER_LENGTH:
        signed_length += 1
    upload.receipt = receipt.sign(
        key,
        upload=signed_id,
        length=signed_length,
        sha256=digest,
        completed=dt.datetime.now(dt.UTC),
    )


def _app(lie: Lie, key: Ed25519PrivateKey, uploads: dict[str, _Upload]) -> web.Application:
    async def options(_request: web.Request) -> web.Response:
        return web.Response(
            status=204, headers={**TUS, "Tus-Version": "1.0.0", "Tus-Extension": "creation"}
        )

    async def create(request: web.Request) -> web.Response:
        try:
            length = int(request.headers["Upload-Length"])
        except (KeyError, ValueError):
            return web.Response(status=400, headers=TUS)
        upload_id = secrets.token_hex(8)
        uploads[upload_id] = upload = _Upload(length)
        if length == 0:
            _finish(upload_id, upload, lie, key)
        return web.Response(status=201, headers={**TUS, "Location": f"/files/{upload_id}"})

    def _found(request: web.Request) -> tuple[str, _Upload]:
        upload_id = request.match_info["upload"]
        if upload_id not in uploads:
            raise web.HTTPNotFound(headers=TUS)
        return upload_id, uploads[upload_id]

    async def head(request: web.Request) -> web.Response:
        _id, upload = _found(request)
        headers = {
            **TUS,
            "Upload-Offset": str(len(upload.data)),
            "Upload-Length": str(upload.length),
            "Cache-Control": "no-store",
        }
        if upload.receipt is not None:
            headers[receipt.HEADER] = upload.receipt
        return web.Response(status=200, headers=headers)

    async def patch(request: web.Request) -> web.Response:
        upload_id, upload = _found(request)
        if request.headers.get("Upload-Offset") != str(len(upload.data)):
            return web.Response(status=409, headers=TUS)
        if upload.receipt is not None:
            return web.Response(status=409, headers=TUS)
        body = await request.read()
        if len(upload.data) + len(body) > upload.length:
            return web.Response(status=400, headers=TUS)
        upload.data += body
        if len(upload.data) == upload.length:
            _finish(upload_id, upload, lie, key)
        return web.Response(status=204, headers={**TUS, "Upload-Offset": str(len(upload.data))})

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_route("OPTIONS", "/files/", options)
    app.router.add_post("/files/", create)
    app.router.add_route("HEAD", "/files/{upload}", head)
    app.router.add_patch("/files/{upload}", patch)
    return app


async def start_lying_server(signing_key: Path, lie: Lie) -> LyingServer:
    """Serve on a free loopback port, signing with the key in `signing_key` (a PEM file)."""
    uploads: dict[str, _Upload] = {}
    runner = web.AppRunner(_app(lie, load_signing_key(signing_key), uploads))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return LyingServer(f"http://127.0.0.1:{port}/files/", lie, runner, uploads)
