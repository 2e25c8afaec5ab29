"""umockdev test bed for the udev source: `bed.py` under `umockdev-wrapper`, driven over pipes."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from support.dock import write_toml

HERE = Path(__file__).parent
FIXTURES = HERE.parent / "fixtures"
CAMERA = FIXTURES / "bwv-camera.umockdev"  # serial BWV0001234, vendor 2e8a:0001, port 1
CAMERA_PORT3 = FIXTURES / "bwv-camera-port3.umockdev"  # serial BWV0009999, unmapped port 3
STICK = FIXTURES / "usb-stick.umockdev"  # SanDisk 0781:5581, not a camera
PORT1 = "pci-0000:00:14.0-usb-0:1:1.0-scsi-0:0:0:0"

pytestmark = pytest.mark.skipif(
    shutil.which("umockdev-wrapper") is None
    or not Path("/usr/lib/python3/dist-packages/gi").is_dir(),
    reason="needs umockdev, gir1.2-umockdev-1.0 and python3-gi (scripts/setup --test)",
)


def udev_config(workdir: Path, server_url: str = "http://127.0.0.1:9/files/") -> dict[str, Any]:
    """A dock config with the udev source on and port 1 mapped to "bay 1"."""
    return {
        "dock": {"id": "test-dock", "state_dir": str(workdir / "state")},
        "server": {"url": server_url, "confirm": "offset"},
        "encryption": {
            "recipients": ["age1ad4k0fu659u8d5jec9egqlkplq7gdre274yqtqt8aa4ns7k2e5jqr0de97"]
        },
        "camera_models": [
            {
                "name": "bwv-x1",
                "vendor_id": "2e8a",
                "product_id": "0001",
                "serial_pattern": "BWV[0-9]+",
                "clip_globs": ["DCIM/**/*.MP4"],
            }
        ],
        "discovery": {"scan_interval": 0.1, "settle_time": 0.1},
        "udev": {"enabled": True},
    }


def write_config(path: Path, data: dict[str, Any], bays: dict[str, str] | None = None) -> Path:
    """write_toml, plus the [udev.bays] table (port 1 = "bay 1" unless told otherwise)."""
    write_toml(path, data)
    bays = {PORT1: "bay 1"} if bays is None else bays
    lines = ["", "[udev.bays]", *(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in bays.items())]
    with path.open("a") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


class Bed:
    """One bed.py process: send commands, wait for its stdout lines and its (JSON) log lines."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path
        self.lines: list[dict[str, Any]] = []

    async def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({k: str(v) for k, v in command.items()}) + "\n").encode())
        await self.proc.stdin.drain()
        await self.wait_line(lambda d: "ok" in d and set(d["ok"]) == set(command), what="ack")

    async def wait_line(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0, what: str = ""
    ) -> dict[str, Any]:
        for line in self.lines:
            if predicate(line):
                self.lines.remove(line)
                return line
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"bed exited waiting for {what}:\n{self.log()}")
                try:
                    doc = json.loads(raw)
                except ValueError:  # umockdev complaining on stdout: show it with the log
                    raise AssertionError(f"bed said {raw!r}:\n{self.log()}") from None
                if predicate(doc):
                    return doc
                self.lines.append(doc)

    async def wait_event(self, name: str, count: int = 1, timeout: float = 30.0) -> list[Any]:
        """Poll the log until `count` events called `name` are there; return them all."""
        async with asyncio.timeout(timeout):
            while len(found := self.events(name)) < count:
                await asyncio.sleep(0.05)
        return found

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("event") == name:
                out.append(doc)
        return out


@pytest.fixture
async def start_bed(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    beds: list[Bed] = []

    async def start(mode: str, stand_in: Path, config_path: Path) -> Bed:
        log_path = tmp_path / f"bed-{len(beds)}.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                "umockdev-wrapper",
                sys.executable,
                str(HERE / "bed.py"),
                mode,
                str(stand_in),
                str(config_path),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        bed = Bed(proc, log_path)
        beds.append(bed)
        return bed

    yield start
    for bed in beds:
        if bed.proc.returncode is None:
            assert bed.proc.stdin is not None
            bed.proc.stdin.close()
            try:
                async with asyncio.timeout(15):
                    await bed.proc.wait()
            except TimeoutError:
                bed.proc.kill()
                await bed.proc.wait()
