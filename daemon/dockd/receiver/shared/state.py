"""`PgStateBackend`: unfinished uploads' state in PostgreSQL, written only by the lock's holder.

It implements the S3 store's `UploadStateBackend` (storage/s3_state.py) in place of the work
bucket when several nodes share one store: `PgStateBackend(pool, S3UploadState.from_json)`. The
record type comes in as `decode`, so this module needs nothing of the S3 client; any record with
`info.upload`, `offset`, `expires` and `to_json` fits.

Fencing: `save` is ONE statement that changes the row only if the caller's fencing token is
still the upload's current one, read with a share lock on the lease row. A newer acquisition
(`PgLocker.acquire`, an UPDATE of that row) therefore either waits for the write to commit, or
commits first and the write matches no row: 0 rows -> `Fenced`, and nothing changed.
`check_fence`, which the S3 writer calls before every UploadPart, is the same test without a
write, so a holder that lost its lock stops before sending bytes. `delete` with a fence (the
termination and expiry of an unfinished upload) is the same condition on the DELETE.
`fence=None` is the single-node mode without a locker: no condition.

What fencing cannot stop is an UploadPart a stalled holder had already passed `check_fence` for:
S3 part numbers are 1..N (s3_state.py says why RGW needs that), so such a late part can replace a
committed part of the same number in RGW. It never reaches the offset or a receipt: the state
names each committed part's ETag and CompleteMultipartUpload refuses a part whose ETag differs
(docs/SCALE.md, "The lock and fencing protocol", has the sequence and what it costs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from psycopg.types.json import Jsonb

from dockd.receiver.shared.connection import PgPool
from dockd.receiver.storage.api import CreationInfo, Fenced, NotFound, StoreError


class SharedState(Protocol):
    """What the backend reads from a state record (S3UploadState has it)."""

    @property
    def info(self) -> CreationInfo: ...
    @property
    def offset(self) -> int: ...
    @property
    def expires(self) -> float: ...
    def to_json(self) -> dict[str, Any]: ...


S = TypeVar("S", bound=SharedState)

# The write's fence condition: no fence (single node), or the lease row still carries the
# caller's token. FOR SHARE makes a concurrent acquisition (an UPDATE of that row) wait for the
# write, or the write for it, then re-reads the row: never a write under a stale fence.
_SAVE = """
    UPDATE dockd_upload_state SET state = %(state)s,
        upload_offset = %(offset)s, expires = %(expires)s, updated = clock_timestamp()
    WHERE upload = %(upload)s
      AND (%(fence)s::bigint IS NULL OR EXISTS (
          SELECT 1 FROM dockd_upload_lease l
          WHERE l.upload = %(upload)s AND l.fence = %(fence)s FOR SHARE))
"""
_DELETE = """
    DELETE FROM dockd_upload_state
    WHERE upload = %(upload)s
      AND (%(fence)s::bigint IS NULL OR EXISTS (
          SELECT 1 FROM dockd_upload_lease l
          WHERE l.upload = %(upload)s AND l.fence = %(fence)s FOR SHARE))
"""
_FENCE_HOLDS = """
    SELECT 1 FROM dockd_upload_lease WHERE upload = %(upload)s AND fence = %(fence)s
"""


class PgStateBackend(Generic[S]):
    """One row per unfinished upload in `dockd_upload_state` (schema.py)."""

    def __init__(self, pool: PgPool, decode: Callable[[dict[str, Any]], S]) -> None:
        self._pool = pool
        self._decode = decode

    def create(self, state: S) -> None:
        with self._pool.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO dockd_upload_state (upload, state, upload_offset, expires, dock)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (upload) DO NOTHING",
                (
                    state.info.upload,
                    Jsonb(state.to_json()),
                    state.offset,
                    state.expires,
                    state.info.dock,
                ),
            )
            if cursor.rowcount != 1:
                raise StoreError(f"upload {state.info.upload} already exists")

    def load(self, upload: str) -> S | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT state FROM dockd_upload_state WHERE upload = %s", (upload,)
            ).fetchone()
        return None if row is None else self._decode(row[0])

    def save(self, state: S, *, fence: int | None) -> None:
        """Replace the upload's state, if `fence` is still the lock's token (else `Fenced`)."""
        upload = state.info.upload
        params = {
            "upload": upload,
            "fence": fence,
            "state": Jsonb(state.to_json()),
            "offset": state.offset,
            "expires": state.expires,
        }
        with self._pool.transaction() as conn:
            cursor = conn.execute(_SAVE, params)
            if cursor.rowcount != 1:
                self._refusal(conn, upload, fence)

    def check_fence(self, upload: str, *, fence: int | None) -> None:
        """Raise `Fenced` unless `fence` is the upload's current lock token (before an UploadPart)."""
        if fence is None:
            return
        with self._pool.connection() as conn:
            held = conn.execute(_FENCE_HOLDS, {"upload": upload, "fence": fence}).fetchone()
            if held is None:
                self._refusal(conn, upload, fence)

    def delete(self, upload: str, *, fence: int | None = None) -> None:
        """Forget the upload's state and lease. With `fence`, only while it is still the lock's
        token, in the same statement as `save` tests it (else `Fenced` or `NotFound`, nothing
        deleted): a check before and a delete after would let a holder that stalled in between
        delete what the next holder committed and acknowledged since."""
        with self._pool.transaction() as conn:
            cursor = conn.execute(_DELETE, {"upload": upload, "fence": fence})
            if fence is not None and cursor.rowcount != 1:
                self._refusal(conn, upload, fence)
            conn.execute("DELETE FROM dockd_upload_lease WHERE upload = %s", (upload,))

    def of_dock(self, dock: str | None) -> list[S]:
        """The unfinished uploads of one dock (None: anonymous), for its quotas; a dock holds
        at most `--max-uploads-per-dock` of them, so the list stays short."""
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT state FROM dockd_upload_state WHERE dock IS NOT DISTINCT FROM %s"
                " ORDER BY upload",
                (dock,),
            ).fetchall()
        return [self._decode(row[0]) for row in rows]

    def all(self) -> Iterator[S]:
        """Every unfinished upload, by id, streamed through a server-side cursor."""
        with self._pool.transaction() as conn:
            cursor = conn.cursor(name="dockd_all_states")
            cursor.itersize = 200
            cursor.execute("SELECT state FROM dockd_upload_state ORDER BY upload")
            for (state,) in cursor:
                yield self._decode(state)

    def ready(self) -> None:
        self._pool.ready()

    # ---- internals ----------------------------------------------------------------------

    @staticmethod
    def _refusal(conn: Any, upload: str, fence: int | None) -> None:
        """0 rows changed: say whether the upload is gone or the caller was fenced out."""
        exists = conn.execute(
            "SELECT 1 FROM dockd_upload_state WHERE upload = %s", (upload,)
        ).fetchone()
        if exists is None:
            raise NotFound(f"no unfinished upload {upload}")
        raise Fenced(f"upload {upload}: fence {fence} is no longer the lock's")
