"""Issue 11, the operator's side: what `dockctl` says must be true, and what it does must leave
a trail naming the person.

Each test runs the real daemon (in this process) with its control socket, the real reference
receiver and `dockctl` as a real process, as in test_dockctl.py.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
from dockd import exitcodes
from dockd.crypto.keys import keygen, load_verify_key
from dockd.journal import Journal
from support.dock import dock_config, journal_rows, make_bay, wait_for, write_toml

from .conftest import Dock, Receiver, run_dockctl


def _dock(dock: Dock, bay: str, serial: str, clips: dict, sidecars: dict | None = None) -> None:
    """Prepare the bay out of sight, then move it in whole (the 'docking')."""
    prep = dock.tmp / "prep"
    prep.mkdir(exist_ok=True)
    make_bay(prep, bay, serial, clips, sidecars=sidecars)
    (prep / bay).rename(dock.bays / bay)


async def _row(dock: Dock, bay: str) -> dict:
    status = await dock.get("/status")
    return next((b for b in status["bays"] if b["bay"] == bay), {})


async def _wait_row(dock: Dock, bay: str, predicate, what: str, timeout: float = 60) -> dict:
    """Poll the control API until the bay's row satisfies `predicate`."""
    from support.receiver import wait_for as poll

    found: dict = {}

    async def ready() -> bool:
        found.update(await _row(dock, bay))
        return bool(found) and predicate(found)

    try:
        await poll(ready, timeout=timeout)
    except Exception as exc:
        raise AssertionError(f"{what}: last row {found}") from exc
    return found


def _history(state_dir: Path, clip_id: int) -> list[tuple]:
    import sqlite3

    conn = sqlite3.connect(f"file:{state_dir / 'journal.db'}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT from_state, to_state, actor, detail FROM transitions WHERE clip_id = ? "
            "ORDER BY id",
            (clip_id,),
        ).fetchall()
    finally:
        conn.close()


def _ids(state_dir: Path) -> dict[str, int]:
    return {bytes(r["rel_path"]).decode(): r["id"] for r in journal_rows(state_dir)}


def _states(state_dir: Path) -> dict[str, str]:
    return {bytes(r["rel_path"]).decode(): r["state"] for r in journal_rows(state_dir)}


# What the desk must read when the server signs receipts with another key (issue 11).
KEY_MISMATCH = "receipt key mismatch: check [server] receipt_public_key"
ME = f"{pwd.getpwuid(os.getuid()).pw_name} (uid {os.getuid()})"


async def test_a_hold_of_unoffloaded_evidence_never_reads_safe(tmp_path, keys):
    down = Receiver(tmp_path, keys)  # never started: nothing reaches the server
    dock = await Dock(
        tmp_path, down.url, keys, retry_attempts=1, failure_backoff=600.0, failure_backoff_max=600.0
    ).start()
    try:
        _dock(
            dock,
            "bay-4",
            "CAM-4",
            {"DCIM/A.MP4": 50_000, "DCIM/B.MP4": 40_000},
            sidecars={"DCIM/A.json": {"evidence": True}},
        )
        await wait_for(
            lambda: (
                set(_states(dock.state_dir).values()) == {"FAILED"}
                and len(_states(dock.state_dir)) == 2
            ),
            what="both clips FAILED while the server is down",
        )
        ids = _ids(dock.state_dir)
        evidence, plain = str(ids["DCIM/A.MP4"]), str(ids["DCIM/B.MP4"])

        code, _out, err = await dock.dockctl("hold", plain)
        assert code == exitcodes.USAGE and "--reason" in err
        code, _out, err = await dock.dockctl("hold", evidence, "--reason", "court order")
        assert code == exitcodes.FAILURE and "evidence" in err and "--force" in err

        sudo = {"SUDO_USER": "alice", "SUDO_UID": "4242"}
        code, out, err = await dock.dockctl(
            "hold", evidence, "--reason", "court order", "--force", env=sudo
        )
        assert code == 0 and "now HELD" in out, err
        _before, after, actor, detail = _history(dock.state_dir, int(evidence))[-1]
        assert after == "HELD" and detail == "forced: court order"
        # the person sudo names, and what the kernel says, both recorded
        assert actor.startswith("alice (uid 4242") and actor.endswith(f"via sudo as {ME}")

        code, out, err = await dock.dockctl("hold", plain, "--reason", "kept for review")
        assert code == 0, err
        row = await _wait_row(
            dock, "bay-4", lambda r: r["state_code"] == "removable_not_offloaded", "REMOVABLE"
        )
        assert row["state"] == "REMOVABLE: 2 clips held, NOT offloaded"
        assert row["safe_to_remove"] is False and row["held_not_offloaded"] == 2
        code, out, err = await dock.dockctl("status")
        assert code == 0, err
        assert "REMOVABLE: 2 clips held, NOT offloaded" in out and "SAFE TO REMOVE" not in out

        code, out, err = await dock.dockctl("audit", "export")
        assert code == 0, err
        records = [json.loads(line) for line in out.splitlines()]
        held = [r for r in records if r.get("event") == "clip.held"]
        assert held and held[0]["actor"].startswith("alice (uid 4242")
    finally:
        await dock.close()

    # Without the daemon, the journal's view says the same.
    code, out, _err = await dock.dockctl("status")
    assert code == exitcodes.UNAVAILABLE
    assert "REMOVABLE: 2 clips held, NOT offloaded" in out and "SAFE TO REMOVE" not in out


