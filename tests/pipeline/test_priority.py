"""Dispatch order across cameras: evidence first, then oldest recording, with a starvation guard.

A real daemon (one slot: `max_parallel = 1`) uploads to the real reference receiver; a gate in
front of the receiver holds the first clip's creation until every other clip is in the journal,
so the order the rest are created in is the dispatcher's choice alone, not a scan race.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from dockd.app import Daemon
from dockd.crypto.keys import KeygenResult, load_signing_key
from dockd.receiver.app import ReceiverSettings, create_app
from support.dock import dock_config, journal_rows, make_bay, settings_from, wait_for


@dataclass
class GatedReceiver:
    url: str
    runner: web.AppRunner
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    created: list[str] = field(default_factory=list)  # clip paths, in creation order
    posts: int = 0  # creations of any kind (a one-pass clip's partial upload has no metadata)


def _metadata_path(header: str) -> str:
    for pair in header.split(","):
        key, _, value = pair.strip().partition(" ")
        if key == "path":
            return base64.b64decode(value).decode()
    return "?"


@pytest.fixture
async def gated(tmp_path: Path, keys: KeygenResult) -> AsyncIterator[GatedReceiver]:
    settings = ReceiverSettings(
        store=tmp_path / "store", signing_key=load_signing_key(keys.server_signing_key)
    )
    app = create_app(settings)
    holder: dict[str, GatedReceiver] = {}

    @web.middleware
    async def gate(request: web.Request, handler):  # type: ignore[no-untyped-def]
        receiver = holder["r"]
        if request.method == "POST":
            receiver.posts += 1
            path = _metadata_path(request.headers.get("Upload-Metadata", ""))
            if path != "?":  # the upload that names the clip: the final one, in one pass
                receiver.created.append(path)
            await receiver.gate.wait()
        return await handler(request)

    app.middlewares.insert(0, gate)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    holder["r"] = GatedReceiver(f"http://127.0.0.1:{port}/files/", runner)
    yield holder["r"]
    holder["r"].gate.set()
    await runner.cleanup()


def _clips(spec: dict[str, tuple[str, bool]]) -> tuple[dict[str, bytes | int], dict[str, dict]]:
    """name → (recorded_at, evidence) as clips under DCIM/ with their sidecars."""
    clips: dict[str, bytes | int] = {}
    sidecars: dict[str, dict] = {}
    for name, (recorded_at, evidence) in spec.items():
        clips[f"DCIM/{name}.MP4"] = 1000
        sidecars[f"DCIM/{name}.json"] = {"recorded_at": recorded_at, "evidence": evidence}
    return clips, sidecars


async def _dispatch_order(
    tmp_path: Path,
    gated: GatedReceiver,
    keys: KeygenResult,
    recipient: str,
    cameras: dict[str, dict[str, tuple[str, bool]]],
    **upload: object,
) -> list[str]:
    """Run the daemon over a held first clip plus `cameras`; the creation order after it."""
    data = dock_config(
        tmp_path, gated.url, recipient, public_key=keys.server_public_key, max_parallel=1, **upload
    )
    bays = tmp_path / "bays"
    bays.mkdir()
    daemon = Daemon(settings_from(tmp_path, data))
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        clips, sidecars = _clips({"first": ("2000-01-01T00:00:00Z", False)})
        make_bay(bays, "bay-0", "CAM-0", clips, sidecars=sidecars)
        await wait_for(lambda: gated.posts == 1, timeout=20)
        total = 1
        for index, (serial, spec) in enumerate(cameras.items(), start=1):
            clips, sidecars = _clips(spec)
            make_bay(bays, f"bay-{index}", serial, clips, sidecars=sidecars)
            total += len(spec)
        state = tmp_path / "state"
        await wait_for(lambda: len(journal_rows(state)) == total, timeout=20)
        gated.gate.set()
        await wait_for(
            lambda: [r["state"] for r in journal_rows(state)] == ["WIPED"] * total, timeout=60
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    assert gated.created[0] == "DCIM/first.MP4"
    return [Path(p).stem for p in gated.created[1:]]


async def test_evidence_of_every_camera_first_then_oldest(tmp_path, gated, keys, recipient):
    order = await _dispatch_order(
        tmp_path,
        gated,
        keys,
        recipient,
        {
            "CAM-A": {
                "a_old": ("2024-01-01T08:00:00Z", False),
                "a_flagged_late": ("2024-01-03T08:00:00Z", True),
            },
            "CAM-B": {
                "b_flagged": ("2024-01-02T08:00:00Z", True),
                "b_oldest": ("2023-12-31T08:00:00Z", False),
                "b_new": ("2024-01-05T08:00:00Z", False),
            },
        },
        evidence_streak=100,  # guard out of the way: pure priority
    )
    assert order == ["b_flagged", "a_flagged_late", "b_oldest", "a_old", "b_new"]


async def test_starvation_guard_lets_other_clips_through_a_stream_of_evidence(
    tmp_path, gated, keys, recipient
):
    flagged = {f"f{i}": (f"2024-02-0{i}T08:00:00Z", True) for i in range(1, 6)}
    order = await _dispatch_order(
        tmp_path,
        gated,
        keys,
        recipient,
        {
            "CAM-A": flagged,
            "CAM-B": {
                "p1": ("2024-01-01T08:00:00Z", False),
                "p2": ("2024-01-02T08:00:00Z", False),
            },
        },
        evidence_streak=2,
    )
    # Two evidence clips in a row, then the oldest other clip; evidence again, and so on.
    assert order == ["f1", "f2", "p1", "f3", "f4", "p2", "f5"]
