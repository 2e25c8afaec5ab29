"""The dock's own storage: when the journal's disk is full or failing, say so and back off.

A full `state_dir` loses nothing (a transition that cannot commit never happened; the clip stays
on the camera), but without this every clip task fails at once, is re-dispatched at once, and
fails again: thousands of tracebacks a minute and clips that read "internal error". Instead the
first journal write that fails for lack of space (or with an I/O error) names one dock-wide
condition, "dock disk full: PATH, N MB free", shown for every bay, exported as a metric and
alerted on; new work pauses; after a back-off (doubling up to `MAX_BACKOFF`) one small probe
write decides whether work resumes. Recovery needs no restart.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
import time
from pathlib import Path

import structlog

from dockd.metrics import DockMetrics

log = structlog.get_logger()

FIRST_BACKOFF = 5.0
MAX_BACKOFF = 300.0
# The back-off starts again from FIRST_BACKOFF only after this long without a failure: a probe
# (one small audit record) can fit where clip work does not, and a nearly full disk must not make
# the status and the alert flap every few seconds.
CALM_SECONDS = 300.0
# sqlite3 result codes (primary, the low byte of an extended code)
_SQLITE_IOERR = 10
_SQLITE_FULL = 13


def is_storage_error(exc: BaseException) -> bool:
    """A failure to write the dock's own state (journal, manifests), not a camera or server one."""
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in (_SQLITE_FULL, _SQLITE_IOERR)
        text = str(exc).lower()
        return "disk is full" in text or "disk i/o error" in text
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class StorageHealth:
    """One condition for the whole dock: is its state directory writable right now?"""

    def __init__(self, state_dir: Path, metrics: DockMetrics) -> None:
        self.state_dir = state_dir
        self.metrics = metrics
        self.problem: str | None = None
        self._backoff = FIRST_BACKOFF
        self._until = 0.0
        self._last_failure = float("-inf")

    def free_bytes(self) -> int | None:
        try:
            return shutil.disk_usage(self.state_dir).free
        except OSError:
            return None

    def failed(self, exc: BaseException) -> None:
        """A write of the dock's state failed: name the condition, pause work, back off."""
        free = self.free_bytes()
        where = str(self.state_dir)
        full = (
            (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT))
            or "full" in str(exc).lower()
            or (free is not None and free < 1 << 20)
        )
        free_text = "unknown" if free is None else f"{free / 1e6:.1f} MB free"
        self.problem = (
            f"dock disk full: {where}, {free_text}: nothing is lost; offloading resumes by itself "
            "once space is freed"
            if full
            else f"dock storage failing: {where}: {exc}; nothing is lost; check the disk"
        )
        now = time.monotonic()
        if now - self._last_failure > CALM_SECONDS:
            self._backoff = FIRST_BACKOFF
        self._last_failure = now
        first = self._until == 0.0
        # At most one event per back-off, however many clip tasks hit the same wall.
        if first or now >= self._until:
            log.error(
                "dock.storage_failed",
                reason=self.problem,
                error=repr(exc),
                retry_in=self._backoff,
            )
            self.metrics.storage_failures.inc()
        self.metrics.storage_ok.set(0)
        self._until = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    def paused(self) -> bool:
        """New work waits: the state disk failed and its back-off has not run out."""
        return self.problem is not None and time.monotonic() < self._until

    def recovered(self) -> None:
        if self.problem is None:
            return
        log.info("dock.storage_recovered", was=self.problem, free_bytes=self.free_bytes())
        self.problem = None
        self._until = 0.0  # the back-off itself shrinks only after CALM_SECONDS without failure
        self.metrics.storage_ok.set(1)
