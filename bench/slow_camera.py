"""A camera behind a slow link for the bench: an ext4 image on a loop device, read-throttled for
the daemon's processes by the kernel's block-I/O throttle.

The throttle is the cgroup one: v1 `blkio.throttle.read_bps_device`, or v2 `io.max rbps=` where
the io controller is enabled. It limits reads the daemon's threads issue to that one device, at
the rate a USB 2 card reader gives (~35 MB/s), so a second pass over the camera costs what it
would on a dock. The page cache is dropped for the device by unmounting and mounting it again
after the clip is written. Needs root, losetup and mkfs.ext4; `probe()` says what is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

_V1 = Path("/sys/fs/cgroup/blkio")
_V2_CANDIDATES = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))
_GROUP = "dockd-bench-usb"


def _v2_root() -> Path | None:
    for root in _V2_CANDIDATES:
        controllers = root / "cgroup.controllers"
        if controllers.exists() and "io" in controllers.read_text().split():
            return root
    return None


def probe() -> str | None:
    """None if a throttled camera can be set up here, else why not (printed by the bench)."""
    if os.geteuid() != 0:
        return "needs root (loop device, mount, cgroup)"
    for tool in ("losetup", "mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if not (_V1 / "blkio.throttle.read_bps_device").exists() and _v2_root() is None:
        return "no cgroup block-I/O throttle (neither v1 blkio nor v2 io controller)"
    if not Path("/dev/loop-control").exists():
        return "no loop devices"
    return None


class SlowCamera:
    """`with SlowCamera(work, size) as camera:` an empty mounted file system at `camera.root`;
    write the bay into it, call `cold()`, then `throttle(pid, rate)` the daemon."""

    def __init__(self, work: Path, size: int) -> None:
        self.image = work / "usb.img"
        self.root = work / "usb"
        self._size = size + max(size // 8, 64 << 20)  # room for ext4's own blocks
        self._loop: str | None = None
        self._group: Path | None = None

    def __enter__(self) -> SlowCamera:
        self.root.mkdir(parents=True, exist_ok=True)
        with self.image.open("wb") as handle:
            handle.truncate(self._size)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], check=True)
        self._loop = subprocess.run(
            ["losetup", "--find", "--show", str(self.image)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        subprocess.run(["mount", self._loop, str(self.root)], check=True)
        return self

    def cold(self) -> None:
        """Unmount and mount again: nothing of the camera stays in the page cache."""
        assert self._loop is not None
        subprocess.run(["umount", str(self.root)], check=True)
        subprocess.run(["mount", self._loop, str(self.root)], check=True)

    def throttle(self, pid: int, rate: int) -> None:
        """Limit reads by process `pid` (and the threads it starts) from the camera to `rate` B/s."""
        assert self._loop is not None
        device = os.stat(self._loop).st_rdev
        major_minor = f"{os.major(device)}:{os.minor(device)}"
        v2 = _v2_root()
        if (_V1 / "blkio.throttle.read_bps_device").exists():
            self._group = _V1 / _GROUP
            self._group.mkdir(exist_ok=True)
            (self._group / "blkio.throttle.read_bps_device").write_text(f"{major_minor} {rate}")
        elif v2 is not None:
            (v2 / "cgroup.subtree_control").write_text("+io")
            self._group = v2 / _GROUP
            self._group.mkdir(exist_ok=True)
            (self._group / "io.max").write_text(f"{major_minor} rbps={rate}")
        else:
            raise RuntimeError(probe() or "no block-I/O throttle")
        (self._group / "cgroup.procs").write_text(str(pid))

    def __exit__(self, *_exc: object) -> None:
        if self._group is not None:
            # The daemon has exited by now; an empty group can be removed.
            subprocess.run(["rmdir", str(self._group)], check=False)
        subprocess.run(["umount", str(self.root)], check=False)
        if self._loop is not None:
            subprocess.run(["losetup", "-d", self._loop], check=False)
        self.image.unlink(missing_ok=True)
