"""An in-process `Daemon` for pipeline tests, on the real receiver or the fake uploader."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dockd.app import Daemon
from dockd.offloader import CameraStatus

from support.dock import dock_config, settings_from
from support.fake_uploader import FakeUploader


class RunningDaemon:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(daemon.run(self.stop))

    def status(self, serial: str = "CAM-1") -> CameraStatus:
        assert self.daemon.offloader is not None
        return self.daemon.offloader.status(serial)

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 15)


async def start_daemon(
    tmp_path: Path, server: Any, keys: Any, recipient: str, **overrides: Any
) -> RunningDaemon:
    """A dock on `tmp_path/bays` uploading to `server`: a FakeUploader, or a receiver's URL."""
    data = dock_config(
        tmp_path, server.url, recipient, public_key=keys.server_public_key, **overrides
    )
    return await start_configured(tmp_path, data, server)


async def start_configured(tmp_path: Path, data: dict[str, Any], server: Any) -> RunningDaemon:
    """As `start_daemon`, with a config the test has changed."""
    (tmp_path / "bays").mkdir(exist_ok=True)
    uploader = server if isinstance(server, FakeUploader) else None
    running = RunningDaemon(Daemon(settings_from(tmp_path, data), uploader=uploader))
    await asyncio.wait_for(running.daemon.ready.wait(), 10)
    return running
