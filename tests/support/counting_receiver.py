"""The real reference receiver, in-process, wrapped by a middleware that counts (and can slow or
refuse) requests: how dock tests measure re-sent bytes and simulate a slow link or an outage."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from dockd.crypto.keys import KeygenResult, load_signing_key
from dockd.receiver.app import ReceiverSettings, create_app

TUS_HEADERS = {"Tus-Resumable": "1.0.0"}


@dataclass
class CountingReceiver:
    """The real reference receiver, wrapped by a middleware that counts and can slow PATCHes."""

    url: str
    store: Path
    runner: web.AppRunner
    patch_bytes: Counter[str] = field(default_factory=Counter)  # upload id -> Content-Length sum
    patches: int = 0
    patch_log: list[tuple[str, int, int]] = field(default_factory=list)  # (upload, offset, length)
    patch_delay: float = 0.0
    unavailable: bool = False
    # False: OPTIONS no longer offers tus concatenation and a creation asking for it gets 400,
    # as from `dockd serve` on a store without it (a server of before it: two passes).
    concatenation: bool = True

    async def stop(self) -> None:
        await self.runner.cleanup()


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
        concat = request.method == "POST" and "Upload-Concat" in request.headers
        if concat and not receiver.concatenation:
            return web.Response(
                status=400, text="concatenation is not supported", headers=TUS_HEADERS
            )
        if request.method == "PATCH":
            receiver.patches += 1
            upload = request.path.rstrip("/").rsplit("/", 1)[-1]
            receiver.patch_bytes[upload] += request.content_length or 0
            offset = int(request.headers.get("Upload-Offset", "-1"))
            receiver.patch_log.append((upload, offset, request.content_length or 0))
            if receiver.patch_delay:
                await asyncio.sleep(receiver.patch_delay)
        response = await handler(request)
        extensions = response.headers.get("Tus-Extension")
        if extensions and not receiver.concatenation:
            offered = [e for e in extensions.split(",") if e != "concatenation"]
            response.headers["Tus-Extension"] = ",".join(offered)
        return response

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
