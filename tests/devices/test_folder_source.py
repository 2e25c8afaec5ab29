"""FolderSource on a real bays directory, with watchdog and a real event loop.

Most tests poll only once an hour, so an event arriving at all proves watchdog woke the source.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import structlog
from dockd.devices.folder import FolderSource
from dockd.devices.source import DockedCamera

HOUR = 3600.0
WAIT = 10.0  # generous upper bound for one event; tests normally see it in milliseconds


class RecordedEvents:
    """CameraEvents backed by an asyncio queue of ("docked" | "undocked", camera)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, DockedCamera]] = asyncio.Queue()

    def docked(self, camera: DockedCamera) -> None:
        self.queue.put_nowait(("docked", camera))

    def undocked(self, camera: DockedCamera) -> None:
        self.queue.put_nowait(("undocked", camera))

    async def next(self) -> tuple[str, DockedCamera]:
        return await asyncio.wait_for(self.queue.get(), WAIT)


def write_identity(bay: Path, serial: str, model: str = "BWC-9", **extra: str) -> None:
    """Write camera.json atomically, as a well-behaved dock writer does."""
    staging = bay / ".camera.json.tmp"
    staging.write_text(json.dumps({"serial": serial, "model": model, **extra}))
    os.rename(staging, bay / "camera.json")


def make_bay(bays: Path, name: str, serial: str | None = None, **extra: str) -> Path:
    bay = bays / name
    bay.mkdir()
    (bay / "DCIM").mkdir()
    if serial is not None:
        write_identity(bay, serial, **extra)
    return bay


@pytest.fixture
def bays(tmp_path: Path) -> Path:
    path = tmp_path / "bays"
    path.mkdir()
    return path


@contextlib.asynccontextmanager
async def running(source: FolderSource) -> AsyncIterator[RecordedEvents]:
    events = RecordedEvents()
    task = asyncio.create_task(source.run(events))
    try:
        yield events
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def source_for(bays: Path, poll_interval: float = HOUR) -> FolderSource:
    return FolderSource(bays, poll_interval=poll_interval, settle_time=0.05)


@contextlib.contextmanager
def captured_logs() -> Iterator[list[dict[str, object]]]:
    with structlog.testing.capture_logs() as logs:
        yield logs


async def wait_until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_bay_present_at_start_is_docked(bays: Path) -> None:
    make_bay(bays, "bay 3", "SN-0001", officer="PC 4711")
    async with running(source_for(bays)) as events:
        kind, camera = await events.next()
    assert kind == "docked"
    assert (camera.serial, camera.model, camera.officer) == ("SN-0001", "BWC-9", "PC 4711")
    assert camera.bay == "bay 3"
    assert camera.root == bays / "bay 3"
    assert len(camera.session) == 16 and int(camera.session, 16) >= 0


async def test_bay_arriving_later_is_docked_by_watchdog(bays: Path) -> None:
    async with running(source_for(bays)) as events:
        staging = make_bay(bays, ".incoming", "SN-0002")
        os.rename(staging, bays / "bay 1")
        kind, camera = await events.next()
        assert (kind, camera.serial, camera.bay) == ("docked", "SN-0002", "bay 1")
        assert camera.officer is None


async def test_identity_written_after_the_directory_docks_then(bays: Path) -> None:
    with captured_logs() as logs:
        async with running(source_for(bays)) as events:
            bay = make_bay(bays, "bay 2")
            (bay / "DCIM" / "CLIP.MP4").write_bytes(b"clip")
            # Only once the source has seen the empty bay does the identity arrive, so it is the
            # bay's own watch that must notice it.
            await wait_until(lambda: any(entry["event"] == "bay.appeared" for entry in logs))
            assert events.queue.empty()
            write_identity(bay, "SN-0003")
            kind, camera = await events.next()
            assert (kind, camera.serial, camera.bay) == ("docked", "SN-0003", "bay 2")


async def test_removing_the_bay_or_its_identity_undocks(bays: Path) -> None:
    first = make_bay(bays, "bay 1", "SN-A")
    second = make_bay(bays, "bay 2", "SN-B")
    async with running(source_for(bays)) as events:
        arrivals = [await events.next(), await events.next()]
        assert [kind for kind, _ in arrivals] == ["docked", "docked"]
        sessions = {camera.serial: camera.session for _, camera in arrivals}
        assert set(sessions) == {"SN-A", "SN-B"}

        shutil.rmtree(first)
        kind, camera = await events.next()
        assert (kind, camera.serial, camera.session) == ("undocked", "SN-A", sessions["SN-A"])

        os.unlink(second / "camera.json")
        kind, camera = await events.next()
        assert (kind, camera.serial, camera.session) == ("undocked", "SN-B", sessions["SN-B"])


