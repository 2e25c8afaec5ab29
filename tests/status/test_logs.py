"""Logs: every clip event says which dock, bay, camera and clip; no secret ever reaches a line.

A real authenticated upload (bearer token on the receiver, `token_file` on the dock), with the
whole process (dock and receiver) logging JSON at debug level into one file. Then every line is
searched for the token, the age identity, the receipt-signing key, the journal's sealing key and
each clip's age file key (recovered from the stored object with the identity), in the encodings a
careless log call would produce (text, hex, base64).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path

import pytest
import structlog
from dockd import logs
from dockd.crypto import age
from dockd.crypto.keys import load_age_identities
from support.dock import journal_rows, make_bay, stored_objects, wait_for

from .conftest import Dock, Receiver


@pytest.fixture
def log_file(tmp_path: Path):
    path = tmp_path / "all.log"
    with path.open("w") as stream:
        logs.configure(json=True, level="debug", stream=stream)
        try:
            yield path
        finally:
            structlog.reset_defaults()
            structlog.contextvars.clear_contextvars()


def _encodings(secret: bytes) -> set[str]:
    b64 = base64.b64encode(secret).decode()
    return {
        secret.hex(),
        secret.hex().upper(),
        b64,
        b64.rstrip("="),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
    }


def _file_key(stored: Path, identity: Path) -> bytes:
    with stored.open("rb") as handle:
        header = age._parse_header(handle)
    return age._open_file_key(header, load_age_identities(identity))


async def test_no_secret_in_any_log_line_and_clip_events_carry_context(tmp_path, keys, log_file):
    token = secrets.token_urlsafe(32)
    token_path = tmp_path / "token"
    token_path.write_text(token + "\n")
    os.chmod(token_path, 0o600)
    server = Receiver(tmp_path, keys, tokens={token: "test-dock"})
    await server.start()
    dock = await Dock(tmp_path, server.url, keys, server={"token_file": str(token_path)}).start()
    try:
        make_bay(dock.bays, "bay-7", "CAM-7", {"DCIM/A.MP4": 300_001, "DCIM/B.MP4": 70_000})
        await wait_for(
            lambda: [r["state"] for r in journal_rows(dock.state_dir)] == ["WIPED", "WIPED"],
            what="clips wiped through the authenticated server",
        )
        code, _out, err = await dock.dockctl("status")
        assert code == 0, err
    finally:
        await dock.close()
        await server.stop()

    text = log_file.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert any(e["event"] == "clip.wiped" for e in lines)

    needles: dict[str, set[str]] = {"bearer token": {token}}
    identity = keys.identity.read_text()
    needles["age identity"] = {
        line.strip() for line in identity.splitlines() if line.startswith("AGE-SECRET-KEY-")
    }
    signing_pem = (keys.dir / "server-receipt.key").read_text()
    needles["receipt signing key"] = {
        line for line in signing_pem.splitlines() if line and not line.startswith("-----")
    }
    needles["journal sealing key"] = _encodings((dock.state_dir / "journal.key").read_bytes())
    for obj in stored_objects(server.settings.store):
        key = _file_key(obj["data_path"], keys.identity)
        needles[f"file key of {obj['metadata']['path']}"] = _encodings(key)
    assert len(needles) == 6 and all(needles.values())
    for what, values in needles.items():
        for value in values:
            assert value not in text, f"{what} appears in the log"

    # Context: every clip event names dock, bay, camera and clip; camera events dock, bay, camera.
    dock_events = [e for e in lines if e["event"].startswith(("clip.", "camera.", "operator."))]
    assert dock_events
    for event in dock_events:
        assert event.get("dock") == "test-dock", event
        if event["event"].startswith("clip."):
            assert {"bay", "camera", "clip"} <= event.keys(), event
        if event["event"].startswith("camera."):
            assert {"bay", "camera"} <= event.keys(), event
    # The transport's own events inherit the clip's context (bound once per clip task).
    uploads = [e for e in lines if e["event"].startswith("tus.")]
    for event in uploads:
        assert {"dock", "bay", "camera", "clip"} <= event.keys(), event
