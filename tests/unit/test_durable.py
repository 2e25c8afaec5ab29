"""The one fsync-dir helper: where a file system refuses to fsync a directory, sync everything."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from dockd import durable


def _refuse_directory_fsync(monkeypatch: pytest.MonkeyPatch, code: int) -> list[str]:
    calls: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            calls.append("fsync-dir")
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(durable.os, "fsync", fsync)
    monkeypatch.setattr(durable.os, "sync", lambda: calls.append("sync"))
    return calls


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOTSUP, errno.ENOSYS])
def test_a_replaced_file_is_made_durable_where_directories_cannot_be_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    calls = _refuse_directory_fsync(monkeypatch, code)
    durable.replace_file(tmp_path / "state.json", b"{}")
    assert (tmp_path / "state.json").read_bytes() == b"{}"
    assert calls == ["fsync-dir", "sync"]


def test_a_real_directory_fsync_failure_is_not_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _refuse_directory_fsync(monkeypatch, errno.EIO)
    with pytest.raises(OSError) as raised:
        durable.fsync_dir(tmp_path)
    assert raised.value.errno == errno.EIO


def test_an_open_directory_fd_is_left_open(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        durable.fsync_dir(fd)
        os.fstat(fd)  # still open: the caller owns it
    finally:
        os.close(fd)
