"""Files someone holds open for writing are never settled and never wiped (issue 11, item 3),
and a clip whose data has other names is never wiped (item 5). Real files, real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dockd.devices import writers
from dockd.devices.camera import FileIdentity, HardLinked, scan_camera, wipe_clip
from dockd.devices.writers import WriterPresent, has_writer, ignore_lease_breaks, write_lease


@pytest.fixture(autouse=True)
def _harmless_lease_breaks() -> None:
    ignore_lease_breaks()  # as the daemon does at start


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "DCIM" / "A.MP4"
    path.parent.mkdir()
    path.write_bytes(b"x" * 1000)
    return path


def _writer_process(path: Path) -> subprocess.Popen[bytes]:
    """Another process that opens the file for appending and then just waits (a paused writer)."""
    code = "import sys,time; f=open(sys.argv[1],'ab'); print('open', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"open\n"
    return proc


def _ro(path: Path) -> int:
    return os.open(path, os.O_RDONLY)


def test_a_writer_in_another_process_is_seen_and_its_close_too(clip):
    fd = _ro(clip)
    try:
        assert has_writer(fd) is False
        proc = _writer_process(clip)
        try:
            assert has_writer(fd) is True
        finally:
            proc.kill()
            proc.wait()
        assert has_writer(fd) is False
    finally:
        os.close(fd)


def test_without_leases_the_proc_scan_still_sees_the_writer(clip, monkeypatch):
    monkeypatch.setattr(writers, "_try_lease", lambda fd: None)  # EACCES/EINVAL from the kernel
    fd = _ro(clip)
    try:
        assert has_writer(fd) is False
        with open(clip, "ab"):
            assert has_writer(fd) is True
    finally:
        os.close(fd)


def test_while_the_lease_is_held_no_process_can_open_the_file_for_writing(clip):
    fd = _ro(clip)
    code = (
        "import sys,time; t=time.monotonic(); f=open(sys.argv[1],'ab'); "
        "print(round(time.monotonic()-t, 3), flush=True)"
    )
    try:
        with write_lease(fd):
            proc = subprocess.Popen([sys.executable, "-c", code, str(clip)], stdout=subprocess.PIPE)
            time.sleep(1.0)
            assert proc.poll() is None, "a writer opened the file while the lease was held"
        out, _ = proc.communicate(timeout=30)
        assert float(out) >= 0.9  # it waited for the lease to go
    finally:
        os.close(fd)


def test_scan_marks_a_file_open_for_writing(clip):
    with open(clip, "ab"):
        [found] = scan_camera(clip.parent.parent, ["DCIM/*.MP4"]).clips
        assert found.writing is True
    [found] = scan_camera(clip.parent.parent, ["DCIM/*.MP4"]).clips
    assert found.writing is False and found.nlink == 1


def test_wipe_refuses_while_a_writer_holds_the_clip_open(clip):
    expected = FileIdentity.from_stat(os.stat(clip))
    proc = _writer_process(clip)
    try:
        with pytest.raises(WriterPresent):
            wipe_clip(clip.parent.parent, b"DCIM/A.MP4", expected)
        assert clip.read_bytes() == b"x" * 1000
    finally:
        proc.kill()
        proc.wait()
    wipe_clip(clip.parent.parent, b"DCIM/A.MP4", expected)
    assert not clip.exists()


def test_wipe_refuses_a_clip_whose_data_has_another_name(clip):
    other = clip.parent / "other-name.bin"
    os.link(clip, other)
    expected = FileIdentity.from_stat(os.stat(clip))  # read after the link: only nlink differs
    with pytest.raises(HardLinked):
        wipe_clip(clip.parent.parent, b"DCIM/A.MP4", expected)
    assert clip.exists() and other.exists()
    [found] = scan_camera(clip.parent.parent, ["DCIM/*.MP4"]).clips
    assert found.nlink == 2


def test_a_writer_that_opens_during_the_wipe_check_keeps_its_data(clip, monkeypatch):
    """Found in review: a writer's open() during the check is not refused, it waits on our lease
    and then writes into whatever we did meanwhile. The wipe must see it coming and keep the file."""
    import threading

    from dockd.devices.writers import WriterPresent

    expected = FileIdentity.from_stat(os.stat(clip))
    entered = threading.Event()
    original = FileIdentity.differs_from

    def slow_check(self, found):  # runs inside the lease, before the unlink
        entered.set()
        time.sleep(1.0)
        return original(self, found)

    monkeypatch.setattr(FileIdentity, "differs_from", slow_check)
    outcome: dict[str, object] = {}

    def wipe() -> None:
        try:
            wipe_clip(clip.parent.parent, b"DCIM/A.MP4", expected)
            outcome["wiped"] = True
        except WriterPresent as exc:
            outcome["deferred"] = exc

    thread = threading.Thread(target=wipe)
    thread.start()
    assert entered.wait(5)
    code = "import sys; f=open(sys.argv[1],'ab'); f.write(b'APPENDED'); f.close()"
    subprocess.run([sys.executable, "-c", code, str(clip)], check=True, timeout=60)
    thread.join(10)
    assert "deferred" in outcome, outcome
    assert clip.read_bytes() == b"x" * 1000 + b"APPENDED"  # the writer's bytes are on the camera


def test_a_name_linked_during_the_wipe_check_stops_the_wipe(clip, monkeypatch):
    """link(2) does not break a read lease: the link count is looked at again just before the
    unlink, or the data would stay on the camera under the new name."""
    from dockd.devices import writers as writers_module
    from dockd.devices.camera import HardLinked

    expected = FileIdentity.from_stat(os.stat(clip))
    original = writers_module.Lease.intact

    def link_meanwhile(self):  # the last look before the unlink, after the first nlink check
        if not (clip.parent / "sneaky.bin").exists():
            os.link(clip, clip.parent / "sneaky.bin")
        return original(self)

    monkeypatch.setattr(writers_module.Lease, "intact", link_meanwhile)
    with pytest.raises(HardLinked):
        wipe_clip(clip.parent.parent, b"DCIM/A.MP4", expected)
    assert clip.exists()


def test_stat_clip_follows_each_component_of_a_deep_path(tmp_path):
    from dockd.devices.camera import stat_clip

    deep = tmp_path / "DCIM" / "100" / "A.MP4"
    deep.parent.mkdir(parents=True)
    deep.write_bytes(b"y" * 7)
    (tmp_path / "100").mkdir()
    (tmp_path / "100" / "A.MP4").write_bytes(b"other")
    assert stat_clip(tmp_path, b"DCIM/100/A.MP4") == FileIdentity.from_stat(os.stat(deep))
