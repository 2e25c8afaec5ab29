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
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dockd import pipeline
from dockd.config import Settings
from dockd.crypto.keys import check_private_file, load_signing_key, load_verify_key
from dockd.custody.attest import Attestation
from dockd.custody.events import AuditedEvents, audit_startup
from dockd.devices.folder import FolderSource
from dockd.devices.source import CameraSource
from dockd.devices.udev import UdevSource
from dockd.devices.writers import ignore_lease_breaks
from dockd.journal import Journal, State
from dockd.metrics import DockMetrics, ServerTracker, trace_config
from dockd.offloader import Offloader
from dockd.progress import ProgressBoard
from dockd.sdnotify import Notifier, keep_alive
from dockd.transport import tus
from dockd.transport.bandwidth import Bandwidth, format_rate
from dockd.transport.buffers import (
    MemoryBudget,
    return_freed_blocks_to_the_os,
    stream_reservation,
)
from dockd.transport.uploader import Uploader

log = structlog.get_logger()


class StartupError(RuntimeError):
    """A key, token or TLS file named by the configuration cannot be used (exit 78)."""


@dataclass(frozen=True)
class Credentials:
    server_key: Ed25519PublicKey | None
    headers: dict[str, str]
    ssl_context: ssl.SSLContext | None
    dock_key: Ed25519PrivateKey | None = None  # signs per-clip manifests ([dock] signing_key)


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
        signing = settings.dock.signing_key
        dock_key = load_signing_key(signing) if signing is not None else None
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise StartupError(str(exc)) from None
    return Credentials(key, headers, context, dock_key)


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        sources: Sequence[CameraSource] | None = None,
        uploader: Uploader | None = None,
    ) -> None:
        """`uploader` replaces the tus client built from [server] (tests use an in-memory one)."""
        self.settings = settings
        self._uploader = uploader
        self.credentials = load_credentials(settings)
        self._sources = list(sources) if sources is not None else self._default_sources()
        self.progress = ProgressBoard()
        self.metrics = DockMetrics()  # a registry per daemon: tests run several in one process
        self.server = ServerTracker()
        self.offloader: Offloader | None = None
        self.ready = asyncio.Event()
        self.notifier = Notifier()  # systemd Type=notify; a no-op outside systemd
        # One upload cap for the whole dock, shared by every upload (transport/bandwidth.py).
        self.bandwidth = Bandwidth(settings.bandwidth.limit, settings.bandwidth.timetable)

    def reload(self) -> None:
        """SIGHUP: re-read the config file and apply what can change at run time (the bandwidth
        limit and timetable), without touching uploads in flight. A bad file changes nothing."""
        from dockd.config import ConfigError, load

        try:
            fresh = load(self.settings.source)
        except ConfigError as exc:
            log.error("config.reload_refused", reason=str(exc))
            return
        self.bandwidth.reconfigure(fresh.bandwidth.limit, fresh.bandwidth.timetable)
        log.info(
            "config.reloaded",
            applied="bandwidth",
            rate=format_rate(self.bandwidth.bucket.rate),
            note="other settings take effect at the next restart",
        )

    def _default_sources(self) -> list[CameraSource]:
        sources: list[CameraSource] = []
        if self.settings.bay_folder is not None:
            self.settings.bay_folder.mkdir(parents=True, exist_ok=True)
            sources.append(FolderSource(self.settings.bay_folder))
        if self.settings.udev.enabled:
            sources.append(
                UdevSource(
                    self.settings.udev, self.settings.camera_models, safe_to_remove=self._safe
                )
            )
        return sources

    def _safe(self, serial: str) -> bool:
        """Every clip of this camera WIPED or HELD (KeyError: not docked in the offloader)."""
        if self.offloader is None:
            return False
        return self.offloader.status(serial).safe_to_remove

    def summary(self) -> str:
        """One line for systemd's STATUS= (systemctl status)."""
        if self.offloader is None:
            return "starting"
        views = [self.offloader.status(serial) for serial in list(self.offloader.views)]
        safe = sum(1 for v in views if v.safe_to_remove)
        released = sum(
            len(s.docks.released()) for s in self._sources if isinstance(s, UdevSource) and s.docks
        )
        busy = sum(v.clips.get("UPLOADING", 0) for v in views)
        return (
            f"{len(views)} camera(s) docked, {busy} clip(s) uploading, "
            f"{safe + released} safe to remove"
        )

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        structlog.contextvars.bind_contextvars(dock=settings.dock.id)
        journal = Journal.open(settings.dock.state_dir)
        audit_startup(journal, settings, self.credentials.server_key, self.credentials.dock_key)
        # A new confirmation policy or receipt key applies now, not after a stored recheck time.
        journal.ask_again((State.UPLOADED, State.CONFIRMED))
        ignore_lease_breaks()
        return_freed_blocks_to_the_os()  # else freed chunk buffers stay resident (buffers.py)
        connector = aiohttp.TCPConnector(
            ssl=self.credentials.ssl_context if self.credentials.ssl_context else True,
            limit=settings.upload.max_parallel * 2,
        )
        tasks: list[asyncio.Task[None]] = []
        runners: list[web.AppRunner] = []
        try:
            async with aiohttp.ClientSession(
                connector=connector, trace_configs=[trace_config(self.server, self.metrics)]
            ) as session:
                client = self._uploader or self._tus_client(session)
                tasks.append(
                    asyncio.create_task(self.bandwidth.follow_timetable(), name="bandwidth")
                )
                ctx = pipeline.PipelineContext(
                    settings,
                    journal,
                    client,
                    self.credentials.server_key,
                    self.progress,
                    dock_key=self.credentials.dock_key,
                    metrics=self.metrics,
                    attestation=Attestation(settings, journal, client, self.credentials.dock_key),
                )
                self.offloader = Offloader(ctx)
                runners += await self._start_status(self.offloader, journal)
                tasks.append(asyncio.create_task(self.offloader.run(), name="offloader"))
                for source in self._sources:
                    events = AuditedEvents(self.offloader, journal)
                    tasks.append(asyncio.create_task(source.run(events), name="source"))
                log.info(
                    "dockd.started",
                    server=settings.server.url,
                    confirm=settings.server.confirm,
                    sources=len(self._sources),
                )
                self.ready.set()
                self.notifier.ready(self.summary())
                tasks.append(
                    asyncio.create_task(keep_alive(self.notifier, self.summary), name="sd-notify")
                )
                await _until(stop, tasks)
        finally:
            self.notifier.stopping()
            for runner in runners:
                with contextlib.suppress(Exception):
                    await runner.cleanup()
            for task in reversed(tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(Exception):  # the stop is recorded, but never blocks it
                journal.audit("daemon.stopped", settings.dock.id)
            journal.close()
            log.info("dockd.stopped")

    def _tus_client(self, session: aiohttp.ClientSession) -> tus.TusClient:
        """The production uploader: tus to [server] url, paced by the dock's bandwidth limit."""
        upload = self.settings.upload
        retry = tus.RetryPolicy(
            attempts=upload.retry_attempts,
            initial=upload.retry_initial,
            maximum=upload.retry_max,
            request_timeout=upload.request_timeout,
        )
        return tus.TusClient(
            session,
            self.settings.server.url,
            headers=self.credentials.headers,
            retry=retry,
            throttle=self.bandwidth.bucket.acquire,
            memory=MemoryBudget(upload.memory_budget, stream_reservation(upload.chunk_size)),
        )

    async def _start_status(self, offloader: Offloader, journal: Journal) -> list[web.AppRunner]:
        """The control socket and the metrics endpoint, when [status] configures them."""
        from dockd import metrics
        from dockd.control import api, views

        status = self.settings.status
        self.metrics.last_confirmation.set(journal.last_confirmed_at() or 0)
        self.metrics.refreshers.append(lambda m: views.refresh_gauges(offloader, m))
        self.metrics.refreshers.append(
            lambda m: m.state_free_bytes.set(offloader.ctx.health.free_bytes() or 0)
        )
        runners = []
        if status.socket is not None:
            control = api.ControlContext(
                offloader,
                self.progress,
                self.metrics,
                self.server,
                self.settings.dock.id,
                self.settings.server.url,
                bandwidth=self.bandwidth,
            )
            try:
                runners.append(await api.serve_control(control, status.socket))
            except OSError as exc:
                raise StartupError(
                    f"[status] socket {status.socket}: cannot listen: {exc}"
                ) from None
        if status.metrics is not None:
            try:
                runners.append(await metrics.serve_metrics(self.metrics, status.metrics))
            except OSError as exc:
                for runner in runners:
                    await runner.cleanup()
                raise StartupError(
                    f"[status] metrics {status.metrics}: cannot listen: {exc}"
                ) from None
            log.info("metrics.listening", address=status.metrics)
        return runners


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
