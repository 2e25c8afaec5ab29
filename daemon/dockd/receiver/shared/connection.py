"""The connection pool to PostgreSQL, and how its failures reach the handlers.

Every PostgreSQL error that means "the database cannot be reached or answered too late"
(connection refused or lost, pool exhausted for `acquire_timeout`, a statement cut off by its
timeout) becomes `StoreUnavailable`: the handler answers 503 + Retry-After and the dock backs off
and resumes. None of them can lose an acknowledged byte: the state is acknowledged only after the
statement that records it committed. Any other database error (a bug, a constraint) is a
`StoreError` (500).

The bounds, so a request never hangs on the database:
* `connect_timeout` (libpq) for a new connection, `acquire_timeout` for a free pooled one;
* `statement_timeout` (server side) for a statement that waits on a row lock;
* `tcp_user_timeout` and keepalives (client side) for a server that stops answering mid-query
  (SIGSTOP, a partition), where no server-side timeout can fire.
Pooled connections are checked before use (one round trip), so after a PostgreSQL restart a
request gets a fresh connection instead of a 503 for each stale one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import psycopg_pool
import structlog

from dockd.receiver.storage.api import StoreError, StoreUnavailable

log = structlog.get_logger("dockd.receiver.shared")

# psycopg_pool logs every failed reconnection attempt at WARNING with a traceback-like message;
# our own StoreUnavailable log lines already say that the database is gone.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


@dataclass(frozen=True)
class PgSettings:
    """Where PostgreSQL is and how long anything may wait for it."""

    dsn: str
    max_connections: int = 10  # per node; PostgreSQL's max_connections / nodes, with headroom
    connect_timeout: float = 2.0
    acquire_timeout: float = 2.0
    statement_timeout: float = 5.0
    retry_after: float = 2.0  # what a 503 tells the dock

    def connection_kwargs(self) -> dict[str, object]:
        return {
            "connect_timeout": max(1, round(self.connect_timeout)),
            "options": f"-c statement_timeout={int(self.statement_timeout * 1000)}",
            "tcp_user_timeout": int(self.statement_timeout * 1000),
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 2,
            "application_name": "dockd-receiver",
        }


class PgPool:
    """A bounded pool of PostgreSQL connections whose failures are `StoreUnavailable`."""

    def __init__(self, settings: PgSettings) -> None:
        self.settings = settings
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection] = psycopg_pool.ConnectionPool(
            settings.dsn,
            kwargs=settings.connection_kwargs(),
            min_size=1,
            max_size=settings.max_connections,
            timeout=settings.acquire_timeout,
            check=psycopg_pool.ConnectionPool.check_connection,
            # Give up a background reconnection quickly: a request that needs a connection
            # starts a fresh attempt, so a database back after 10 s is used at once, not after
            # the pool's exponential backoff (1, 2, 4, 8 s ...) comes round.
            reconnect_timeout=settings.connect_timeout * 2,
            open=False,
            name="dockd-shared",
        )
        self._pool.open(wait=False)

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """A connection inside one transaction (committed when the block ends without error)."""
        with self.connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg_pool.PoolTimeout, psycopg.OperationalError) as exc:
            raise self.unavailable(exc) from None
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        """The 503 for a database that cannot be reached (the detail goes to the log only)."""
        log.warning("shared.unavailable", error=f"{type(exc).__name__}: {exc}"[:300])
        return StoreUnavailable("shared state unavailable", retry_after=self.settings.retry_after)

    def ready(self) -> None:
        """Raise StoreUnavailable unless PostgreSQL answers a query now (the /ready probe)."""
        with self.connection() as conn:
            conn.execute("SELECT 1")
