"""Mounting a camera's storage under the runtime dir, without trusting the camera or the paths.

`MountSyscall` calls mount(2)/umount2(2) directly (through libc), not mount(8) or udisks2:
- mount(8) refuses to mount for a process whose real uid is not 0 unless /etc/fstab says "user",
  even with CAP_SYS_ADMIN; dockd runs as the unprivileged `dockd` user with only that capability.
- udisks2 is a D-Bus service steered by polkit, built for desktop sessions: it would add a
  privileged peer, a bus and a policy to the trusted base, and mount under /media for a user.
  The udev rule sets UDISKS_IGNORE=1 so it (and desktop automounters) leave cameras alone.

Every mount is `nosuid,nodev,noexec,noatime,nosymfollow`, read-write (wiping needs it), with the
filesystem type named explicitly from an allow-list (the kernel never probes a hostile device
with every driver it has). The mountpoint is created by us, as a child of a root-owned 0700
`mount_root`, and the mount targets it through an O_PATH descriptor (/proc/self/fd/N), so no
symlink anywhere can redirect it; unmounting uses UMOUNT_NOFOLLOW.

`DirectoryStandIn` is the test/development stand-in: the "device" is a prepared directory
(devices emulated by umockdev cannot be mounted for real).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

log = structlog.get_logger()

MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8
MOUNT_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NOSYMFOLLOW

# Filesystems whose files carry no owner: give them to the daemon's user, private to it.
_OWNERLESS = {"vfat", "exfat"}


class MountError(RuntimeError):
    """A camera's storage could not be mounted or unmounted; the message says why."""


@dataclass(frozen=True)
class BlockDevice:
    """A camera's filesystem as udev described it."""

    node: str  # /dev/sdb1
    fs_type: str  # ID_FS_TYPE
    name: str  # mountpoint name under mount_root: a safe file name derived from the serial


class Mounter(Protocol):
    async def mount(self, device: BlockDevice) -> Path:
        """Make the device's files reachable; return the directory holding them."""
        ...

    async def unmount(self, device: BlockDevice, *, lazy: bool) -> None:
        """Undo mount(); lazy: the device is gone, detach whatever is still open."""
        ...


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def prepare_root(root: Path) -> None:
    """Create mount_root 0700 (parents as needed) and refuse one that others could tamper with."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o700)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"{root}: mount root is not a directory (a symlink?)")
    if st.st_uid != os.geteuid():
        raise MountError(f"{root}: mount root is owned by uid {st.st_uid}, not by dockd")
    if st.st_mode & 0o077:
        os.chmod(root, 0o700, follow_symlinks=False)


class MountSyscall:
    """Real mounts under `root` (see the module docstring)."""

    def __init__(self, root: Path, filesystems: tuple[str, ...]) -> None:
        self.root = Path(root)
        self.filesystems = filesystems
        self._libc = _libc()

    async def mount(self, device: BlockDevice) -> Path:
        return await asyncio.to_thread(self._mount, device)

    async def unmount(self, device: BlockDevice, *, lazy: bool) -> None:
        await asyncio.to_thread(self._unmount, device, lazy)

    def _data(self, fs_type: str) -> bytes:
        if fs_type in _OWNERLESS:
            return f"uid={os.geteuid()},gid={os.getegid()},umask=0077".encode()
        return b""

    def _mount(self, device: BlockDevice) -> Path:
        if device.fs_type not in self.filesystems:
            raise MountError(f"filesystem {device.fs_type!r} is not in udev.filesystems")
        if not device.name or "/" in device.name or device.name in (".", ".."):
            raise MountError(f"unsafe mountpoint name {device.name!r}")
        try:
            st = os.stat(device.node)
        except OSError as exc:
            raise MountError(f"{device.node}: {exc.strerror}") from None
        if not stat.S_ISBLK(st.st_mode):
            raise MountError(f"{device.node} is not a block device")
        prepare_root(self.root)
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            self._clear_stale(root_fd, device)
            os.mkdir(device.name, 0o700, dir_fd=root_fd)
            target_fd = os.open(
                device.name,
                os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                dir_fd=root_fd,
            )
            try:
                result = self._libc.mount(
                    device.node.encode(),
                    f"/proc/self/fd/{target_fd}".encode(),
                    device.fs_type.encode(),
                    ctypes.c_ulong(MOUNT_FLAGS),
                    ctypes.c_char_p(self._data(device.fs_type) or None),
                )
                try:
                    _check(result, f"mount {device.node}")
                except OSError as exc:
                    with contextlib.suppress(OSError):
                        os.rmdir(device.name, dir_fd=root_fd)
                    raise MountError(str(exc)) from None
            finally:
                os.close(target_fd)
        finally:
            os.close(root_fd)
        path = self.root / device.name
        log.info("mount.mounted", device=device.node, fs=device.fs_type, mountpoint=str(path))
        return path

    def _clear_stale(self, root_fd: int, device: BlockDevice) -> None:
        """A mountpoint left by a crash: detach whatever is on it and remove it."""
        try:
            os.stat(device.name, dir_fd=root_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        log.warning("mount.stale_mountpoint", mountpoint=str(self.root / device.name))
        self._unmount(device, lazy=True)

    def _unmount(self, device: BlockDevice, lazy: bool) -> None:
        path = self.root / device.name
        flags = UMOUNT_NOFOLLOW | (MNT_DETACH if lazy else 0)
        while True:  # stacked mounts (a crash between two docks): peel them all
            try:
                _check(self._libc.umount2(str(path).encode(), flags), f"umount {path}")
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOENT):  # not (or no longer) mounted
                    break
                if exc.errno == errno.EBUSY and not lazy:  # a reader still open: detach it
                    flags |= MNT_DETACH
                    continue
                raise MountError(str(exc)) from None
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise MountError(f"{path}: cannot remove mountpoint: {exc.strerror}") from None
        log.info("mount.unmounted", mountpoint=str(path), lazy=lazy)


class DirectoryStandIn:
    """Stand-in mounter: `base/<name>` is the already-available storage of the device `name`."""

    def __init__(self, base: Path) -> None:
        self.base = Path(base)
        self.mounted: list[str] = []
        self.unmounted: list[tuple[str, bool]] = []

    async def mount(self, device: BlockDevice) -> Path:
        path = self.base / device.name
        if not path.is_dir() or path.is_symlink():
            raise MountError(f"{path}: no prepared directory for this device")
        self.mounted.append(device.name)
        return path

    async def unmount(self, device: BlockDevice, *, lazy: bool) -> None:
        self.unmounted.append((device.name, lazy))
        log.info("mount.unmounted", mountpoint=str(self.base / device.name), lazy=lazy)
