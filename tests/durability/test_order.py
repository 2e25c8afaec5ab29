"""The durable steps happen in the order that makes an acknowledgement or a wipe mean something.

Each test runs the real code (the reference receiver, the dock daemon) with the sync calls
observed (`SyncRecorder`) and asserts their order, not just the outcome: a missing fdatasync, a
journal at synchronous=NORMAL or a wipe without its directory fsync all give the same files
after a kill -9, so only the order (or lazyfs, tests/powerloss) can tell.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from dockd.app import Daemon
from dockd.crypto.keys import KeygenResult, keygen
from dockd.journal import Journal
from dockd.receiver import app as receiver_app
from support.counting_receiver import CountingReceiver, start_counting_receiver
from support.dock import dock_config, journal_rows, make_bay, settings_from, wait_for
from support.receiver import Tus, running_receiver, upload_id_of

from durability.recorder import Event, SyncRecorder

SQLITE_SYNCHRONOUS_FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> SyncRecorder:
    return SyncRecorder().install(monkeypatch)


# -- the receiver: data fdatasync, then the offset commit, then the 204 --


@pytest.fixture
def responses_recorded(monkeypatch: pytest.MonkeyPatch, recorder: SyncRecorder) -> None:
    """Record each response as aiohttp starts sending it (on_response_prepare)."""
    create_app = receiver_app.create_app

    def create_app_observed(*args: Any, **kwargs: Any) -> web.Application:
        app = create_app(*args, **kwargs)

        async def sent(request: web.BaseRequest, response: web.StreamResponse) -> None:
            recorder.add(Event("respond", request.path, f"{request.method} {response.status}"))

        app.on_response_prepare.append(sent)
        return app

    monkeypatch.setattr(receiver_app, "create_app", create_app_observed)


def _check_chunk_order(recorder: SyncRecorder, partial: Path, upload: str, start: int) -> int:
    """data fdatasync → the state file's new slot fdatasync'd → 204. (The state file is updated
    in place, so no rename or directory fsync belongs to a chunk.) Returns the 204's position."""
    data = str(partial / f"{upload}.bin")
    state = str(partial / f"{upload}.state")
    synced = recorder.index(
        lambda e: e.kind == "fdatasync" and e.path == data, "fdatasync of the data", after=start
    )
    committed = recorder.index(
        lambda e: e.kind in ("fsync", "fdatasync") and e.path == state,
        "sync of the new offset",
        after=start,
    )
    assert synced < committed, (
        f"the offset was committed (event {committed}) before the data was synced "
        f"(event {synced})\n{recorder.dump()}"
    )
    acked = recorder.index(lambda e: e.kind == "respond", "the response", after=start)
    assert recorder.events[acked].target == "PATCH 204", recorder.dump()
    assert acked > committed, (
        f"204 sent (event {acked}) before the offset was durable (event {committed})\n"
        + recorder.dump()
    )
    return acked


async def test_receiver_syncs_data_then_commits_offset_then_answers(
    tmp_path: Path, recorder: SyncRecorder, responses_recorded: None
):
    data = bytes(range(256)) * 1024  # 256 KiB in two chunks: one partial, one completing
    async with running_receiver(tmp_path) as rx, aiohttp.ClientSession() as session:
        tus = Tus(session, rx.url)
        created = await tus.create(len(data))
        assert created.status == 201
        location = created.headers["Location"]
        upload = upload_id_of(location)
        partial = rx.store_dir / "partial"
        complete = rx.store_dir / "complete"

        mark = len(recorder.events) - 1
        assert (await tus.patch(location, 0, data[:100_000])).status == 204
        _check_chunk_order(recorder, partial, upload, mark)

        mark = len(recorder.events) - 1
        assert (await tus.patch(location, 100_000, data[100_000:])).status == 204
        acked = _check_chunk_order(recorder, partial, upload, mark)
        # Completion: the sidecar (with the receipt) is renamed into place and complete/ synced
        # before the final 204 carries the receipt.
        sidecar = str(complete / f"{upload}.json")
        named = recorder.index(
            lambda e: e.kind == "rename" and e.target == sidecar, "the sidecar renamed", after=mark
        )
        completed = recorder.index(
            lambda e: e.kind == "fsync" and e.path == str(complete),
            "fsync of complete/",
            after=named,
        )
        assert completed < acked, (
            f"receipt sent before the completion was durable\n{recorder.dump()}"
        )
        assert rx.stored_bytes(upload) == data


