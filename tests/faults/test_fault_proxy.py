"""The dock against a flaky network and a flaky server: a seeded fault-injecting proxy in between.

About a third of all requests hit a fault (resets both ways, stalls past the client timeout, slow
drip, truncated responses, 500, 503 + Retry-After, 507, responses lost after the server acted).
Every clip must still end WIPED exactly once, with exactly one stored object that decrypts to the
original; and a completing PATCH whose response is lost must not cause a second upload.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from pathlib import Path

from dockd.app import Daemon
from dockd.crypto.keys import keygen, load_signing_key
from dockd.receiver.app import ReceiverSettings, start
from faults_proxy import FAULTS, FaultProxy
from support.dock import (
    decrypt_sha256,
    dock_config,
    journal_rows,
    make_bay,
    settings_from,
    stored_objects,
    wait_for,
)

CHUNK = 128 * 1024


async def _run_daemon(tmp_path: Path, url: str, keys) -> tuple[asyncio.Event, asyncio.Task]:
    data = dock_config(
        tmp_path,
        url,
        keys.age_recipient.read_text().strip(),
        public_key=keys.server_public_key,
        chunk_size=CHUNK,
        max_parallel=4,
        request_timeout=1.5,
    )
    (tmp_path / "bays").mkdir(exist_ok=True)
    daemon = Daemon(settings_from(tmp_path, data))
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await asyncio.wait_for(daemon.ready.wait(), 10)
    return stop, task


async def test_every_clip_arrives_once_through_a_faulty_network(tmp_path):
    seed = int(os.environ.get("DOCKD_TEST_SEED") or int.from_bytes(os.urandom(4), "big"))
    note = f"(DOCKD_TEST_SEED={seed})"
    keys = keygen(tmp_path / "keys")
    receiver = await start(
        ReceiverSettings(
            store=tmp_path / "store", signing_key=load_signing_key(keys.server_signing_key)
        ),
        "127.0.0.1",
        0,
    )
    proxy = await FaultProxy(receiver.port, seed=seed, fault_rate=0.3, stall_seconds=2.0).start()
    stop, task = await _run_daemon(tmp_path, proxy.url(), keys)
    originals = {}
    try:
        sizes = [0, 1, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5, 700_000]
        for n in range(4):
            clips = {f"DCIM/CLIP{i:02d}.MP4": size for i, size in enumerate(sizes)}
            for rel, sha in make_bay(tmp_path / "bays", f"bay-{n}", f"CAM-{n}", clips).items():
                originals[(f"CAM-{n}", rel)] = sha
        state_dir = tmp_path / "state"
        await wait_for(
            lambda: (
                len(journal_rows(state_dir)) == len(originals)
                and all(r["state"] == "WIPED" for r in journal_rows(state_dir))
            ),
            timeout=240,
            what=f"every clip wiped through the faulty proxy {note}",
        )

        # The sharpest case, forced: the response to the PATCH that completes an upload is lost.
        proxy.fault_rate = 0.0
        forced_before = len(proxy.log)
        proxy.force_next_patch = "lose_response"
        for rel, sha in make_bay(
            tmp_path / "bays", "bay-last", "CAM-LAST", {"DCIM/ONE.MP4": 5000}
        ).items():
            originals[("CAM-LAST", rel)] = sha
        await wait_for(
            lambda: (
                len(journal_rows(state_dir)) == len(originals)
                and all(r["state"] == "WIPED" for r in journal_rows(state_dir))
            ),
            timeout=60,
            what=f"the clip whose final response was lost {note}",
        )
        assert any(
            r.fault == "lose_response" and r.method == "PATCH" for r in proxy.log[forced_before:]
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await proxy.stop()
        await receiver.stop()

    fired = Counter(r.fault for r in proxy.log)
    stored = stored_objects(tmp_path / "store")
    per_clip = Counter((o["metadata"]["camera"], o["metadata"]["path"]) for o in stored)
    assert all(n == 1 for n in per_clip.values()), f"duplicate uploads: {per_clip} {note}"
    assert set(per_clip) == set(originals)
    for obj in stored:
        key = (obj["metadata"]["camera"], obj["metadata"]["path"])
        assert decrypt_sha256(obj["data_path"], keys.age_identity) == originals[key], note
    missing = [f for f in FAULTS if f != "pass" and fired[f] == 0]
    report = {
        "test": "fault_proxy",
        "seed": seed,
        "requests": len(proxy.log),
        "faults": {f: fired[f] for f in FAULTS},
        "clips": len(originals),
        "plaintext_bytes": sum(r["size"] for r in journal_rows(tmp_path / "state")),
        "clips_lost": 0,
        "duplicates": 0,
        "wrong_wipes": 0,
    }
    print("fault-proxy:", json.dumps(report))
    if out := os.environ.get("DOCKD_RELIABILITY_OUT"):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "fault_proxy.json").write_text(json.dumps(report, indent=2))
    assert not missing, f"faults never injected: {missing} {note}"
