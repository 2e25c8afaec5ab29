"""The multi-node store: the S3 store with its upload state in PostgreSQL and the upload lock
of `PgLocker` (`dockd serve --store s3:... --shared-state FILE`).

It is an `S3Store` that is also a `Locker` (storage/api.py): the coordinator finds the capability
with `isinstance` and then takes the shared lock around every change, passing its fence to the
store. Everything else (bytes, parts, sidecars, retention) is the S3 store's, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from dockd.receiver.shared.connection import PgPool, PgSettings
from dockd.receiver.shared.locker import PgLocker
from dockd.receiver.shared.schema import migrate
from dockd.receiver.shared.state import PgStateBackend
from dockd.receiver.storage.api import CompletedUpload, PartialState, StoreUnavailable
from dockd.receiver.storage.s3 import S3Store
from dockd.receiver.storage.s3_state import S3UploadState

log = structlog.get_logger("dockd.receiver.shared")


class SharedS3Store(S3Store):
    """`S3Store` + `PgStateBackend` + `PgLocker`: one of several nodes over the same store."""

    def __init__(self, base: S3Store, pool: PgPool, locker: PgLocker) -> None:
        self._pg_states = PgStateBackend(pool, S3UploadState.from_json)
        super().__init__(
            base.settings,
            client=base.client,
            retention=base.retention,
            states=self._pg_states,
            spool_dir=base.spool_dir,
            orphan_age=base.orphan_age,
        )
        self.pool = pool
        self.locker = locker

    @property
    def node(self) -> str:
        return self.locker.node

    @property
    def lock_timeout(self) -> float:
        """How long a request waits for an upload's lock: past one lease, so an upload whose
        holder died (kill -9, SIGSTOP) is taken over within the wait instead of failing."""
        return self.locker.lease_seconds + 5.0

    def describe(self) -> str:
        return f"{super().describe()} (shared state, node {self.node})"

    def acquire(self, upload: str, *, timeout: float, release_requested: Callable[[], None]) -> Any:
        return self.locker.acquire(upload, timeout=timeout, release_requested=release_requested)

    def recover_completion(self, record: CompletedUpload) -> None:
        """At start, a `completing/` record may be another node's completion in progress, not
        a crash's leftover: finish it only under the upload's lock, taken without waiting (a
        live holder finishes it itself; a dead one's lease has run out)."""
        try:
            lock = self.locker.acquire(record.upload, timeout=0.0, release_requested=_ignore)
        except StoreUnavailable:
            log.info("shared.completion_left_to_its_holder", upload=record.upload)
            return
        try:
            self._finish_completion(record, fence=lock.fence)
            log.info("s3.completion_finished_on_recovery", upload=record.upload)
        finally:
            lock.release()

    def unfinished_of(self, dock: str | None) -> list[PartialState]:
        return [PartialState(s.info, s.offset, s.expires) for s in self._pg_states.of_dock(dock)]

    def close(self) -> None:
        """Stop renewing leases (those held run out) and close the pool."""
        self.locker.close()
        self.pool.close()


def _ignore() -> None:
    """A start-up recovery has no body to cut off when another request asks for the lock."""


def open_shared_store(base: S3Store, dsn: str, *, node: str, lease_seconds: float) -> SharedS3Store:
    """Connect to PostgreSQL, bring its schema up to date (safe from several nodes at once) and
    wrap `base`. Raises StoreUnavailable if PostgreSQL cannot be reached, ValueError for a bad
    node id or lease time."""
    settings = PgSettings(dsn)
    try:
        with psycopg.connect(dsn, **settings.connection_kwargs()) as conn:  # type: ignore[arg-type]
            version = migrate(conn)
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"PostgreSQL unreachable: {str(exc).strip()[:200]}") from None
    pool = PgPool(settings)
    try:
        locker = PgLocker(pool, node=node, lease_seconds=lease_seconds)
    except ValueError:
        pool.close()
        raise
    log.info("shared.ready", node=node, schema=version, lease_seconds=lease_seconds)
    return SharedS3Store(base, pool, locker)
