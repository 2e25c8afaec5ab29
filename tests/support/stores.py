"""Store factories for the storage contract suite (tests/receiver/contract/): every `UploadStore`
must pass it.

A factory opens the same durable store again on each `reopen()` (a restart after a crash: what
was not committed is gone), and says which faults it can produce. To add a store (S3 next), add
a factory here; the suite runs against it unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dockd.receiver.storage.api import UploadStore
from dockd.receiver.storage.file import FileStore
from dockd.receiver.storage.memory import MemoryMedium, MemoryStore


class SimulatedCrash(BaseException):
    """The process "died" here: nothing after this point of the store's work happened."""


@dataclass
class StoreUnderTest:
    name: str
    reopen: Callable[[], UploadStore]  # the same durable store, as a restarted server opens it
    # Switch the store to refusing writes for lack of space (None: this store cannot be made full).
    make_full: Callable[[], None] | None = None
    # Switch the backend off, as a network partition would (None: a local store is never away).
    make_unavailable: Callable[[], None] | None = None
    # A context in which the store's n-th durable step (rename/unlink/...) crashes, or None.
    crash_at_step: Callable[[int], contextlib.AbstractContextManager[None]] | None = None
    count_steps: Callable[[], contextlib.AbstractContextManager[list[int]]] | None = None


def _file_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StoreUnderTest:
    root = tmp_path / "file-store"

    def make_full() -> None:
        # A real full disk is tested in tests/receiver/test_disk_full.py (needs root for a
        # tmpfs); here the OS answers ENOSPC so the suite runs everywhere.
        def no_space(*args: object, **kwargs: object) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "pwrite", no_space)
        monkeypatch.setattr(os, "fdatasync", no_space)

    @contextlib.contextmanager
    def steps(crash_at: int | None) -> Iterator[list[int]]:
        """Count (and at `crash_at`, crash) the renames and unlinks that make completion durable."""
        count = [0]
        with pytest.MonkeyPatch.context() as patch:
            for name in ("rename", "unlink"):
                real = getattr(os, name)

                def step(*args: object, _real: Callable[..., None] = real, **kw: object) -> None:
                    if count[0] == crash_at:
                        raise SimulatedCrash(f"crash at step {count[0]}")
                    count[0] += 1
                    _real(*args, **kw)

                patch.setattr(os, name, step)
            yield count

    def crash_at_step(n: int) -> contextlib.AbstractContextManager[None]:
        @contextlib.contextmanager
        def crashing() -> Iterator[None]:
            with steps(n):
                yield

        return crashing()

    return StoreUnderTest(
        "file",
        reopen=lambda: FileStore(root),
        make_full=make_full,
        crash_at_step=crash_at_step,
        count_steps=lambda: steps(None),
    )


def _memory_store() -> StoreUnderTest:
    medium = MemoryMedium()

    def make_full() -> None:
        medium.capacity = medium.used()

    def make_unavailable() -> None:
        medium.unavailable = True

    return StoreUnderTest(
        "memory",
        reopen=lambda: MemoryStore(medium),
        make_full=make_full,
        make_unavailable=make_unavailable,
    )


def store_under_test(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StoreUnderTest:
    if name == "file":
        return _file_store(tmp_path, monkeypatch)
    if name == "memory":
        return _memory_store()
    raise ValueError(f"no such store factory: {name}")
