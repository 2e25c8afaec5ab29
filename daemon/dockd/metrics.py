"""Prometheus metrics of one dock daemon, and the server-reachability tracker.

Every `Daemon` owns a `DockMetrics` with its own `CollectorRegistry` (tests run several daemons
in one process; nothing goes to the global registry). The exposition is prometheus_client's own
(`generate_latest`), served by aiohttp on the daemon's event loop (`serve_metrics`) rather than by
`start_http_server`'s thread: the gauges derived from the journal (queue, clips by state) are
computed at scrape time, and the journal may only be used from the loop.

Label values are bounded classes (`reasons.py`), never free text: a reason like "ServerUnavailable:
PATCH https://... last failure: 503" becomes `server_unavailable`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

# Upload chunk round trips: a PATCH of one chunk (default 8 MiB) over a dock's uplink.
CHUNK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# A clip from discovery to wipe: seconds for small clips, hours when a camera comes back later.
CLIP_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)


class DockMetrics:
    """The dock's metrics, in a registry of its own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.read_bytes = Counter(
            "dockd_camera_read_bytes",
            "Bytes read from cameras, every read counted: the one pass, or the hashing pass and "
            "the upload pass; a resume's re-read; the wipe's re-hash. Per clip byte: 1.0 on the "
            "one-pass happy path, 2.0 with a server without tus concatenation.",
            registry=r,
        )
        self.reread_bytes = Counter(
            "dockd_camera_reread_bytes",
            "Bytes read again from cameras only to rebuild hash state when a one-pass upload "
            "resumed (also counted in dockd_camera_read_bytes).",
            registry=r,
        )
        self.uploaded_bytes = Counter(
            "dockd_uploaded_bytes",
            "Ciphertext bytes the ingest server acknowledged (Upload-Offset advanced).",
            registry=r,
        )
        self.clips_confirmed = Counter(
            "dockd_clips_confirmed",
            "Clips whose server confirmation was verified and journalled.",
            ["policy"],
            registry=r,
        )
        self.clips_wiped = Counter(
            "dockd_clips_wiped", "Clips removed from a camera after confirmation.", registry=r
        )
        self.clips_quarantined = Counter(
            "dockd_clips_quarantined",
            "Clips quarantined (kept on the camera, needs an operator), by reason class.",
            ["reason"],
            registry=r,
        )
        self.clips_failed = Counter(
            "dockd_clips_failed",
            "Clip attempts that ended FAILED (retried later) or unconfirmed, by reason class.",
            ["reason"],
            registry=r,
        )
        self.clip_retries = Counter(
            "dockd_clip_retries",
            "FAILED clips taken up again, by the cause of the failure (or operator).",
            ["cause"],
            registry=r,
        )
        self.request_failures = Counter(
            "dockd_server_request_failures",
            "Requests to the ingest server that failed transiently (each is retried), by cause.",
            ["cause"],
            registry=r,
        )
        self.operator_actions = Counter(
            "dockd_operator_actions",
            "Actions taken through the control socket.",
            ["action"],
            registry=r,
        )
        self.cameras_docked = Gauge(
            "dockd_cameras_docked", "Cameras docked now (known model or not).", registry=r
        )
        self.clips_queued = Gauge(
            "dockd_clips_queued",
            "Clips on docked cameras that still have work to do (not wiped, held or quarantined).",
            registry=r,
        )
        self.queued_bytes = Gauge(
            "dockd_queued_bytes", "Plaintext bytes of the queued clips.", registry=r
        )
        self.clips_by_state = Gauge(
            "dockd_clips",
            "Clips in the journal by state (WIPED excluded: it only grows).",
            ["state"],
            registry=r,
        )
        self.last_confirmation = Gauge(
            "dockd_last_confirmation_timestamp_seconds",
            "Unix time of the last journalled server confirmation (0: none yet).",
            registry=r,
        )
        self.server_up = Gauge(
            "dockd_server_up",
            "1 if the last request to the ingest server got an answer below 500, else 0.",
            registry=r,
        )
        self.server_last_success = Gauge(
            "dockd_server_last_success_timestamp_seconds",
            "Unix time of the last answer below 500 from the ingest server.",
            registry=r,
        )
        self.chunk_seconds = Histogram(
            "dockd_upload_chunk_duration_seconds",
            "Duration of one PATCH (one upload chunk) to the ingest server.",
            buckets=CHUNK_BUCKETS,
            registry=r,
        )
        self.clip_seconds = Histogram(
            "dockd_clip_duration_seconds",
            "A clip from discovery on the camera to its wipe.",
            buckets=CLIP_BUCKETS,
            registry=r,
        )
        self.storage_ok = Gauge(
            "dockd_state_storage_ok",
            "0 while the dock's own state directory (journal) cannot be written (disk full or "
            "failing): offloading is paused, nothing is lost. 1 otherwise.",
            registry=r,
        )
        self.storage_ok.set(1)
        self.storage_failures = Counter(
            "dockd_state_storage_failures",
            "Failed writes of the dock's own state (journal, manifests), at most one per back-off.",
            registry=r,
        )
        self.state_free_bytes = Gauge(
            "dockd_state_free_bytes",
            "Free bytes on the file system of the dock's state directory (at scrape time).",
            registry=r,
        )
        self.scan_errors = Counter(
            "dockd_camera_scan_errors",
            "Camera scans (or the recording of what they found) that failed; the camera is shown "
            "not safe to remove and scanned again.",
            ["reason"],
            registry=r,
        )
        self.rates = RateWindow()
        # clip id -> reason class of its last failure, to label the retry (in memory only)
        self.failure_causes: dict[int, str] = {}
        # Refreshers run at scrape time (on the loop) to set the derived gauges.
        self.refreshers: list[Callable[[DockMetrics], None]] = []

    def uploaded(self, camera: str, nbytes: int) -> None:
        self.uploaded_bytes.inc(nbytes)
        self.rates.add(camera, nbytes)

    def scrape(self) -> bytes:
        for refresh in self.refreshers:
            refresh(self)
        return generate_latest(self.registry)


