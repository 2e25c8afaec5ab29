"""The coordinator's multi-node mode in-process, on an in-memory store posing as a shared one
(no services): its `Upload`s are only a cache of the shared state (dropped when idle at each
sweep, so uploads finished on other nodes cannot pile up), and per-dock quotas count every
node's uploads."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dockd.receiver.protocol import ProtocolError
from dockd.receiver.quota import Quotas
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

    def unfinished_of(self, dock: str | None) -> list[PartialState]:
        return [p for p in self.recover() if p.info.dock == dock]

    def running_hash(self, upload: str, offset: int, *, fence: int | None = None) -> RunningHash:
        return super().running_hash(upload, offset)


def info(dock: str | None = None) -> CreationInfo:
    return CreationInfo(
        upload=new_upload_id(),
        length=10,
        metadata_header="",
        metadata={},
        created=rfc3339(dt.datetime.now(dt.UTC)),
        dock=dock,
    )


def node(medium: MemoryMedium, quotas: Quotas = Quotas()) -> UploadCoordinator:  # noqa: B008
    return UploadCoordinator(
        SharedMemoryStore(medium),
        Ed25519PrivateKey.generate(),
        expire_after=3600,
        idle_timeout=5,
        quotas=quotas,
    )


async def test_uploads_seen_here_are_forgotten_at_the_sweep_once_idle() -> None:
    coordinator = node(MemoryMedium())
    created = [await coordinator.create(info()) for _ in range(5)]
    for upload in created:  # as other nodes' requests would make this node see them
        assert await coordinator.find(upload.id) is not None
    assert len(coordinator.unfinished()) == 5
    await coordinator.sweep(tombstone_ttl=60)
    assert coordinator.unfinished() == []
    found = await coordinator.find(created[0].id)  # still served, from the shared state
    assert found is not None and found.id == created[0].id  # type: ignore[union-attr]


async def test_a_docks_upload_count_is_counted_over_every_node() -> None:
    medium = MemoryMedium()
    quotas = Quotas(max_uploads_per_dock=2)
    first, second = node(medium, quotas), node(medium, quotas)
    await first.create(info("dock-1"))
    await first.create(info("dock-1"))
    with pytest.raises(ProtocolError) as refused:
        await second.create(info("dock-1"))
    assert refused.value.status == 429
    await second.create(info("dock-2"))  # another dock is not held back
