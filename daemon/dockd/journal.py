"""The journal: one SQLite row per clip, the clip state machine, one transaction per transition.

States (see docs/ARCHITECTURE.md)::

    DISCOVERED → HASHED → UPLOADING → UPLOADED → CONFIRMED → WIPED
    plus HELD (kept on the camera), QUARANTINED (unsafe input, with reason), FAILED (reason, retry_at)
    and DISMISSED (an operator closed a QUARANTINED row whose version left the camera)

Why it can be trusted after a power cut:
- WAL mode with ``synchronous=FULL``: a committed transition is on disk when `commit` returns, so
  CONFIRMED is durable before any byte on the camera is touched.
- Transitions name the states they may leave; an UPDATE that matches no row raises instead of
  silently doing nothing, so a bug cannot, say, wipe a clip that is not CONFIRMED.
- The journal records facts about the server (upload URL, receipt), never the upload offset: a resume
  always asks the server (HEAD).
- FAILED keeps every fact gathered so far; where to resume is derived from them (`resume_state`).

The age file key and payload nonce are needed to re-create byte-identical ciphertext on resume.
They are sealed (ChaCha20-Poly1305 under a key file beside the journal, the clip id as associated
data) so a copied journal alone does not decrypt uploads, and erased once the clip is CONFIRMED.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from dockd.custody import audit

SCHEMA_VERSION = 3


class State(enum.StrEnum):
    DISCOVERED = "DISCOVERED"
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

    @property
    def resume_state(self) -> State:
        """Where work continues, derived from the facts recorded (used for FAILED and HELD)."""
        if self.confirmation is not None:
            return State.CONFIRMED
        if self.upload_url is not None:
            return State.UPLOADING
        if self.plaintext_sha256 is not None:
            return State.HASHED
        return State.DISCOVERED


_SCHEMA = """
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
_SCHEMA_V2 = (
    audit.SCHEMA,
    "ALTER TABLE clips ADD COLUMN manifest TEXT",
    "ALTER TABLE clips ADD COLUMN manifest_url TEXT",
)

# Schema 3: ctime joins the file identity (an in-place rewrite with the mtime restored is a new
# version, and is never wiped under the old one's confirmation); DISMISSED rows are not live.
_SCHEMA_V3 = (
    "ALTER TABLE clips ADD COLUMN ctime_ns INTEGER",
    "DROP INDEX clips_live",
    # coalesce: a unique index treats NULLs as distinct; '' never equals an integer ctime.
    "CREATE UNIQUE INDEX clips_live ON clips(camera, rel_path, size, mtime_ns, "
    "coalesce(ctime_ns, '')) WHERE state NOT IN ('WIPED', 'DISMISSED')",
)
_MIGRATIONS = {1: _SCHEMA_V2 + _SCHEMA_V3, 2: _SCHEMA_V3}

_COLUMNS = (
    "id, camera, model, bay, rel_path, size, mtime_ns, dev, ino, session, state, reason, retry_at, "
    "attempts, evidence, recorded_at, recorded_at_source, metadata, plaintext_sha256, "
    "ciphertext_sha256, ciphertext_length, age_header, upload_url, confirmation, held_from, "
    "discovered_at, updated_at, ctime_ns"
)


class Sealer:
    """Seals per-clip secrets under a 32-byte key kept in a 0600 file beside the journal."""

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)

    @classmethod
    def from_key_file(cls, path: Path) -> Sealer:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            from dockd.crypto.keys import KeyFileError, check_private_file

            # JournalError, not KeyFileError: `dockd run` maps it to one line and exit 78, so
            # systemd stops instead of restarting into the same refusal every few seconds.
            try:
                check_private_file(path)
                key = path.read_bytes()
            except KeyFileError as exc:
                raise JournalError(f"sealing key: {exc}") from None
            except OSError as exc:
                raise JournalError(f"{path}: cannot read sealing key: {exc.strerror}") from None
            if len(key) != 32:
                raise JournalError(f"{path}: sealing key must be 32 bytes") from None
            return cls(key)
        key = os.urandom(32)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
            handle.flush()
            os.fsync(handle.fileno())
        return cls(key)

    def seal(self, clip_id: int, data: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data, f"dockd-clip:{clip_id}".encode())

    def open(self, clip_id: int, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], f"dockd-clip:{clip_id}".encode())
        except InvalidTag:
            raise JournalError(
                f"clip {clip_id}: sealed key material does not open with this dock's sealing key"
            ) from None


