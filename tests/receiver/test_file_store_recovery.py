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


def _commit_more(store: FileStore, upload: str, start: int, data: bytes) -> None:
    writer = store.open_writer(upload, start)
    try:
        writer.write(data, start)
        writer.commit(start + len(data), time.time() + 3600, store.new_hash())
    finally:
        writer.close()


def test_a_commit_torn_by_a_power_cut_falls_back_to_the_previous_one(tmp_path):
    store, upload = _upload_with_committed_bytes(tmp_path, b"a" * 1000)
    _commit_more(store, upload, 1000, b"b" * 500)  # the second commit: offset 1500
    state = store.state_path(upload)
    content = bytearray(state.read_bytes())
    newest = max((0, 512), key=lambda at: content[at + 8 : at + 16])  # the higher sequence
    content[newest + 20] ^= 0xFF  # the sector of the newest record half written
    state.write_bytes(bytes(content))
    # That commit was never acknowledged (the 204 waits for its fdatasync): the previous holds.
    assert _recovered_offset(tmp_path, upload) == 1000
    assert store.data_path(upload).read_bytes() == b"a" * 1000
    _commit_more(store, upload, 1000, b"c" * 10)  # and the upload goes on from there
    assert _recovered_offset(tmp_path, upload) == 1010


def test_a_state_file_in_the_old_json_format_is_resumed_and_converted(tmp_path):
    store, upload = _upload_with_committed_bytes(tmp_path, b"d" * 1000)
    expires = time.time() + 3600
    store.state_path(upload).write_bytes(b'{"expires":%r,"offset":600}' % expires)
    [state] = FileStore(tmp_path).recover()
    assert (state.offset, state.expires) == (600, expires)
    assert store.data_path(upload).stat().st_size == 600  # the unproven tail is dropped
    _commit_more(store, upload, 600, b"e" * 400)  # in-place commits work on the converted file
    assert _recovered_offset(tmp_path, upload) == 1000