async def test_receipt_key_mismatch_is_named_and_retry_asks_again(tmp_path, keys, receiver):
    other = tmp_path / "other-keys"
    keygen(other)  # the dock is configured with a key the server does not sign with
    dock = await Dock(
        tmp_path,
        receiver.url,
        keys,
        server={"receipt_public_key": str(other / "server-receipt.pub")},
    ).start()
    try:
        _dock(dock, "bay-5", "CAM-5", {"DCIM/A.MP4": 70_000})
        row = await _wait_row(
            dock, "bay-5", lambda r: r["state_code"] == "receipt_key_mismatch", "key mismatch"
        )
        assert row["state"] == KEY_MISMATCH
        assert "server receipt rejected" in row["reason"]
        code, out, err = await dock.dockctl("clips", "--json")
        assert code == 0, err
        [clip] = json.loads(out)
        assert clip["state"] == "UPLOADED" and clip["reason"].startswith(KEY_MISMATCH)

        # The operator fixes [server] receipt_public_key (here: in the running daemon) and asks
        # again now instead of waiting for the 300 s recheck.
        dock.daemon.offloader.ctx.server_key = load_verify_key(keys.public_key)
        code, out, err = await dock.dockctl("retry", str(clip["id"]))
        assert code == 0 and "now UPLOADED" in out, err
        await _wait_row(dock, "bay-5", lambda r: r["safe_to_remove"], "SAFE TO REMOVE")
        assert _states(dock.state_dir) == {"DCIM/A.MP4": "WIPED"}
        assert ("UPLOADED", "UPLOADED", ME, "retry requested") in _history(
            dock.state_dir, clip["id"]
        )
    finally:
        await dock.close()


async def test_release_a_bay_and_dismiss_a_version_gone_from_the_camera(tmp_path, keys):
    down = Receiver(tmp_path, keys)
    dock = await Dock(
        tmp_path, down.url, keys, retry_attempts=1, failure_backoff=600.0, failure_backoff_max=600.0
    ).start()
    try:
        clips = {"DCIM/A.MP4": 30_000, "DCIM/B.MP4": 20_000, "DCIM/C.MP4": 10_000}
        _dock(dock, "bay-6", "CAM-6", clips)
        await wait_for(
            lambda: list(_states(dock.state_dir).values()) == ["FAILED"] * 3,
            what="three clips FAILED while the server is down",
        )
        ids = _ids(dock.state_dir)
        journal = dock.daemon.offloader.ctx.journal
        for clip_id in ids.values():  # what the pipeline records for a camera that fails reads
            journal.quarantine(clip_id, "unreadable on camera: Input/output error")
        gone = ids["DCIM/A.MP4"]
        (dock.bays / "bay-6" / "DCIM/A.MP4").unlink()
        code, _out, err = await dock.dockctl("rescan", "bay-6")
        assert code == 0, err
        row = await _wait_row(
            dock, "bay-6", lambda r: any(f"dismiss {gone}" in n for n in r["notes"]), "note"
        )
        assert row["state"] == "error" and "DCIM/A.MP4" not in row["reason"]

        # Never for an unconfirmed clip whose file is still there.
        code, _out, err = await dock.dockctl(
            "dismiss", str(ids["DCIM/B.MP4"]), "--reason", "looks fine"
        )
        assert code == exitcodes.FAILURE and "still on the camera" in err
        code, _out, err = await dock.dockctl("dismiss", str(gone))
        assert code == exitcodes.USAGE and "--reason" in err

        await down.start()  # the cause is fixed: the bay's quarantined clips go back to work
        code, out, err = await dock.dockctl("release", "--bay", "bay-6")
        assert code == 0, err
        assert "2 quarantined clip(s) of CAM-6 released" in out
        assert f"clip {gone} DCIM/A.MP4: not released" in out

        code, out, err = await dock.dockctl(
            "dismiss", str(gone), "--reason", "deleted on the camera by the vendor tool"
        )
        assert code == 0 and "now DISMISSED" in out, err

        row = await _wait_row(dock, "bay-6", lambda r: r["safe_to_remove"], "SAFE TO REMOVE")
        assert row["state"] == "SAFE TO REMOVE"
        assert _states(dock.state_dir) == {
            "DCIM/A.MP4": "DISMISSED",
            "DCIM/B.MP4": "WIPED",
            "DCIM/C.MP4": "WIPED",
        }
        for path in ("DCIM/B.MP4", "DCIM/C.MP4"):  # one audit trail per released clip
            history = _history(dock.state_dir, ids[path])
            assert any(h[0] == "QUARANTINED" and h[2:] == (ME, "released") for h in history)
        assert _history(dock.state_dir, gone)[-1] == (
            "QUARANTINED",
            "DISMISSED",
            ME,
            "deleted on the camera by the vendor tool",
        )
    finally:
        await dock.close()
        await down.stop()


