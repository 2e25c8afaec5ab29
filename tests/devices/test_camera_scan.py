"""scan_camera on hostile camera trees: real files, links, FIFOs, sockets and weird names."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
from camfs import call_unprivileged, put
from dockd.devices.camera import (
    DEPTH_REASON,
    SYMLINK_REASON,
    ScanLimits,
    ScanResult,
    UnsafeFile,
    display_path,
    open_clip,
    scan_camera,
)

GLOBS = ["DCIM/**/*.MP4"]


def clip_paths(result: ScanResult) -> list[bytes]:
    return [clip.rel_path for clip in result.clips]


def skipped(result: ScanResult) -> dict[bytes, str]:
    return {item.rel_path: item.reason for item in result.skipped}


def test_finds_matching_regular_files_sorted_with_identity(camera: Path) -> None:
    put(camera, b"DCIM/101/B.MP4", b"bbbb")
    put(camera, b"DCIM/100/A.MP4", b"aa")
    put(camera, b"DCIM/100/A.THM", b"thumbnail")
    put(camera, b"MISC/C.MP4", b"not under DCIM")
    result = scan_camera(camera, GLOBS)
    assert clip_paths(result) == [b"DCIM/100/A.MP4", b"DCIM/101/B.MP4"]
    first = result.clips[0]
    st = os.stat(camera / "DCIM/100/A.MP4")
    assert (first.identity.dev, first.identity.ino) == (st.st_dev, st.st_ino)
    assert (first.identity.size, first.identity.mtime_ns) == (2, st.st_mtime_ns)
    assert result.skipped == [] and result.truncated is False


def test_zero_byte_clip_is_a_clip(camera: Path) -> None:
    put(camera, b"DCIM/EMPTY.MP4", b"")
    result = scan_camera(camera, GLOBS)
    assert clip_paths(result) == [b"DCIM/EMPTY.MP4"]
    assert result.clips[0].identity.size == 0


def test_symlink_named_like_a_clip_is_skipped_not_followed(camera: Path) -> None:
    put(camera, b"DCIM/REAL.MP4")
    os.symlink("/etc/passwd", camera / "DCIM/PASSWD.MP4")
    result = scan_camera(camera, GLOBS)
    assert clip_paths(result) == [b"DCIM/REAL.MP4"]
    assert skipped(result) == {b"DCIM/PASSWD.MP4": SYMLINK_REASON}
    with pytest.raises(UnsafeFile):
        open_clip(camera, b"DCIM/PASSWD.MP4")


def test_symlinked_directories_are_not_descended(camera: Path, tmp_path: Path) -> None:
    put(camera, b"DCIM/100/A.MP4")
    outside = tmp_path / "outside"
    put(outside, b"SECRET.MP4")
    os.symlink("/etc", camera / "DCIM/etc")
    os.symlink(outside, camera / "DCIM/out")
    os.symlink("100", camera / "DCIM/again")  # same clip twice, under another name
    os.symlink("..", camera / "DCIM/100/loop")  # a cycle
    result = scan_camera(camera, ["**/*"])
    assert clip_paths(result) == [b"DCIM/100/A.MP4"]
    assert skipped(result) == {
        b"DCIM/etc": SYMLINK_REASON,
        b"DCIM/out": SYMLINK_REASON,
        b"DCIM/again": SYMLINK_REASON,
        b"DCIM/100/loop": SYMLINK_REASON,
    }


def test_camera_root_that_is_a_symlink_is_refused(camera: Path, tmp_path: Path) -> None:
    put(camera, b"DCIM/A.MP4")
    link = tmp_path / "link"
    os.symlink(camera, link)
    with pytest.raises(UnsafeFile):
        scan_camera(link, GLOBS)


@pytest.mark.timeout(20)
def test_fifo_named_like_a_clip_is_skipped_without_blocking(camera: Path) -> None:
    put(camera, b"DCIM/A.MP4")
    os.mkfifo(camera / "DCIM/x.MP4")
    result = scan_camera(camera, GLOBS)
    assert clip_paths(result) == [b"DCIM/A.MP4"]
    assert skipped(result) == {b"DCIM/x.MP4": "FIFO"}


def test_socket_named_like_a_clip_is_skipped(camera: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    put(camera, b"DCIM/A.MP4")
    monkeypatch.chdir(camera / "DCIM")  # AF_UNIX paths are short: bind relative to the dir
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("s.MP4")
        result = scan_camera(camera, GLOBS)
    assert clip_paths(result) == [b"DCIM/A.MP4"]
    assert skipped(result) == {b"DCIM/s.MP4": "socket"}


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device node needs root")
def test_device_node_named_like_a_clip_is_skipped(camera: Path) -> None:
    put(camera, b"DCIM/A.MP4")
    os.mknod(camera / "DCIM/null.MP4", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    result = scan_camera(camera, GLOBS)
    assert clip_paths(result) == [b"DCIM/A.MP4"]
    assert skipped(result) == {b"DCIM/null.MP4": "device node"}
    with pytest.raises(UnsafeFile, match="device node"):
        open_clip(camera, b"DCIM/null.MP4")


@pytest.mark.parametrize(
    "name",
    [
        b"new\nline.MP4",
        b"\xff\xfe not utf-8.MP4",
        b"tab\there\rcr.MP4",
        b"back\\slash.MP4",
        b"A" * 251 + b".MP4",
    ],
    ids=["newline", "non-utf8", "controls", "backslash", "255-bytes"],
)
def test_hostile_names_are_found_openable_and_printable(camera: Path, name: bytes) -> None:
    rel = put(camera, b"DCIM/" + name, b"payload " + name)
    result = scan_camera(camera, GLOBS)
    assert clip_paths(result) == [rel]
    with open_clip(camera, rel) as clip:
        assert clip.read() == b"payload " + name
    shown = display_path(rel)
    assert shown.isprintable() and "\n" not in shown and "\r" not in shown
    assert shown.startswith("DCIM/")


def test_depth_limit_skips_deeper_directories(camera: Path) -> None:
    put(camera, b"DCIM/a/SHALLOW.MP4")
    put(camera, b"DCIM/a/b/DEEP.MP4")
    result = scan_camera(camera, GLOBS, limits=ScanLimits(max_depth=2))
    assert clip_paths(result) == [b"DCIM/a/SHALLOW.MP4"]
    assert skipped(result) == {b"DCIM/a/b": DEPTH_REASON}


def test_entry_limit_truncates_the_scan(camera: Path) -> None:
    for i in range(20):
        put(camera, b"DCIM/%02d.MP4" % i)
    result = scan_camera(camera, GLOBS, limits=ScanLimits(max_entries=10))
    assert result.truncated is True
    assert 0 < len(result.clips) < 20
    assert scan_camera(camera, GLOBS, limits=ScanLimits(max_entries=21)).truncated is False


def test_directories_that_cannot_hold_a_match_are_not_entered(camera: Path) -> None:
    put(camera, b"DCIM/A.MP4")
    put(camera, b"MISC/deep/B.MP4")
    os.symlink("/etc/passwd", camera / "MISC/C.MP4")
    result = scan_camera(camera, GLOBS)
    # MISC was pruned by the glob, so its symlink is not even reported.
    assert clip_paths(result) == [b"DCIM/A.MP4"] and result.skipped == []


def test_unreadable_directory_and_file_are_skipped_and_scan_continues(
    shared_camera: Path,
) -> None:
    # As root, permission bits do not apply: the scan runs as `nobody` in a child then.
    put(shared_camera, b"DCIM/100/A.MP4")
    put(shared_camera, b"DCIM/200/B.MP4")
    put(shared_camera, b"DCIM/300/C.MP4")
    for path in [shared_camera, *[p for p in shared_camera.rglob("*") if p.is_dir()]]:
        path.chmod(0o755)
    for path in shared_camera.rglob("*.MP4"):
        path.chmod(0o644)
    (shared_camera / "DCIM/200").chmod(0o000)
    (shared_camera / "DCIM/300/C.MP4").chmod(0o000)
    result = call_unprivileged(scan_camera, shared_camera, GLOBS)
    assert clip_paths(result) == [b"DCIM/100/A.MP4"]
    assert skipped(result) == {
        b"DCIM/200": "unreadable: Permission denied",
        b"DCIM/300/C.MP4": "unreadable: Permission denied",
    }
