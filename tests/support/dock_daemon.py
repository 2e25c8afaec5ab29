"""`dockd.app.Daemon` in the test's own event loop, against any tus server, with a bay folder.

    async with running_daemon(tmp_path, server.url, keys) as daemon:
        ...  daemon.offloader.status("CAM-1") ...

The config is `support.dock.dock_config` (bays in `tmp_path/bays`, journal in `tmp_path/state`);
keyword arguments override its `[upload]` keys and `confirm`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from dockd.app import Daemon
from dockd.crypto.keys import KeygenResult

from support.dock import dock_config, settings_from


@asynccontextmanager
async def running_daemon(
    workdir: Path,
    server_url: str,
    keys: KeygenResult,
    *,
    public_key: Path | None = None,
    **overrides: Any,
) -> AsyncIterator[Daemon]:
    """Run a daemon until the block ends; it trusts `public_key`, else the keys' own server key."""
    trusted = public_key or keys.server_public_key
    recipient = keys.age_recipient.read_text().strip()
    data = dock_config(workdir, server_url, recipient, public_key=trusted, **overrides)
    (workdir / "bays").mkdir(exist_ok=True)
    daemon = Daemon(settings_from(workdir, data))
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        yield daemon
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