async def test_state_dir_alone_finds_the_socket_and_the_journal(tmp_path, keys, receiver):
    state_dir = tmp_path / "state"
    dock = await Dock(
        tmp_path, receiver.url, keys, status={"socket": str(state_dir / "control.sock")}
    ).start()
    try:
        _dock(dock, "bay-7", "CAM-7", {"DCIM/A.MP4": 10_000})
        await _wait_row(dock, "bay-7", lambda r: r["safe_to_remove"], "SAFE TO REMOVE")
        code, out, err = await run_dockctl("--state-dir", str(state_dir), "status", "--json")
        assert code == 0, err
        assert [b["camera"] for b in json.loads(out)["bays"]] == ["CAM-7"]
    finally:
        await dock.close()
    # after the daemon stopped (as at the end of `dockd demo`): the journal's view, read-only
    code, out, _err = await run_dockctl("--state-dir", str(state_dir), "status")
    assert code == exitcodes.UNAVAILABLE
    assert "daemon not running" in out and "CAM-7" in out and "SAFE TO REMOVE" in out


def test_the_demo_puts_its_socket_beside_the_journal(tmp_path):
    from dockd.demo import demo_settings

    keygen(tmp_path)
    settings = demo_settings(tmp_path, "http://127.0.0.1:1/files/")
    assert settings.status.socket == settings.dock.state_dir / "control.sock"


def test_a_journal_key_with_a_wrong_mode_exits_78_with_one_line(tmp_path, keys):
    data = dock_config(tmp_path, "http://127.0.0.1:9/files/", keys.recipient, public_key=None)
    data["server"]["confirm"] = "offset"
    config_path = write_toml(tmp_path / "dockd.toml", data)
    Journal.open(tmp_path / "state").close()
    key = tmp_path / "state" / "journal.key"
    key.chmod(0o644)
    proc = subprocess.run(
        [sys.executable, "-m", "dockd.cli", "run", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == exitcodes.CONFIG, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # no traceback
    assert str(key) in lines[0] and "0644" in lines[0] and "chmod 600" in lines[0]


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a read-only camera")
async def test_a_read_only_camera_says_so_and_one_release_per_bay_recovers(
    tmp_path, keys, receiver
):
    """A real read-only file system under the bay (a write-protected card): everything
    uploads and is confirmed, the wipe is refused by the kernel, the desk reads why; once the
    card is writable, one `release --bay` finishes the job."""
    card = tmp_path / "card"
    card.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(card))
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount here: {exc}")
    bay = None
    dock = await Dock(tmp_path, receiver.url, keys).start()
    try:
        (card / "DCIM").mkdir()
        (card / "DCIM" / "A.MP4").write_bytes(os.urandom(40_000))
        (card / "DCIM" / "B.MP4").write_bytes(os.urandom(30_000))
        (card / "camera.json").write_text(json.dumps({"serial": "CAM-8", "model": "cam"}))
        _mount("-o", "remount,ro", str(card))
        bay = dock.bays / "bay-8"
        bay.mkdir()
        _mount("--bind", str(card), str(bay))  # the 'docking'

        row = await _wait_row(dock, "bay-8", lambda r: r["state_code"] == "camera_read_only", "ro")
        assert row["state"] == "camera read-only" and "release --bay" in row["reason"]
        assert set(_states(dock.state_dir).values()) == {"QUARANTINED"}
        # confirmed, but still on the camera: closing the row would hide whatever is there now
        code, _out, err = await dock.dockctl("dismiss", "1", "--reason", "server has it")
        assert code == exitcodes.FAILURE and "still on the camera" in err

        for mountpoint in (card, bay):  # the write-protect switch is moved back
            _mount("-o", "remount,rw", str(mountpoint))
        code, out, err = await dock.dockctl("release", "--bay", "bay-8")
        assert code == 0 and "2 quarantined clip(s) of CAM-8 released" in out, err
        await _wait_row(dock, "bay-8", lambda r: r["safe_to_remove"], "SAFE TO REMOVE")
        assert set(_states(dock.state_dir).values()) == {"WIPED"}
        assert not (card / "DCIM" / "A.MP4").exists()
    finally:
        await dock.close()
        for mountpoint in (bay, card):
            if mountpoint is not None:
                subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
