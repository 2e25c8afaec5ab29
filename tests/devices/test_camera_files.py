"""open_clip / stat_clip / wipe_clip: the safe walk back to a clip, and a wipe that cannot misfire."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from camfs import put, tree
from dockd.devices.camera import (
    ClipReplaced,
    FileIdentity,
    UnsafeFile,
    display_path,
    open_clip,
    scan_camera,
    stat_clip,
    wipe_clip,
)

BAD_PATHS = [
    b"../outside.MP4",
    b"DCIM/../../outside.MP4",
    b"DCIM/./A.MP4",
    b"/etc/passwd",
    b"",
    b"DCIM//A.MP4",
    b"DCIM/A.MP4/",
    b"DCIM/A\0.MP4",
]


def found_identity(root: Path, rel: bytes) -> FileIdentity:
    (clip,) = [c for c in scan_camera(root, ["**/*"]).clips if c.rel_path == rel]
    return clip.identity


def test_open_clip_streams_the_exact_bytes(camera: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    rel = put(camera, b"DCIM/100/A.MP4", data)
    with open_clip(camera, rel) as clip:
        chunks = iter(lambda: clip.read(1024 * 1024), b"")
        assert b"".join(chunks) == data
        clip.seek(1024 * 1024)
        assert clip.read(5) == data[1024 * 1024 : 1024 * 1024 + 5]


def test_stat_clip_matches_the_scan(camera: Path) -> None:
    rel = put(camera, b"DCIM/A.MP4", b"abc")
    assert stat_clip(camera, rel) == found_identity(camera, rel)


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_malformed_rel_paths_are_refused(camera: Path, tmp_path: Path, bad: bytes) -> None:
    put(tmp_path, b"outside.MP4")
    put(camera, b"DCIM/A.MP4")
    before = tree(tmp_path)
    with pytest.raises(UnsafeFile):
        open_clip(camera, bad)
    with pytest.raises(UnsafeFile):
        stat_clip(camera, bad)
    with pytest.raises(UnsafeFile):
        wipe_clip(camera, bad, FileIdentity(0, 0, 0, 0))
    assert tree(tmp_path) == before


@pytest.mark.timeout(20)
def test_fifo_swapped_in_after_the_scan_is_refused_without_blocking(camera: Path) -> None:
    rel = put(camera, b"DCIM/A.MP4")
    identity = found_identity(camera, rel)
    os.unlink(camera / "DCIM/A.MP4")
    os.mkfifo(camera / "DCIM/A.MP4")
    with pytest.raises(UnsafeFile, match="FIFO"):
        open_clip(camera, rel)
    with pytest.raises(ClipReplaced):
        wipe_clip(camera, rel, identity)
    assert (camera / "DCIM/A.MP4").is_fifo()


def test_file_symlink_swapped_in_is_refused(camera: Path, tmp_path: Path) -> None:
    rel = put(camera, b"DCIM/A.MP4")
    os.unlink(camera / "DCIM/A.MP4")
    os.symlink("/etc/passwd", camera / "DCIM/A.MP4")
    with pytest.raises(UnsafeFile, match="symlink"):
        open_clip(camera, rel)


def test_directory_replaced_by_symlink_after_scan(camera: Path, tmp_path: Path) -> None:
    # The clip's directory moves outside the camera and a symlink takes its place. The file is
    # the very same inode, so only the no-follow walk stands between us and deleting it.
    rel = put(camera, b"DCIM/100/A.MP4", b"evidence")
    identity = found_identity(camera, rel)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.rename(camera / "DCIM/100", outside / "100")
    os.symlink(outside / "100", camera / "DCIM/100")
    before = tree(tmp_path)
    with pytest.raises(UnsafeFile, match="symlink"):
        open_clip(camera, rel)
    with pytest.raises(UnsafeFile, match="symlink"):
        stat_clip(camera, rel)
    with pytest.raises(ClipReplaced):
        wipe_clip(camera, rel, identity)
    assert tree(tmp_path) == before
    assert (outside / "100/A.MP4").read_bytes() == b"evidence"


def test_wipe_removes_exactly_the_clip_that_was_read(camera: Path) -> None:
    rel = put(camera, b"DCIM/100/A.MP4", b"aaa")
    put(camera, b"DCIM/100/B.MP4", b"bbb")
    put(camera, b"DCIM/100/A.json", b"{}")
    identity = found_identity(camera, rel)
    before = tree(camera)
    wipe_clip(camera, rel, identity)
    assert tree(camera) == before - {b"DCIM/100/A.MP4"}
    with pytest.raises(FileNotFoundError):
        wipe_clip(camera, rel, identity)


def test_wipe_refuses_a_file_replaced_by_rename(camera: Path) -> None:
    rel = put(camera, b"DCIM/A.MP4", b"original")
    identity = found_identity(camera, rel)
    put(camera, b"DCIM/.new", b"imposter")  # same size, new inode
    os.rename(camera / "DCIM/.new", camera / "DCIM/A.MP4")
    with pytest.raises(ClipReplaced):
        wipe_clip(camera, rel, identity)
    assert (camera / "DCIM/A.MP4").read_bytes() == b"imposter"


def test_wipe_refuses_a_file_that_grew(camera: Path) -> None:
    rel = put(camera, b"DCIM/A.MP4", b"original")
    identity = found_identity(camera, rel)
    with open(camera / "DCIM/A.MP4", "ab") as f:
        f.write(b" and more")
    with pytest.raises(ClipReplaced):
        wipe_clip(camera, rel, identity)
    assert (camera / "DCIM/A.MP4").exists()


def test_wipe_refuses_a_file_rewritten_in_place(camera: Path) -> None:
    rel = put(camera, b"DCIM/A.MP4", b"original")
    identity = found_identity(camera, rel)
    path = camera / "DCIM/A.MP4"
    path.write_bytes(b"tampered")  # same inode, same size: only the mtime tells
    os.utime(path, ns=(identity.mtime_ns + 1_000_000, identity.mtime_ns + 1_000_000))
    with pytest.raises(ClipReplaced):
        wipe_clip(camera, rel, identity)
    assert path.read_bytes() == b"tampered"


def test_wipe_works_for_hostile_names(camera: Path) -> None:
    rel = put(camera, b"DCIM/\xff\nx.MP4")
    wipe_clip(camera, rel, found_identity(camera, rel))
    assert tree(camera) == {b"DCIM"}


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"DCIM/A.MP4", "DCIM/A.MP4"),
        (b"DCIM/new\nline.MP4", "DCIM/new\\nline.MP4"),
        (b"\xff\xfe.MP4", "\\xff\\xfe.MP4"),
        (b"back\\slash", "back\\\\slash"),
        (b"bell\x07", "bell\\x07"),
        ("caf\u00e9".encode(), "caf\u00e9"),
        ("rtl\u202egpj.MP4".encode(), "rtl\\u202egpj.MP4"),
    ],
)
def test_display_path_escapes_what_could_forge_a_log_line(raw: bytes, shown: str) -> None:
    assert display_path(raw) == shown


def test_display_path_is_unambiguous() -> None:
    # A name spelling out an escape must not render like the byte it spells...
    assert display_path(b"\\xff") != display_path(b"\xff")
    # ...nor a C1 control character (valid UTF-8) like the undecodable byte of the same value.
    assert display_path("\u0085".encode()) != display_path(b"\x85")
