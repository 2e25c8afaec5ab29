"""`dockctl` against a real daemon's control socket: what the station desk sees and may do.

The operator's questions, each with the real daemon, receiver and `dockctl` process: which camera
can I hand out, why is this one stuck, who held that clip; and what dockctl says when the daemon
is down or the account may not use the socket.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import pytest
from dockd import exitcodes
from support.dock import journal_rows, make_bay, wait_for

from .conftest import Dock, Receiver, run_dockctl


def dock_camera(dock: Dock, bay: str, serial: str, clips: dict, officer: str | None = None) -> None:
    """Prepare a bay out of sight, then move it in whole (the 'docking')."""
    prep = dock.tmp / "prep"
    prep.mkdir(exist_ok=True)
    make_bay(prep, bay, serial, clips)
    if officer:
        identity = json.loads((prep / bay / "camera.json").read_text())
        (prep / bay / "camera.json").write_text(json.dumps({**identity, "officer": officer}))
    (prep / bay).rename(dock.bays / bay)


def _bay(status: dict, bay: str) -> dict | None:
    return next((b for b in status["bays"] if b["bay"] == bay), None)


async def _bay_state(dock: Dock, bay: str) -> str | None:
    row = _bay(await dock.get("/status"), bay)
    return row["state"] if row else None


def _history(dock: Dock, clip_id: int) -> list[tuple]:
    import sqlite3

    conn = sqlite3.connect(f"file:{dock.state_dir / 'journal.db'}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT from_state, to_state, actor FROM transitions WHERE clip_id = ? ORDER BY id",
            (clip_id,),
        ).fetchall()
    finally:
        conn.close()


async def test_status_to_safe_to_remove_then_daemon_down(tmp_path, keys, receiver):
    dock = await Dock(tmp_path, receiver.url, keys).start()
    try:
        assert stat.S_IMODE(dock.socket.stat().st_mode) == 0o660
        dock_camera(
            dock, "bay-1", "CAM-1", {"DCIM/A.MP4": 600_001, "DCIM/B.MP4": b""}, officer="PC 4711"
        )

        async def safe() -> bool:
            return await _bay_state(dock, "bay-1") == "SAFE TO REMOVE"

        from support.receiver import wait_for as poll

        watch = asyncio.create_task(dock.dockctl("watch", "--until-safe", "--interval", "0.1"))
        await poll(safe, timeout=60)
        code, out, err = await asyncio.wait_for(watch, 30)
        assert code == 0, err
        assert "SAFE TO REMOVE" in out  # watch returns once every docked camera may go

        code, out, err = await dock.dockctl("status")
        assert code == 0, err
        assert "bay-1" in out and "CAM-1" in out and "PC 4711" in out
        assert "SAFE TO REMOVE" in out
        assert "reachable" in out and "queue: 0 clip(s)" in out

        code, out, _ = await dock.dockctl("status", "--json")
        data = json.loads(out)
        row = _bay(data, "bay-1")
        assert row["safe_to_remove"] is True and row["clips"] == {"WIPED": 2}
        assert row["officer"] == "PC 4711" and row["bytes_left"] == 0
        assert data["server"]["reachable"] is True

        code, out, _ = await dock.dockctl("clips", "--camera", "CAM-1", "--json")
        assert code == 0
        assert sorted((c["path"], c["state"]) for c in json.loads(out)) == [
            ("DCIM/A.MP4", "WIPED"),
            ("DCIM/B.MP4", "WIPED"),
        ]
    finally:
        await dock.close()

    # Daemon stopped: status says so (exit 69) and still answers from the journal.
    code, out, err = await dock.dockctl("status")
    assert code == exitcodes.UNAVAILABLE
    assert "daemon not running" in out
    assert "CAM-1" in out and "SAFE TO REMOVE" in out
    code, _out, err = await dock.dockctl("hold", "1", "--reason", "review")
    assert code == exitcodes.UNAVAILABLE and "not running" in err


async def test_outage_says_why_and_operator_actions_carry_the_uid(tmp_path, keys):
    down = Receiver(tmp_path, keys)  # not started yet: the server is down
    dock = await Dock(
        tmp_path,
        down.url,
        keys,
        retry_attempts=2,
        failure_backoff=600.0,  # only the operator's retry brings a failed clip back soon
        failure_backoff_max=600.0,
    ).start()
    try:
        dock_camera(dock, "bay-2", "CAM-2", {"DCIM/A.MP4": 300_000, "DCIM/B.MP4": 200_000})
        await wait_for(
            lambda: [r["state"] for r in journal_rows(dock.state_dir)] == ["FAILED", "FAILED"],
            what="both clips FAILED while the server is down",
        )
        code, out, _ = await dock.dockctl("status", "--json")
        row = _bay(json.loads(out), "bay-2")
        assert row["state"] == "error"
        assert "FAILED" in row["reason"] and "unavailable" in row["reason"]
        assert json.loads(out)["server"]["reachable"] is False
        code, out, _ = await dock.dockctl("status")
        assert "error" in out and "UNREACHABLE" in out and "2 failed" in out

        first, second = (r["id"] for r in journal_rows(dock.state_dir))
        code, out, err = await dock.dockctl("hold", str(first), "--reason", "kept for review")
        assert code == 0, err
        assert "now HELD" in out
        actor = f"{pwd.getpwuid(os.getuid()).pw_name} (uid {os.getuid()})"
        assert _history(dock, first)[-1] == ("FAILED", "HELD", actor)

        await down.start()
        code, out, err = await dock.dockctl("retry", str(second))
        assert code == 0, err
        # The receiver offers concatenation: the clip's one pass starts from DISCOVERED (it
        # was never read while the server was down).
        assert ("FAILED", "DISCOVERED", actor) in _history(dock, second)

        async def removable() -> bool:
            state = await _bay_state(dock, "bay-2")
            return state is not None and state.startswith("REMOVABLE")

        from support.receiver import wait_for as poll

        # one wiped, one held that never reached the server: the camera may go, but it is NOT
        # safe to remove (the held clip is not offloaded)
        await poll(removable, timeout=60)
        assert await _bay_state(dock, "bay-2") == "REMOVABLE: 1 clip held, NOT offloaded"
        states = {r["id"]: r["state"] for r in journal_rows(dock.state_dir)}
        assert states == {first: "HELD", second: "WIPED"}
        assert (dock.bays / "bay-2" / "DCIM/A.MP4").exists()  # the held clip stays on the camera

        code, out, err = await dock.dockctl("release", str(first))
        assert code == 0, err
        await wait_for(
            lambda: {r["state"] for r in journal_rows(dock.state_dir)} == {"WIPED"},
            what="released clip wiped",
        )
        code, _out, err = await dock.dockctl("release", str(first))
        assert code == exitcodes.FAILURE and "refused" in err  # WIPED cannot be released

        code, out, err = await dock.dockctl("rescan", "bay-2")
        assert code == 0 and "CAM-2" in out, err
        code, _out, err = await dock.dockctl("rescan", "bay-9")
        assert code == exitcodes.FAILURE and "no camera" in err

        metrics = await dock.scrape()
        assert 'dockd_clip_retries_total{cause="operator"} 1.0' in metrics
        assert 'dockd_operator_actions_total{action="hold"} 1.0' in metrics
        assert 'dockd_operator_actions_total{action="release"} 1.0' in metrics
        assert 'dockd_clips_failed_total{reason="server_unavailable"}' in metrics
        assert "dockd_clips_wiped_total 2.0" in metrics
    finally:
        await dock.close()
        await down.stop()


def _dockctl_as(uid: int, *args: str) -> tuple[int, str]:
    """Run dockctl's main in a forked child that dropped to `uid` (the interpreter may live where
    an unprivileged user cannot execute it, e.g. under /root). Returns (exit code, stderr)."""
    from dockd.dockctl import cli

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no event loop, no new imports; just the client call
        code = 70
        try:
            sys.stderr = os.fdopen(write_end, "w", buffering=1)  # pytest swapped sys.stderr
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            code = cli.main(list(args))
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        err = pipe.read().decode(errors="replace")
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
async def test_access_denied_is_exit_77(tmp_path, keys, receiver):
    nobody = 65534
    run_dir = Path(tempfile.mkdtemp(prefix="dockd-sock-"))
    run_dir.chmod(0o755)  # others can reach the socket: only its own 0660 mode keeps them out
    try:
        socket_path = run_dir / "control.sock"
        dock = await Dock(tmp_path, receiver.url, keys, status={"socket": str(socket_path)}).start()
        try:
            code, err = await asyncio.to_thread(
                _dockctl_as, nobody, "--socket", str(socket_path), "status"
            )
            assert code == exitcodes.NOPERM, err
            assert "permission denied" in err and "dockd" in err
            code, _out, err = await run_dockctl("--socket", str(socket_path), "status")
            assert code == 0, err  # root (the socket's owner) gets through
        finally:
            await dock.close()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


async def test_no_socket_at_all_is_exit_69(tmp_path):
    code, _out, err = await run_dockctl(
        "--socket",
        str(tmp_path / "none.sock"),
        "--state-dir",
        str(tmp_path),
        "hold",
        "3",
        "--reason",
        "x",
    )
    assert code == exitcodes.UNAVAILABLE
    assert "dockd is not running" in err
