"""The journal's core: one connection, one transaction per change, rows by name.

Not thread-safe: the daemon uses it from the event loop only.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dockd.journal import chain
from dockd.journal.records import COLUMNS, ClipRecord, JournalError, State, record_from_row
from dockd.journal.schema import transaction
from dockd.journal.sealer import Sealer
from dockd.journal.transitions import check_target


class JournalCore:
    """The connection, transactions, reading a row, and the one guarded way to change a state."""

    def __init__(self, conn: sqlite3.Connection, sealer: Sealer, path: Path) -> None:
        self._conn = conn
        self._sealer = sealer
        self.path = path

    def close(self) -> None:
        self._conn.close()

    def _tx(self) -> transaction:
        return transaction(self._conn)

    def _rows(self, where: str, params: Iterable[Any] = ()) -> list[ClipRecord]:
        cur = self._conn.execute(f"SELECT {COLUMNS} FROM clips WHERE {where}", tuple(params))  # noqa: S608
        return [record_from_row(row) for row in cur.fetchall()]

    def get(self, clip_id: int) -> ClipRecord:
        rows = self._rows("id = ?", (clip_id,))
        if not rows:
            raise JournalError(f"no clip {clip_id}")
        return rows[0]

    def _transition(
        self,
        clip_id: int,
        step: str,
        *,
        to: State | None = None,
        actor: str = "dockd",
        detail: str | None = None,
        **fields: Any,
    ) -> ClipRecord:
        """Apply one declared step (transitions.STEPS) with its audit record, in one commit."""
        allowed, to = check_target(step, to)
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
            chain.append(
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

    def _anchor(self) -> None:
        # After the commit: a crash in between leaves the anchor one record behind, which the
        # verifier reports as a lag, never as tampering.
        chain.write_head(self.path.parent, *chain.head(self._conn))
