"""A server that signs a genuine receipt for other bytes never gets the clip wiped.

The real pipeline (`dockd.app.Daemon`, a bay folder) offloads to `support.lying_server`, which
signs with the very key the dock trusts but tells one lie: it stored other bytes of the right
length and signs their hash, or signs a hash one hex digit off, another upload id, another length.
The clip must end QUARANTINED with its original bytes on the camera, and the bay not safe to
remove. The honest server is the control: the same setup gets the clip wiped.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from dockd.crypto.keys import KeygenResult
from support.dock import decrypt_sha256, journal_rows, make_bay, wait_for
from support.dock_daemon import running_daemon
from support.lying_server import Lie, LyingServer, start_lying_server

CLIP = "DCIM/100/A.MP4"
SIZE = 300_007  # several PATCH blocks at the test config's 256 KiB chunk size


@pytest.fixture
async def server(request: pytest.FixtureRequest, keys: KeygenResult) -> AsyncIterator[LyingServer]:
    running = await start_lying_server(keys.server_signing_key, request.param)
    yield running
    await running.stop()


def _decided(state_dir: Path) -> dict[str, Any] | None:
    rows = journal_rows(state_dir)
    return rows[0] if rows and rows[0]["state"] in ("QUARANTINED", "WIPED") else None


@pytest.mark.parametrize(
    "server",
    [Lie.CORRUPT_BYTE, Lie.LAST_HEX_DIGIT, Lie.OTHER_UPLOAD, Lie.OTHER_LENGTH],
    ids=lambda lie: lie.value,
    indirect=True,
)
async def test_receipt_for_other_bytes_quarantines_and_keeps_the_clip(
    tmp_path: Path, keys: KeygenResult, server: LyingServer
) -> None:
    async with running_daemon(tmp_path, server.url, keys) as daemon:
        digests = make_bay(tmp_path / "bays", "bay-1", "CAM-1", {CLIP: SIZE})
        row = await wait_for(lambda: _decided(tmp_path / "state"), what="the clip's fate")
        # The clip's task may still be finishing ("offloading"): wait for the verdict it leaves.
        status = await wait_for(
            lambda: (found := daemon.offloader.status("CAM-1")).why_not != "offloading" and found,
            what="the bay's verdict",
        )
    assert row["state"] == "QUARANTINED", f"{server.lie.value}: {row['state']} ({row['reason']})"
    assert "names other bytes" in row["reason"]
    path = tmp_path / "bays" / "bay-1" / CLIP
    assert path.exists(), "the original was wiped on a receipt for other bytes"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digests[CLIP]
    assert not status.safe_to_remove and "QUARANTINED" in (status.why_not or "")


@pytest.mark.parametrize("server", [Lie.HONEST], ids=["honest"], indirect=True)
async def test_control_honest_server_gets_the_clip_wiped(
    tmp_path: Path, keys: KeygenResult, server: LyingServer
) -> None:
    """The refusals above are about the lie, not about this server or this setup."""
    async with running_daemon(tmp_path, server.url, keys) as daemon:
        digests = make_bay(tmp_path / "bays", "bay-1", "CAM-1", {CLIP: SIZE})
        row = await wait_for(lambda: _decided(tmp_path / "state"), what="the clip's fate")
        assert row["state"] == "WIPED", row
        await wait_for(lambda: daemon.offloader.status("CAM-1").safe_to_remove, what="safe")
    [stored] = server.uploads.values()
    ciphertext = tmp_path / "stored.age"
    ciphertext.write_bytes(bytes(stored.data))
    assert decrypt_sha256(ciphertext, keys.age_identity) == digests[CLIP]
