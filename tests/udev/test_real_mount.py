"""A real mount: an ext4 image on a loop device, mounted by MountSyscall under the runtime dir,
offloaded end to end through the daemon, then unmounted once every clip is WIPED.

Needs root (mount(2), losetup) and a kernel with ext4; skipped with the reason otherwise. Only
the udev side is left out (there is no udevd here): the docking manager gets the device the way
the udev source hands it over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from dockd.app import Daemon
from dockd.crypto.keys import keygen
from dockd.devices.mount import BlockDevice, MountSyscall
from dockd.devices.source import CameraEvents, DockedCamera
from dockd.devices.udev import CameraDocks, Candidate
from support.counting_receiver import start_counting_receiver
from support.dock import journal_rows, settings_from, wait_for

from .conftest import udev_config


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "needs root to mount (CI runs as root)"
    if not all(shutil.which(tool) for tool in ("losetup", "mkfs.ext4", "debugfs")):
        return "needs losetup, mkfs.ext4 and debugfs (util-linux, e2fsprogs)"
    if "ext4" not in Path("/proc/filesystems").read_text():
        return "this kernel has no ext4"
    return None


pytestmark = pytest.mark.skipif(_why_skip() is not None, reason=_why_skip() or "")


def mount_options(mountpoint: Path) -> set[str] | None:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == str(mountpoint):
            return set(fields[3].split(","))
    return None


class LoopSource:
    """The udev source's docking manager, handed one device, releasing it when safe."""

    def __init__(self, candidate: Candidate, mounter: MountSyscall, daemon: list[Daemon]) -> None:
        self.candidate, self.mounter, self.daemon = candidate, mounter, daemon
        self.options_when_docked: set[str] | None = None

    async def run(self, events: CameraEvents) -> None:
        source = self

        class Spy:
            def docked(self, camera: DockedCamera) -> None:
                source.options_when_docked = mount_options(camera.root)
                events.docked(camera)

            def undocked(self, camera: DockedCamera) -> None:
                events.undocked(camera)

        docks = CameraDocks(Spy(), self.mounter, lambda serial: self.daemon[0]._safe(serial))
        await docks.add(self.candidate)
        try:
            while True:
                await asyncio.sleep(0.1)
                await docks.release_safe()
        finally:
            await docks.close()


@pytest.fixture
def loop_image(tmp_path: Path):
    content = tmp_path / "camera"
    clip = content / "DCIM" / "100MEDIA" / "CLIP0001.MP4"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(os.urandom(1 << 20))
    image = tmp_path / "camera.img"
    subprocess.run(["mkfs.ext4", "-q", "-d", str(content), str(image), "16M"], check=True)
    node = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()
    yield node, image
    subprocess.run(["losetup", "-d", node], check=False)


async def test_mounted_offloaded_and_unmounted(tmp_path, loop_image):
    node, image = loop_image
    keys = keygen(tmp_path / "keys")
    receiver = await start_counting_receiver(tmp_path / "store", keys)
    data = udev_config(tmp_path, receiver.url)
    data["server"] = {
        "url": receiver.url,
        "confirm": "receipt",
        "receipt_public_key": str(keys.server_public_key),
    }
    data["encryption"] = {"recipients": [keys.age_recipient.read_text().strip()]}
    data["udev"] = {"enabled": False, "mount_root": str(tmp_path / "run" / "bays")}
    settings = settings_from(tmp_path, data)
    mounter = MountSyscall(settings.udev.mount_root, ("ext4",))
    mountpoint = settings.udev.mount_root / "BWV0001234"
    candidate = Candidate(
        sys_path="/devices/virtual/block/loop",
        serial="BWV0001234",
        model="bwv-x1",
        bay="bay 1",
        device=BlockDevice(node=node, fs_type="ext4", name="BWV0001234"),
    )
    holder: list[Daemon] = []
    source = LoopSource(candidate, mounter, holder)
    daemon = Daemon(settings, sources=[source])
    holder.append(daemon)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await wait_for(lambda: [r["state"] for r in journal_rows(tmp_path / "state")] == ["WIPED"])
        # Mounted with the options that keep a hostile camera's files inert.
        assert source.options_when_docked is not None
        assert {"rw", "nosuid", "nodev", "noexec", "noatime", "nosymfollow"} <= (
            source.options_when_docked
        )
        # All WIPED: unmounted, the mountpoint removed, the mount root still private.
        await wait_for(lambda: mount_options(mountpoint) is None and not mountpoint.exists())
        assert (settings.udev.mount_root.stat().st_mode & 0o777) == 0o700
        listing = subprocess.run(
            ["debugfs", "-R", "ls -l /DCIM/100MEDIA", str(image)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "CLIP0001.MP4" not in listing  # wiped on the device itself
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await task
        await receiver.stop()
        if mount_options(mountpoint) is not None:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)
