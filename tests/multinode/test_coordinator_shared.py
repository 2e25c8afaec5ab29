"""The coordinator's multi-node mode in-process, on an in-memory store posing as a shared one
(no services): its `Upload`s are only a cache of the shared state (dropped when idle at each
sweep, so uploads finished on other nodes cannot pile up), and per-dock quotas count every
node's uploads."""

from __future__ import annotations

import asyncio
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
    StoreUnavailable,
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
    """A `SharedStore` over the memory medium: one process, so a plain lock per upload is the
    lease."""

    lock_timeout = 1.0

    def __init__(self, medium: MemoryMedium) -> None:
        super().__init__(medium)
        self.locks: dict[str, threading.Lock] = {}
        self._fence = 0

    def acquire(
        self, upload: str, *, timeout: float, release_requested: Callable[[], None]
    ) -> _Lock:
        lock = self.locks.setdefault(upload, threading.Lock())
        if not lock.acquire(timeout=timeout):
            raise StoreUnavailable("upload is busy on another request", retry_after=1)
        self._fence += 1
        return _Lock(self._fence, lock.release)

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


async def test_requests_waiting_for_locks_held_elsewhere_do_not_starve_the_nodes_other_requests() -> (
    None
):
    """A node that died holding many uploads' locks: until their leases run out, requests for
    them wait here, more of them than the default executor has threads (min(32, cores + 4))."""
    store = SharedMemoryStore(MemoryMedium())
    store.lock_timeout = 5.0
    coordinator = UploadCoordinator(
        store, Ed25519PrivateKey.generate(), expire_after=3600, idle_timeout=5
    )
    uploads = [await coordinator.create(info()) for _ in range(40)]
    for upload in uploads:  # "another node" holds every one of them
        store.acquire(upload.id, timeout=1, release_requested=lambda: None)
    waiting = [asyncio.ensure_future(coordinator.terminate(upload)) for upload in uploads]
    await asyncio.sleep(0.2)  # all of them are waiting now
    try:
        fresh = await asyncio.wait_for(coordinator.create(info()), timeout=2)
        assert fresh.offset == 0
    finally:
        for upload in uploads:
            store.locks[upload.id].release()
        await asyncio.gather(*waiting, return_exceptions=True)