class Journal:
    """The clip state machine on SQLite. Not thread-safe: use it from the event loop only."""

    def __init__(self, conn: sqlite3.Connection, sealer: Sealer, path: Path) -> None:
        self._conn = conn
        self._sealer = sealer
        self.path = path

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, state_dir: Path) -> Journal:
        """Open (creating or migrating) `state_dir/journal.db`; refuse a damaged or foreign one."""
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        path = state_dir / "journal.db"
        # Only a journal that does not exist yet may be created. SQLite takes a damaged file
        # shorter than one page (or a lone WAL) for an empty database; creating a schema there
        # would silently forget every upload in flight.
        fresh = not any(
            candidate.exists() and candidate.stat().st_size > 0
            for candidate in (path, path.with_name(path.name + "-wal"))
        )
        sealer = Sealer.from_key_file(state_dir / "journal.key")
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
            conn.execute("PRAGMA journal_mode=WAL")
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
        journal = cls(conn, sealer, path)
        journal._migrate(fresh=fresh)
        return journal

    def _migrate(self, *, fresh: bool) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version in _MIGRATIONS:
            with self._tx():
                for statement in _MIGRATIONS[version]:
                    self._conn.execute(statement)
                audit.append(
                    self._conn,
                    component="journal",
                    event="journal.migrated",
                    subject=str(self.path),
                    detail={"from": version, "to": SCHEMA_VERSION},
                )
                self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._anchor()
            return
        if version == 0:
            tables = self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise JournalError(
                    f"{self.path}: not a dockd journal (unknown tables, no schema version)"
                )
            if not fresh:
                self._conn.close()
                raise JournalError(
                    f"{self.path}: journal is damaged (the file exists but holds no dockd data: "
                    "truncated?); nothing will be wiped. See the README section 'Recovering a "
                    "damaged journal'."
                )
            with self._tx():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                for statement in _SCHEMA_V2 + _SCHEMA_V3:
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            return
        raise JournalError(
            f"{self.path}: journal schema version {version} is newer than this dockd understands "
            f"({SCHEMA_VERSION}); upgrade dockd rather than downgrade"
        )

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # ---- reading -------------------------------------------------------------------------
    def _rows(self, where: str, params: Iterable[Any] = ()) -> list[ClipRecord]:
        cur = self._conn.execute(f"SELECT {_COLUMNS} FROM clips WHERE {where}", tuple(params))  # noqa: S608
        return [_record(row) for row in cur.fetchall()]

    def get(self, clip_id: int) -> ClipRecord:
        rows = self._rows("id = ?", (clip_id,))
        if not rows:
            raise JournalError(f"no clip {clip_id}")
        return rows[0]

    def find_live(
        self, camera: str, rel_path: bytes, size: int, mtime_ns: int, ctime_ns: int | None = None
    ) -> ClipRecord | None:
        """The live row of this file version (a row without a recorded ctime matches any)."""
        rows = self._rows(
            "camera = ? AND rel_path = ? AND size = ? AND mtime_ns = ? "
            "AND (ctime_ns IS NULL OR ? IS NULL OR ctime_ns = ?) "
            "AND state NOT IN ('WIPED', 'DISMISSED') ORDER BY id",
            (camera, rel_path, size, mtime_ns, ctime_ns, ctime_ns),
        )
        return rows[0] if rows else None

    def clips_for_camera(self, camera: str, *, include_wiped: bool = False) -> list[ClipRecord]:
        where = "camera = ?" + ("" if include_wiped else " AND state != 'WIPED'")
        return self._rows(where + " ORDER BY id", (camera,))

    def all_clips(self) -> list[ClipRecord]:
        return self._rows("1 ORDER BY id")

    def workable(self, cameras: Iterable[str], now: float) -> list[ClipRecord]:
        """Clips a worker may take now, best first: evidence, then oldest recording, then oldest find."""
        cams = list(cameras)
        if not cams:
            return []
        marks = ",".join("?" * len(cams))
        states = ",".join(f"'{s}'" for s in WORKABLE)
        return self._rows(
            f"camera IN ({marks}) AND state IN ({states}) AND (retry_at IS NULL OR retry_at <= ?) "
            "ORDER BY evidence DESC, recorded_at ASC, id ASC",
            (*cams, now),
        )

    def state_totals(self) -> dict[str, tuple[int, int]]:
        """Clips and plaintext bytes per state, WIPED excluded (for status and metrics)."""
        rows = self._conn.execute(
            "SELECT state, count(*), coalesce(sum(size), 0) FROM clips "
            "WHERE state != 'WIPED' GROUP BY state"
        ).fetchall()
        return {state: (count, size) for state, count, size in rows}

    def last_confirmed_at(self) -> float | None:
        """Unix time of the most recent confirmation recorded (for the metrics after a restart)."""
        return self._conn.execute("SELECT max(confirmed_at) FROM clips").fetchone()[0]

    def secrets(self, clip_id: int) -> bytes:
        row = self._conn.execute(
            "SELECT sealed_secrets FROM clips WHERE id = ?", (clip_id,)
        ).fetchone()
        if row is None or row[0] is None:
            raise JournalError(f"clip {clip_id}: no key material recorded")
        return self._sealer.open(clip_id, row[0])

    def history(self, clip_id: int) -> list[tuple[float, str | None, str, str, str | None]]:
        return self._conn.execute(
            "SELECT at, from_state, to_state, actor, detail FROM transitions WHERE clip_id = ? ORDER BY id",
            (clip_id,),
        ).fetchall()

    # ---- transitions ---------------------------------------------------------------------
    def _transition(
        self,
        clip_id: int,
        allowed: Iterable[State],
        to: State,
        *,
        actor: str = "dockd",
        detail: str | None = None,
        **fields: Any,
    ) -> ClipRecord:
        allowed = tuple(allowed)
        now = time.time()
        fields = {"state": to.value, "updated_at": now, **fields}
        assignments = ", ".join(f"{name} = ?" for name in fields)
        marks = ",".join("?" * len(allowed))
        with self._tx():
            before = self._conn.execute(
                "SELECT state, camera FROM clips WHERE id = ?", (clip_id,)
            ).fetchone()
            cur = self._conn.execute(
                f"UPDATE clips SET {assignments} WHERE id = ? AND state IN ({marks})",  # noqa: S608
                (*fields.values(), clip_id, *(s.value for s in allowed)),
            )
            if cur.rowcount != 1:
                raise JournalError(
                    f"clip {clip_id}: transition to {to} not allowed from "
                    f"{before[0] if before else 'nowhere (no such clip)'}"
                )
            self._conn.execute(
                "INSERT INTO transitions(clip_id, at, from_state, to_state, actor, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (clip_id, now, before[0], to.value, actor, detail),
            )
            # The audit record commits with the transition it records, or neither does.
            audit.append(
                self._conn,
                component="pipeline" if actor == "dockd" else "operator",
                event=f"clip.{to.value.lower()}",
                subject=f"clip {clip_id}",
                outcome="failure" if to in (State.FAILED, State.QUARANTINED) else "ok",
                actor=actor,
                detail={"camera": before[1], "from": before[0], "to": to.value, "detail": detail},
                at=now,
            )
        self._anchor()
        return self.get(clip_id)

    def add_clip(self, clip: NewClip) -> ClipRecord:
        now = time.time()
        with self._tx():
            cur = self._conn.execute(
                "INSERT INTO clips(camera, model, bay, rel_path, size, mtime_ns, dev, ino, session, "
                "state, evidence, recorded_at, recorded_at_source, metadata, discovered_at, "
                "updated_at, ctime_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    clip.camera,
                    clip.model,
                    clip.bay,
                    clip.rel_path,
                    clip.size,
                    clip.mtime_ns,
                    clip.dev,
                    clip.ino,
                    clip.session,
                    State.DISCOVERED.value,
                    int(clip.evidence),
                    clip.recorded_at,
                    clip.recorded_at_source,
                    json.dumps(clip.metadata, sort_keys=True),
                    now,
                    now,
                    clip.ctime_ns,
                ),
            )
            clip_id = cur.lastrowid
            assert clip_id is not None
            self._conn.execute(
                "INSERT INTO transitions(clip_id, at, from_state, to_state, actor, detail) "
                "VALUES (?, ?, NULL, ?, 'dockd', ?)",
                (clip_id, now, State.DISCOVERED.value, f"size={clip.size}"),
            )
            audit.append(
                self._conn,
                component="offloader",
                event="clip.discovered",
                subject=f"clip {clip_id}",
                detail={
                    "camera": clip.camera,
                    "bay": clip.bay,
                    "path": clip.rel_path.decode("utf-8", "backslashreplace"),
                    "size": clip.size,
                    "evidence": clip.evidence,
                },
                at=now,
            )
        self._anchor()
        return self.get(clip_id)

    def seen_in_session(
        self, clip_id: int, session: str, dev: int, ino: int, bay: str, ctime_ns: int | None
    ) -> None:
        """Record where the file is in the current docking (device numbers change across docks)."""
        with self._tx():
            self._conn.execute(
                "UPDATE clips SET session = ?, dev = ?, ino = ?, bay = ?, "
                "ctime_ns = coalesce(?, ctime_ns) WHERE id = ?",
                (session, dev, ino, bay, ctime_ns, clip_id),
            )

    def mark_hashed(
        self,
        clip_id: int,
        *,
        plaintext_sha256: str,
        ciphertext_sha256: str,
        ciphertext_length: int,
        age_header: bytes,
        secrets: bytes,
    ) -> ClipRecord:
        return self._transition(
            clip_id,
            (State.DISCOVERED,),
            State.HASHED,
            detail=f"sha256={plaintext_sha256}",
            plaintext_sha256=plaintext_sha256,
            ciphertext_sha256=ciphertext_sha256,
            ciphertext_length=ciphertext_length,
            age_header=age_header,
            sealed_secrets=self._sealer.seal(clip_id, secrets),
            reason=None,
            retry_at=None,
        )

    def mark_uploading(self, clip_id: int, upload_url: str) -> ClipRecord:
        return self._transition(
            clip_id,
            (State.HASHED, State.UPLOADING),
            State.UPLOADING,
            detail=upload_url,
            upload_url=upload_url,
            reason=None,
            retry_at=None,
        )

    def forget_upload(self, clip_id: int, why: str) -> ClipRecord:
        """The server lost or expired the upload: the same ciphertext goes to a new one."""
        return self._transition(
            clip_id, (State.UPLOADING, State.UPLOADED), State.HASHED, detail=why, upload_url=None
        )

    def mark_uploaded(self, clip_id: int) -> ClipRecord:
        return self._transition(
            clip_id, (State.UPLOADING, State.UPLOADED), State.UPLOADED, reason=None, retry_at=None
        )

    def mark_confirmed(self, clip_id: int, confirmation: dict[str, Any]) -> ClipRecord:
        # The key material is no longer needed once the server holds the verified ciphertext.
        return self._transition(
            clip_id,
            (State.UPLOADED,),
            State.CONFIRMED,
            detail=confirmation.get("policy"),
            confirmation=json.dumps(confirmation, sort_keys=True),
            sealed_secrets=None,
            confirmed_at=time.time(),
            reason=None,
            retry_at=None,
            attempts=0,
        )

    def mark_wiped(self, clip_id: int, *, detail: str | None = None) -> ClipRecord:
        return self._transition(
            clip_id,
            (State.CONFIRMED,),
            State.WIPED,
            detail=detail,
            wiped_at=time.time(),
            reason=None,
            retry_at=None,
        )

    def mark_failed(self, clip_id: int, reason: str, retry_at: float) -> ClipRecord:
        record = self.get(clip_id)
        return self._transition(
            clip_id,
            (*WORKABLE,),
            State.FAILED,
            detail=reason,
            reason=reason,
            retry_at=retry_at,
            attempts=record.attempts + 1,
        )

    def quarantine(self, clip_id: int, reason: str) -> ClipRecord:
        return self._transition(
            clip_id,
            (*WORKABLE, State.HELD),
            State.QUARANTINED,
            detail=reason,
            reason=reason,
            retry_at=None,
        )

    def hold(
        self,
        clip_id: int,
        *,
        actor: str,
        reason: str = "held by operator",
        force: bool = False,
    ) -> ClipRecord:
        """Keep a clip on the camera. An evidence-flagged clip only with `force`: holding it
        stops its offload, so it must be a deliberate act, never a slip of the clip id."""
        record = self.get(clip_id)
        if record.evidence and not force:
            raise JournalError(
                f"clip {clip_id} is flagged as evidence: holding it keeps it on the camera and "
                "stops its offload; repeat with --force if that is intended"
            )
        return self._transition(
            clip_id,
            (*WORKABLE, State.QUARANTINED),
            State.HELD,
            actor=actor,
            detail=f"forced: {reason}" if force and record.evidence else reason,
            held_from=record.state.value,
            reason=reason,
            retry_at=None,
        )

    def release(self, clip_id: int, *, actor: str) -> ClipRecord:
        """Put a HELD or QUARANTINED clip back to work, where its recorded facts say it stands."""
        record = self.get(clip_id)
        return self._transition(
            clip_id,
            (State.HELD, State.QUARANTINED),
            record.resume_state,
            actor=actor,
            detail="released",
            held_from=None,
            reason=None,
            retry_at=None,
            attempts=0,
        )

    def retry_now(self, clip_id: int, *, actor: str) -> ClipRecord:
        """Try a FAILED clip now, or ask the server again at once for an UPLOADED clip's
        confirmation (e.g. after the receipt key or the confirm policy was corrected)."""
        record = self.get(clip_id)
        to = State.UPLOADED if record.state is State.UPLOADED else record.resume_state
        return self._transition(
            clip_id,
            (State.FAILED, State.UPLOADED),
            to,
            actor=actor,
            detail="retry requested",
            reason=None,
            retry_at=None,
        )

    def dismiss(self, clip_id: int, *, actor: str, reason: str) -> ClipRecord:
        """Close a QUARANTINED row for good (terminal DISMISSED), e.g. its file version is gone
        from the camera. Whether the version is still on the camera only the caller can see:
        the control API refuses while it is (or may be) before calling this."""
        if not reason.strip():
            raise JournalError(f"clip {clip_id}: dismissing needs a reason")
        return self._transition(
            clip_id,
            (State.QUARANTINED,),
            State.DISMISSED,
            actor=actor,
            detail=reason,
            reason=reason,
            retry_at=None,
        )

    def resume_failed(self, clip_id: int) -> ClipRecord:
        """A worker picks up a FAILED clip whose retry time has come."""
        record = self.get(clip_id)
        return self._transition(
            clip_id,
            (State.FAILED,),
            record.resume_state,
            detail="retrying",
            reason=None,
            retry_at=None,
        )

    def flag(self, clip_id: int, *, actor: str) -> ClipRecord:
        """Mark a clip as evidence (it also goes first). Only before its upload exists: the flag
        travels in the tus creation metadata, which cannot change afterwards."""
        with self._tx():
            row = self._conn.execute(
                "SELECT state, camera, upload_url, confirmation FROM clips WHERE id = ?", (clip_id,)
            ).fetchone()
            if row is None:
                raise JournalError(f"no clip {clip_id}")
            state, camera, url, confirmation = row
            if url is not None or confirmation is not None or state == State.WIPED.value:
                audit.append(
                    self._conn,
                    component="operator",
                    event="operator.flag",
                    subject=f"clip {clip_id}",
                    outcome="refused",
                    actor=actor,
                    detail={"camera": camera, "state": state, "why": "upload already created"},
                )
                refused = True
            else:
                self._conn.execute(
                    "UPDATE clips SET evidence = 1, updated_at = ? WHERE id = ?",
                    (time.time(), clip_id),
                )
                audit.append(
                    self._conn,
                    component="operator",
                    event="operator.flag",
                    subject=f"clip {clip_id}",
                    actor=actor,
                    detail={"camera": camera, "state": state},
                )
                refused = False
        self._anchor()
        if refused:
            raise JournalError(
                f"clip {clip_id} ({state}): its upload already exists, so the server was told "
                "evidence=false at creation; a clip can be flagged only before it starts uploading"
            )
        return self.get(clip_id)

    # ---- chain of custody ----------------------------------------------------------------
    def audit(
        self,
        event: str,
        subject: str,
        *,
        component: str = "daemon",
        outcome: str = "ok",
        actor: str = "dockd",
        detail: dict[str, Any] | None = None,
    ) -> tuple[int, str]:
        """Append one audit record for an event that is not a clip transition."""
        with self._tx():
            result = audit.append(
                self._conn,
                component=component,
                event=event,
                subject=subject,
                outcome=outcome,
                actor=actor,
                detail=detail,
            )
        self._anchor()
        return result

    def audit_head(self) -> tuple[int, str]:
        return audit.head(self._conn)

    def _anchor(self) -> None:
        # After the commit: a crash in between leaves the anchor one record behind, which the
        # verifier reports as a lag, never as tampering.
        audit.write_head(self.path.parent, *audit.head(self._conn))

    def store_manifest(self, clip_id: int, manifest: str) -> None:
        """Keep a confirmed clip's signed manifest (once: a signed manifest is never replaced)."""
        with self._tx():
            cur = self._conn.execute(
                "UPDATE clips SET manifest = ? WHERE id = ? AND manifest IS NULL "
                "AND confirmation IS NOT NULL",
                (manifest, clip_id),
            )
            if cur.rowcount != 1:
                raise JournalError(f"clip {clip_id}: not confirmed, or its manifest already exists")
            audit.append(
                self._conn,
                component="pipeline",
                event="manifest.signed",
                subject=f"clip {clip_id}",
                detail={"sha256": _sha256_text(manifest)},
            )
        self._anchor()

    def manifest(self, clip_id: int) -> tuple[str | None, str | None]:
        """(signed manifest, URL it was uploaded to) for a clip."""
        row = self._conn.execute(
            "SELECT manifest, manifest_url FROM clips WHERE id = ?", (clip_id,)
        ).fetchone()
        if row is None:
            raise JournalError(f"no clip {clip_id}")
        return row[0], row[1]

    def unsent_manifests(self, limit: int) -> list[tuple[int, str, str]]:
        """(clip id, signed manifest, clip upload URL) of manifests not yet on the server."""
        return self._conn.execute(
            "SELECT id, manifest, upload_url FROM clips WHERE manifest IS NOT NULL "
            "AND manifest_url IS NULL AND upload_url IS NOT NULL ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()

    def manifest_sent(self, clip_id: int, url: str) -> None:
        with self._tx():
            self._conn.execute("UPDATE clips SET manifest_url = ? WHERE id = ?", (url, clip_id))
            audit.append(
                self._conn,
                component="pipeline",
                event="manifest.uploaded",
                subject=f"clip {clip_id}",
                detail={"url": url},
            )
        self._anchor()

    def ask_again(self, states: Iterable[State]) -> int:
        """Clear the waiting time of clips in `states` (kept reasons stay until re-evaluated)."""
        marks = ",".join("?" * len(states := tuple(states)))
        with self._tx():
            cur = self._conn.execute(
                f"UPDATE clips SET retry_at = NULL WHERE state IN ({marks}) "  # noqa: S608
                "AND retry_at IS NOT NULL",
                tuple(s.value for s in states),
            )
        return cur.rowcount

    def note(self, clip_id: int, reason: str, retry_at: float | None = None) -> None:
        """Say why a clip is waiting without changing its state (e.g. 'server gave no receipt')."""
        with self._tx():
            self._conn.execute(
                "UPDATE clips SET reason = ?, retry_at = ?, updated_at = ? WHERE id = ?",
                (reason, retry_at, time.time(), clip_id),
            )


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _record(row: tuple[Any, ...]) -> ClipRecord:
    (
        cid,
        camera,
        model,
        bay,
        rel_path,
        size,
        mtime_ns,
        dev,
        ino,
        session,
        state,
        reason,
        retry_at,
        attempts,
        evidence,
        recorded_at,
        recorded_src,
        metadata,
        pt_sha,
        ct_sha,
        ct_len,
        header,
        url,
        confirmation,
        held_from,
        discovered_at,
        updated_at,
        ctime_ns,
    ) = row
    return ClipRecord(
        id=cid,
        camera=camera,
        model=model,
        bay=bay,
        rel_path=bytes(rel_path),
        size=size,
        mtime_ns=mtime_ns,
        dev=dev,
        ino=ino,
        session=session,
        state=State(state),
        reason=reason,
        retry_at=retry_at,
        attempts=attempts,
        evidence=bool(evidence),
        recorded_at=recorded_at,
        recorded_at_source=recorded_src,
        metadata=json.loads(metadata),
        plaintext_sha256=pt_sha,
        ciphertext_sha256=ct_sha,
        ciphertext_length=ct_len,
        age_header=bytes(header) if header is not None else None,
        upload_url=url,
        confirmation=json.loads(confirmation) if confirmation else None,
        held_from=State(held_from) if held_from else None,
        discovered_at=discovered_at,
        updated_at=updated_at,
        ctime_ns=ctime_ns,
    )
