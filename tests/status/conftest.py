"""A real dock daemon in this process with its control socket and metrics endpoint, a real
reference receiver, and `dockctl` run as a real process against them."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from dockd.app import Daemon
from dockd.crypto.keys import keygen, load_signing_key
from dockd.receiver.app import ReceiverSettings, RunningReceiver, start
from support.dock import dock_config, settings_from


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Keys:
    dir: Path

    @property
    def recipient(self) -> str:
        return (self.dir / "recipient.txt").read_text().strip()

    @property
    def public_key(self) -> Path:
        return self.dir / "server-receipt.pub"

    @property
    def identity(self) -> Path:
        return self.dir / "identity.txt"


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    keygen(tmp_path / "keys")
    return Keys(tmp_path / "keys")


class Receiver:
    """The reference receiver on a fixed port, so it can be down first and come up later."""

    def __init__(self, tmp_path: Path, keys: Keys, **settings: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/files/"
        self.settings = ReceiverSettings(
            store=tmp_path / "store",
            signing_key=load_signing_key(keys.dir / "server-receipt.key"),
            **settings,
        )
        self.running: RunningReceiver | None = None

    async def start(self) -> None:
        self.running = await start(self.settings, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.running is not None:
            await self.running.stop()
            self.running = None


class Dock:
    """A `Daemon` run in this loop with `[status] socket` and `metrics` configured."""

    def __init__(self, tmp_path: Path, server_url: str, keys: Keys, **overrides: Any) -> None:
        self.tmp = tmp_path
        self.bays = tmp_path / "bays"
        self.bays.mkdir(exist_ok=True)
        self.state_dir = tmp_path / "state"
        self.metrics_port = free_port()
        status = overrides.pop("status", {})
        self.socket = Path(status.get("socket", tmp_path / "run" / "control.sock"))
        server_extra = overrides.pop("server", {})
        data = dock_config(
            tmp_path, server_url, keys.recipient, public_key=keys.public_key, **overrides
        )
        data["server"].update(server_extra)
        data["status"] = {
            "socket": str(self.socket),
            "metrics": f"127.0.0.1:{self.metrics_port}",
            **status,
        }
        self.settings = settings_from(tmp_path, data)
        self.config_path = tmp_path / "dockd.toml"
        self.daemon = Daemon(self.settings)
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    async def start(self) -> Dock:
        self.task = asyncio.create_task(self.daemon.run(self.stop_event))
        await asyncio.wait_for(self.daemon.ready.wait(), 10)
        return self

    async def close(self) -> None:
        self.stop_event.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 15)

    async def scrape(self) -> str:
        async with aiohttp.ClientSession() as session, session.get(self.metrics_url) as r:
            assert r.status == 200
            return await r.text()

    async def dockctl(
        self, *args: str, user: int | None = None, env: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        """Run the real `dockctl` in a subprocess (it must not block this loop, which serves it)."""
        return await run_dockctl("--config", str(self.config_path), *args, user=user, env=env)

    async def get(self, path: str) -> Any:
        """The control API from this loop (for polling; assertions use the real dockctl)."""
        connector = aiohttp.UnixConnector(path=str(self.socket))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"http://dockd{path}") as r,
        ):
            assert r.status == 200, await r.text()
            return await r.json()


async def run_dockctl(
    *args: str, user: int | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """`env`: extra environment (e.g. SUDO_USER / SUDO_UID, as sudo sets them)."""
    env = {**os.environ, "COLUMNS": "160", "TERM": "dumb", **(env or {})}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dockd.dockctl.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        user=user,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.fixture
async def receiver(tmp_path: Path, keys: Keys) -> AsyncIterator[Receiver]:
    rx = Receiver(tmp_path, keys)
    await rx.start()
    yield rx
    await rx.stop()
