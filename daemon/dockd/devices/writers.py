"""Is anyone holding this file open for writing? (Linux read leases, with a /proc fallback.)

A clip whose size and mtime have not moved for `settle_time` may still belong to a writer that
only paused (a copy tool that stalls, a drop folder filled over a slow link). Taking it at its
partial size, wiping it, and letting the writer append into an unlinked file loses evidence. A
stable size is therefore never proof that a file is finished; an open writer is.

`fcntl(F_SETLEASE, F_RDLCK)` is the kernel's own answer: it fails with EAGAIN while any process
has the file open for writing, and while we hold it, an `open()` for writing (or a truncate) by
anyone else blocks until we let go. `write_lease` holds one for the few calls between the final
identity check and the unlink, so no writer can slip in between. A lease needs the file's owner
or CAP_LEASE (the systemd unit grants it) and a file system that supports leases; where the
kernel refuses (EACCES, EINVAL), `has_writer` scans /proc for an fd of the same inode opened for
writing, which sees every process only when dockd may read their /proc entries.

SIGIO is the signal a lease break sends to its holder, and its default action kills the process:
`ignore_lease_breaks` (called once at start) makes a break harmless; we release every lease within
milliseconds anyway.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
from collections.abc import Iterator

# fcntl lease commands (Linux). Python's fcntl module exports them from 3.9 on some builds only.
F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
F_RDLCK = fcntl.F_RDLCK
F_UNLCK = fcntl.F_UNLCK
# Errors that mean "this kernel/file system/user cannot take a lease here", not "a writer exists".
_NO_LEASE = (errno.EACCES, errno.EPERM, errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.ENOLCK)


class WriterPresent(Exception):
    """Some process holds the file open for writing: it may still be growing."""


def ignore_lease_breaks() -> None:
    """Make SIGIO (a lease break notice) harmless for this process. Main thread only."""
    with contextlib.suppress(ValueError):  # not the main thread: the caller's business
        signal.signal(signal.SIGIO, signal.SIG_IGN)


def _try_lease(fd: int) -> bool | None:
    """True: leased (no writer). False: a writer has it open. None: a lease is not possible."""
    try:
        fcntl.fcntl(fd, F_SETLEASE, F_RDLCK)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
            return False
        if exc.errno in _NO_LEASE:
            return None
        raise
    return True


def _release(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETLEASE, F_UNLCK)


def _writer_in_proc(st: os.stat_result) -> bool:
    """True if any visible process has an fd of this inode open for writing (best effort)."""
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return False
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                target = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if (target.st_dev, target.st_ino) != (st.st_dev, st.st_ino):
                continue
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    flags = next(
                        (int(line.split()[1], 8) for line in info if line.startswith("flags:")), 0
                    )
            except (OSError, ValueError, IndexError):
                continue
            if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                return True
    return False


def has_writer(fd: int) -> bool:
    """Whether any process (this one included) holds the file behind `fd` open for writing.

    `fd` must be open read-only (a lease cannot be taken through a writable fd).
    """
    leased = _try_lease(fd)
    if leased is True:
        _release(fd)
        return False
    if leased is False:
        return True
    return _writer_in_proc(os.fstat(fd))


@contextlib.contextmanager
def write_lease(fd: int) -> Iterator[None]:
    """Hold a read lease on `fd` (read-only) for the block: no writer has the file open now, and
    none can open it until the block ends. Raises WriterPresent if one has it open already.
    Where a lease is not possible, falls back to the /proc check (no exclusion then)."""
    leased = _try_lease(fd)
    if leased is False or (leased is None and _writer_in_proc(os.fstat(fd))):
        raise WriterPresent("open for writing by another process")
    try:
        yield
    finally:
        if leased:
            _release(fd)
