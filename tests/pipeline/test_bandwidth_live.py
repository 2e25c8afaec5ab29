"""The bandwidth limit changes under an upload in flight: same upload, no byte sent twice.

A real daemon (in this process) with a control socket uploads to the real reference receiver
under a cap so low that the clip could not finish within the test's patience; `dockctl
bandwidth off` through the socket lifts it, and the same upload completes. Then a config
reload (what SIGHUP runs) puts a new limit in force.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from dockd.app import Daemon
from dockd.control.client import ControlClient
from dockd.dockctl import cli
from support.dock import (
    DaemonProcess,
    dock_config,
    journal_rows,
    make_bay,
    settings_from,
    wait_for,
    write_toml,
)


async def test_rate_change_applies_to_the_upload_in_flight(
    tmp_path: Path, receiver, keys, recipient, capsys
) -> None:
    sock = tmp_path / "run" / "control.sock"
    data = dock_config(
        tmp_path, receiver.url, recipient, public_key=keys.server_public_key, chunk_size=64 << 10
    )
    data["status"] = {"socket": str(sock)}
    # 1 KiB/s: after the first burst (256 KiB) the remaining ~750 KB would need ~12 minutes.
    data["bandwidth"] = {"limit": "1KiB"}
    (tmp_path / "bays").mkdir()
    daemon = Daemon(settings_from(tmp_path, data))
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    state = tmp_path / "state"
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        make_bay(tmp_path / "bays", "bay-1", "CAM-1", {"DCIM/A.MP4": 1_000_000})
        # The burst is acknowledged; the next PATCH is open and its body waits on the bucket.
        await wait_for(lambda: receiver.patches >= 4, timeout=20)
        await wait_for(lambda: daemon.bandwidth.bucket.waiting == 1, timeout=20)
        [row] = journal_rows(state)
        # The receiver offers concatenation: the clip streams to a partial upload in one pass.
        assert row["state"] == "STREAMING" and row["partial_url"]
        url_in_flight = row["partial_url"]

        code = await asyncio.to_thread(cli.main, ["--socket", str(sock), "bandwidth", "off"])
        assert code == 0
        assert "upload limit: off (operator)" in capsys.readouterr().out

        await wait_for(lambda: journal_rows(state)[0]["state"] == "WIPED", timeout=30)
        [row] = journal_rows(state)
        assert row["partial_url"] == url_in_flight
        assert list(receiver.patch_bytes.values()) == [row["ciphertext_length"]]

        # A reload (SIGHUP) replaces the limit with the file's and ends the operator's override.
        data["bandwidth"] = {"limit": "5MiB", "timetable": ["* 00:00-24:00 3MiB"]}
        write_toml(tmp_path / "dockd.toml", data)
        daemon.reload()
        limit = await asyncio.to_thread(ControlClient(sock).bandwidth)
        assert limit["rate"] == 3 * 1024 * 1024 and limit["source"].startswith("timetable")
        assert limit["limit"] == 5 * 1024 * 1024
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def test_sighup_reloads_the_limit_in_a_running_daemon(tmp_path: Path, keys, recipient) -> None:
    """The real `dockd run` process: SIGHUP re-reads [bandwidth]; a bad file changes nothing."""
    sock = tmp_path / "control.sock"
    data = dock_config(
        tmp_path, "http://127.0.0.1:9/files/", recipient, public_key=keys.server_public_key
    )
    data["status"] = {"socket": str(sock)}
    data["bandwidth"] = {"limit": "2MiB"}
    (tmp_path / "bays").mkdir()
    config = write_toml(tmp_path / "dockd.toml", data)
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    daemon.start()
    try:
        daemon.wait_ready()
        client = ControlClient(sock)
        assert client.bandwidth()["rate"] == 2 * 1024 * 1024

        def reloaded(event: str) -> int:
            return sum(1 for e in daemon.events() if e.get("event") == event)

        data["bandwidth"] = {"limit": "fast please"}  # refused: the limit in force stays
        write_toml(config, data)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while not reloaded("config.reload_refused") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reloaded("config.reload_refused") == 1
        assert client.bandwidth()["rate"] == 2 * 1024 * 1024

        data["bandwidth"] = {"limit": "off"}
        write_toml(config, data)
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while not reloaded("config.reloaded") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.bandwidth()["rate"] is None and daemon.alive()
    finally:
        daemon.terminate()
