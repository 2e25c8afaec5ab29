"""What the upload coordinator needs from a store shared by several nodes (`SharedS3Store`).

Kept apart from store.py so that the coordinator can test for the capability without importing
psycopg or boto3 (the single-node file store needs neither).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from dockd.receiver.storage.api import Locker, PartialState, RunningHash, StoreError


class PartsReplaced(StoreError):
    """The upload can never complete correctly: a committed part's bytes in the object store are
    no longer the ones committed (a node that stalled past its lease had already passed its fence
    check for an UploadPart, and the late part replaced the committed one of that number; RGW then
    refuses the completion with InvalidPart rather than store wrong bytes). The coordinator ends
    the upload like an expired one, so the dock hears 410 and uploads the clip again."""


@runtime_checkable
class SharedStore(Locker, Protocol):
    """A store other nodes change too: its state is read afresh, under the shared lock."""

    @property
    def lock_timeout(self) -> float:
        """Seconds a request waits for an upload's lock (past a lease: a dead holder's runs out)."""
        ...

    def partial(self, upload: str) -> PartialState | None:
        """The unfinished upload's committed state now, or None if it is not unfinished."""
        ...

    def running_hash(self, upload: str, offset: int, *, fence: int | None = None) -> RunningHash:
        """`UploadStore.running_hash`, raising `Fenced` if a newer holder moved the offset."""
        ...

    def unfinished(self) -> Iterator[PartialState]:
        """Every unfinished upload's committed state (the sweeper's list)."""
        ...

    def terminate(self, upload: str, *, fence: int | None = None) -> None:
        """`UploadStore.terminate`, raising `Fenced` if the lock was taken over."""
        ...

    def expire(self, upload: str, dock: str | None, *, fence: int | None = None) -> None:
        """`UploadStore.expire`, raising `Fenced` if the lock was taken over."""
        ...

    def unfinished_of(self, dock: str | None) -> list[PartialState]:
        """The unfinished uploads of one dock, on every node (its quotas count them all)."""
        ...