# -- the dock: journal durability, CONFIRMED before the unlink, unlink + dir fsync before WIPED --


@pytest.fixture
def keys(tmp_path: Path) -> KeygenResult:
    return keygen(tmp_path / "keys")


@pytest.fixture
async def receiver(tmp_path: Path, keys: KeygenResult) -> AsyncIterator[CountingReceiver]:
    running = await start_counting_receiver(tmp_path / "store", keys)
    yield running
    await running.stop()


@pytest.fixture
def journals(monkeypatch: pytest.MonkeyPatch, recorder: SyncRecorder) -> list[Journal]:
    """Every Journal the daemon opens, its COMMITs recorded."""
    opened: list[Journal] = []
    real_open = Journal.open.__func__  # type: ignore[attr-defined]

    def open_observed(cls: type[Journal], state_dir: Path) -> Journal:
        journal = real_open(cls, state_dir)
        recorder.watch_connection(journal._conn)
        opened.append(journal)
        return journal

    monkeypatch.setattr(Journal, "open", classmethod(open_observed))
    return opened


async def test_journal_is_synchronous_full_and_wipe_follows_durable_records(
    tmp_path: Path,
    recorder: SyncRecorder,
    journals: list[Journal],
    receiver: CountingReceiver,
    keys: KeygenResult,
):
    recipient = keys.age_recipient.read_text().strip()
    data = dock_config(tmp_path, receiver.url, recipient, public_key=keys.server_public_key)
    (tmp_path / "bays").mkdir()
    daemon = Daemon(settings_from(tmp_path, data))
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        make_bay(tmp_path / "bays", "bay-1", "CAM-1", {"DCIM/100/A.MP4": 300_001})
        await wait_for(
            lambda: [r["state"] for r in journal_rows(tmp_path / "state")] == ["WIPED"],
            what="the clip wiped",
        )
        assert len(journals) == 1
        conn: sqlite3.Connection = journals[0]._conn
        # Read back from the live connection: what the daemon really runs with.
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == SQLITE_SYNCHRONOUS_FULL
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)

    clip = (tmp_path / "bays" / "bay-1" / "DCIM/100/A.MP4").resolve()
    confirmed = recorder.index(
        lambda e: e.kind == "commit" and e.target == "CONFIRMED", "CONFIRMED committed"
    )
    unlinked = recorder.index(lambda e: e.kind == "unlink" and e.path == str(clip), "the unlink")
    assert confirmed < unlinked, (
        f"the clip was unlinked (event {unlinked}) before CONFIRMED was committed "
        f"(event {confirmed})\n{recorder.dump()}"
    )
    dir_synced = recorder.index(
        lambda e: e.kind == "fsync" and e.path == str(clip.parent),
        "fsync of the clip's directory after the unlink",
        after=unlinked,
    )
    wiped = recorder.index(lambda e: e.kind == "commit" and e.target == "WIPED", "WIPED committed")
    assert dir_synced < wiped, (
        f"WIPED committed (event {wiped}) before the unlink was durable (event {dir_synced})\n"
        + recorder.dump()
    )


def test_a_journal_dockd_creates_is_durable_before_it_is_used(tmp_path, monkeypatch):
    """Found by the power-loss tests: a state_dir that dockd created itself (no systemd
    StateDirectory=) could vanish in a power cut with the journal in it."""
    from dockd.journal import Journal

    recorder = SyncRecorder().install(monkeypatch)
    state_dir = tmp_path / "var" / "lib" / "dockd"
    Journal.open(state_dir).close()
    synced = [e.path for e in recorder.events if e.kind == "fsync"]
    for directory in (tmp_path, tmp_path / "var", tmp_path / "var" / "lib", state_dir):
        assert str(directory) in synced, f"{directory} not fsync'd after dockd created it"
