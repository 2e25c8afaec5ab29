"""`GET /ready`: may a load balancer send this node requests now?

200 when the store answers within `bound` (3 s: above the PostgreSQL pool's 2 s connect and
acquire bounds, so their own error is the reason) and the server is not shutting down; 503
with a short reason otherwise. HAProxy checks it (`option httpchk GET /ready`, see
config/haproxy.cfg.example) and stops routing to a node whose store or PostgreSQL is gone, and to
a node that is draining for shutdown. Liveness is not readiness: the process may be fine while
its backend is not.

It is unauthenticated (a health checker has no dock token) and says nothing a stranger could
use: the reason is one of a few fixed phrases, the backend's error goes to the log.

A store says whether its backend answers by offering `ready()` (`ReadinessProbe`, optional); the
S3 store checks RGW and, in multi-node mode, PostgreSQL (`PgStateBackend.ready`). A store
without it is asked `free_bytes()`, which touches its file system (the file store: statvfs).
Concurrent checks share one probe, so a slow backend never piles up worker threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import structlog
from aiohttp import web

from dockd.receiver.storage.api import StoreError, StoreUnavailable, UploadStore

log = structlog.get_logger("dockd.receiver")

READY_PATH = "/ready"


@runtime_checkable
class ReadinessProbe(Protocol):
    def ready(self) -> None:
        """Return if the backend answers now; raise StoreUnavailable (or StoreError) if not.
        Blocking, bounded by the backend's own timeouts (called on a worker thread)."""
        ...


class Readiness:
    """The /ready handler for one store."""

    def __init__(
        self, store: UploadStore, stopping: Callable[[], bool], *, bound: float = 3.0
    ) -> None:
        self._probe: Callable[[], object] = (
            store.ready if isinstance(store, ReadinessProbe) else store.free_bytes
        )
        self._stopping = stopping
        self._bound = bound
        self._running: asyncio.Future[object] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        reason = await self.check()
        if reason is None:
            return web.Response(status=200, text="ready\n")
        return web.Response(status=503, text=f"not ready: {reason}\n")

    async def check(self) -> str | None:
        """None when ready, else a short reason fit for an unauthenticated answer."""
        if self._stopping():
            return "shutting down"
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(asyncio.to_thread(self._probe))
        try:
            await asyncio.wait_for(asyncio.shield(self._running), self._bound)
        except TimeoutError:
            log.warning("ready.timeout", bound=self._bound)
            return "store did not answer in time"
        except StoreUnavailable as exc:
            log.warning("ready.unavailable", error=str(exc))
            return "store unavailable"
        except StoreError as exc:
            log.warning("ready.store_error", error=str(exc))
            return "store error"
        except Exception:
            log.exception("ready.probe_failed")
            return "probe failed"
        return None
