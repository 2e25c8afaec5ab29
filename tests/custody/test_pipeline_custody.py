"""The custody pieces in the running pipeline, against the real receiver on loopback:
operator flag before upload, station officer, manifest on the server, and a manifest upload
failure that neither blocks the wipe nor loses the manifest."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
from pathlib import Path

import pytest
from aiohttp import web
from dockd.app import Daemon
from dockd.crypto.keys import KeygenResult, keygen, load_signing_key, load_verify_key
from dockd.custody import manifest as manifests
from dockd.dockctl import cli as dockctl
from dockd.receiver.app import ReceiverSettings, create_app
from support.dock import (
    dock_config,
    journal_rows,
    make_bay,
    settings_from,
    stored_objects,
    wait_for,
)


class Receiver:
    """The reference receiver, with switches to refuse every creation or only manifest ones."""

    def __init__(self) -> None:
        self.refuse_all = False
        self.refuse_manifests = False
        self.on_create = None  # called before a clip's creation is handled
        self.url = ""
        self.runner: web.AppRunner | None = None
        self.daemon: Daemon | None = None

    async def start(self, store: Path, keys: KeygenResult) -> None:
        app = create_app(
            ReceiverSettings(store=store, signing_key=load_signing_key(keys.server_signing_key))
        )

        @web.middleware
        async def gate(request: web.Request, handler):  # type: ignore[no-untyped-def]
            metadata = request.headers.get("Upload-Metadata", "")
            if request.method == "POST" and (
                self.refuse_all or (self.refuse_manifests and "manifest_for " in metadata)
            ):
                return web.Response(status=503, headers={"Tus-Resumable": "1.0.0"})
            if request.method == "POST" and "manifest_for " not in metadata and self.on_create:
                self.on_create()
            return await handler(request)

        app.middlewares.insert(0, gate)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/files/"


@pytest.fixture
async def setup(tmp_path):
    keys = keygen(tmp_path / "keys")
    receiver = Receiver()
    await receiver.start(tmp_path / "store", keys)
    data = dock_config(
        tmp_path,
        receiver.url,
        keys.age_recipient.read_text().strip(),
        public_key=keys.server_public_key,
        retry_attempts=1,
    )
    data["dock"]["signing_key"] = str(keys.dock_signing_key)
    data["status"] = {"socket": str(tmp_path / "control.sock")}
    data["officers"] = {"CAM-7": "PC 4711"}
    (tmp_path / "bays").mkdir()
    daemon = Daemon(settings_from(tmp_path, data))
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await asyncio.wait_for(daemon.ready.wait(), 10)
    receiver.daemon = daemon
    yield tmp_path, keys, receiver
    stop.set()
    await asyncio.wait_for(task, 15)
    assert receiver.runner is not None
    await receiver.runner.cleanup()


def _stored(store: Path) -> list[dict]:
    return stored_objects(store)


async def _state(tmp_path: Path, rel: bytes, state: str) -> dict:
    def reached():
        rows = [r for r in journal_rows(tmp_path / "state") if bytes(r["rel_path"]) == rel]
        return rows[0] if rows and rows[0]["state"] == state else None

    return await wait_for(reached, timeout=30)


async def test_flag_before_upload_officer_and_manifest_reach_the_server(setup):
    tmp_path, keys, receiver = setup
    receiver.refuse_all = True  # the clip waits (FAILED) before its upload exists
    make_bay(tmp_path / "bays", "bay-1", "CAM-7", {"DCIM/A.MP4": 70_000})
    row = await _state(tmp_path, b"DCIM/A.MP4", "FAILED")
    argv = ["--socket", str(tmp_path / "control.sock"), "flag", str(row["id"])]
    assert await asyncio.to_thread(dockctl.main, argv) == 0
    receiver.refuse_all = False
    await _state(tmp_path, b"DCIM/A.MP4", "WIPED")

    stored = _stored(tmp_path / "store")
    clip = next(s for s in stored if "manifest_for" not in s["metadata"])
    assert clip["metadata"]["evidence"] == "true"  # the flag reached the server at creation
    wrapper = next(s for s in stored if s["metadata"].get("manifest_for") == clip["upload"])
    data = wrapper["data_path"].read_bytes()
    manifest = manifests.verify(data, load_verify_key(keys.dock_public_key))
    assert manifest["clip"]["evidence"] is True
    assert manifest["officer"] == {"name": "PC 4711", "source": "station"}
    assert manifest["ciphertext"]["sha256"] == clip["sha256"]
    assert data == (tmp_path / "state" / "manifests" / f"{row['id']}.json").read_bytes()

    # the flag is in the audit log under the operator's uid, and the chain verifies
    export = tmp_path / "audit.jsonl"
    argv = ["--state-dir", str(tmp_path / "state"), "audit", "export", "--output", str(export)]
    assert dockctl.main(argv) == 0
    records = [json.loads(line) for line in export.read_text().splitlines()]
    flags = [r for r in records if r["event"] == "operator.flag"]
    # the kernel's uid, named (a login-name claim may follow it: control/actor.py)
    me = f"{pwd.getpwuid(os.getuid()).pw_name} (uid {os.getuid()})"
    assert [(f["actor"].startswith(me), f["outcome"]) for f in flags] == [(True, "ok")]
    events = [r["event"] for r in records]
    for event in ("config.loaded", "key.loaded", "camera.docked", "clip.discovered",
                  "clip.failed", "clip.confirmed", "manifest.signed", "manifest.uploaded",
                  "clip.wiped"):  # fmt: skip
        assert event in events
    assert events.index("manifest.signed") < events.index("clip.wiped")
    assert dockctl.main(["--state-dir", str(tmp_path / "state"), "audit", "verify"]) == 0

    # once uploading, a flag is refused (the server was told at creation) and says why
    argv = ["--socket", str(tmp_path / "control.sock"), "flag", str(row["id"])]
    assert await asyncio.to_thread(dockctl.main, argv) == 1


async def test_manifest_upload_failure_does_not_block_the_wipe_and_is_resent(setup):
    tmp_path, _keys, receiver = setup
    receiver.refuse_manifests = True
    make_bay(tmp_path / "bays", "bay-1", "CAM-7", {"DCIM/A.MP4": 10_000})
    first = await _state(tmp_path, b"DCIM/A.MP4", "WIPED")  # wiped on the receipt alone
    assert (tmp_path / "state" / "manifests" / f"{first['id']}.json").exists()
    assert first["manifest"] is not None and first["manifest_url"] is None
    assert not any("manifest_for" in s["metadata"] for s in _stored(tmp_path / "store"))

    receiver.refuse_manifests = False  # the server is back: the next clip's manifest goes, and
    make_bay(tmp_path / "bays", "bay-2", "CAM-8", {"DCIM/B.MP4": 10_000})  # the kept one with it
    await _state(tmp_path, b"DCIM/B.MP4", "WIPED")

    def both_sent():
        rows = journal_rows(tmp_path / "state")
        return all(r["manifest_url"] for r in rows) or None

    await wait_for(both_sent, timeout=30)
    linked = {s["metadata"].get("manifest_for") for s in _stored(tmp_path / "store")}
    assert first["upload_url"].rsplit("/", 1)[-1] in linked


async def test_a_flag_that_lands_while_the_upload_is_being_created_is_not_lost(setup):
    tmp_path, _keys, receiver = setup
    creations = []

    def flag_now():  # the operator's flag commits while the clip's POST is in flight
        journal = receiver.daemon.offloader.ctx.journal
        clip = journal.all_clips()[0]
        creations.append(clip.evidence)
        if not clip.evidence:
            journal.flag(clip.id, actor="uid:4242")

    receiver.on_create = flag_now
    make_bay(tmp_path / "bays", "bay-1", "CAM-7", {"DCIM/A.MP4": 10_000})
    await _state(tmp_path, b"DCIM/A.MP4", "WIPED")
    assert creations == [False, True]  # made again, with the flag
    clips = [s for s in _stored(tmp_path / "store") if "manifest_for" not in s["metadata"]]
    assert [c["metadata"]["evidence"] for c in clips] == ["true"]
