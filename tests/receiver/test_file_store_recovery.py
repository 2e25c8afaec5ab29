"""The file store after a disk lost one of an upload's files: it resumes from what is really
there, never from what it cannot prove (a lost data file or state file means offset 0)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from dockd.receiver.storage.api import CreationInfo, new_upload_id, rfc3339
from dockd.receiver.storage.file import FileStore


def _upload_with_committed_bytes(root: Path, data: bytes) -> tuple[FileStore, str]:
    store = FileStore(root)
    store.prepare()
    info = CreationInfo(
        upload=new_upload_id(),
        length=len(data) * 2,
        metadata_header="",
        metadata={},
        created=rfc3339(dt.datetime.now(dt.UTC)),
        dock="dock-1",
    )
    store.create(info, time.time() + 3600)
    writer = store.open_writer(info.upload, 0)
    running = store.new_hash()
    writer.write(data, 0)
    running.update(data)
    writer.commit(len(data), time.time() + 3600, running)
    writer.close()
    return store, info.upload


def _recovered_offset(root: Path, upload: str) -> int:
    [state] = [s for s in FileStore(root).recover() if s.info.upload == upload]
    return state.offset


def test_a_lost_data_file_resumes_from_zero(tmp_path):
    store, upload = _upload_with_committed_bytes(tmp_path, b"x" * 1000)
    assert _recovered_offset(tmp_path, upload) == 1000
    store.data_path(upload).unlink()
    assert _recovered_offset(tmp_path, upload) == 0
    assert store.data_path(upload).stat().st_size == 0
    assert _recovered_offset(tmp_path, upload) == 0  # and the state file now says so too


def test_a_lost_state_file_resumes_from_zero_and_drops_the_unproven_bytes(tmp_path):
    store, upload = _upload_with_committed_bytes(tmp_path, b"y" * 1000)
    state = store.data_path(upload).with_suffix(".state")
    assert state.exists()
    state.unlink()
    assert _recovered_offset(tmp_path, upload) == 0
    assert store.data_path(upload).stat().st_size == 0


def test_bytes_past_the_committed_offset_are_dropped_on_restart(tmp_path):
    store, upload = _upload_with_committed_bytes(tmp_path, b"z" * 1000)
    with open(store.data_path(upload), "ab") as handle:
        handle.write(b"never acknowledged")
    assert _recovered_offset(tmp_path, upload) == 1000
    assert store.data_path(upload).read_bytes() == b"z" * 1000
