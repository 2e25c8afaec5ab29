"""Wiring and lifecycle of the dock daemon: settings → journal, HTTP session, sources, offloader.

`Daemon.run()` returns when `stop` is set (SIGTERM/SIGINT under `dockd run`): sources stop first,
then in-flight clips are cancelled (always safe: the server keeps every acknowledged byte and the
journal every fact), then the journal is closed. Well within systemd's 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dockd import pipeline
from dockd.config import Settings
from dockd.crypto.keys import check_private_file, load_verify_key
from dockd.devices.folder import FolderSource
from dockd.devices.source import CameraSource
from dockd.journal import Journal
from dockd.offloader import Offloader
from dockd.progress import ProgressBoard
from dockd.transport import tus

log = structlog.get_logger()


class StartupError(RuntimeError):
    """A key, token or TLS file named by the configuration cannot be used (exit 78)."""


@dataclass(frozen=True)
class Credentials:
    server_key: Ed25519PublicKey | None
    headers: dict[str, str]
    ssl_context: ssl.SSLContext | None


def load_credentials(settings: Settings) -> Credentials:
    """Read the server's receipt key, the bearer token and the TLS material the config names."""
    server = settings.server
    try:
        key = load_verify_key(server.receipt_public_key) if server.receipt_public_key else None
        headers: dict[str, str] = {}
        if server.token_file is not None:
            check_private_file(server.token_file)
            token = server.token_file.read_text(encoding="utf-8").strip()
            if not token or any(c.isspace() for c in token):
                raise StartupError(f"{server.token_file}: expected one token on one line")
            headers["Authorization"] = f"Bearer {token}"
        context: ssl.SSLContext | None = None
        if server.url.startswith("https:"):
            context = ssl.create_default_context(
                cafile=str(server.ca_file) if server.ca_file else None
            )
            if server.client_cert and server.client_key:
                check_private_file(server.client_key)
                context.load_cert_chain(server.client_cert, server.client_key)
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise StartupError(str(exc)) from None
    return Credentials(key, headers, context)


class Daemon:
    def __init__(
        self, settings: Settings, *, sources: Sequence[CameraSource] | None = None
    ) -> None:
        self.settings = settings
        self.credentials = load_credentials(settings)
        self._sources = list(sources) if sources is not None else self._default_sources()
        self.progress = ProgressBoard()
        self.offloader: Offloader | None = None
        self.ready = asyncio.Event()

    def _default_sources(self) -> list[CameraSource]:
        sources: list[CameraSource] = []
        if self.settings.bay_folder is not None:
            self.settings.bay_folder.mkdir(parents=True, exist_ok=True)
            sources.append(FolderSource(self.settings.bay_folder))
        return sources

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        structlog.contextvars.bind_contextvars(dock=settings.dock.id)
        journal = Journal.open(settings.dock.state_dir)
        retry = tus.RetryPolicy(
            attempts=settings.upload.retry_attempts,
            initial=settings.upload.retry_initial,
            maximum=settings.upload.retry_max,
            request_timeout=settings.upload.request_timeout,
        )
        connector = aiohttp.TCPConnector(
            ssl=self.credentials.ssl_context if self.credentials.ssl_context else True,
            limit=settings.upload.max_parallel * 2,
        )
        tasks: list[asyncio.Task[None]] = []
        try:
            async with aiohttp.ClientSession(connector=connector) as session:
                client = tus.TusClient(
                    session, settings.server.url, headers=self.credentials.headers, retry=retry
                )
                ctx = pipeline.PipelineContext(
                    settings, journal, client, self.credentials.server_key, self.progress
                )
                self.offloader = Offloader(ctx)
                tasks.append(asyncio.create_task(self.offloader.run(), name="offloader"))
                for source in self._sources:
                    tasks.append(asyncio.create_task(source.run(self.offloader), name="source"))
                log.info(
                    "dockd.started",
                    server=settings.server.url,
                    confirm=settings.server.confirm,
                    sources=len(self._sources),
                )
                self.ready.set()
                await _until(stop, tasks)
        finally:
            for task in reversed(tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            journal.close()
            log.info("dockd.stopped")


async def _until(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    """Wait for `stop`; a task that dies on its own is a bug worth stopping for."""
    waiter = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    for task in done:
        if task is not waiter and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
