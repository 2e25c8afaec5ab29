"""Fixtures for end-to-end dock tests: keys, a real receiver (in-process) that counts PATCH bytes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from dockd.crypto.keys import KeygenResult, keygen, load_signing_key
from dockd.receiver.app import ReceiverSettings, create_app


@dataclass
class CountingReceiver:
    """The real reference receiver, wrapped by a middleware that counts and can slow PATCHes."""

    url: str
    store: Path
    runner: web.AppRunner
    patch_bytes: Counter[str] = field(default_factory=Counter)  # upload id -> Content-Length sum
    patches: int = 0
    patch_delay: float = 0.0
    unavailable: bool = False

    async def stop(self) -> None:
        await self.runner.cleanup()


@pytest.fixture
def keys(tmp_path: Path) -> KeygenResult:
    return keygen(tmp_path / "keys")


@pytest.fixture
def recipient(keys: KeygenResult) -> str:
    return keys.age_recipient.read_text().strip()


async def start_counting_receiver(
    store: Path, keys: KeygenResult, port: int = 0
) -> CountingReceiver:
    settings = ReceiverSettings(store=store, signing_key=load_signing_key(keys.server_signing_key))
    app = create_app(settings)
    holder: dict[str, CountingReceiver] = {}

    @web.middleware
    async def counting(request: web.Request, handler):  # type: ignore[no-untyped-def]
        receiver = holder["r"]
        if receiver.unavailable:
            return web.Response(status=503, headers={"Retry-After": "0", "Tus-Resumable": "1.0.0"})
        if request.method == "PATCH":
            receiver.patches += 1
            receiver.patch_bytes[request.path.rstrip("/").rsplit("/", 1)[-1]] += (
                request.content_length or 0
            )
            if receiver.patch_delay:
                await asyncio.sleep(receiver.patch_delay)
        return await handler(request)

    app.middlewares.insert(0, counting)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    holder["r"] = CountingReceiver(
        url=f"http://127.0.0.1:{bound}/files/", store=store, runner=runner
    )
    return holder["r"]


@pytest.fixture
async def receiver(tmp_path: Path, keys: KeygenResult) -> AsyncIterator[CountingReceiver]:
    running = await start_counting_receiver(tmp_path / "store", keys)
    yield running
    await running.stop()