class RateWindow:
    """Bytes per second over the last few seconds, per camera (for the status' throughput/ETA)."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def add(self, key: str, nbytes: int) -> None:
        samples = self._samples.setdefault(key, deque())
        now = time.monotonic()
        samples.append((now, nbytes))
        while samples and samples[0][0] < now - self.window:
            samples.popleft()
        if len(self._samples) > 64:  # cameras come and go for months: forget the idle ones
            for idle in [k for k, v in self._samples.items() if v[-1][0] < now - self.window]:
                del self._samples[idle]

    def rate(self, key: str) -> float:
        samples = self._samples.get(key)
        now = time.monotonic()
        if not samples or samples[-1][0] < now - self.window:
            return 0.0
        span = max(now - samples[0][0], 1.0)
        return sum(n for _t, n in samples) / span


@dataclass
class ServerTracker:
    """Reachability of the ingest server, fed by every HTTP request the daemon makes."""

    last_success: float | None = None  # unix time of the last answer below 500
    last_error: str | None = None  # class of the last failure ("HTTP 503", "connection refused")
    last_error_at: float | None = None
    up: bool | None = None  # None: no request yet

    def as_dict(self) -> dict[str, object]:
        return {
            "reachable": self.up,
            "last_success": self.last_success,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }


def trace_config(tracker: ServerTracker, metrics: DockMetrics) -> aiohttp.TraceConfig:
    """aiohttp tracing for the daemon's client session: reachability, PATCH latency, failures.

    Only the method, status and exception class are looked at: never headers (the bearer token)
    or bodies.
    """

    async def on_start(
        _session: aiohttp.ClientSession, ctx: SimpleNamespace, _params: object
    ) -> None:
        ctx.started = time.monotonic()

    async def on_end(
        _session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        status = params.response.status
        if params.method == "PATCH":
            metrics.chunk_seconds.observe(time.monotonic() - ctx.started)
        now = time.time()
        if status < 500:
            tracker.up, tracker.last_success = True, now
            metrics.server_up.set(1)
            metrics.server_last_success.set(now)
        if status >= 500 or status == 429:
            tracker.up = status < 500
            tracker.last_error, tracker.last_error_at = f"HTTP {status}", now
            metrics.server_up.set(1 if tracker.up else 0)
            metrics.request_failures.labels("server_unavailable").inc()

    async def on_exception(
        _session: aiohttp.ClientSession,
        _ctx: SimpleNamespace,
        params: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        exc = params.exception
        if isinstance(exc, asyncio.CancelledError):
            return
        cause = "timeout" if isinstance(exc, TimeoutError) else "network"
        tracker.up = False
        tracker.last_error = f"{cause}: {type(exc).__name__}"
        tracker.last_error_at = time.time()
        metrics.server_up.set(0)
        metrics.request_failures.labels(cause).inc()

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_start)  # type: ignore[arg-type]
    config.on_request_end.append(on_end)  # type: ignore[arg-type]
    config.on_request_exception.append(on_exception)  # type: ignore[arg-type]
    return config


def parse_address(address: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:9464`) → (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"metrics address must be host:port, got {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve_metrics(metrics: DockMetrics, address: str) -> web.AppRunner:
    """Serve `/metrics` on `address` from this event loop. Returns the runner (cleanup() stops)."""

    async def handle(_request: web.Request) -> web.Response:
        body = metrics.scrape()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = parse_address(address)
    await web.TCPSite(runner, host, port).start()
    return runner
