"""The reference ingest server: settings, the aiohttp application, and running it on a socket.

`create_app` wires the tus endpoints (`handlers.py`) to the upload coordinator (`uploads.py`) and
a store (`storage/`: any `UploadStore`; `settings.store` is either one or a `--store` spec);
`start` serves it and returns a `RunningReceiver`. The application
recovers the store when it starts, sweeps expired uploads in the background, and on shutdown cuts
off bodies still being read so every request ends with what it durably stored.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dockd.crypto import receipt
from dockd.receiver.auth import BearerAuth, certificate_identity
from dockd.receiver.connections import ConnectionGuard, ConnectionLimits
from dockd.receiver.handlers import DOCK_KEY, TusHandlers, effective_method
from dockd.receiver.protocol import TUS_VERSION, ProtocolError
from dockd.receiver.quota import Quotas
from dockd.receiver.readiness import READY_PATH, Readiness
from dockd.receiver.refusals import storage_refusal
from dockd.receiver.storage import open_store
from dockd.receiver.storage.api import StoreError, UploadStore
from dockd.receiver.threads import run_blocking
from dockd.receiver.uploads import UploadCoordinator

log = structlog.get_logger("dockd.receiver")


@dataclass(frozen=True)
class ReceiverSettings:
    """Everything the receiver needs; `dockd serve` builds it from its command line."""

    # A store object, or what `--store` names: `file:DIR` or a directory path (file store).
    store: UploadStore | Path | str
    signing_key: Ed25519PrivateKey
    base_path: str = "/files/"
    max_size: int = 1 << 40  # Tus-Max-Size
    expire_after: float = 7 * 86400  # seconds of inactivity before an unfinished upload expires
    max_metadata_bytes: int = 4096
    idle_timeout: float = 60.0  # a PATCH body that stalls this long is cut off
    tokens: Mapping[str, str] | None = None  # bearer token -> dock id; None = no token auth
    tombstone_ttl: float = 30 * 86400  # how long an expired upload answers 410 rather than 404
    sweep_interval: float | None = None  # None: a quarter of expire_after, at most 5 minutes
    # The client certificate's subject CN names the dock (`--client-ca`); tokens win if both.
    client_cert_identity: bool = False
    quotas: Quotas = field(default_factory=Quotas)  # per-dock limits (quota.py)
    header_timeout: float = 10.0  # a request head must arrive completely within this
    keepalive_timeout: float = 15.0  # an idle kept-alive connection is closed after this
    max_connections: int = 1000  # concurrent connections, all clients together
    max_connections_per_address: int = 64  # concurrent connections from one client address
    # scheme://host[:port] that docks use, for Location behind a proxy; None: the request's own
    public_origin: str | None = None

    def __post_init__(self) -> None:
        if not (self.base_path.startswith("/") and self.base_path.endswith("/")):
            raise ValueError(f"base path must start and end with '/': {self.base_path!r}")
        for name in (
            "max_size",
            "expire_after",
            "max_metadata_bytes",
            "idle_timeout",
            "header_timeout",
            "keepalive_timeout",
            "max_connections",
            "max_connections_per_address",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.public_origin is not None and not re.fullmatch(
            r"https?://[^/?#\s]+", self.public_origin
        ):
            raise ValueError(f"public origin must be scheme://host[:port]: {self.public_origin!r}")
        if self.quotas.max_uploads_per_dock <= 0 or self.quotas.max_reserved_per_dock <= 0:
            raise ValueError("per-dock quotas must be positive")

    @property
    def authenticated(self) -> bool:
        """Requests carry an identity: uploads belong to it and other docks cannot see them."""
        return self.tokens is not None or self.client_cert_identity

    @property
    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(
            header_timeout=self.header_timeout,
            max_connections=self.max_connections,
            max_per_address=self.max_connections_per_address,
        )

    @property
    def effective_sweep_interval(self) -> float:
        if self.sweep_interval is not None:
            return self.sweep_interval
        return min(max(self.expire_after / 4, 0.05), 300.0)


# Pending connections the kernel queues; asyncio also accepts up to this many per loop pass.
LISTEN_BACKLOG = 128

SETTINGS_KEY = web.AppKey("settings", ReceiverSettings)
COORDINATOR_KEY = web.AppKey("coordinator", UploadCoordinator)
# Set by `start`: the connection guard the middleware tells when a request has been answered.
GUARD_KEY = web.AppKey("connection_guard", ConnectionGuard)


def create_app(settings: ReceiverSettings) -> web.Application:
    """The receiver as an aiohttp application (serve it with `start`, or aiohttp's test server)."""
    auth = BearerAuth(settings.tokens) if settings.tokens is not None else None
    app = web.Application(
        middlewares=[_tus_middleware(auth, client_certs=settings.client_cert_identity)]
    )
    store = settings.store
    coordinator = UploadCoordinator(
        store if isinstance(store, UploadStore) else open_store(store),
        settings.signing_key,
        expire_after=settings.expire_after,
        idle_timeout=settings.idle_timeout,
        quotas=settings.quotas,
    )
    app[SETTINGS_KEY] = settings
    app[COORDINATOR_KEY] = coordinator
    handlers = TusHandlers(
        coordinator,
        base_path=settings.base_path,
        public_origin=settings.public_origin,
        max_size=settings.max_size,
        max_metadata_bytes=settings.max_metadata_bytes,
        owners_enforced=settings.authenticated,
    )
    base = settings.base_path
    # An exact path: aiohttp matches it before the {upload_id} route, even with base path "/".
    app.router.add_get(
        READY_PATH, Readiness(coordinator.store, lambda: coordinator.stopping).handle
    )
    app.router.add_route("*", base, handlers.creation_endpoint)
    if base != "/":
        app.router.add_route("*", base.rstrip("/"), handlers.creation_endpoint)
    app.router.add_route("*", base + "{upload_id}", handlers.upload_endpoint)
    app.on_response_prepare.append(_add_tus_resumable)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_cut_off_bodies)
    return app


