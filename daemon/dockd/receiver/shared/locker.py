"""`PgLocker`: the per-upload lock shared by every receiver node, with a fencing token.

A lock is a lease row in `dockd_upload_lease` (schema.py): the holder's node id, a fencing token
(`fence`) that grows on EVERY acquisition, and `lease_until` on the database's clock. Fences come
from one database sequence, so they never repeat, not even for an upload whose lease row was
deleted and made again (a poll that finds the lease held uses a number up: gaps are harmless).

* `acquire` takes the row in one statement if it is free or its lease ran out, and gets the new
  fence. If another request holds it (on any node), it sets `release_requested` and NOTIFYs the
  holder's node, then polls until the lease is free or `timeout` passes (`StoreUnavailable`).
* The holder's node cuts the holder's request off (`release_requested` callback, as
  `Upload.supersede` does within one process). It hears of the request through LISTEN on its
  own channel; the renewal below also reads the flag, in case a notification was missed while
  the listening connection was down.
* One thread per node renews every lease the node holds, every `lease_seconds / 3`, in one
  statement. A node that stops (SIGSTOP, GC pause, partition) stops renewing, its leases run
  out, and another node takes the upload over with a higher fence: the stalled node's later
  writes (`PgStateBackend.save`, conditioned on the fence) change nothing, and its
  `check_fence` before an UploadPart fails.
* `release` frees the row (keeping its fence). If the database is unreachable then, the lease
  simply runs out.

The lease time bounds how long a dock waits for an upload whose node died: `lease_seconds`
(default 10) is the takeover delay; shorter means more renewal traffic (nodes x 3 / lease s).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
import structlog
from psycopg import sql

from dockd.receiver.shared.connection import PgPool
from dockd.receiver.storage.api import StoreError, StoreUnavailable

log = structlog.get_logger("dockd.receiver.shared")

_NODE_ID = re.compile(r"[A-Za-z0-9_.-]{1,40}")
_CHANNEL_PREFIX = "dockd_release:"  # + node id; <= 63 bytes, PostgreSQL's identifier limit


def release_channel(node: str) -> str:
    return _CHANNEL_PREFIX + node


@dataclass
class PgLock:
    """A held lease on one upload (api.UploadLock)."""

    upload: str
    fence: int
    _locker: PgLocker
    _release_requested: Callable[[], None]
    lost: bool = False  # the lease was taken over: every write with this fence is refused
    _asked: bool = field(default=False, repr=False)

    def release(self) -> None:
        self._locker.release(self)

    def ask_to_release(self) -> None:
        """Tell the holder's request, once, that someone is waiting (from any thread)."""
        if self._asked:
            return
        self._asked = True
        try:
            self._release_requested()
        except Exception:
            log.exception("shared.release_callback_failed", upload=self.upload)


