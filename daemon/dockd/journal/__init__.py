"""The journal: one SQLite row per clip, the clip state machine, one transaction per transition.

States (see docs/ARCHITECTURE.md)::

    DISCOVERED → HASHED → UPLOADING → UPLOADED → CONFIRMED → WIPED
    plus HELD (kept on the camera), QUARANTINED (unsafe input, with reason), FAILED (reason, retry_at)
    and DISMISSED (an operator closed a QUARANTINED row whose version left the camera)

Why it can be trusted after a power cut:
- WAL mode with ``synchronous=FULL``: a committed transition is on disk when `commit` returns, so
  CONFIRMED is durable before any byte on the camera is touched.
- Every legal transition is declared once (`transitions.STEPS`) and applied by one guarded UPDATE;
  one that matches no row raises instead of silently doing nothing.
- The journal records facts about the server (upload URL, receipt), never the upload offset: a
  resume always asks the server (HEAD).
- FAILED keeps every fact gathered so far; where to resume is derived from them (`resume_state`).
- Each transition's audit record (`chain`) commits in the same transaction, or neither does.

The package: `records` (states, rows by name), `transitions` (the declared steps), `schema`
(tables, migrations, the connection's pragmas), `sealer` (per-clip secrets), `chain` (the audit
chain's writing side), and the `Journal` composed here from `queries` (reads), `machine` (the
pipeline's steps), `operator` (operators' acts) and `custody` (audit events, manifests). Nothing
here imports from the layers above it.
"""

from __future__ import annotations

from pathlib import Path

from dockd.durable import fsync_dir
from dockd.journal import schema
from dockd.journal.custody import CustodyRecords
from dockd.journal.machine import ClipTransitions
from dockd.journal.operator import OperatorActions
from dockd.journal.queries import ClipQueries
from dockd.journal.records import SETTLED, WORKABLE, ClipRecord, JournalError, NewClip, State
from dockd.journal.schema import SCHEMA_VERSION
from dockd.journal.sealer import Sealer

__all__ = [
    "SCHEMA_VERSION",
    "SETTLED",
    "WORKABLE",
    "ClipRecord",
    "Journal",
    "JournalError",
    "NewClip",
    "State",
]


class Journal(ClipQueries, ClipTransitions, OperatorActions, CustodyRecords):
    """The clip state machine on SQLite. Not thread-safe: use it from the event loop only."""

    @classmethod
    def open(cls, state_dir: Path) -> Journal:
        """Open (creating or migrating) `state_dir/journal.db`; refuse a damaged or foreign one."""
        made = _make_dirs(state_dir)
        path = state_dir / "journal.db"
        # Only a journal that does not exist yet may be created. SQLite takes a damaged file
        # shorter than one page (or a lone WAL) for an empty database; creating a schema there
        # would silently forget every upload in flight.
        fresh = not any(
            candidate.exists() and candidate.stat().st_size > 0
            for candidate in (path, path.with_name(path.name + "-wal"))
        )
        sealer = Sealer.from_key_file(state_dir / "journal.key")
        conn = schema.connect(path)
        if fresh or made:
            # A new state_dir, key file and database exist durably before the first clip is
            # touched: found by the power-loss tests, where a cut lost a journal whose directory
            # dockd had just created, while a clip it recorded as wiped was gone from the camera.
            for directory in [*made, state_dir]:
                fsync_dir(directory)
        journal = cls(conn, sealer, path)
        if schema.migrate(conn, path, fresh=fresh):
            journal._anchor()
        return journal


def _make_dirs(state_dir: Path) -> list[Path]:
    """mkdir -p, returning the parents of the directories it created (whose entries to sync)."""
    missing = []
    cursor = state_dir
    while not cursor.exists():
        missing.append(cursor)
        cursor = cursor.parent
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    return [d.parent for d in reversed(missing)]
