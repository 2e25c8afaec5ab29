"""A umockdev test bed driving dockd's udev source; runs under `umockdev-wrapper` (see conftest).

Modes:
  source DIR           UdevSource alone, with a recording CameraEvents; prints
                       {"docked"|"undocked": {...}} lines on stdout.
  daemon DIR CONFIG    the real Daemon (journal, pipeline, tus client) with the udev source.
DIR is the DirectoryStandIn base (DIR/<serial> is the camera's "mounted" storage).

Commands, one JSON object per stdin line: {"add": FIXTURE} adds a .umockdev description (udev
emits "add"); {"trigger": FIXTURE} sends "add" again for its devices (udevadm trigger);
{"unplug": FIXTURE} sends "remove" for its devices, deepest first, and removes them;
{"start": true} starts the source (devices added before it are the "already docked" ones).
Every command is answered with {"ok": COMMAND}.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

sys.path.append("/usr/lib/python3/dist-packages")  # Debian's gi (python3-gi) for UMockdev

import gi

gi.require_version("UMockdev", "1.0")
from dockd import config, logs  # noqa: E402
from dockd.app import Daemon  # noqa: E402
from dockd.devices.mount import DirectoryStandIn  # noqa: E402
from dockd.devices.source import DockedCamera  # noqa: E402
from dockd.devices.udev import UdevSource  # noqa: E402
from gi.repository import UMockdev  # noqa: E402


def emit(doc: dict[str, Any]) -> None:
    print(json.dumps(doc), flush=True)


def camera_doc(camera: DockedCamera) -> dict[str, str]:
    return {
        "serial": camera.serial,
        "bay": camera.bay,
        "model": camera.model,
        "root": str(camera.root),
        "session": camera.session,
    }


class Recorder:
    def docked(self, camera: DockedCamera) -> None:
        emit({"docked": camera_doc(camera)})

    def undocked(self, camera: DockedCamera) -> None:
        emit({"undocked": camera_doc(camera)})


def sys_paths(fixture: str) -> list[str]:
    return [
        "/sys" + line[3:].strip()
        for line in Path(fixture).read_text().splitlines()
        if line.startswith("P: ")
    ]


async def main(argv: list[str]) -> None:
    logs.configure(json=True)
    mode, base = argv[0], Path(argv[1])
    testbed = UMockdev.Testbed.new()
    mounter = DirectoryStandIn(base)
    settings = config.load(Path(argv[2]))
    daemon: Daemon | None = None
    source = UdevSource(
        settings.udev,
        settings.camera_models,
        mounter=mounter,
        # What the app wires up: release (unmount) once the offloader says every clip is done.
        safe_to_remove=(lambda serial: daemon is not None and daemon._safe(serial)),
    )
    if mode == "daemon":
        daemon = Daemon(settings, sources=[source])
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    while line := await reader.readline():
        command = json.loads(line)
        if "add" in command:
            testbed.add_from_file(command["add"])
        elif "unplug" in command:
            for path in reversed(sys_paths(command["unplug"])):
                testbed.uevent(path, "remove")
                testbed.remove_device(path)
        elif "trigger" in command:  # like `udevadm trigger`: "add" again for present devices
            for path in sys_paths(command["trigger"]):
                testbed.uevent(path, "add")
        elif "start" in command:
            if daemon is not None:
                task = asyncio.create_task(daemon.run(stop))
                await daemon.ready.wait()
            else:
                task = asyncio.create_task(source.run(Recorder()))
        emit({"ok": command})
    stop.set()
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
