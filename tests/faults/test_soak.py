"""Soak: 8 bays docking and undocking cameras for a long time, with network faults on.

Outside the default run (`scripts/test -m soak`; DOCKD_SOAK_SECONDS, default 900). The daemon is a
real process behind the fault-injecting proxy; whenever a bay's camera is fully wiped it leaves
and a new one docks. Memory (RSS) and file descriptors, sampled over time, must stay bounded:
after the warm-up they may not grow past the warm-up's peak by more than a small margin.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import time
from pathlib import Path

import pytest
from dockd.crypto.keys import keygen, load_signing_key
from dockd.receiver.app import ReceiverSettings, start
from faults_proxy import FaultProxy
from support.dock import (
    DaemonProcess,
    decrypt_sha256,
    dock_config,
    journal_rows,
    make_bay,
    stored_objects,
    write_toml,
)

pytestmark = pytest.mark.soak

BAYS = 8
SECONDS = float(os.environ.get("DOCKD_SOAK_SECONDS", "900"))


def _sample(pid: int) -> tuple[int, int]:
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.timeout(int(SECONDS) + 600)
async def test_soak_eight_bays_with_faults(tmp_path):
    seed = int(os.environ.get("DOCKD_TEST_SEED") or int.from_bytes(os.urandom(4), "big"))
    rng = random.Random(seed)
    keys = keygen(tmp_path / "keys")
    receiver = await start(
        ReceiverSettings(
            store=tmp_path / "store", signing_key=load_signing_key(keys.server_signing_key)
        ),
        "127.0.0.1",
        0,
    )
    proxy = await FaultProxy(receiver.port, seed=seed, fault_rate=0.1, stall_seconds=2.0).start()
    bays = tmp_path / "bays"
    bays.mkdir()
    data = dock_config(
        tmp_path,
        proxy.url(),
        keys.age_recipient.read_text().strip(),
        public_key=keys.server_public_key,
        chunk_size=256 * 1024,
        max_parallel=4,
        request_timeout=2.0,
    )
    daemon = DaemonProcess(write_toml(tmp_path / "dockd.toml", data), tmp_path / "daemon.log")
    daemon.start()
    originals: dict[tuple[str, str], str] = {}
    in_bay: dict[int, str] = {}
    cameras = 0
    samples: list[tuple[float, int, int]] = []
    started = time.monotonic()
    try:
        await asyncio.to_thread(daemon.wait_ready)
        assert daemon.proc is not None
        while time.monotonic() - started < SECONDS:
            rows = journal_rows(tmp_path / "state")
            for slot in range(BAYS):
                serial = in_bay.get(slot)
                mine = [r for r in rows if r["camera"] == serial]
                if serial is not None and (
                    len(mine) < 1 or any(r["state"] != "WIPED" for r in mine)
                ):
                    continue
                if serial is not None:  # the camera is done: it leaves, the next one docks
                    await asyncio.to_thread(shutil.rmtree, bays / f"bay-{slot}")
                cameras += 1
                serial = in_bay[slot] = f"CAM-{cameras:05d}"
                clips = {
                    f"DCIM/C{i}.MP4": rng.choice([0, 1, 65536, 300_000, 1_500_000, 4_000_000])
                    for i in range(rng.randint(1, 4))
                }
                digests = await asyncio.to_thread(make_bay, bays, f"bay-{slot}", serial, clips)
                originals.update({(serial, rel): sha for rel, sha in digests.items()})
            samples.append((time.monotonic() - started, *_sample(daemon.proc.pid)))
            await asyncio.sleep(2.0)
        proxy.fault_rate = 0.0
        await asyncio.sleep(0)
        from support.dock import wait_for

        await wait_for(
            lambda: (
                len(journal_rows(tmp_path / "state")) == len(originals)
                and all(r["state"] == "WIPED" for r in journal_rows(tmp_path / "state"))
            ),
            timeout=300,
            what="every soak clip wiped",
        )
        assert daemon.alive(), "the daemon died during the soak"
    finally:
        if daemon.alive():
            daemon.kill9()
        await proxy.stop()
        await receiver.stop()
    warm = [s for s in samples if s[0] <= SECONDS * 0.25] or samples[:1]
    late = [s for s in samples if s[0] > SECONDS * 0.25] or samples[-1:]
    warm_rss, warm_fds = max(s[1] for s in warm), max(s[2] for s in warm)
    late_rss, late_fds = max(s[1] for s in late), max(s[2] for s in late)
    stored = {}
    for obj in stored_objects(tmp_path / "store"):
        meta = obj["metadata"]
        if "camera" in meta and "manifest_for" not in meta:
            stored[(meta["camera"], meta["path"])] = obj["data_path"]
    assert set(stored) == set(originals)
    for key in rng.sample(sorted(originals), k=min(50, len(originals))):  # spot-check decryption
        assert decrypt_sha256(stored[key], keys.age_identity) == originals[key]
    report = {
        "test": "soak",
        "seed": seed,
        "seconds": SECONDS,
        "bays": BAYS,
        "cameras": cameras,
        "clips": len(originals),
        "requests": len(proxy.log),
        "faults": sum(1 for r in proxy.log if r.fault != "pass"),
        "rss_kib_warmup_peak": warm_rss,
        "rss_kib_late_peak": late_rss,
        "fds_warmup_peak": warm_fds,
        "fds_late_peak": late_fds,
        "clips_lost": 0,
        "wrong_wipes": 0,
        "daemon_crashes": 0,
    }
    print("soak:", json.dumps(report))
    if out := os.environ.get("DOCKD_RELIABILITY_OUT"):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "soak.json").write_text(json.dumps(report, indent=2))
    assert late_rss <= warm_rss * 1.25 + 16 * 1024, f"RSS grew: {warm_rss} -> {late_rss} KiB"
    assert late_fds <= warm_fds + 8, f"file descriptors grew: {warm_fds} -> {late_fds}"
