"""Power cuts under `dockd run` with its journal (state_dir) and the camera bays on lazyfs.

The dock's kill -9 loop (tests/faults/test_power_cut.py) keeps the page cache, so a journal that
never fsyncs, or a wipe whose unlink is not made durable, still passes it. Here state_dir and the
bay folder live on lazyfs: at each cut the daemon is killed and everything not fsync'd is lost.
After every cut, on what survived:

* every clip the journal records WIPED is gone from the camera, and the server holds it with a
  receipt that verifies for exactly its ciphertext (upload id, length, SHA-256);
* no clip is gone from the camera without a durable CONFIRMED or WIPED record with such a receipt.

Finally the daemon runs to the end: every clip WIPED, every stored object decrypts (age CLI) to the
original bytes. The receiver runs on an ordinary disk (its own power cuts: test_receiver_store).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from dockd.crypto import receipt
from dockd.crypto.keys import keygen
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

from powerloss.conftest import cuts_from_env, seed_from_env
from powerloss.mount import LazyMount

pytestmark = [pytest.mark.powerloss, pytest.mark.timeout(900)]

CHUNK = 256 * 1024
SIZES = (0, 1, 65_536, CHUNK + 1, 700_001, 1_500_000, 3_000_017)


def _confirmed_by_server(
    row: dict[str, Any], stored: dict[str, str], server_key: Ed25519PublicKey
) -> str | None:
    """Why `row` does not prove the server holds exactly this clip's ciphertext (None: it does)."""
    if not row.get("confirmation"):
        return "no confirmation recorded"
    confirmation = json.loads(row["confirmation"])
    upload = confirmation["upload_url"].rstrip("/").rsplit("/", 1)[-1]
    signed = receipt.verify(confirmation["receipt"], server_key)
    if not signed.matches(
        upload=upload, length=row["ciphertext_length"], sha256=row["ciphertext_sha256"]
    ):
        return "the receipt does not match the journal's ciphertext"
    if stored.get(upload) != row["ciphertext_sha256"]:
        return "the server does not hold that upload with that SHA-256"
    return None


def check_after_cut(
    state_dir: Path, bays: Path, store: Path, originals: dict[tuple[str, str], str], key: Any
) -> dict[str, int]:
    """The two power-loss invariants on what survived the cut; returns the journal's states."""
    rows = journal_rows(state_dir)
    stored = {o["upload"]: o["sha256"] for o in stored_objects(store)}
    row_for = {(r["bay"], bytes(r["rel_path"]).decode()): r for r in rows}
    states: dict[str, int] = {}
    for row in rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
        if row["state"] == "WIPED":
            where = bays / row["bay"] / bytes(row["rel_path"]).decode()
            assert not where.exists(), f"{where}: journal says WIPED, file still on the camera"
            why = _confirmed_by_server(row, stored, key)
            assert why is None, f"{where}: WIPED but {why}"
    for (bay, rel), _sha in originals.items():
        if (bays / bay / rel).exists():
            continue
        row = row_for.get((bay, rel))
        assert row is not None, f"{bay}/{rel} gone from the camera, unknown to the journal"
        assert row["state"] in ("CONFIRMED", "WIPED"), f"{bay}/{rel} gone in state {row['state']}"
        why = _confirmed_by_server(row, stored, key)
        assert why is None, f"{bay}/{rel} gone from the camera but {why}"
    return states


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.1)


def test_wiped_means_gone_and_gone_means_confirmed_across_power_cuts(
    tmp_path: Path, lazy_mount: LazyMount
):
    seed = seed_from_env()
    cuts = cuts_from_env(10)
    rng = random.Random(seed)
    note = f"(DOCKD_TEST_SEED={seed})"
    age_keys = keygen(tmp_path / "age")
    receiver = ReceiverProcess(tmp_path / "receiver").start()
    server_key = receiver.public_key
    mnt = lazy_mount.mountpoint
    state_dir, bays = mnt / "state", mnt / "bays"
    # As installed: the state directory and the bay root exist (and are durable) before dockd runs.
    state_dir.mkdir()
    bays.mkdir()
    lazy_mount.sync()
    config = dock_config(
        tmp_path,
        receiver.url,
        age_keys.age_recipient.read_text().strip(),
        public_key=receiver.public_key_path,
        chunk_size=CHUNK,
        max_parallel=2,
    )
    config["dock"]["state_dir"] = str(state_dir)
    config["bays"]["folder"] = str(bays)
    daemon = DaemonProcess(write_toml(tmp_path / "dockd.toml", config), tmp_path / "daemon.log")
    originals: dict[tuple[str, str], str] = {}
    plaintext_bytes = 0
    mid_offload = 0  # cuts that found clips not yet wiped: the ones that test something
    history: list[dict[str, int]] = []
    started = time.monotonic()
    try:
        for cut in range(cuts):
            bay = f"bay-{cut + 1}"
            clips = {f"DCIM/100/C{i:03d}.MP4": rng.choice(SIZES) for i in range(4)}
            plaintext_bytes += sum(clips.values())
            for rel, sha in make_bay(bays, bay, f"CAM-{cut + 1:03d}", clips).items():
                originals[(bay, rel)] = sha
            lazy_mount.sync()  # the camera's card holds its clips before it is docked
            daemon.start()
            daemon.wait_ready()
            time.sleep(rng.uniform(0.0, 1.2))
            daemon.kill9()
            lazy_mount.power_cut()
            lazy_mount.mount()
            try:
                states = check_after_cut(state_dir, bays, receiver.store, originals, server_key)
                history.append(states)
                mid_offload += states.get("WIPED", 0) < len(originals)
            except AssertionError as exc:
                raise AssertionError(f"after cut {cut + 1}: {exc} {note}") from None
        daemon.start()
        _wait(
            lambda: (
                len(rows := journal_rows(state_dir)) == len(originals)
                and all(r["state"] == "WIPED" for r in rows)
            ),
            240,
            f"every clip wiped {note}",
        )
        daemon.wait_ready()
        assert daemon.terminate() == 0
    finally:
        if daemon.alive():
            daemon.kill9()
        receiver.stop()
    check_after_cut(state_dir, bays, receiver.store, originals, server_key)
    assert mid_offload > 0, f"no cut landed during an offload: the test proved nothing {note}"
    by_clip = {
        (o["metadata"]["bay"], o["metadata"]["path"]): o for o in stored_objects(receiver.store)
    }
    for (bay, rel), sha in originals.items():
        assert decrypt_sha256(by_clip[(bay, rel)]["data_path"], age_keys.age_identity) == sha, note
    report = {
        "test": "dock_journal_power_loss",
        "seed": seed,
        "cuts": lazy_mount.cuts,
        "clips": len(originals),
        "plaintext_bytes": plaintext_bytes,
        "cuts_mid_offload": mid_offload,
        "states_after_each_cut": history,
        "clips_lost": 0,
        "wrong_wipes": 0,
        "seconds": round(time.monotonic() - started, 1),
    }
    print("powerloss:", json.dumps(report))
