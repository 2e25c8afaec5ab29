"""`dockd demo`: the whole chain on one machine, verified end to end.

Starts the reference receiver on loopback, makes throwaway keys, runs the dock daemon with a bay
folder, docks three simulated cameras with synthetic clips (one evidence-flagged, one zero-byte),
shows live progress until every camera is safe to remove, then decrypts what the server stored
with the age identity and compares SHA-256 with the originals. Exit 0 only if everything verified.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from dockd import config, exitcodes, logs
from dockd.app import Daemon
from dockd.crypto import age, receipt
from dockd.crypto.keys import keygen, load_age_identities, load_signing_key, load_verify_key
from dockd.receiver.app import ReceiverSettings, start
from dockd.receiver.storage import open_store
from dockd.receiver.storage.api import CompletedUpload, StoreError, UploadStore

DEMO_TIMEOUT_SECONDS = 300.0


@dataclass(frozen=True)
class DemoClip:
    bay: str
    camera: str
    rel_path: str
    size: int
    sha256: str
    evidence: bool


# bay, camera serial, officer, [(relative path, size in units of clip_mib/8 MiB, evidence)]
_BAYS = [
    (
        "bay-1",
        "CAM-0001",
        "PC 4711",
        [
            ("DCIM/100MEDIA/CLIP0001.MP4", 8, False),
            ("DCIM/100MEDIA/CLIP0002.MP4", 12, True),
            ("DCIM/100MEDIA/CLIP0003.MP4", 3, False),
        ],
    ),
    (
        "bay-2",
        "CAM-0002",
        "PC 1234",
        [("DCIM/100MEDIA/CLIP0001.MP4", 0, False), ("DCIM/100MEDIA/CLIP0002.MP4", 9, False)],
    ),
    (
        "bay-3",
        "CAM-0003",
        None,
        [
            ("DCIM/100MEDIA/CLIP0001.MP4", 6, False),
            ("DCIM/100MEDIA/CLIP0002.MP4", 10, False),
            ("DCIM/101MEDIA/CLIP0003.MP4", 1, False),
        ],
    ),
]


def _write_clip(path: Path, size: int) -> str:
    """Random bytes (incompressible, like video), written to a temp name then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    partial = path.with_name(path.name + ".part")
    with partial.open("wb") as handle:
        remaining = size
        while remaining:
            piece = os.urandom(min(remaining, 1 << 20))
            digest.update(piece)
            handle.write(piece)
            remaining -= len(piece)
    partial.rename(path)
    return digest.hexdigest()


def dock_cameras(bays_dir: Path, clip_mib: int) -> list[DemoClip]:
    """Create the bay folders: clips first, the identity file last (that is the 'docking')."""
    unit = max(clip_mib, 1) * (1 << 20) // 8
    clips = []
    for bay, serial, officer, files in _BAYS:
        staging = bays_dir / f".{bay}.staging"
        for rel, units, evidence in files:
            size = units * unit + (units * 4099 if units else 0)  # off chunk boundaries on purpose
            digest = _write_clip(staging / rel, size)
            if evidence:
                sidecar = (staging / rel).with_suffix(".json")
                sidecar.write_text(json.dumps({"evidence": True, "category": "incident"}))
            clips.append(DemoClip(bay, serial, rel, size, digest, evidence))
        identity = {"serial": serial, "model": "demo-cam"}
        if officer:
            identity["officer"] = officer
        (staging / "camera.json").write_text(json.dumps(identity))
        staging.rename(bays_dir / bay)
    return clips


DEMO_DOCK_ID = "demo-dock"


def demo_settings(workdir: Path, server_url: str) -> config.Settings:
    data = {
        "dock": {
            "id": DEMO_DOCK_ID,
            "state_dir": str(workdir / "state"),
            # signs each clip's manifest: `dockd verify --workdir DIR` checks them offline
            "signing_key": str(workdir / "dock-signing.key"),
        },
        "server": {
            "url": server_url,
            "confirm": "receipt",
            "receipt_public_key": str(workdir / "server-receipt.pub"),
            "token_file": str(workdir / "token"),
        },
        "encryption": {"recipients": [(workdir / "recipient.txt").read_text().strip()]},
        "upload": {
            "chunk_size": "4MiB",
            "max_parallel": 4,
            "retry_initial": 0.2,
            "retry_max": 2.0,
            "failure_backoff": 1.0,
            "failure_backoff_max": 5.0,
        },
        "camera_models": [
            {"name": "demo-cam", "clip_globs": ["DCIM/**/*.MP4"], "sidecar": "{stem}.json"}
        ],
        "discovery": {"scan_interval": 0.3, "settle_time": 0.3},
        "bays": {"folder": str(workdir / "bays")},
    }
    control = workdir / "state" / "control.sock"
    if len(str(control)) < 100:  # AF_UNIX paths are limited to ~108 bytes
        # Beside the journal, so `dockctl --state-dir DIR/state status` finds the running daemon,
        # and reads the journal once the demo has ended.
        data["status"] = {"socket": str(control)}
    return config.parse(workdir / "demo.toml", data)


