"""The server's audit log: hash-chained, append-only, durable records of evidence decisions.

What it records (component `store`): `store.evidence_hold_at_upload` (an upload arrived flagged
and got its legal hold), `store.flag` and `store.unflag` (an operator's `dockd store` action, with
who and why), `store.expired` (the lifecycle rule deleted a routine clip, noticed by the
reconciler). The record format and the chain are the dock's (`dockd.journal.chain`, verified by
`dockd.custody.audit.verify_chain`): seq without gaps, each record carrying the SHA-256 of the one
before it, and a head anchor file beside the log so that a truncated tail is detected too.

Where: `server-audit.db` (SQLite, WAL, synchronous=FULL: a record is on disk when `append`
returns) and `audit.head` in the server's audit directory. `dockd serve` and the `dockd store`
commands append from different processes, so every append holds an exclusive lock file across
"read the last hash, insert, commit, write the head": two writers can neither fork the chain nor
tear the head file. `ServerAudit` is the seam for a PostgreSQL-backed log shared by several
receiver nodes later; this file-backed one is for one node.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dockd.custody.audit import Verdict, read_head, verify_chain
from dockd.journal import chain

DB_FILE = "server-audit.db"
LOCK_FILE = "audit.lock"
COMPONENT = "store"

EVIDENCE_AT_UPLOAD = "store.evidence_hold_at_upload"
FLAG = "store.flag"
UNFLAG = "store.unflag"
EXPIRED = "store.expired"


class AuditLogError(ValueError):
    """The audit log cannot be opened (a configuration error: `dockd serve` exits 78)."""


class AuditLogMissing(AuditLogError):
    """The log file is gone but its anchor is not: records were lost."""


@dataclass(frozen=True)
class AuditEvent:
    """One thing that happened to stored evidence, and who made it happen."""

    event: str
    subject: str  # "upload <id>"
    actor: str
    detail: dict[str, Any] = field(default_factory=dict)
    outcome: str = "ok"


def upload_subject(upload: str) -> str:
    return f"upload {upload}"


class ServerAudit(Protocol):
    def append(self, event: AuditEvent) -> int:
        """Record `event` durably; returns its seq."""
        ...

    def append_once(self, event: AuditEvent) -> int | None:
        """Record `event` unless one with the same event and subject is already there (then
        None). Atomic: two processes racing record it once."""
        ...


class FileServerAudit:
    """The audit log in a local directory (one receiver node)."""

    def __init__(self, directory: Path) -> None:
        """Checks the directory now (a configuration error stops `dockd serve` at start);
        creates it and the log at the first record, so a server that never records anything
        leaves nothing behind."""
        self.directory = directory
        self.path = directory / DB_FILE
        self._check_not_lost()
        existing = next(p for p in (directory, *directory.parents) if p.exists())
        if not os.access(existing, os.W_OK | os.X_OK):
            raise AuditLogError(f"{directory}: cannot create or write the audit log there")

    def _check_not_lost(self) -> None:
        try:
            anchored = read_head(self.directory)
        except (OSError, ValueError) as exc:
            raise AuditLogError(str(exc)) from exc
        if not self.path.exists() and anchored is not None and anchored[0] > 0:
            # Starting a fresh log here would overwrite the anchor: the evidence of the loss.
            raise AuditLogMissing(
                f"{self.path} is missing but {self.directory / chain.HEAD_FILE} says the log "
                f"reached seq {anchored[0]}: restore it from backup (refusing to start a new one)"
            )

    def _create(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            with self._connect() as conn:
                conn.execute(chain.SCHEMA.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
        except (OSError, sqlite3.Error) as exc:
            raise AuditLogError(f"{self.path}: cannot create the audit log: {exc}") from exc

    def _connect(self) -> contextlib.closing[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return contextlib.closing(conn)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[sqlite3.Connection]:
        if not self.path.exists():
            self._check_not_lost()
            self._create()
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with self._connect() as conn:
                yield conn
        finally:
            os.close(fd)  # releases the lock

    def append(self, event: AuditEvent) -> int:
        with self._exclusive() as conn:
            return self._append(conn, event)

    def append_once(self, event: AuditEvent) -> int | None:
        with self._exclusive() as conn:
            if _recorded(conn, event.event, event.subject):
                return None
            return self._append(conn, event)

    def _append(self, conn: sqlite3.Connection, event: AuditEvent) -> int:
        conn.execute("BEGIN IMMEDIATE")
        try:
            seq, digest = chain.append(
                conn,
                component=COMPONENT,
                event=event.event,
                subject=event.subject,
                outcome=event.outcome,
                actor=event.actor,
                detail=event.detail,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        # Under the lock, after the commit: the anchor never names a record that is not there.
        chain.write_head(self.directory, seq, digest)
        return seq

    def records(self) -> list[dict[str, Any]]:
        """Every record (parsed), oldest first; for `dockd store audit` and tests."""
        if not self.path.exists():
            return []
        with self._connect() as conn:
            return [
                json.loads(text)
                for (text,) in conn.execute("SELECT record FROM audit ORDER BY seq")
            ]

    def verify(self) -> Verdict:
        """Check the chain and the head anchor (detects edited, removed, reordered records and
        a cut-off tail)."""
        self._check_not_lost()
        if not self.path.exists():
            return Verdict()
        head = read_head(self.directory)
        anchors = [(chain.HEAD_FILE, head[0], head[1])] if head is not None else []
        uri = f"file:{self.path}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as conn:
            stored = conn.execute("SELECT seq, record, hash FROM audit ORDER BY rowid")
            return verify_chain(stored, anchors)


def _recorded(conn: sqlite3.Connection, event: str, subject: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM audit WHERE json_extract(record, '$.event') = ? "
        "AND json_extract(record, '$.subject') = ? LIMIT 1",
        (event, subject),
    ).fetchone()
    return found is not None