async def _add_tus_resumable(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Tus-Resumable"] = TUS_VERSION


def _error_response(error: ProtocolError) -> web.Response:
    response = web.Response(
        status=error.status,
        reason="Checksum Mismatch" if error.status == 460 else None,
        text=error.message + "\n",
        headers=error.headers,
    )
    if error.close_connection:
        response.force_close()
    return response


def _tus_middleware(auth: BearerAuth | None, *, client_certs: bool) -> Middleware:
    """Authentication, the Tus-Resumable precondition, error responses and the access log."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        method = effective_method(request)
        dock: str | None = None
        try:
            # OPTIONS (capability discovery) and the load balancer's /ready are exempt from both.
            if method != "OPTIONS" and request.path != READY_PATH:
                if client_certs:  # the TLS handshake already required a certificate of our CA
                    dock = certificate_identity(request.transport)
                    if dock is None and auth is None:
                        raise ProtocolError(
                            403, "the client certificate's subject commonName names no dock"
                        )
                if auth is not None:
                    dock = auth.dock_for(request.headers.get("Authorization"))
                    if dock is None:
                        log.warning(
                            "auth.rejected",
                            peer=request.remote,
                            path=request.path,
                            presented="Authorization" in request.headers,
                        )
                        raise ProtocolError(
                            401,
                            "missing or unknown bearer token",
                            {"WWW-Authenticate": 'Bearer realm="dockd"'},
                        )
                if request.headers.get("Tus-Resumable") != TUS_VERSION:
                    raise ProtocolError(
                        412, f"this server speaks tus {TUS_VERSION}", {"Tus-Version": TUS_VERSION}
                    )
            request[DOCK_KEY] = dock
            response = await handler(request)
        except ProtocolError as exc:
            response = _error_response(exc)
        except StoreError as exc:  # a lookup or termination the store could not do
            response = _error_response(storage_refusal(exc, what="the request was not done"))
        except web.HTTPException as exc:  # aiohttp's own 404/405 for paths outside ours
            response = web.Response(status=exc.status, reason=exc.reason, text=exc.text)
        except Exception:
            log.exception("request.failed", method=method, path=request.path)
            response = web.Response(status=500, text="internal error\n")
        log.info(
            "request",
            method=method,
            path=request.path,
            status=response.status,
            dock=dock,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        guard = request.app.get(GUARD_KEY)
        if guard is not None:  # the next request head on this connection gets a new deadline
            guard.request_done(request.transport)
        return response

    return middleware


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    settings, coordinator = app[SETTINGS_KEY], app[COORDINATOR_KEY]
    partials = await run_blocking(coordinator.store.recover)
    uploads = coordinator.load(partials)
    # Uploads whose bytes all arrived but whose receipt was never written (crash in between).
    finishing = [
        asyncio.create_task(coordinator.finish_pending_completion(upload))
        for upload in uploads
        if upload.offset == upload.length
    ]
    sweeper = asyncio.create_task(_sweep_forever(coordinator, settings))
    log.info(
        "receiver.ready",
        store=coordinator.store.describe(),
        unfinished=len(uploads),
        receipt_key_id=receipt.key_id(settings.signing_key.public_key()),
        auth=_auth_description(settings),
        max_uploads_per_dock=settings.quotas.max_uploads_per_dock,
        max_reserved_per_dock=settings.quotas.max_reserved_per_dock,
        header_timeout=settings.header_timeout,
        max_connections=settings.max_connections,
        max_connections_per_address=settings.max_connections_per_address,
    )
    yield
    sweeper.cancel()
    await asyncio.gather(sweeper, *finishing, return_exceptions=True)


def _auth_description(settings: ReceiverSettings) -> str:
    methods = [
        name
        for name, on in (
            ("tokens", settings.tokens is not None),
            ("client-certificates", settings.client_cert_identity),
        )
        if on
    ]
    return "+".join(methods) or "anonymous"


async def _sweep_forever(coordinator: UploadCoordinator, settings: ReceiverSettings) -> None:
    while True:
        await asyncio.sleep(settings.effective_sweep_interval)
        try:
            await coordinator.sweep(tombstone_ttl=settings.tombstone_ttl)
        except Exception:
            log.exception("sweep.failed")


async def _cut_off_bodies(app: web.Application) -> None:
    coordinator = app[COORDINATOR_KEY]
    coordinator.stopping = True
    coordinator.cut_all("shutdown")


@dataclass
class RunningReceiver:
    """A receiver serving on a socket; `url` is the creation endpoint (POST here)."""

    url: str
    port: int
    app: web.Application
    guard: ConnectionGuard
    _runner: web.AppRunner
    _server: asyncio.Server
    _stopped: bool = False

    @property
    def settings(self) -> ReceiverSettings:
        return self.app[SETTINGS_KEY]

    @property
    def coordinator(self) -> UploadCoordinator:
        return self.app[COORDINATOR_KEY]

    @property
    def store(self) -> UploadStore:
        return self.coordinator.store

    async def stop(self) -> None:
        """Stop listening, end requests in flight with what they stored (idempotent)."""
        if not self._stopped:
            self._stopped = True
            self._server.close()
            await self._runner.cleanup()


def _listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)


async def start(
    settings: ReceiverSettings,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
) -> RunningReceiver:
    """Recover the store and serve on host:port (port 0 picks a free one).

    Connections go through a `ConnectionGuard` (request-head deadline, connection caps) in front
    of aiohttp's protocol; aiohttp closes kept-alive connections idle for `keepalive_timeout`.
    """
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=settings.keepalive_timeout,
    )
    # TLS is the guard's to do, after it has counted the socket (see receiver/connections.py).
    guard = ConnectionGuard(settings.connection_limits, ssl_context)
    app[GUARD_KEY] = guard  # before setup: a started application is frozen
    await runner.setup()
    try:
        guard.inner = runner.server
        sock = _listen_socket(host, port)
        server = await asyncio.get_running_loop().create_server(
            guard, sock=sock, backlog=LISTEN_BACKLOG
        )
    except BaseException:
        await runner.cleanup()
        raise
    actual_port = sock.getsockname()[1]
    scheme = "https" if ssl_context is not None else "http"
    url_host = f"[{host}]" if ":" in host else (host or "0.0.0.0")
    url = f"{scheme}://{url_host}:{actual_port}{settings.base_path}"
    return RunningReceiver(url, actual_port, app, guard, runner, server)
