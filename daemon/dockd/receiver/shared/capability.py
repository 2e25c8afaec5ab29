"""What the upload coordinator needs from a store shared by several nodes (`SharedS3Store`).

Kept apart from store.py so that the coordinator can test for the capability without importing
psycopg or boto3 (the single-node file store needs neither).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from dockd.receiver.storage.api import Locker, PartialState


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

    def unfinished(self) -> Iterator[PartialState]:
        """Every unfinished upload's committed state (the sweeper's list)."""
        ...
