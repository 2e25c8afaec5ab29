"""Multi-node mode keeps this node's `Upload`s only as a cache of the shared state: uploads no
request holds are dropped at each sweep, so uploads finished on other nodes cannot pile up
(bounded memory). In-process, with an in-memory store posing as a shared one (no services)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dockd.receiver.storage.api import (
    CreationInfo,
    PartialState,
    RunningHash,
    new_upload_id,
    rfc3339,
)
from dockd.receiver.storage.memory import MemoryMedium, MemoryStore
from dockd.receiver.uploads import UploadCoordinator


@dataclass
class _Lock:
    fence: int
    _release: Callable[[], None]

    def release(self) -> None:
        self._release()


class SharedMemoryStore(MemoryStore):
    """A `SharedStore` over the memory medium: one process, so a plain lock is the lease."""

    lock_timeout = 1.0

    def __init__(self, medium: MemoryMedium) -> None:
        super().__init__(medium)
        self._guard = threading.Lock()
        self._fence = 0

    def acquire(
        self, upload: str, *, timeout: float, release_requested: Callable[[], None]
    ) -> _Lock:
        assert self._guard.acquire(timeout=timeout)
        self._fence += 1
        return _Lock(self._fence, self._guard.release)

    def partial(self, upload: str) -> PartialState | None:
        found = self.medium.unfinished.get(upload)
        return None if found is None else PartialState(found.info, len(found.data), found.expires)

    def unfinished(self) -> Iterator[PartialState]:
        yield from self.recover()

    def running_hash(self, upload: str, offset: int, *, fence: int | None = None) -> RunningHash:
        return super().running_hash(upload, offset)


def info() -> CreationInfo:
    return CreationInfo(
        upload=new_upload_id(),
        length=10,
        metadata_header="",
        metadata={},
        created=rfc3339(dt.datetime.now(dt.UTC)),
        dock=None,
    )


async def test_uploads_seen_here_are_forgotten_at_the_sweep_once_idle() -> None:
    store = SharedMemoryStore(MemoryMedium())
    coordinator = UploadCoordinator(
        store, Ed25519PrivateKey.generate(), expire_after=3600, idle_timeout=5
    )
    created = [await coordinator.create(info()) for _ in range(5)]
    for upload in created:  # as other nodes' requests would make this node see them
        assert await coordinator.find(upload.id) is not None
    assert len(coordinator.unfinished()) == 5
    await coordinator.sweep(tombstone_ttl=60)
    assert coordinator.unfinished() == []
    found = await coordinator.find(created[0].id)  # still served, from the shared state
    assert found is not None and found.id == created[0].id  # type: ignore[union-attr]
