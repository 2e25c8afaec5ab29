"""`LazyMount`: run lazyfs.py over a backing directory, cut its power, bring it back.

    fs = LazyMount(tmp_path / "disk", tmp_path / "mnt").mount()
    ...                      # run real processes with their files under fs.mountpoint
    fs.sync()                # sync(1): everything written so far is on the "disk"
    fs.power_cut()           # SIGKILL lazyfs (unsynced state is lost), lazy unmount
    fs.mount()               # what survived, as the next boot sees it
    fs.unmount()

Kill the processes that use the mount before `power_cut` (they would only see ENOTCONN).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

LAZYFS = Path(__file__).with_name("lazyfs.py")
CONTROL = ".lazyfs-control"


def fuse_unavailable() -> str | None:
    """Why FUSE cannot be used here (for pytest.skip), or None."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if shutil.which("fusermount3") is None:
        return "fusermount3 missing (Debian package fuse3: scripts/setup --test)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"mfusepy unusable: {exc}"
    return None


class LazyMount:
    def __init__(self, backing: Path, mountpoint: Path, log: Path | None = None) -> None:
        self.backing = backing
        self.mountpoint = mountpoint
        self.log = log or backing.with_name(backing.name + ".lazyfs.log")
        self.process: subprocess.Popen[bytes] | None = None
        self.cuts = 0

    def mount(self, timeout: float = 20.0) -> LazyMount:
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(LAZYFS), str(self.backing), str(self.mountpoint)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mountpoint):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self._reap()
                raise RuntimeError(f"lazyfs did not mount:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.02)
        return self

    def sync(self) -> None:
        """Everything written so far becomes durable (the control file's `sync`)."""
        fd = os.open(self.mountpoint / CONTROL, os.O_WRONLY)
        try:
            os.write(fd, b"sync\n")
        finally:
            os.close(fd)

    def power_cut(self) -> None:
        """Lose everything not fsync'd: kill the file system's memory, drop the dead mount."""
        assert self.process is not None, "not mounted"
        self.process.send_signal(signal.SIGKILL)
        self._reap()
        self._detach()
        self.cuts += 1

    def unmount(self) -> None:
        """A clean shutdown: sync, then unmount."""
        if self.process is None:
            return
        if os.path.ismount(self.mountpoint):
            self.sync()
        self.process.send_signal(signal.SIGKILL)
        self._reap()
        self._detach()

    def _detach(self) -> None:
        subprocess.run(
            ["fusermount3", "-u", "-z", str(self.mountpoint)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        deadline = time.monotonic() + 10
        while os.path.ismount(self.mountpoint) and time.monotonic() < deadline:
            time.sleep(0.02)

    def _reap(self) -> None:
        if self.process is not None:
            self.process.wait(timeout=10)
            self.process = None

    def __enter__(self) -> LazyMount:
        return self.mount()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.kill()
            self._reap()
        self._detach()
