"""Durable file-system changes: a small file replaced whole, a directory entry made to last.

A crash leaves either the old or the new content, never a mix; a name created, renamed or
unlinked survives a power cut once its directory is fsync'd (`fsync_dir`, the one helper for
that in the tree).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

# Some file systems (several FUSE ones) refuse fsync on a directory with these.
_DIR_FSYNC_UNSUPPORTED = (errno.EINVAL, errno.ENOTSUP, errno.ENOSYS)


def fsync_dir(directory: int | Path) -> None:
    """Make the entries of `directory` (an open fd, or a path) durable.

    Where the file system refuses to fsync a directory, everything is synced instead: slower, but
    the change is still durable before the caller reports it (e.g. a clip wiped).
    """
    fd = (
        directory
        if isinstance(directory, int)
        else os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    )
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
        os.sync()
    finally:
        if fd is not directory:
            os.close(fd)


def write_synced(path: Path, data: bytes, *, mode: int = 0o640) -> None:
    """Write a whole file (never through a symlink) and fsync it; renaming it is the caller's."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes, *, mode: int = 0o640, sync_dir: bool = True) -> None:
    """Write `data` to a temporary name, fsync it, rename it over `path`.

    With `sync_dir` the directory is fsync'd too, so the new name itself survives a power cut;
    without it a crash may bring the previous file back (callers that accept that save an fsync).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    write_synced(tmp, data, mode=mode)
    os.replace(tmp, path)
    if sync_dir:
        fsync_dir(path.parent)