class PgLocker:
    """api.Locker over PostgreSQL; one per node, shared by all of the node's requests."""

    def __init__(
        self,
        pool: PgPool,
        *,
        node: str,
        lease_seconds: float = 10.0,
        poll_interval: float = 0.05,
    ) -> None:
        if not _NODE_ID.fullmatch(node):
            raise ValueError(f"node id must match {_NODE_ID.pattern}: {node!r}")
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.node = node
        self.lease_seconds = lease_seconds
        self._pool = pool
        self._poll_interval = poll_interval
        self._held: dict[tuple[str, int], PgLock] = {}
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._renew_forever, name=f"lease-renew-{node}", daemon=True),
            threading.Thread(target=self._listen_forever, name=f"lease-listen-{node}", daemon=True),
        ]
        self.listening = threading.Event()  # set while the LISTEN connection is up (tests)
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Stop renewing and listening (held leases then run out)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self._pool.settings.connect_timeout + 2)

    # ---- api.Locker ----------------------------------------------------------------------

    def acquire(
        self, upload: str, *, timeout: float, release_requested: Callable[[], None]
    ) -> PgLock:
        deadline = time.monotonic() + timeout
        interval = self._poll_interval
        asked_at: float | None = None
        while True:
            fence = self._try_take(upload)
            if fence is not None:
                lock = PgLock(upload, fence, self, release_requested)
                with self._guard:
                    self._held[(upload, fence)] = lock
                return lock
            now = time.monotonic()
            if asked_at is None or now - asked_at > 1.0:  # ask again now and then
                self._ask_holder(upload)
                asked_at = now
            if now >= deadline:
                raise StoreUnavailable(
                    "upload is busy on another request", retry_after=min(self.lease_seconds, 5)
                )
            time.sleep(min(interval, max(deadline - now, 0.0)))
            interval = min(interval * 1.5, 0.25)

    def release(self, lock: PgLock) -> None:
        with self._guard:
            self._held.pop((lock.upload, lock.fence), None)
        try:
            with self._pool.transaction() as conn:
                # Not waiting for the WAL flush: a release lost in a PostgreSQL crash only
                # means the lease runs out instead. (An acquisition must wait: a fence lost
                # that way could be handed out twice.)
                conn.execute("SET LOCAL synchronous_commit = off")
                conn.execute(
                    "UPDATE dockd_upload_lease SET holder = NULL, lease_until = NULL,"
                    " release_requested = false"
                    " WHERE upload = %s AND fence = %s AND holder = %s",
                    (lock.upload, lock.fence, self.node),
                )
        except StoreError as exc:  # the lease runs out by itself
            log.warning("shared.release_failed", upload=lock.upload, error=str(exc))

    def held(self) -> list[PgLock]:
        with self._guard:
            return list(self._held.values())

    # ---- acquisition ----------------------------------------------------------------------

    def _try_take(self, upload: str) -> int | None:
        """Take the lease if free or expired: the new fence, or None if someone holds it."""
        with self._pool.transaction() as conn:
            row = conn.execute(
                "INSERT INTO dockd_upload_lease AS l"
                " (upload, fence, holder, lease_until, release_requested)"
                " VALUES (%(upload)s, nextval('dockd_fence'), %(node)s,"
                "  clock_timestamp() + make_interval(secs => %(lease)s), false)"
                # Not excluded.fence: that number was drawn before this statement waited for the
                # row lock, and a later acquisition may have drawn and used a higher one since.
                # Drawn here, under the row lock, the fence is above every earlier holder's.
                " ON CONFLICT (upload) DO UPDATE SET fence = nextval('dockd_fence'),"
                "  holder = excluded.holder, lease_until = excluded.lease_until,"
                "  release_requested = false"
                " WHERE l.holder IS NULL OR l.lease_until < clock_timestamp()"
                " RETURNING l.fence",
                {"upload": upload, "node": self.node, "lease": self.lease_seconds},
            ).fetchone()
        return None if row is None else int(row[0])

    def _ask_holder(self, upload: str) -> None:
        with self._pool.transaction() as conn:
            row = conn.execute(
                "UPDATE dockd_upload_lease SET release_requested = true"
                " WHERE upload = %s AND holder IS NOT NULL RETURNING holder",
                (upload,),
            ).fetchone()
            if row is not None:  # delivered when this transaction commits
                conn.execute("SELECT pg_notify(%s, %s)", (release_channel(str(row[0])), upload))

    # ---- the holder's side: renewal and notifications --------------------------------------

    def _renew_forever(self) -> None:
        period = self.lease_seconds / 3
        while not self._stop.wait(period):
            try:
                self.renew()
            except StoreError as exc:
                log.warning("shared.renew_failed", node=self.node, error=str(exc))
            except Exception:  # a dead renewer would silently lose every lease
                log.exception("shared.renew_crashed", node=self.node)

    def renew(self) -> None:
        """Extend every lease this node holds; mark the ones taken over as lost."""
        held = self.held()
        if not held:
            return
        with self._pool.transaction() as conn:
            rows = conn.execute(
                "UPDATE dockd_upload_lease AS l"
                " SET lease_until = clock_timestamp() + make_interval(secs => %s)"
                " FROM unnest(%s::text[], %s::bigint[]) AS h(upload, fence)"
                " WHERE l.upload = h.upload AND l.fence = h.fence AND l.holder = %s"
                " RETURNING l.upload, l.fence, l.release_requested",
                (
                    self.lease_seconds,
                    [lock.upload for lock in held],
                    [lock.fence for lock in held],
                    self.node,
                ),
            ).fetchall()
        renewed = {(str(upload), int(fence)): bool(asked) for upload, fence, asked in rows}
        for lock in held:
            key = (lock.upload, lock.fence)
            if key not in renewed:
                if not lock.lost and key in self._held:  # not released meanwhile
                    lock.lost = True
                    log.warning("shared.lease_lost", upload=lock.upload, fence=lock.fence)
                    lock.ask_to_release()
            elif renewed[key]:
                lock.ask_to_release()

    def _listen_forever(self) -> None:
        settings = self._pool.settings
        failing = False  # log the first failure of an outage, not one per retry
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    settings.dsn, autocommit=True, **settings.connection_kwargs()
                ) as conn:
                    conn.execute(
                        sql.SQL("LISTEN {}").format(sql.Identifier(release_channel(self.node)))
                    )
                    self.listening.set()
                    if failing:
                        log.info("shared.listen_restored", node=self.node)
                        failing = False
                    self._catch_up()
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=0.5):
                            self._on_release_requested(notice.payload)
            except psycopg.Error as exc:
                if not failing:
                    log.warning("shared.listen_failed", node=self.node, error=str(exc)[:200])
                failing = True
            finally:
                self.listening.clear()
            self._stop.wait(1.0)

    def _catch_up(self) -> None:
        """After (re)connecting: requests made while no one listened are found by renewing."""
        with contextlib.suppress(StoreError):
            self.renew()

    def _on_release_requested(self, upload: str) -> None:
        with self._guard:
            locks = [lock for (held, _), lock in self._held.items() if held == upload]
        for lock in locks:
            lock.ask_to_release()
