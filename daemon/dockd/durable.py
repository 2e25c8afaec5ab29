"""Replacing a small file so that a crash leaves either the old or the new content, never a mix."""

from __future__ import annotations

import os
from pathlib import Path


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
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
