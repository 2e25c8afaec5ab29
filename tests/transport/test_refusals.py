"""Refusals of the dock itself are states, not retry loops: wrong credentials (401/403) and a
server quota raise `ServerRefused` at once, and the dock parks the clip FAILED with a reason that
says what to fix, retried only at the slow back-off maximum, shown as the bay's why-not."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from dockd.app import Daemon
from dockd.crypto.keys import keygen
from dockd.journal import State
from dockd.receiver.quota import Quotas
from dockd.transport.tus import ServerRefused, ServerUnavailable, TusClient
from support.dock import dock_config, journal_rows, make_bay, settings_from, wait_for
from support.receiver import Tus, running_receiver

from transport.fault_proxy import Answer, FaultProxy
from transport.harness import FAST

TOKEN = "tok-test-dock-0123456789abcdef"
TOKENS = {TOKEN: "test-dock"}  # support.dock configures [dock] id = "test-dock"
SLOW = 300.0  # failure_backoff_max in the dock below; failure_backoff is 0.2


def _client(session: aiohttp.ClientSession, url: str, token: str) -> TusClient:
    return TusClient(session, url, headers={"Authorization": f"Bearer {token}"}, retry=FAST)


async def test_wrong_credentials_are_a_refusal_that_names_what_to_check(tmp_path, session):
    async with running_receiver(tmp_path, tokens=TOKENS) as rx:
        with pytest.raises(ServerRefused) as refused:
            await _client(session, rx.url, "tok-not-known-to-the-server-0").create(10, {})
        assert (refused.value.kind, refused.value.status) == ("credentials", 401)
        assert str(refused.value).startswith(
            "server rejects this dock's credentials (HTTP 401): check [server] token_file"
        )
        # Claiming another dock's identity with a valid token is a credentials problem too.
        with pytest.raises(ServerRefused) as claimed:
            await _client(session, rx.url, TOKEN).create(10, {"dock": "another-dock"})
        assert (claimed.value.kind, claimed.value.status) == ("credentials", 403)
        assert "[dock] id" in str(claimed.value)


async def test_a_quota_refusal_is_not_retried_even_with_a_transient_status(
    tmp_path, session, monkeypatch
):
    async with (
        running_receiver(tmp_path, tokens=TOKENS, quotas=Quotas(max_uploads_per_dock=1)) as rx,
        FaultProxy(rx.url.rsplit("/files/", 1)[0]) as proxy,
    ):
        client = _client(session, proxy.url + "/files/", TOKEN)
        await client.create(10, {})
        with pytest.raises(ServerRefused) as refused:
            await client.create(10, {})
        assert (refused.value.kind, refused.value.limit) == ("quota", "uploads-per-dock")
        assert refused.value.status == 429
        assert str(refused.value).startswith("server refuses: uploads-per-dock")
        assert len(proxy.requests("POST")) == 2  # one each: the 429 was not retried
        # A 429 that names no limit is still the ordinary transient kind.
        proxy.queue("POST", *[Answer(429, {}) for _ in range(FAST.attempts)])
        with pytest.raises(ServerUnavailable):
            await client.create(10, {})


async def test_over_tus_max_size_is_a_max_size_refusal(tmp_path, session):
    async with running_receiver(tmp_path, tokens=TOKENS, max_size=1000) as rx:
        with pytest.raises(ServerRefused) as refused:
            await _client(session, rx.url, TOKEN).create(1001, {})
        assert (refused.value.kind, refused.value.limit) == ("quota", "max-size")


def _write_token(path: Path, token: str) -> Path:
    path.write_text(token + "\n")
    os.chmod(path, 0o600)
    return path


async def _dockctl_status(config_path: Path) -> str:
    """`dockctl status --json` as the station desk runs it (a real process)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dockd.dockctl.cli",
        "--config",
        str(config_path),
        "status",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def _run_dock(tmp_path: Path, url: str, token: str, serial: str) -> tuple[str, dict]:
    """Dock a camera with one clip; once the clip is parked FAILED, return what `dockctl status`
    says about the camera (checked against `Offloader.status`) and the clip's journal row."""
    keygen(tmp_path / "keys")
    data = dock_config(
        tmp_path,
        url,
        (tmp_path / "keys" / "recipient.txt").read_text().strip(),
        public_key=None,
        confirm="offset",
        failure_backoff_max=SLOW,
    )
    data["server"]["token_file"] = str(_write_token(tmp_path / "token", token))
    data["status"] = {"socket": str(tmp_path / "run" / "control.sock")}
    (tmp_path / "bays").mkdir(exist_ok=True)
    daemon = Daemon(settings_from(tmp_path, data))
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        make_bay(tmp_path / "bays", "bay-1", serial, {"DCIM/100/CLIP0001.MP4": 4096})

        def parked() -> dict | None:
            rows = [r for r in journal_rows(tmp_path / "state") if r["state"] == "FAILED"]
            return rows[0] if rows else None

        row = await wait_for(parked, 30, what="the clip to be parked FAILED")
        assert daemon.offloader is not None
        why_not = await wait_for(
            lambda: (
                daemon.offloader.status(serial).why_not
                if "FAILED" in (daemon.offloader.status(serial).why_not or "")
                else None
            ),
            10,
            what="the bay to say why",
        )
        await asyncio.sleep(1.5)  # several fast back-offs long: nothing may happen meanwhile
        again = next(r for r in journal_rows(tmp_path / "state") if r["id"] == row["id"])
        assert again["state"] == State.FAILED.value and again["attempts"] == row["attempts"]
        status = await _dockctl_status(tmp_path / "dockd.toml")
        assert why_not in status  # what the desk sees is what the offloader says
        return status, row
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def _retry_in(row: dict) -> float:
    return row["retry_at"] - time.time()


async def test_a_dock_with_a_wrong_token_shows_a_credentials_state_and_backs_off_slowly(
    tmp_path,
):
    async with running_receiver(tmp_path / "rx", tokens=TOKENS) as rx:
        why_not, row = await _run_dock(tmp_path, rx.url, "tok-revoked-or-mistyped-000", "CAM-1")
    assert "FAILED: server rejects this dock's credentials (HTTP 401): check [server]" in why_not
    assert SLOW * 0.9 < _retry_in(row) <= SLOW


async def test_a_dock_at_its_quota_shows_the_limit_and_backs_off_slowly(tmp_path, session):
    quotas = Quotas(max_uploads_per_dock=1)
    async with running_receiver(tmp_path / "rx", tokens=TOKENS, quotas=quotas) as rx:
        # An unfinished upload of this dock (a camera pulled mid-upload) holds the only place.
        assert (await Tus(session, rx.url, TOKEN).create(100)).status == 201
        why_not, row = await _run_dock(tmp_path, rx.url, TOKEN, "CAM-2")
    assert "FAILED: server refuses: uploads-per-dock" in why_not
    assert "limit 1" in why_not
    assert SLOW * 0.9 < _retry_in(row) <= SLOW
