"""The offload pipeline end to end, against the real reference receiver on loopback or, where
the test is about the camera and the dock rather than the wire, the in-memory fake uploader.

Each test asserts what matters to a court and an operator: what the server stored decrypts (with
the real age CLI) to exactly the camera's bytes, and nothing leaves the camera before that is proven.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from dockd.app import Daemon
from dockd.journal import State
from support.dock import (
    decrypt_sha256,
    dock_config,
    journal_rows,
    make_bay,
    settings_from,
    stored_objects,
    wait_for,
)
from support.fake_uploader import stored_objects_of
from support.running_daemon import RunningDaemon, start_daemon


def _states(state_dir: Path) -> dict[str, str]:
    return {
        bytes(r["rel_path"]).decode(errors="replace"): r["state"] for r in journal_rows(state_dir)
    }


_start = start_daemon


async def test_bay_to_wiped_and_decrypts_to_the_original(tmp_path, receiver, keys, recipient):
    running = await _start(tmp_path, receiver, keys, recipient)
    try:
        clips = {
            "DCIM/100/A.MP4": 700_001,  # several chunks, off chunk and STREAM boundaries
            "DCIM/100/B.MP4": b"",  # zero-byte clips are evidence too
            "DCIM/101/C.MP4": 65_536,  # exactly one STREAM chunk
            "DCIM/101/D.MP4": 262_144 * 2,  # exactly two PATCH chunks
        }
        digests = make_bay(
            tmp_path / "bays",
            "bay-1",
            "CAM-1",
            clips,
            sidecars={"DCIM/101/C.json": {"evidence": True, "officer": "PC 1"}},
        )
        state_dir = tmp_path / "state"
        await wait_for(
            lambda: set(_states(state_dir).values()) == {"WIPED"} and len(_states(state_dir)) == 4,
            what="all clips wiped",
        )
        for rel in clips:
            assert not (tmp_path / "bays" / "bay-1" / rel).exists(), f"{rel} should be wiped"
        assert (
            tmp_path / "bays" / "bay-1" / "DCIM/101/C.json"
        ).exists()  # not a clip: never touched
        stored = stored_objects(receiver.store)
        assert sorted(o["metadata"]["path"] for o in stored) == sorted(clips)
        for obj in stored:
            rel = obj["metadata"]["path"]
            assert decrypt_sha256(obj["data_path"], keys.age_identity) == digests[rel]
            assert obj["metadata"]["sha256"] == digests[rel]  # the custody hash travels with it
            assert obj["metadata"]["camera"] == "CAM-1" and obj["metadata"]["bay"] == "bay-1"
        flagged = next(o for o in stored if o["metadata"]["path"] == "DCIM/101/C.MP4")
        assert (
            flagged["metadata"]["evidence"] == "true" and flagged["metadata"]["officer"] == "PC 1"
        )
        rows = journal_rows(state_dir)
        assert all(r["sealed_secrets"] is None for r in rows)  # key material erased after confirm
        # WIPED is journalled before the clip's task returns: wait for the bay's verdict itself.
        await wait_for(
            lambda: running.daemon.offloader.status("CAM-1").safe_to_remove,
            what="CAM-1 safe to remove",
        )
    finally:
        await running.close()


async def test_receiver_down_nothing_wiped_then_resumes(tmp_path, fake, keys, recipient):
    fake.unavailable = True
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        digests = make_bay(tmp_path / "bays", "bay-1", "CAM-1", {"DCIM/A.MP4": 400_000})
        state_dir = tmp_path / "state"
        rows = await wait_for(
            lambda: [r for r in journal_rows(state_dir) if r["state"] == "FAILED"],
            what="FAILED clip",
        )
        assert "503" in rows[0]["reason"] or "unavailable" in rows[0]["reason"].lower()
        assert (tmp_path / "bays/bay-1/DCIM/A.MP4").exists()
        # Between tries the camera says why; while a retry is in flight it says "offloading".
        status = await wait_for(
            lambda: (
                (s := running.daemon.offloader.status("CAM-1"))
                and "FAILED" in (s.why_not or "")
                and s
            ),
            what="the camera's reason naming the failed clip",
        )
        assert not status.safe_to_remove
        fake.unavailable = False
        await wait_for(
            lambda: _states(state_dir) == {"DCIM/A.MP4": "WIPED"}, what="wipe after recovery"
        )
        [obj] = stored_objects_of(fake, tmp_path / "server-copy")
        assert decrypt_sha256(obj["data_path"], keys.age_identity) == digests["DCIM/A.MP4"]
    finally:
        await running.close()


async def test_unplug_mid_upload_nothing_wiped_resumes_on_return(tmp_path, fake, keys, recipient):
    fake.block_delay = 0.05  # a slow link, so the unplug lands mid-upload
    running = await _start(tmp_path, fake, keys, recipient, chunk_size=65_536 * 2)
    try:
        size = 3_000_000
        digests = make_bay(tmp_path / "bays", "bay-1", "CAM-1", {"DCIM/A.MP4": size})
        await wait_for(lambda: fake.blocks >= 3, what="upload under way")
        aside = tmp_path / "unplugged"
        os.rename(tmp_path / "bays" / "bay-1", aside)  # the camera leaves the dock
        await wait_for(lambda: "CAM-1" not in running.daemon.offloader.views, what="undock")
        acknowledged_before = sum(fake.received().values())
        assert (aside / "DCIM/A.MP4").stat().st_size == size  # untouched
        assert _states(tmp_path / "state")["DCIM/A.MP4"] in ("UPLOADING", "FAILED")
        fake.block_delay = 0
        os.rename(aside, tmp_path / "bays" / "bay-1")  # docked again
        await wait_for(lambda: _states(tmp_path / "state") == {"DCIM/A.MP4": "WIPED"}, what="wipe")
        [obj] = stored_objects_of(fake, tmp_path / "server-copy")
        assert decrypt_sha256(obj["data_path"], keys.age_identity) == digests["DCIM/A.MP4"]
        assert len(fake.received()) == 1  # resumed the same upload, never a new one
        resent = sum(fake.received().values()) - obj["length"]
        assert resent <= 65_536 * 2, f"resume re-sent {resent} bytes"
        assert acknowledged_before > 0
    finally:
        await running.close()


async def test_hostile_camera_files_are_skipped_and_never_touched(tmp_path, fake, keys, recipient):
    outside = tmp_path / "outside.MP4"
    outside.write_bytes(b"not the camera's")
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        bays = tmp_path / "bays"
        staging = bays / ".bay-1.staging" / "DCIM"
        staging.mkdir(parents=True)
        os.symlink(outside, staging / "LINK.MP4")
        os.symlink("/etc", staging / "ETC")
        os.symlink(tmp_path, staging / "UP")
        os.mkfifo(staging / "FIFO.MP4")
        weird = os.fsencode(str(staging)) + b"/new\nline\xff.MP4"
        with open(weird, "wb") as handle:
            handle.write(b"odd name, real clip")
        (staging / "GOOD.MP4").write_bytes(b"x" * 1000)
        (staging.parent / "camera.json").write_text('{"serial": "CAM-H", "model": "cam"}')
        os.rename(staging.parent, bays / "bay-1")
        state_dir = tmp_path / "state"
        await wait_for(
            lambda: len(_states(state_dir)) == 2 and set(_states(state_dir).values()) == {"WIPED"},
            what="the two real clips wiped",
        )
        assert outside.read_bytes() == b"not the camera's"
        assert (bays / "bay-1/DCIM/LINK.MP4").is_symlink() and (
            bays / "bay-1/DCIM/FIFO.MP4"
        ).exists()
        paths = {bytes(r["rel_path"]) for r in journal_rows(state_dir)}
        assert paths == {b"DCIM/GOOD.MP4", b"DCIM/new\nline\xff.MP4"}
        assert len(stored_objects_of(fake, tmp_path / "server-copy")) == 2
    finally:
        await running.close()


async def test_camera_file_replaced_after_upload_is_not_wiped(tmp_path, fake, keys, recipient):
    fake.block_delay = 0.05
    running = await _start(tmp_path, fake, keys, recipient, chunk_size=65_536 * 2)
    try:
        make_bay(tmp_path / "bays", "bay-1", "CAM-1", {"DCIM/A.MP4": 1_000_000})
        clip = tmp_path / "bays/bay-1/DCIM/A.MP4"
        await wait_for(lambda: fake.blocks >= 2, what="upload under way")
        replacement = clip.with_name("new.tmp")
        replacement.write_bytes(b"y" * 1_000_000)
        os.rename(replacement, clip)  # a new inode with the same name and size
        fake.block_delay = 0
        rows = await wait_for(
            lambda: [r for r in journal_rows(tmp_path / "state") if r["state"] == "QUARANTINED"],
            what="quarantine",
        )
        assert "changed" in rows[0]["reason"] or "not the one" in rows[0]["reason"]
        assert clip.read_bytes() == b"y" * 1_000_000  # never wiped
        assert not running.daemon.offloader.status("CAM-1").safe_to_remove
    finally:
        await running.close()


@pytest.mark.parametrize("policy", ["receipt", "offset"])
async def test_confirm_policy_against_third_party_tus_server(tmp_path, keys, recipient, policy):
    from support.node_peers import TusNodeServer, ensure_node_peers

    ensure_node_peers()
    with TusNodeServer(tmp_path / "tus-store") as server:
        data = dock_config(
            tmp_path, server.url, recipient, public_key=keys.server_public_key, confirm=policy
        )
        (tmp_path / "bays").mkdir()
        running = RunningDaemon(Daemon(settings_from(tmp_path, data)))
        try:
            await asyncio.wait_for(running.daemon.ready.wait(), 10)
            make_bay(tmp_path / "bays", "bay-1", "CAM-1", {"DCIM/A.MP4": 300_000})
            state_dir = tmp_path / "state"
            if policy == "offset":
                await wait_for(lambda: _states(state_dir) == {"DCIM/A.MP4": "WIPED"}, what="wipe")
            else:
                rows = await wait_for(
                    lambda: [
                        r
                        for r in journal_rows(state_dir)
                        if r["state"] == State.UPLOADED and r["reason"]
                    ],
                    what="uploaded but unconfirmed",
                )
                assert "no signed receipt" in rows[0]["reason"]
                await asyncio.sleep(0.5)  # give a wrong wipe every chance to happen
                assert (tmp_path / "bays/bay-1/DCIM/A.MP4").exists()
                assert _states(state_dir) == {"DCIM/A.MP4": "UPLOADED"}
                status = running.daemon.offloader.status("CAM-1")
                assert not status.safe_to_remove and "no signed receipt" in status.why_not
        finally:
            await running.close()


async def test_bay_identity_file_is_never_a_clip_even_if_a_glob_matches(
    tmp_path, fake, keys, recipient
):
    data = dock_config(tmp_path, fake.url, recipient, public_key=keys.server_public_key)
    data["camera_models"][0]["clip_globs"] = ["**/*.json", "**/*.MP4"]
    (tmp_path / "bays").mkdir()
    running = RunningDaemon(Daemon(settings_from(tmp_path, data), uploader=fake))
    try:
        await asyncio.wait_for(running.daemon.ready.wait(), 10)
        make_bay(tmp_path / "bays", "bay-1", "CAM-1", {"DCIM/A.MP4": 1000, "DCIM/A.json": b"{}"})
        state_dir = tmp_path / "state"
        await wait_for(
            lambda: set(_states(state_dir).values()) == {"WIPED"} and len(_states(state_dir)) == 2,
            what="both camera files wiped",
        )
        assert set(_states(state_dir)) == {"DCIM/A.MP4", "DCIM/A.json"}
        assert (tmp_path / "bays/bay-1/camera.json").exists()  # the dock's file, untouched
    finally:
        await running.close()


async def test_absurdly_long_hostile_path_still_uploads_and_wipes(
    tmp_path, receiver, keys, recipient
):
    running = await _start(tmp_path, receiver, keys, recipient)
    try:
        name = b"\xff" * 200 + b".MP4"  # every byte escaped: ~800 characters in display form
        deep = b"/".join([b"\xfe" * 200] * 6)
        bays = tmp_path / "bays"
        staging = os.fsencode(str(bays / ".bay-1.staging"))
        os.makedirs(staging + b"/DCIM/" + deep)
        with open(staging + b"/DCIM/" + deep + b"/" + name, "wb") as handle:
            handle.write(b"evidence with a hostile name")
        with open(staging + b"/camera.json", "w") as handle:
            handle.write('{"serial": "CAM-L", "model": "cam"}')
        os.rename(staging, bays / "bay-1")
        await wait_for(lambda: set(_states(tmp_path / "state").values()) == {"WIPED"}, what="wipe")
        [obj] = stored_objects(receiver.store)
        assert len(obj["metadata"]["path"]) <= 512 and "sha256:" in obj["metadata"]["path"]
        assert (
            decrypt_sha256(obj["data_path"], keys.age_identity)
            == __import__("hashlib").sha256(b"evidence with a hostile name").hexdigest()
        )
    finally:
        await running.close()


async def test_a_clip_the_scan_cannot_reach_keeps_the_camera_from_safe_to_remove(
    tmp_path, fake, keys, recipient
):
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        deep = "/".join(f"D{i}" for i in range(20))  # below the scan's directory depth limit
        make_bay(
            tmp_path / "bays", "bay-1", "CAM-1", {"DCIM/A.MP4": 1000, f"DCIM/{deep}/B.MP4": 10}
        )
        await wait_for(lambda: _states(tmp_path / "state") == {"DCIM/A.MP4": "WIPED"}, what="wipe")
        offloader = running.daemon.offloader
        await wait_for(lambda: offloader.views["CAM-1"].scans > 1, what="a scan after the wipe")
        status = offloader.status("CAM-1")
        assert not status.safe_to_remove
        assert "could not be read" in status.why_not and "depth" in status.why_not
        assert (tmp_path / "bays/bay-1/DCIM" / deep / "B.MP4").exists()
    finally:
        await running.close()
