""" "SAFE TO REMOVE" is never said, and nothing is wiped, while evidence is not stored (issue 11).

Each test plays the adversary at the worst moment against a real `Daemon` with a bay folder and
an in-memory uploader that signs real receipts (the camera is the adversary here; the receipt-key
test keeps the real reference receiver), and checks what a court cares about: the bytes the server
holds decrypt (with the real `age` CLI) to what the camera held, and nothing left the camera
before that.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from dockd import discovery as discovery_module
from dockd.app import Daemon
from dockd.custody.attest import Attestation
from support.adversary import rewrite_in_place
from support.dock import (
    decrypt_sha256,
    dock_config,
    journal_rows,
    make_bay,
    settings_from,
    wait_for,
)
from support.fake_uploader import stored_objects_of
from support.running_daemon import RunningDaemon, start_configured

SETTLE = 0.3


async def _start(tmp_path: Path, server, keys, recipient: str, **overrides) -> RunningDaemon:
    data = dock_config(
        tmp_path, server.url, recipient, public_key=keys.server_public_key, **overrides
    )
    data["discovery"]["settle_time"] = SETTLE
    return await start_configured(tmp_path, data, server)


def _rows(tmp_path: Path) -> list[dict]:
    return journal_rows(tmp_path / "state")


def _stored_digests(server, keys, tmp_path: Path) -> list[str]:
    return [
        decrypt_sha256(o["data_path"], keys.age_identity)
        for o in stored_objects_of(server, tmp_path / "server-copy")
    ]


async def _safe(running: RunningDaemon, serial: str = "CAM-1") -> None:
    await wait_for(
        lambda: serial in running.daemon.offloader.views and running.status(serial).safe_to_remove,
        what=f"{serial} safe to remove",
    )


# ---- 1. hostile dates: no scan task dies, nothing is skipped silently ---------------------------


async def test_mtime_past_2262_and_sidecar_year_9999_are_offloaded(tmp_path, fake, keys, recipient):
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        bays = tmp_path / "bays"
        staging = tmp_path / "staging"
        digests = make_bay(
            staging,
            "bay-1",
            "CAM-1",
            {"DCIM/FAR.MP4": 50_000, "DCIM/SIDE.MP4": 40_000},
            sidecars={"DCIM/SIDE.json": {"recorded_at": "9999-12-31T23:59:59-14:00"}},
        )
        far = staging / "bay-1/DCIM/FAR.MP4"
        # ext4 stores up to 2446: past SQLite's int64 nanoseconds (year 2262).
        os.utime(far, ns=(0, 14_000_000_000 * 10**9))
        assert os.stat(far).st_mtime_ns > 2**63  # the file system really holds it
        os.rename(staging / "bay-1", bays / "bay-1")
        await _safe(running)
        rows = {bytes(r["rel_path"]): r for r in _rows(tmp_path)}
        assert {r["state"] for r in rows.values()} == {"WIPED"}
        assert rows[b"DCIM/FAR.MP4"]["recorded_at"] == "2413-08-23T00:53:20Z"
        assert rows[b"DCIM/FAR.MP4"]["mtime_ns"] == 2**63 - 1  # saturated for SQLite's int64
        assert '"mtime_ns_raw": "14000000000000000000"' in rows[b"DCIM/FAR.MP4"]["metadata"]
        assert "recorded_at_raw" in rows[b"DCIM/SIDE.MP4"]["metadata"]  # the raw value is kept
        assert sorted(_stored_digests(fake, keys, tmp_path)) == sorted(digests.values())
    finally:
        await running.close()


async def test_any_scan_failure_is_a_state_with_a_reason_and_a_retry(
    tmp_path, fake, keys, recipient, monkeypatch
):
    real_scan = discovery_module.scan_camera
    failures = {"left": 3}

    def flaky_scan(*args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("bug triggered by hostile input")
        return real_scan(*args, **kwargs)

    monkeypatch.setattr(discovery_module, "scan_camera", flaky_scan)
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        make_bay(tmp_path / "bays", "bay-1", "CAM-1", {"DCIM/A.MP4": 10_000})
        status = await wait_for(
            lambda: (
                "CAM-1" in running.daemon.offloader.views
                and running.status().why_not
                and "internal error while scanning" in running.status().why_not
                and running.status()
            ),
            what="scan error shown",
        )
        assert not status.safe_to_remove and "RuntimeError" in status.why_not
        scrape = running.daemon.metrics.scrape().decode()
        assert 'dockd_camera_scan_errors_total{reason="internal_error"}' in scrape
        await _safe(running)  # the scan is retried and the clip offloaded
        assert [r["state"] for r in _rows(tmp_path)] == ["WIPED"]
    finally:
        await running.close()


async def test_a_clip_that_cannot_be_recorded_keeps_the_camera_not_safe(
    tmp_path, fake, keys, recipient, monkeypatch
):
    real_record = discovery_module.Discovery._record

    def record(self, view, model, found):
        if found.rel_path == b"DCIM/BAD.MP4":
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return real_record(self, view, model, found)

    monkeypatch.setattr(discovery_module.Discovery, "_record", record)
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        make_bay(tmp_path / "bays", "bay-1", "CAM-1", {"DCIM/BAD.MP4": 1000, "DCIM/OK.MP4": 1000})
        await wait_for(
            lambda: [r["state"] for r in _rows(tmp_path)] == ["WIPED"], what="the good clip wiped"
        )
        await asyncio.sleep(SETTLE * 3)
        status = running.status()
        assert not status.safe_to_remove
        assert "not recorded" in status.why_not and "BAD.MP4" in status.why_not
        assert (tmp_path / "bays/bay-1/DCIM/BAD.MP4").exists()
    finally:
        await running.close()


# ---- 2. an in-place rewrite after confirmation is never wiped under the old receipt --------------


async def test_in_place_rewrite_with_restored_mtime_is_not_wiped_unstored(
    tmp_path, fake, keys, recipient, monkeypatch
):
    names = [f"DCIM/R{i}.MP4" for i in range(4)]
    new_digests: dict[bytes, str] = {}
    real_attest = Attestation.attest

    async def rewrite_then_attest(attestation, clip):
        # The adversary strikes between the durable confirmation and the wipe: same inode, same
        # size, new bytes, mtime restored to the nanosecond. Only ctime can tell.
        path = tmp_path / "bays/bay-1" / os.fsdecode(clip.rel_path)
        if clip.rel_path not in new_digests:
            size = os.stat(path).st_size
            data = (hashlib.sha256(clip.rel_path).digest() * (size // 32 + 1))[:size]
            rewrite_in_place(path, data)
            new_digests[clip.rel_path] = hashlib.sha256(data).hexdigest()
        await real_attest(attestation, clip)

    monkeypatch.setattr(Attestation, "attest", rewrite_then_attest)
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        originals = make_bay(tmp_path / "bays", "bay-1", "CAM-1", dict.fromkeys(names, 30_000))
        # Every rewritten version reaches the server, and only then leaves the camera.
        await wait_for(
            lambda: (
                len(new_digests) == 4
                and all(not (tmp_path / "bays/bay-1" / n).exists() for n in names)
            ),
            what="rewritten versions offloaded and wiped",
        )
        stored = _stored_digests(fake, keys, tmp_path)
        for name in names:
            assert originals[name] in stored
            assert new_digests[name.encode()] in stored
        rows = _rows(tmp_path)
        first_versions = [r for r in rows if r["plaintext_sha256"] in originals.values()]
        assert {r["state"] for r in first_versions} == {"QUARANTINED"}
        assert all("not the one uploaded" in r["reason"] for r in first_versions)
    finally:
        await running.close()


# ---- 3. a writer that pauses longer than settle_time --------------------------------------------


async def test_paused_writer_is_never_settled_nor_wiped(tmp_path, fake, keys, recipient):
    running = await _start(tmp_path, fake, keys, recipient)
    parts = [os.urandom(20_000) for _ in range(3)]
    path = tmp_path / "bays/bay-1/DCIM/LIVE.MP4"
    done = threading.Event()
    seen_writing = False

    def writer() -> None:
        with open(path, "wb") as handle:
            for part in parts:
                handle.write(part)
                handle.flush()
                time.sleep(2 * SETTLE * 3)  # pauses far longer than settle_time, file open
        done.set()

    try:
        staging = tmp_path / "staging"
        make_bay(staging, "bay-1", "CAM-1", {"notes.txt": b"not a clip"})
        (staging / "bay-1/DCIM").mkdir()
        os.rename(staging / "bay-1", tmp_path / "bays/bay-1")
        thread = threading.Thread(target=writer)
        thread.start()
        while not done.is_set():
            await asyncio.sleep(0.1)
            assert _rows(tmp_path) == [], "a file open for writing was recorded"
            if "CAM-1" in running.daemon.offloader.views:
                status = running.status()
                assert not status.safe_to_remove or not path.exists()
                seen_writing = seen_writing or "open for writing" in (status.why_not or "")
        thread.join()
        assert seen_writing, "the status never said the clip is open for writing"
        await _safe(running)
        full = hashlib.sha256(b"".join(parts)).hexdigest()
        assert _stored_digests(fake, keys, tmp_path) == [full]
        assert [r["size"] for r in _rows(tmp_path)] == [60_000]
    finally:
        await running.close()


# ---- 5. data left under another name ---------------------------------------------------------------


async def test_hard_linked_clip_is_uploaded_but_not_wiped(tmp_path, fake, keys, recipient):
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        staging = tmp_path / "staging"
        digests = make_bay(staging, "bay-1", "CAM-1", {"DCIM/A.MP4": 30_000})
        os.link(staging / "bay-1/DCIM/A.MP4", staging / "bay-1/DCIM/other-name.bin")
        os.rename(staging / "bay-1", tmp_path / "bays/bay-1")
        rows = await wait_for(
            lambda: [r for r in _rows(tmp_path) if r["state"] == "QUARANTINED"],
            what="quarantined hard link",
        )
        assert "hard links" in rows[0]["reason"] and "not wiped" in rows[0]["reason"]
        assert rows[0]["confirmation"] is not None  # stored and confirmed first
        assert _stored_digests(fake, keys, tmp_path) == [digests["DCIM/A.MP4"]]
        assert (tmp_path / "bays/bay-1/DCIM/A.MP4").exists()
        assert not running.status().safe_to_remove
        # The operator removes the other name and releases the clip: now it is wiped.
        os.unlink(tmp_path / "bays/bay-1/DCIM/other-name.bin")
        running.daemon.offloader.ctx.journal.release(rows[0]["id"], actor="test")
        running.daemon.offloader.wake()
        await _safe(running)
        assert not (tmp_path / "bays/bay-1/DCIM/A.MP4").exists()
    finally:
        await running.close()


# ---- operator truth ---------------------------------------------------------------------------------


async def test_receipt_signed_by_another_key_says_key_mismatch(tmp_path, receiver, keys, recipient):
    from dockd.crypto.keys import keygen

    other = keygen(tmp_path / "other-keys")
    data = dock_config(tmp_path, receiver.url, recipient, public_key=other.server_public_key)
    (tmp_path / "bays").mkdir()
    running = RunningDaemon(Daemon(settings_from(tmp_path, data)))
    await asyncio.wait_for(running.daemon.ready.wait(), 10)
    try:
        make_bay(tmp_path / "bays", "bay-1", "CAM-1", {"DCIM/A.MP4": 5000})
        rows = await wait_for(
            lambda: [r for r in _rows(tmp_path) if r["state"] == "UPLOADED" and r["reason"]],
            what="unconfirmed clip",
        )
        assert rows[0]["reason"].startswith(
            "receipt key mismatch: check [server] receipt_public_key"
        )
        assert (tmp_path / "bays/bay-1/DCIM/A.MP4").exists()
        assert "receipt key mismatch" in running.status().why_not
    finally:
        await running.close()


@pytest.mark.root
async def test_read_only_camera_says_so_and_keeps_the_clip(tmp_path, fake, keys, recipient):
    if os.geteuid() != 0:
        pytest.skip("needs root for a read-only bind mount")
    import subprocess

    staging = tmp_path / "staging"
    make_bay(staging, "bay-1", "CAM-1", {"DCIM/A.MP4": 5000})
    (tmp_path / "bays").mkdir()
    target = tmp_path / "bays/bay-1"
    target.mkdir()
    subprocess.run(["mount", "--bind", str(staging / "bay-1"), str(target)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], check=True)
        running = await _start(tmp_path, fake, keys, recipient)
        try:
            rows = await wait_for(
                lambda: [r for r in _rows(tmp_path) if r["state"] == "QUARANTINED"],
                what="confirmed clip that cannot be wiped",
            )
            assert rows[0]["reason"].startswith("camera read-only")
            assert rows[0]["confirmation"] is not None  # stored and confirmed, just not wiped
            assert "camera read-only" in running.status().why_not
            assert (target / "DCIM/A.MP4").exists()
        finally:
            await running.close()
    finally:
        subprocess.run(["umount", str(target)], check=False)


# ---- 6. the dock's own disk full ----------------------------------------------------------------


@pytest.mark.root
async def test_dock_disk_full_is_a_named_state_without_a_hot_loop_and_recovers(
    tmp_path, fake, keys, recipient, monkeypatch
):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs for the state directory")
    import subprocess

    from dockd import dockhealth

    monkeypatch.setattr(dockhealth, "FIRST_BACKOFF", 0.5)
    monkeypatch.setattr(dockhealth, "MAX_BACKOFF", 2.0)
    state_fs = tmp_path / "state"
    state_fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(state_fs)], check=True)
    try:
        running = await _start(tmp_path, fake, keys, recipient)
        try:
            filler = state_fs / "filler"
            with open(filler, "wb") as handle:  # the disk fills up under a running dock
                try:
                    while True:
                        handle.write(b"\0" * 65536)
                        handle.flush()
                except OSError:
                    pass
            digests = make_bay(
                tmp_path / "bays", "bay-1", "CAM-1", {f"DCIM/{i}.MP4": 20_000 for i in range(3)}
            )
            status = await wait_for(
                lambda: (
                    "CAM-1" in running.daemon.offloader.views
                    and "dock disk full" in (running.status().why_not or "")
                    and running.status()
                ),
                what="dock disk full shown",
            )
            assert str(state_fs) in status.why_not and "MB free" in status.why_not
            await asyncio.sleep(5)  # five seconds of a full disk: a bounded number of events
            metrics = running.daemon.metrics
            assert metrics.storage_ok._value.get() == 0
            failures = metrics.storage_failures._value.get()
            assert 1 <= failures <= 12, failures  # back-off, not 4,148 events in 12 s
            assert metrics.clips_failed.labels("internal_error")._value.get() == 0
            assert all((tmp_path / "bays/bay-1" / rel).exists() for rel in digests)
            filler.unlink()  # space is back: recovery without a restart
            await _safe(running)
            assert metrics.storage_ok._value.get() == 1
            assert sorted(_stored_digests(fake, keys, tmp_path)) == sorted(digests.values())
            assert not any("internal error" in (r["reason"] or "") for r in _rows(tmp_path))
        finally:
            await running.close()
    finally:
        subprocess.run(["umount", "-l", str(state_fs)], check=False)
