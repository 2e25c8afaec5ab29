"""Store factories for the storage contract suite (tests/receiver/contract/): every `UploadStore`
must pass it.

A factory opens the same durable store again on each `reopen()` (a restart after a crash: what
was not committed is gone), and says which faults it can produce. To add a store, add a factory
here; the suite runs against it unchanged. The S3 store's factory (`rgw_store_under_test`) needs
a running Ceph, so tests/ceph/test_s3_contract.py runs the suite on it (marker `ceph`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dockd.receiver.storage.api import UploadStore
from dockd.receiver.storage.file import FileStore
from dockd.receiver.storage.memory import MemoryMedium, MemoryStore
from dockd.receiver.storage.s3 import S3Store
from dockd.receiver.storage.s3_config import S3Settings, make_client


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


# The S3 calls that change something: a crash "at step n" happens just before the n-th of them.
S3_MUTATIONS = frozenset(
    {
        "PutObject",
        "UploadPart",
        "CompleteMultipartUpload",
        "CreateMultipartUpload",
        "AbortMultipartUpload",
        "DeleteObject",
        "DeleteObjects",
        "PutObjectTagging",
        "PutObjectLegalHold",
        "PutObjectRetention",
    }
)


def rgw_settings(
    endpoint: Any, *, part_size: int = 5 << 20, bucket: str | None = None
) -> S3Settings:
    """Settings for a fresh evidence bucket on a test Ceph (`support.ceph.S3Endpoint`)."""
    name = bucket or f"evidence-{uuid.uuid4().hex[:12]}"
    return S3Settings.from_spec(
        f"s3:{endpoint.url}/{name}",
        region=endpoint.region,
        part_size=part_size,
        environ={
            "AWS_ACCESS_KEY_ID": endpoint.access_key,
            "AWS_SECRET_ACCESS_KEY": endpoint.secret_key,
        },
    )


def rgw_store_under_test(cluster: Any) -> StoreUnderTest:
    """The S3 store on the test Ceph's RGW (`support.ceph.CephCluster`), in a fresh bucket.

    Every reopened store shares one boto3 client, so a crash injected through the client's
    events hits whichever store the test is using; a reopened store has a fresh state cache, as
    a restarted server does. "Unavailable" is radosgw SIGKILLed (the next factory restarts it).
    """
    cluster.ensure_rgw()
    settings = rgw_settings(cluster.endpoint)
    client = make_client(settings)

    @contextlib.contextmanager
    def steps(crash_at: int | None) -> Iterator[list[int]]:
        count = [0]

        def before_call(model: Any, **_: Any) -> None:
            if model.name not in S3_MUTATIONS:
                return
            if count[0] == crash_at:
                raise SimulatedCrash(f"crash before S3 step {count[0]} ({model.name})")
            count[0] += 1

        client.meta.events.register("before-call.s3", before_call, unique_id="crash-steps")
        try:
            yield count
        finally:
            client.meta.events.unregister("before-call.s3", unique_id="crash-steps")

    def crash_at_step(n: int) -> contextlib.AbstractContextManager[None]:
        @contextlib.contextmanager
        def crashing() -> Iterator[None]:
            with steps(n):
                yield

        return crashing()

    return StoreUnderTest(
        "rgw",
        reopen=lambda: S3Store(settings, client=client),
        make_unavailable=cluster.kill_rgw,
        crash_at_step=crash_at_step,
        count_steps=lambda: steps(None),
    )


def store_under_test(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StoreUnderTest:
    if name == "file":
        return _file_store(tmp_path, monkeypatch)
    if name == "memory":
        return _memory_store()
    raise ValueError(f"no such store factory: {name}")
