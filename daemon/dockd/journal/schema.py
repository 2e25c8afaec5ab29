"""The journal's tables and how an older journal becomes the current one.

Only a journal that does not exist yet may be created: SQLite takes a damaged file shorter than
one page (or a lone WAL) for an empty database, and creating a schema there would silently forget
every upload in flight. Every migration commits with the audit record that says it happened.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dockd.journal import chain
from dockd.journal.records import JournalError

SCHEMA_VERSION = 4


SCHEMA = """
CREATE TABLE clips (
    id                 INTEGER PRIMARY KEY,
    camera             TEXT    NOT NULL,
    model              TEXT    NOT NULL,
    bay                TEXT    NOT NULL,
    rel_path           BLOB    NOT NULL,
    size               INTEGER NOT NULL,
    mtime_ns           INTEGER NOT NULL,
    dev                INTEGER NOT NULL,
    ino                INTEGER NOT NULL,
    session            TEXT    NOT NULL,
    state              TEXT    NOT NULL,
    reason             TEXT,
    retry_at           REAL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    evidence           INTEGER NOT NULL DEFAULT 0,
    recorded_at        TEXT    NOT NULL,
    recorded_at_source TEXT    NOT NULL,
    metadata           TEXT    NOT NULL DEFAULT '{}',
    plaintext_sha256   TEXT,
    ciphertext_sha256  TEXT,
    ciphertext_length  INTEGER,
    age_header         BLOB,
    sealed_secrets     BLOB,
    upload_url         TEXT,
    confirmation       TEXT,
    held_from          TEXT,
    discovered_at      REAL    NOT NULL,
    updated_at         REAL    NOT NULL,
    confirmed_at       REAL,
    wiped_at           REAL
);
-- One live row per file version on a camera (a wiped path may be reused by the next shift).
CREATE UNIQUE INDEX clips_live ON clips(camera, rel_path, size, mtime_ns) WHERE state != 'WIPED';
CREATE INDEX clips_camera_state ON clips(camera, state);
CREATE TABLE transitions (
    id         INTEGER PRIMARY KEY,
    clip_id    INTEGER NOT NULL REFERENCES clips(id),
    at         REAL    NOT NULL,
    from_state TEXT,
    to_state   TEXT    NOT NULL,
    actor      TEXT    NOT NULL,
    detail     TEXT
);
"""

# Schema 2 (chain of custody): the hash-chained audit log, and each clip's signed manifest with the
# URL of its upload to the server (NULL until sent).
SCHEMA_V2 = (
    chain.SCHEMA,
    "ALTER TABLE clips ADD COLUMN manifest TEXT",
    "ALTER TABLE clips ADD COLUMN manifest_url TEXT",
)
# Schema 3: ctime joins the file identity (an in-place rewrite with the mtime restored is a new
# version, and is never wiped under the old one's confirmation); DISMISSED rows are not live.
SCHEMA_V3 = (
    "ALTER TABLE clips ADD COLUMN ctime_ns INTEGER",
    # When the content at the clip's path was proven (re-hashed) to be other bytes: the row no
    # longer speaks for that file version, which is then discovered as a clip of its own.
    "ALTER TABLE clips ADD COLUMN superseded_at REAL",
    "DROP INDEX clips_live",
    # coalesce: a unique index treats NULLs as distinct; '' never equals an integer ctime.
    "CREATE UNIQUE INDEX clips_live ON clips(camera, rel_path, size, mtime_ns, "
    "coalesce(ctime_ns, '')) WHERE state NOT IN ('WIPED', 'DISMISSED') AND superseded_at IS NULL",
)

# Schema 4: one camera read per clip (tus concatenation): the partial upload a clip's ciphertext
# is streamed to while it is hashed (STREAMING); the final upload stays in upload_url.
SCHEMA_V4 = ("ALTER TABLE clips ADD COLUMN partial_url TEXT",)

MIGRATIONS = {
    1: SCHEMA_V2 + SCHEMA_V3 + SCHEMA_V4,
    2: SCHEMA_V3 + SCHEMA_V4,
    3: SCHEMA_V4,
}


def connect(path: Path) -> sqlite3.Connection:
    """Open the database with the durability the journal promises, or JournalError."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed transition is on disk when COMMIT returns (CONFIRMED before any
        # byte on the camera is touched). NORMAL would lose the last commits in a power cut.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Overwrite freed pages with zeros: erased key material and old receipts must not
        # linger in the file. Explicit, because the compiled-in default differs by build.
        conn.execute("PRAGMA secure_delete=ON")
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise JournalError(
            f"{path}: journal is damaged ({exc}); nothing will be wiped. See the README "
            "section 'Recovering a damaged journal'."
        ) from None
    if check != "ok":
        conn.close()
        raise JournalError(
            f"{path}: journal failed its integrity check ({check}); nothing will be wiped."
        )
    return conn


def migrate(conn: sqlite3.Connection, path: Path, *, fresh: bool) -> bool:
    """Bring the schema to SCHEMA_VERSION; True if audit records were added (anchor them)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return False
    if version in MIGRATIONS:
        with transaction(conn):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            chain.append(
                conn,
                component="journal",
                event="journal.migrated",
                subject=str(path),
                detail={"from": version, "to": SCHEMA_VERSION},
            )
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return True
    if version == 0:
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables:
            raise JournalError(f"{path}: not a dockd journal (unknown tables, no schema version)")
        if not fresh:
            conn.close()
            raise JournalError(
                f"{path}: journal is damaged (the file exists but holds no dockd data: "
                "truncated?); nothing will be wiped. See the README section 'Recovering a "
                "damaged journal'."
            )
        with transaction(conn):
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            for statement in SCHEMA_V2 + SCHEMA_V3 + SCHEMA_V4:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return False
    raise JournalError(
        f"{path}: journal schema version {version} is newer than this dockd understands "
        f"({SCHEMA_VERSION}); upgrade dockd rather than downgrade"
    )


class transaction:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any exception (a transition is all or nothing)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self._conn.execute("ROLLBACK" if kind is not None else "COMMIT")
