"""Power-cut loop: kill -9 of the daemon, the receiver, or both, at random moments, many times.

New cameras dock throughout (several bays, clip sizes from 0 to a few MB, many of them exactly on
or one byte off a chunk or STREAM boundary). After EVERY cycle the invariants are checked on what
is on disk; at the end everything must be wiped and every stored object must decrypt (real age
CLI) to the camera's original bytes. The figures go to the reliability report (docs/RELIABILITY.md,
`scripts/reliability`).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from dockd.crypto import receipt
from dockd.crypto.keys import keygen
from dockd.crypto.keys import load_verify_key as _load_verify_key
from support.dock import (
    DaemonProcess,
    decrypt_sha256,
    dock_config,
    journal_rows,
    make_bay,
    stored_objects,
    write_toml,
)
from support.receiver import ReceiverProcess

CHUNK = 256 * 1024
STREAM = 65536
CYCLES = int(os.environ.get("DOCKD_POWER_CUT_CYCLES", "50"))
SIZES = [
    0,
    1,
    STREAM - 1,
    STREAM,
    STREAM + 1,
    CHUNK - 1,
    CHUNK,
    CHUNK + 1,
    3 * CHUNK + 17,
    1_000_003,
    2_500_000,
    4 * CHUNK,
]
PRE_UPLOAD = {"DISCOVERED", "HASHED", "UPLOADING", "UPLOADED", "FAILED"}


def _clips_for(rng: random.Random) -> dict[str, int]:
    picked = rng.sample(SIZES, k=4)
    return {f"DCIM/{100 + i}/CLIP{i:04d}.MP4": size for i, size in enumerate(picked)}


def check_invariants(
    rows: list[dict], originals: dict, bays: Path, store: Path, server_key
) -> None:
    """What must hold on disk at any instant, whatever was killed when."""
    stored = stored_objects(store)
    by_clip = Counter((o["metadata"]["camera"], o["metadata"]["path"]) for o in stored)
    duplicates = [k for k, n in by_clip.items() if n > 1]
    assert not duplicates, f"more than one completed upload for {duplicates}"
    stored_sha = {(o["metadata"]["camera"], o["metadata"]["path"]): o["sha256"] for o in stored}
    row_for = {(r["camera"], bytes(r["rel_path"]).decode()): r for r in rows}
    for (camera, bay, rel), _sha in originals.items():
        on_camera = (bays / bay / rel).exists()
        if on_camera:
            continue
        # Gone from the camera: only allowed with a durable, verifying receipt of exactly those bytes.
        row = row_for.get((camera, rel))
        assert row is not None, f"{camera}/{rel} gone from the camera but unknown to the journal"
        assert row["state"] in ("CONFIRMED", "WIPED"), (
            f"{camera}/{rel} wiped in state {row['state']}"
        )
        confirmation = json.loads(row["confirmation"])
        signed = receipt.verify(confirmation["receipt"], server_key)
        upload = confirmation["upload_url"].rstrip("/").rsplit("/", 1)[-1]
        assert signed.matches(
            upload=upload, length=row["ciphertext_length"], sha256=row["ciphertext_sha256"]
        )
        assert stored_sha.get((camera, rel)) == row["ciphertext_sha256"], (
            "receipt without the stored object"
        )
    for row in rows:  # the journal's own consistency
        state = row["state"]
        if state in ("HASHED", "UPLOADING", "UPLOADED"):
            assert row["plaintext_sha256"] and row["ciphertext_sha256"] and row["age_header"]
            assert row["sealed_secrets"] is not None, (
                f"clip {row['id']}: {state} without key material"
            )
        if state in ("UPLOADING", "UPLOADED"):
            assert row["upload_url"]
        if state in ("CONFIRMED", "WIPED"):
            assert row["confirmation"] and row["sealed_secrets"] is None
        assert state not in ("QUARANTINED",), f"clip {row['id']} quarantined: {row['reason']}"


def _integrity(state_dir: Path) -> str:
    conn = sqlite3.connect(f"file:{state_dir / 'journal.db'}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return value


@pytest.mark.timeout(600)
def test_power_cut_loop(tmp_path):
    seed = int(os.environ.get("DOCKD_TEST_SEED") or int.from_bytes(os.urandom(4), "big"))
    rng = random.Random(seed)
    note = f"(DOCKD_TEST_SEED={seed})"
    age_keys = keygen(tmp_path / "age")
    receiver = ReceiverProcess(tmp_path / "receiver").start()
    server_key = _load_verify_key(receiver.public_key_path)
    bays = tmp_path / "bays"
    bays.mkdir()
    data = dock_config(
        tmp_path,
        receiver.url,
        age_keys.age_recipient.read_text().strip(),
        public_key=receiver.public_key_path,
        chunk_size=CHUNK,
        max_parallel=4,
    )
    daemon = DaemonProcess(write_toml(tmp_path / "dockd.toml", data), tmp_path / "daemon.log")
    originals: dict[tuple[str, str, str], str] = {}
    kills = Counter()
    crashes = 0
    cameras = 0
    started = time.monotonic()
    try:
        daemon.start()
        for cycle in range(CYCLES):
            if cycle % 4 == 0:  # a camera docks every few cycles, whatever is going on
                cameras += 1
                serial, bay = f"CAM-{cameras:03d}", f"bay-{cameras}"
                for rel, sha in make_bay(bays, bay, serial, _clips_for(rng)).items():
                    originals[(serial, bay, rel)] = sha
            time.sleep(rng.uniform(0.05, 1.0))
            victim = rng.choices(["daemon", "receiver", "both"], weights=[6, 2, 2])[0]
            if victim in ("daemon", "both"):
                if not daemon.alive():
                    crashes += 1  # it died on its own: a bug
                daemon.kill9()
            if victim in ("receiver", "both"):
                receiver.kill9()
            kills[victim] += 1
            check_invariants(
                journal_rows(tmp_path / "state"), originals, bays, receiver.store, server_key
            )
            if victim in ("receiver", "both"):
                receiver.start()
            if victim in ("daemon", "both"):
                daemon.start()
        # Let it finish: everything wiped, nothing lost.
        _wait(
            lambda: (
                (rows := journal_rows(tmp_path / "state"))
                and len(rows) == len(originals)
                and all(r["state"] == "WIPED" for r in rows)
            ),
            180,
            f"all clips wiped {note}",
        )
        daemon.wait_ready()
        assert daemon.terminate() == 0
    finally:
        if daemon.alive():
            daemon.kill9()
        if receiver.process is not None:
            receiver.stop()
    rows = journal_rows(tmp_path / "state")
    check_invariants(rows, originals, bays, receiver.store, server_key)
    assert _integrity(tmp_path / "state") == "ok"
    stored = {
        (o["metadata"]["camera"], o["metadata"]["path"]): o for o in stored_objects(receiver.store)
    }
    assert len(stored) == len(originals), f"{len(stored)} objects for {len(originals)} clips {note}"
    for (camera, _bay, rel), sha in originals.items():
        assert decrypt_sha256(stored[(camera, rel)]["data_path"], age_keys.age_identity) == sha, (
            note
        )
    total_bytes = sum(r["size"] for r in rows)
    report = {
        "test": "power_cut_loop",
        "seed": seed,
        "cycles": CYCLES,
        "kills": dict(kills),
        "cameras": cameras,
        "clips": len(originals),
        "plaintext_bytes": total_bytes,
        "clips_lost": 0,
        "wrong_wipes": 0,
        "daemon_crashes": crashes,
        "seconds": round(time.monotonic() - started, 1),
    }
    print("power-cut:", json.dumps(report))
    if out := os.environ.get("DOCKD_RELIABILITY_OUT"):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "power_cut_loop.json").write_text(json.dumps(report, indent=2))
    assert crashes == 0, f"the daemon died on its own {crashes} times {note}"
