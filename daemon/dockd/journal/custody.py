"""Chain-of-custody records kept in the journal: audit events, signed manifests."""

from __future__ import annotations

import hashlib
from typing import Any

from dockd.journal import chain
from dockd.journal.core import JournalCore
from dockd.journal.records import JournalError


class CustodyRecords(JournalCore):
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
            result = chain.append(
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
        return chain.head(self._conn)

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
            chain.append(
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
            chain.append(
                self._conn,
                component="pipeline",
                event="manifest.uploaded",
                subject=f"clip {clip_id}",
                detail={"url": url},
            )
        self._anchor()


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
