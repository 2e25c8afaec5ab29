"""What the journal holds: clip states, the discovered clip, the clip as recorded.

Rows are read by column name (`sqlite3.Row`), so adding a column never shifts another.
"""

from __future__ import annotations

import enum
import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any


class State(enum.StrEnum):
    DISCOVERED = "DISCOVERED"
    # The one pass (a server with tus concatenation): the ciphertext goes to a partial upload
    # while both SHA-256s are taken; the custody hash is known at its end (then HASHED).
    STREAMING = "STREAMING"
    HASHED = "HASHED"
    UPLOADING = "UPLOADING"
    UPLOADED = "UPLOADED"
    CONFIRMED = "CONFIRMED"
    WIPED = "WIPED"
    HELD = "HELD"
    QUARANTINED = "QUARANTINED"
    FAILED = "FAILED"
    # Terminal: an operator closed a QUARANTINED row whose file version is no longer on the
    # camera (nothing left to offload or keep), with a reason, in the audit log.
    DISMISSED = "DISMISSED"


# States a worker can pick a clip up in (FAILED only once retry_at has passed).
WORKABLE = (
    State.DISCOVERED,
    State.STREAMING,
    State.HASHED,
    State.UPLOADING,
    State.UPLOADED,
    State.CONFIRMED,
    State.FAILED,
)

# A camera is safe to remove only when each of its clips is in one of these.
SETTLED = (State.WIPED, State.HELD)


class JournalError(RuntimeError):
    """The journal is unusable (damaged, wrong schema) or a transition was not allowed."""


@dataclass(frozen=True)
class NewClip:
    camera: str
    model: str
    bay: str
    rel_path: bytes
    size: int
    mtime_ns: int
    dev: int
    ino: int
    session: str
    evidence: bool
    recorded_at: str
    recorded_at_source: str
    metadata: dict[str, Any]
    # What a writer cannot forge (see devices.camera.FileIdentity); None on rows from schema 2.
    ctime_ns: int | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class ClipRecord(NewClip):
    """A clip as the journal holds it: what discovery found, plus everything learned since."""

    id: int
    state: State
    reason: str | None
    retry_at: float | None
    attempts: int
    plaintext_sha256: str | None
    ciphertext_sha256: str | None
    ciphertext_length: int | None
    age_header: bytes | None
    upload_url: str | None
    confirmation: dict[str, Any] | None
    held_from: State | None
    discovered_at: float
    updated_at: float
    # Set when the file at the clip's path was proven to hold other bytes (see Journal.supersede).
    superseded_at: float | None = field(default=None, kw_only=True)
    # The one pass: the partial upload the ciphertext goes to (schema 4; final upload: upload_url).
    partial_url: str | None = field(default=None, kw_only=True)

    @property
    def resume_state(self) -> State:
        """Where work continues, derived from the facts recorded (used for FAILED and HELD)."""
        if self.confirmation is not None:
            return State.CONFIRMED
        if self.upload_url is not None:
            return State.UPLOADING
        if self.plaintext_sha256 is not None:
            return State.HASHED
        if self.partial_url is not None:
            return State.STREAMING
        return State.DISCOVERED


# The columns a ClipRecord is built from (the clips table has more: sealed secrets, manifests).
COLUMNS = (
    "id, camera, model, bay, rel_path, size, mtime_ns, ctime_ns, dev, ino, session, state, "
    "reason, retry_at, attempts, evidence, recorded_at, recorded_at_source, metadata, "
    "plaintext_sha256, ciphertext_sha256, ciphertext_length, age_header, upload_url, "
    "confirmation, held_from, discovered_at, updated_at, superseded_at, partial_url"
)


def record_from_row(row: sqlite3.Row) -> ClipRecord:
    """A ClipRecord from a row of `SELECT {COLUMNS}`, by column name."""
    return ClipRecord(
        id=row["id"],
        camera=row["camera"],
        model=row["model"],
        bay=row["bay"],
        rel_path=bytes(row["rel_path"]),
        size=row["size"],
        mtime_ns=row["mtime_ns"],
        ctime_ns=row["ctime_ns"],
        dev=row["dev"],
        ino=row["ino"],
        session=row["session"],
        state=State(row["state"]),
        reason=row["reason"],
        retry_at=row["retry_at"],
        attempts=row["attempts"],
        evidence=bool(row["evidence"]),
        recorded_at=row["recorded_at"],
        recorded_at_source=row["recorded_at_source"],
        metadata=json.loads(row["metadata"]),
        plaintext_sha256=row["plaintext_sha256"],
        ciphertext_sha256=row["ciphertext_sha256"],
        ciphertext_length=row["ciphertext_length"],
        age_header=bytes(row["age_header"]) if row["age_header"] is not None else None,
        upload_url=row["upload_url"],
        confirmation=json.loads(row["confirmation"]) if row["confirmation"] else None,
        held_from=State(row["held_from"]) if row["held_from"] else None,
        discovered_at=row["discovered_at"],
        updated_at=row["updated_at"],
        superseded_at=row["superseded_at"],
        partial_url=row["partial_url"],
    )