async def test_a_new_serial_in_the_bay_undocks_the_old_and_docks_the_new(bays: Path) -> None:
    bay = make_bay(bays, "bay 4", "SN-OLD")
    async with running(source_for(bays)) as events:
        _, old = await events.next()
        write_identity(bay, "SN-NEW")
        kind, camera = await events.next()
        assert (kind, camera.serial, camera.session) == ("undocked", "SN-OLD", old.session)
        kind, new = await events.next()
        assert (kind, new.serial) == ("docked", "SN-NEW")
        assert new.session != old.session


async def test_redocking_the_same_camera_is_a_new_session(bays: Path) -> None:
    bay = make_bay(bays, "bay 5", "SN-SAME")
    async with running(source_for(bays)) as events:
        _, first = await events.next()
        os.unlink(bay / "camera.json")
        assert (await events.next())[0] == "undocked"
        write_identity(bay, "SN-SAME")
        kind, second = await events.next()
        assert (kind, second.serial) == ("docked", "SN-SAME")
        assert second.session != first.session


async def test_symlinked_bay_is_ignored(bays: Path, tmp_path: Path) -> None:
    elsewhere = make_bay(tmp_path, "elsewhere", "SN-LINKED")
    old = 1_000_000_000  # settled long ago: it would dock at once if the link were followed
    os.utime(elsewhere / "camera.json", (old, old))
    with captured_logs() as logs:
        async with running(source_for(bays)) as events:
            os.symlink(elsewhere, bays / "bay 6")
            make_bay(bays, "bay 7", "SN-REAL")
            kind, camera = await events.next()
            assert (kind, camera.serial) == ("docked", "SN-REAL")
            assert events.queue.empty()
    assert any(
        entry["event"] == "bay.symlink_ignored" and entry["bay"] == "bay 6" for entry in logs
    )


async def test_invalid_identity_is_logged_once_then_fixed(bays: Path) -> None:
    bay = make_bay(bays, "bay 8")
    with captured_logs() as logs:

        def invalid_logs() -> list[dict[str, object]]:
            return [entry for entry in logs if entry["event"] == "bay.invalid_identity"]

        async with running(source_for(bays)) as events:
            (bay / "camera.json").write_text('{"serial": "SN\\n1", "model": "BWC-9"}')
            await wait_until(lambda: len(invalid_logs()) == 1)
            assert "serial" in str(invalid_logs()[0]["error"])
            # Each arrival is another full look at every bay, bay 8 included.
            for other in ("bay 10", "bay 11"):
                make_bay(bays, other, f"SN-{other}")
                assert (await events.next())[1].bay == other
            assert len(invalid_logs()) == 1

            write_identity(bay, "SN-FIXED")
            kind, camera = await events.next()
            assert (kind, camera.serial) == ("docked", "SN-FIXED")


async def test_bays_dir_created_after_start_is_picked_up_by_polling(tmp_path: Path) -> None:
    bays = tmp_path / "late-bays"
    async with running(source_for(bays, poll_interval=0.05)) as events:
        staging = tmp_path / "staging"
        staging.mkdir()
        make_bay(staging, "bay 9", "SN-LATE")
        os.rename(staging, bays)
        kind, camera = await events.next()
        assert (kind, camera.serial, camera.root) == ("docked", "SN-LATE", bays / "bay 9")


async def test_a_failing_event_handler_does_not_stop_the_source(bays: Path) -> None:
    class Flaky(RecordedEvents):
        def docked(self, camera: DockedCamera) -> None:
            super().docked(camera)
            raise RuntimeError("pipeline bug")

    events = Flaky()
    task = asyncio.create_task(source_for(bays).run(events))
    try:
        make_bay(bays, "bay 1", "SN-1")
        assert (await events.next())[1].serial == "SN-1"
        make_bay(bays, "bay 2", "SN-2")
        assert (await events.next())[1].serial == "SN-2"
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_cancelling_the_source_stops_watchdog_threads(bays: Path) -> None:
    def watchdog_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if type(t).__module__.startswith("watchdog")]

    make_bay(bays, "bay 1", "SN-1")
    async with running(source_for(bays)) as events:
        await events.next()
        assert watchdog_threads()
    assert watchdog_threads() == []
