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
F_GETLEASE = getattr(fcntl, "F_GETLEASE", 1025)
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


def _proc_writers() -> set[tuple[int, int]]:
    """(st_dev, st_ino) of every file some visible process has open for writing (best effort)."""
    found: set[tuple[int, int]] = set()
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    flags = next(
                        (int(line.split()[1], 8) for line in info if line.startswith("flags:")), 0
                    )
                if flags & os.O_ACCMODE not in (os.O_WRONLY, os.O_RDWR):
                    continue
                target = os.stat(f"{fd_dir}/{fd}")
            except (OSError, ValueError, IndexError):
                continue
            found.add((target.st_dev, target.st_ino))
    return found


def _writer_in_proc(st: os.stat_result) -> bool:
    return (st.st_dev, st.st_ino) in _proc_writers()


class WriterCheck:
    """`has_writer` for the many files of one scan: where the kernel gives no lease, the /proc
    index is built once per scan, not once per clip (10,000 clips x 5,000 fds would be 50
    million stats)."""

    def __init__(self) -> None:
        self._index: set[tuple[int, int]] | None = None

    def __call__(self, fd: int) -> bool:
        leased = _try_lease(fd)
        if leased is True:
            _release(fd)
            return False
        if leased is False:
            return True
        if self._index is None:
            self._index = _proc_writers()
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) in self._index


def has_writer(fd: int) -> bool:
    """Whether any process (this one included) holds the file behind `fd` open for writing.

    `fd` must be open read-only (a lease cannot be taken through a writable fd).
    """
    return WriterCheck()(fd)


class Lease:
    """A held read lease (or, where the kernel gives none, the /proc check standing in)."""

    def __init__(self, fd: int, leased: bool) -> None:
        self._fd = fd
        self._leased = leased

    def intact(self) -> bool:
        """No process has the file open for writing, nor is one waiting to.

        A writer that calls open() while we hold the lease is not refused: its open has already
        found the inode and now waits in the kernel for us to let go, and would then write into
        whatever we did meanwhile (an unlinked file). The kernel marks the lease as being broken
        (F_GETLEASE no longer reports F_RDLCK) from the moment that open starts waiting, so
        checking this just before an unlink tells whether a writer is on its way.
        """
        if self._leased:
            try:
                return fcntl.fcntl(self._fd, F_GETLEASE) == F_RDLCK
            except OSError:
                return False
        return not _writer_in_proc(os.fstat(self._fd))


@contextlib.contextmanager
def write_lease(fd: int) -> Iterator[Lease]:
    """Hold a read lease on `fd` (read-only) for the block: no writer has the file open now, and
    any process that tries to open it for writing waits until the block ends (and shows in
    `Lease.intact()`). Raises WriterPresent if one has it open already. Where a lease is not
    possible, falls back to the /proc check (no exclusion then)."""
    leased = _try_lease(fd)
    if leased is False or (leased is None and _writer_in_proc(os.fstat(fd))):
        raise WriterPresent("open for writing by another process")
    try:
        yield Lease(fd, leased is True)
    finally:
        if leased:
            _release(fd)
