"""Test support for the dock side: bays with clips, config files, a `dockd run` subprocess."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from dockd import config
from dockd.receiver.storage.api import UploadStore
from dockd.receiver.storage.file import FileStore


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    """Just enough TOML for dockd configs: tables of scalars/lists and arrays of tables."""
    lines: list[str] = []
    for name, table in data.items():
        tables = table if isinstance(table, list) else [table]
        for item in tables:
            lines.append(f"[[{name}]]" if isinstance(table, list) else f"[{name}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in item.items()]
            lines.append("")
    path.write_text("\n".join(lines))
    return path


def dock_config(
    workdir: Path,
    server_url: str,
    recipient: str,
    *,
    public_key: Path | None,
    confirm: str = "receipt",
    chunk_size: int = 256 * 1024,
    max_parallel: int = 4,
    **upload: Any,
) -> dict[str, Any]:
    server: dict[str, Any] = {"url": server_url, "confirm": confirm}
    if public_key is not None:
        server["receipt_public_key"] = str(public_key)
    return {
        "dock": {"id": "test-dock", "state_dir": str(workdir / "state")},
        "server": server,
        "encryption": {"recipients": [recipient]},
        "upload": {
            "chunk_size": chunk_size,
            "max_parallel": max_parallel,
            "retry_attempts": 3,
            "retry_initial": 0.05,
            "retry_max": 0.5,
            "failure_backoff": 0.2,
            "failure_backoff_max": 1.0,
            **upload,
        },
        "camera_models": [
            {"name": "cam", "clip_globs": ["DCIM/**/*.MP4"], "sidecar": "{stem}.json"}
        ],
        "discovery": {"scan_interval": 0.1, "settle_time": 0.1},
        "bays": {"folder": str(workdir / "bays")},
    }


def settings_from(workdir: Path, data: dict[str, Any]) -> config.Settings:
    return config.load(write_toml(workdir / "dockd.toml", data))


def make_bay(
    bays: Path,
    bay: str,
    serial: str,
    clips: dict[str, bytes | int],
    *,
    sidecars: dict[str, dict[str, Any]] | None = None,
) -> dict[str, str]:
    """Create a bay folder (clips first, camera.json last). Returns rel path → plaintext sha256.

    An int instead of bytes makes a pseudo-random clip of that size without holding it twice.
    """
    staging = bays / f".{bay}.staging"
    digests: dict[str, str] = {}
    for rel, content in clips.items():
        path = staging / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with path.open("wb") as handle:
            if isinstance(content, bytes):
                handle.write(content)
                digest.update(content)
            else:
                seed = hashlib.sha256(f"{serial}/{rel}".encode()).digest()
                remaining = content
                counter = 0
                while remaining:
                    block = hashlib.sha512(seed + counter.to_bytes(8, "big")).digest() * 2048
                    block = block[: min(remaining, len(block))]
                    handle.write(block)
                    digest.update(block)
                    remaining -= len(block)
                    counter += 1
        digests[rel] = digest.hexdigest()
    for rel, data in (sidecars or {}).items():
        (staging / rel).write_text(json.dumps(data))
    (staging / "camera.json").write_text(json.dumps({"serial": serial, "model": "cam"}))
    staging.rename(bays / bay)
    return digests


def journal_rows(state_dir: Path) -> list[dict[str, Any]]:
    """Read the journal from outside the daemon (read-only; the daemon may be writing)."""
    path = state_dir / "journal.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM clips ORDER BY id")]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


@dataclass(frozen=True)
class StoredObject:
    """A completed upload's bytes, read through the store interface (never by file name).

    `stem` is the upload id (what callers used to take from `complete/<id>.bin`).
    """

    store: UploadStore
    upload: str

    @property
    def stem(self) -> str:
        return self.upload

    def open(self, mode: str = "rb") -> BinaryIO:
        assert mode == "rb", "stored objects are read-only"
        return self.store.open_completed(self.upload)

    def read_bytes(self) -> bytes:
        with self.open() as stream:
            return stream.read()


def stored_objects(store: UploadStore | Path) -> list[dict[str, Any]]:
    """The receiver's completed uploads (a directory is a file store): sidecar dicts, with the
    object under "data_path" (a `StoredObject`, the key kept from when it was a file path)."""
    opened = store if isinstance(store, UploadStore) else FileStore(store)
    out = []
    for record in opened.completed():
        meta = dataclasses.asdict(record)
        meta["data_path"] = StoredObject(opened, record.upload)
        out.append(meta)
    return out


def decrypt_sha256(stored: Path | StoredObject, identity_file: Path) -> str:
    """SHA-256 of what the real `age` CLI decrypts the stored object to (streamed to its stdin)."""
    argv = ["age", "-d", "-i", str(identity_file)]
    with stored.open("rb") as source:
        try:
            source.fileno()
        except (OSError, io.UnsupportedOperation):  # an in-memory store: hand the bytes over
            proc = subprocess.run(argv, input=source.read(), capture_output=True, check=True)
        else:
            proc = subprocess.run(argv, stdin=source, capture_output=True, check=True)
    return hashlib.sha256(proc.stdout).hexdigest()


async def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 60.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


class DaemonProcess:
    """`dockd run --config PATH` as a real process, for kill -9 tests."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def _starts(self) -> int:
        return sum(1 for e in self.events() if e.get("event") == "dockd.started")

    def start(self) -> None:
        self._starts_before = self._starts() if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dockd.cli",
                "run",
                "--config",
                str(self.config_path),
                "--log-format",
                "json",
            ],
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until this start logged `dockd.started` (signal handlers are installed by then)."""
        deadline = time.monotonic() + timeout
        while self._starts() <= self._starts_before:
            if not self.alive() or time.monotonic() > deadline:
                raise AssertionError(
                    f"dockd run did not become ready:\n{self.log_path.read_text()[-2000:]}"
                )
            time.sleep(0.02)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out
