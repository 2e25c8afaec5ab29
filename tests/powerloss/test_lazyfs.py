"""lazyfs itself: a power cut keeps exactly what was fsync'd (file data, directory entries)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from powerloss.mount import LazyMount

pytestmark = pytest.mark.powerloss


def _write(path: Path, data: bytes, *, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_a_cut_keeps_what_was_synced_and_nothing_else(lazy_mount: LazyMount):
    root = lazy_mount.mountpoint
    _write(root / "synced", b"durable", sync=True)
    _write(root / "unsynced", b"volatile", sync=False)
    (root / "sub").mkdir()
    _sync_dir(root)  # the three names are durable from here on
    _write(root / "nameless", b"data synced, name never", sync=True)
    fd = os.open(root / "synced", os.O_WRONLY)
    os.pwrite(fd, b"XX", 0)  # an overwrite never synced
    os.close(fd)
    os.rename(root / "synced", root / "sub" / "moved")  # neither directory synced afterwards
    assert (root / "sub" / "moved").read_bytes() == b"XXrable"
    ino = os.stat(root / "sub" / "moved").st_ino

    lazy_mount.power_cut()
    lazy_mount.mount()

    assert sorted(os.listdir(root)) == ["sub", "synced", "unsynced"]
    assert (root / "synced").read_bytes() == b"durable"
    assert os.stat(root / "synced").st_ino == ino
    assert (root / "unsynced").read_bytes() == b""  # durable name, data never synced
    assert os.listdir(root / "sub") == []


def test_sqlite_wal_commits_survive_and_the_database_is_intact(lazy_mount: LazyMount):
    path = lazy_mount.mountpoint / "j.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (x)")
    for value in range(20):
        conn.execute("INSERT INTO t VALUES (?)", (value,))
    # not closed: the process "dies" with the power
    lazy_mount.power_cut()
    lazy_mount.mount()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 20
    finally:
        conn.close()