class _HashSink:
    """A write-only stream that keeps only the SHA-256 of what is written (bounded memory)."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)


def verify_store(
    store: Path | UploadStore,
    identity_file: Path,
    public_key_file: Path,
    clips: list[DemoClip],
) -> list[tuple[DemoClip, str]]:
    """Decrypt each stored object and compare with the original. Returns (clip, verdict) pairs."""
    identities = load_age_identities(identity_file)
    server_key = load_verify_key(public_key_file)
    # Read through the store interface, never by file name: the same check for every backend.
    uploads = store if isinstance(store, UploadStore) else open_store(store)
    stored: dict[tuple[str, str], CompletedUpload] = {}
    for record in uploads.completed():
        meta = record.metadata
        stored[(meta.get("camera") or "", meta.get("path") or "")] = record
    results = []
    for clip in clips:
        found = stored.get((clip.camera, clip.rel_path))
        if found is None:
            results.append((clip, "MISSING on server"))
            continue
        try:
            signed = receipt.verify(found.receipt, server_key)
        except receipt.ReceiptError as exc:
            results.append((clip, f"receipt invalid: {exc}"))
            continue
        sink = _HashSink()
        with uploads.open_completed(found.upload) as source:
            try:
                age.decrypt(source, sink, identities)  # type: ignore[arg-type]
            except age.AgeError as exc:
                results.append((clip, f"does not decrypt: {exc}"))
                continue
        digest = sink.digest
        if digest.hexdigest() != clip.sha256:
            results.append((clip, "decrypts to DIFFERENT bytes"))
        elif found.metadata.get("sha256") != clip.sha256:
            results.append((clip, "custody hash in metadata differs"))
        elif signed.sha256 != found.sha256:
            results.append((clip, "receipt does not match stored bytes"))
        else:
            results.append((clip, "verified"))
    return results


def write_demo_token(workdir: Path) -> dict[str, str]:
    """A throwaway bearer token for this run: the dock reads it from `workdir/token` (0600),
    the receiver gets it as its tokens mapping. The demo runs authenticated like a real site."""
    token = secrets.token_urlsafe(32)
    fd = os.open(workdir / "token", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return {token: DEMO_DOCK_ID}


StoreChoice = tuple[str, dict[str, Any]]  # a `--store` spec and open_store's S3 options


def demo_store(workdir: Path, choice: StoreChoice | None) -> Path | UploadStore:
    """The demo receiver's store: a file store in the workdir, or the S3 store named on the
    command line, with the retention dockd serve would use (31 days, legal hold on the
    evidence clip) and its audit log in DIR/server-audit/."""
    if choice is None:
        return workdir / "store"
    from dockd.receiver.audit import FileServerAudit
    from dockd.receiver.retention.lock import ObjectLockRetention
    from dockd.receiver.retention.policy import RetentionPolicy

    spec, s3_options = choice
    audit = workdir / "server-audit"
    audit.mkdir(mode=0o700, exist_ok=True)
    return open_store(
        spec,
        s3_options=s3_options,
        retention=lambda work: ObjectLockRetention(
            RetentionPolicy(), FileServerAudit(audit), work_bucket=work
        ),
    )


async def _run(
    workdir: Path, clip_mib: int, console: Console, *, keep: bool, store: StoreChoice | None
) -> int:
    keygen(workdir)
    uploads = demo_store(workdir, store)
    receiver = await start(
        ReceiverSettings(
            store=uploads,
            signing_key=load_signing_key(workdir / "server-receipt.key"),
            tokens=write_demo_token(workdir),
        ),
        "127.0.0.1",
        0,
    )
    settings = demo_settings(workdir, receiver.url)
    daemon = Daemon(settings)
    stop = asyncio.Event()
    daemon_task = asyncio.create_task(daemon.run(stop))
    started = time.monotonic()
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        where = uploads.describe() if isinstance(uploads, UploadStore) else uploads
        console.print(f"[bold]receiver[/] {receiver.url}   [bold]store[/] {where}")
        if settings.status.socket is not None:
            console.print(f"[bold]status[/]   dockctl --state-dir {settings.dock.state_dir} status")
        clips = await asyncio.to_thread(dock_cameras, workdir / "bays", clip_mib)
        total = sum(c.size for c in clips)
        console.print(f"docked {len(_BAYS)} cameras, {len(clips)} clips, {total / 1e6:.1f} MB")
        await _watch(daemon, [b[1] for b in _BAYS], console)
    finally:
        stop.set()
        await daemon_task
        await receiver.stop()
    elapsed = time.monotonic() - started
    results = await asyncio.to_thread(
        verify_store,
        uploads,
        workdir / "identity.txt",
        workdir / "server-receipt.pub",
        clips,
    )
    table = Table(title="what the server stored, decrypted with identity.txt")
    for column in ("bay", "camera", "clip", "bytes", "sha256", "evidence", "result"):
        table.add_column(column, no_wrap=column in ("clip", "result"))
    for clip, verdict in results:
        gone = not (workdir / "bays" / clip.bay / clip.rel_path).exists()
        style = "green" if verdict == "verified" and gone else "red"
        table.add_row(
            clip.bay,
            clip.camera,
            clip.rel_path,
            f"{clip.size:,}",
            clip.sha256[:12],
            "yes" if clip.evidence else "",
            f"[{style}]{verdict}{'' if gone else ', NOT wiped'}[/]",
        )
    console.print(table)
    # The daemon has stopped: only commands that read what it left behind work from here on.
    where = (
        f"everything kept in {workdir} (check offline: dockd verify --workdir {workdir}; "
        f"what the journal recorded: dockctl --state-dir {settings.dock.state_dir} clips)"
        if keep
        else "temporary files removed"
    )
    ok = all(
        v == "verified" and not (workdir / "bays" / c.bay / c.rel_path).exists() for c, v in results
    )
    console.print(
        f"{'[green]ALL VERIFIED' if ok else '[red]VERIFICATION FAILED'}[/]: {len(clips)} clips, "
        f"{total / 1e6:.1f} MB, {elapsed:.1f} s; {where}"
    )
    return exitcodes.OK if ok else exitcodes.FAILURE


async def _watch(daemon: Daemon, serials: list[str], console: Console) -> None:
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    )
    bars: dict[tuple[int, str], int] = {}
    deadline = time.monotonic() + DEMO_TIMEOUT_SECONDS
    with Live(progress, console=console, refresh_per_second=8, transient=True):
        while True:
            offloader = daemon.offloader
            assert offloader is not None
            live = set()
            for entry in daemon.progress.snapshot():
                key = (entry.clip_id, entry.stage)
                live.add(key)
                if key not in bars:
                    bars[key] = progress.add_task(
                        f"{entry.bay} {entry.stage:<10} {entry.name[-28:]}",
                        total=max(entry.total, 1),
                    )
                progress.update(bars[key], completed=entry.done)
            for key in set(bars) - live:
                progress.remove_task(bars.pop(key))
            states = [offloader.status(s) for s in serials if s in offloader.views]
            if len(states) == len(serials) and all(s.safe_to_remove for s in states):
                for s in states:
                    console.print(
                        f"{s.bay}: {s.serial} SAFE TO REMOVE ({s.clips.get('WIPED', 0)} wiped)"
                    )
                return
            if time.monotonic() > deadline:
                for s in states:
                    console.print(f"[red]{s.bay}: {s.serial}: {s.why_not}")
                raise TimeoutError("demo did not finish in time")
            await asyncio.sleep(0.1)


def run_demo(*, workdir: Path | None, clip_mib: int, store: StoreChoice | None = None) -> int:
    console = Console(width=None if Console().is_terminal else 120)
    logs.configure(json=False, level="warning")
    structlog.contextvars.clear_contextvars()
    temporary = workdir is None
    path = Path(tempfile.mkdtemp(prefix="dockd-demo-")) if workdir is None else workdir
    if workdir is not None:
        path.mkdir(parents=True, exist_ok=True)
        if any(path.iterdir()):
            console.print(f"[red]dockd demo: {path} is not empty; give an empty or new directory")
            return exitcodes.USAGE
    try:
        return asyncio.run(_run(path, clip_mib, console, keep=not temporary, store=store))
    except TimeoutError as exc:
        console.print(f"[red]dockd demo: {exc}")
        return exitcodes.FAILURE
    except ValueError as exc:  # a --store that cannot be configured (S3ConfigError, key file)
        console.print(f"[red]dockd demo: --store: {exc}")
        return exitcodes.CONFIG
    except StoreError as exc:  # e.g. the S3 gateway does not answer
        console.print(f"[red]dockd demo: store unavailable: {exc}")
        return exitcodes.UNAVAILABLE
    finally:
        if temporary:
            shutil.rmtree(path, ignore_errors=True)
