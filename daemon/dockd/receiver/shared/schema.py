"""The shared-state tables, as numbered migrations applied in order.

`migrate()` is idempotent and safe to run from several nodes starting at once: it takes a
transaction-scoped advisory lock, applies the migrations the version table does not list yet,
and records each in the same transaction as its DDL (PostgreSQL's DDL is transactional), so a
crash mid-migration leaves the schema at the previous version, never half-way.

Tables:
* `dockd_upload_state`: one row per unfinished upload. `state` is the backend's own record
  (S3UploadState.to_json, the SHA-256 state inside as base64) as jsonb; `upload_offset`,
  `expires` and `dock` are copies for operators' queries and the sweeper.
* `dockd_upload_lease`: the per-upload lock. `fence` is taken from the sequence `dockd_fence` on
  every acquisition, so it grows and is never handed out twice; `holder` is the node id (NULL: free);
  `lease_until` is on the database's clock, so nodes' clocks need not agree.
"""

from __future__ import annotations

import psycopg

# Never edit a migration that has shipped: add the next one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE dockd_upload_state (
        upload        text PRIMARY KEY,
        state         jsonb NOT NULL,
        upload_offset bigint NOT NULL CHECK (upload_offset >= 0),
        expires       double precision NOT NULL,
        dock          text,
        updated       timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE INDEX dockd_upload_state_expires ON dockd_upload_state (expires);
    CREATE TABLE dockd_upload_lease (
        upload            text PRIMARY KEY,
        fence             bigint NOT NULL CHECK (fence >= 1),
        holder            text,
        lease_until       timestamptz,
        release_requested boolean NOT NULL DEFAULT false
    );
    CREATE SEQUENCE dockd_fence AS bigint;
    CREATE INDEX dockd_upload_lease_holder ON dockd_upload_lease (holder)
        WHERE holder IS NOT NULL;
    """,
)

# Any constant both sides agree on: serialises migrate() across nodes.
_MIGRATION_LOCK = 0x646F636B64  # "dockd"


def migrate(conn: psycopg.Connection) -> int:
    """Bring the schema to the newest version; return it. Runs in its own transaction."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS dockd_schema ("
            " version integer PRIMARY KEY,"
            " applied timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
        row = conn.execute("SELECT coalesce(max(version), 0) FROM dockd_schema").fetchone()
        current = int(row[0]) if row else 0
        for version, ddl in enumerate(MIGRATIONS, start=1):
            if version > current:
                conn.execute(ddl.encode())
                conn.execute("INSERT INTO dockd_schema (version) VALUES (%s)", (version,))
    return len(MIGRATIONS)
