"""Questions the daemon, the control API and the metrics ask the journal (no changes)."""

from __future__ import annotations

from collections.abc import Iterable

from dockd.journal.core import JournalCore
from dockd.journal.records import WORKABLE, ClipRecord, JournalError


class ClipQueries(JournalCore):
    def find_live(
        self, camera: str, rel_path: bytes, size: int, mtime_ns: int, ctime_ns: int | None = None
    ) -> ClipRecord | None:
        """The live row of this file version (a row without a recorded ctime matches any)."""
        rows = self._rows(
            "camera = ? AND rel_path = ? AND size = ? AND mtime_ns = ? "
            "AND (ctime_ns IS NULL OR ? IS NULL OR ctime_ns = ?) "
            "AND state NOT IN ('WIPED', 'DISMISSED') AND superseded_at IS NULL ORDER BY id",
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
