"""A hostile camera, end to end through a real `dockd run` process.

Symlinks (to /etc, out of the camera, symlinked directories), FIFOs, device nodes, absurd names
(newline, non-UTF-8, 255 bytes), sidecar JSON bombs, 100 000 tiny junk files, and clips that grow
or shrink while they are being read. Each ends uploaded, skipped or QUARANTINED with a clear
reason and a log entry; the daemon never crashes, never follows a link, and never wipes anything
it did not upload.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from dockd.crypto.keys import keygen, load_signing_key
from dockd.receiver.app import ReceiverSettings, start
from support.dock import (
    DaemonProcess,
    decrypt_sha256,
    dock_config,
    journal_rows,
    stored_objects,
    wait_for,
    write_toml,
)

GROWING = 512 << 20  # sparse: reads at CPU speed, long enough to be changed mid-read
JUNK_FILES = 100_000


def _write(path: bytes | Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def _build_camera(root: Path, outside: Path) -> dict[bytes, str]:
    """The hostile camera. Returns the files that are genuine clips and must arrive intact."""
    dcim = root / "DCIM"
    dcim.mkdir(parents=True)
    genuine: dict[bytes, bytes] = {
        b"DCIM/GOOD.MP4": b"g" * 5000,
        b"DCIM/new\nline.MP4": b"newline in the name",
        b"DCIM/\xff\xfe bytes.MP4": b"not UTF-8",
        b"DCIM/" + b"L" * 251 + b".MP4": b"a 255-byte name",
        b"DCIM/BOMB.MP4": b"a clip whose sidecar is a JSON bomb",
        b"DCIM/HUGE.MP4": b"a clip whose sidecar is 10 MiB",
    }
    base = os.fsencode(str(root))
    for rel, data in genuine.items():
        _write(base + b"/" + rel, data)
    (dcim / "BOMB.json").write_text("[" * 100_000)
    (dcim / "HUGE.json").write_bytes(b'{"a": "' + b"x" * (10 << 20) + b'"}')
    os.symlink("/etc/passwd", dcim / "PASSWD.MP4")
    os.symlink(outside, dcim / "OUTSIDE.MP4")
    os.symlink("/etc", dcim / "ETC")
    os.symlink("..", dcim / "UP")
    os.mkfifo(dcim / "FIFO.MP4")
    if os.geteuid() == 0:
        os.mknod(dcim / "DEV.MP4", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # like /dev/null
    junk = root / "JUNK"
    junk.mkdir()
    for i in range(JUNK_FILES // 1000):
        sub = junk / f"{i:03d}"
        sub.mkdir()
        for j in range(1000):
            (sub / f"{j:04d}.DAT").write_bytes(b"")
    for name in ("GROW.MP4", "SHRINK.MP4"):
        with open(dcim / name, "wb") as handle:
            handle.truncate(GROWING)
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in genuine.items()}


def _reading(pid: int, path: Path) -> bool:
    """True while process `pid` has `path` open with its offset inside the file (mid-read)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) != str(path):
                continue
            pos = int(Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if 0 < pos < GROWING:
            return True
    return False


@pytest.mark.timeout(300)
async def test_hostile_camera_end_to_end(tmp_path):
    keys = keygen(tmp_path / "keys")
    receiver = await start(
        ReceiverSettings(
            store=tmp_path / "store", signing_key=load_signing_key(keys.server_signing_key)
        ),
        "127.0.0.1",
        0,
    )
    outside = tmp_path / "outside.MP4"
    outside.write_bytes(b"must never be read or removed")
    bays = tmp_path / "bays"
    bays.mkdir()
    staging = tmp_path / "staging"
    genuine = await asyncio.to_thread(_build_camera, staging, outside)
    (staging / "camera.json").write_text(json.dumps({"serial": "CAM-EVIL", "model": "cam"}))
    data = dock_config(
        tmp_path,
        receiver.url,
        keys.age_recipient.read_text().strip(),
        public_key=keys.server_public_key,
    )
    data["camera_models"][0]["clip_globs"] = ["DCIM/**/*.MP4", "JUNK/**/*.MP4"]
    daemon = DaemonProcess(write_toml(tmp_path / "dockd.toml", data), tmp_path / "daemon.log")
    daemon.start()
    try:
        await asyncio.to_thread(daemon.wait_ready)
        os.rename(staging, bays / "bay-1")
        root = bays / "bay-1" / "DCIM"
        # Change the two big clips while the first pass is reading them: watch the
        # daemon's open file offsets in /proc, and strike once a read is under way.
        assert daemon.proc is not None
        pid = daemon.proc.pid
        await wait_for(
            lambda: _reading(pid, root / "GROW.MP4"), timeout=60, what="GROW.MP4 being read"
        )
        with open(root / "GROW.MP4", "ab") as handle:
            handle.write(b"appended while being read")
        await wait_for(
            lambda: _reading(pid, root / "SHRINK.MP4"), timeout=60, what="SHRINK.MP4 being read"
        )
        with open(root / "SHRINK.MP4", "r+b") as handle:
            handle.truncate(GROWING // 2)

        def settled() -> bool:
            rows = journal_rows(tmp_path / "state")
            first = {}
            for r in rows:  # the first row of a path is the version that was being read
                first.setdefault(bytes(r["rel_path"]), r["state"])
            return all(first.get(rel) == "WIPED" for rel in genuine) and all(
                first.get(p) == "QUARANTINED" for p in (b"DCIM/GROW.MP4", b"DCIM/SHRINK.MP4")
            )

        await wait_for(settled, timeout=180, what="genuine clips wiped, changing clips quarantined")
        assert daemon.alive(), "the daemon crashed"
    finally:
        if daemon.alive():
            daemon.kill9()
        await receiver.stop()

    all_rows = journal_rows(tmp_path / "state")
    rows: dict[bytes, dict] = {}
    for r in all_rows:
        rows.setdefault(bytes(r["rel_path"]), r)
    for rel in (b"DCIM/GROW.MP4", b"DCIM/SHRINK.MP4"):
        reason = rows[rel]["reason"]
        # "while being read" by the one pass (this receiver offers concatenation), "while being
        # hashed" by the two-pass preparation
        assert "changed on the camera while being" in reason, reason
    assert json.loads(rows[b"DCIM/BOMB.MP4"]["metadata"]).get("sidecar_error")
    assert json.loads(rows[b"DCIM/HUGE.MP4"]["metadata"]).get("sidecar_error")
    # Nothing but the genuine clips and the two changing ones (whose new, settled versions are
    # new clips in their own right) was ever taken.
    assert set(rows) == set(genuine) | {b"DCIM/GROW.MP4", b"DCIM/SHRINK.MP4"}
    # never followed, never removed
    assert outside.read_bytes() == b"must never be read or removed"
    for name in ("PASSWD.MP4", "OUTSIDE.MP4", "ETC", "UP"):
        assert (bays / "bay-1/DCIM" / name).is_symlink()
    assert stat.S_ISFIFO(os.lstat(bays / "bay-1/DCIM/FIFO.MP4").st_mode)
    assert sum(1 for _ in (bays / "bay-1/JUNK").rglob("*.DAT")) == JUNK_FILES
    # Whatever left the camera was uploaded and confirmed, and decrypts to its custody hash.
    stored = {o["sha256"]: o for o in stored_objects(tmp_path / "store")}
    for row in all_rows:
        rel = bytes(row["rel_path"])
        if (bays / "bay-1" / os.fsdecode(rel)).exists():
            continue
        assert row["state"] == "WIPED" or any(
            r["state"] == "WIPED" and bytes(r["rel_path"]) == rel for r in all_rows
        ), f"{rel!r} gone from the camera without a wipe record"
    for rel, sha in genuine.items():
        obj = stored[rows[rel]["ciphertext_sha256"]]
        assert decrypt_sha256(obj["data_path"], keys.age_identity) == sha
    # every refusal is in the log with its reason
    events = daemon.events()
    skipped = {e["path"]: e["reason"] for e in events if e.get("event") == "clip.skipped"}
    for name in ("PASSWD.MP4", "OUTSIDE.MP4", "FIFO.MP4"):
        assert any(name in path for path in skipped), f"{name} skipped without a log entry"
    assert not [e for e in events if e.get("event") == "clip.internal_error"]
    assert [e for e in events if e.get("event") == "clip.quarantined"]
    report = {
        "test": "hostile_camera",
        "genuine_clips": len(genuine),
        "junk_files": JUNK_FILES,
        "skipped_logged": len(skipped),
        "quarantined": 2,
        "clips_lost": 0,
        "wrong_wipes": 0,
        "links_followed": 0,
        "daemon_crashes": 0,
    }
    if out := os.environ.get("DOCKD_RELIABILITY_OUT"):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "hostile_camera.json").write_text(json.dumps(report, indent=2))
