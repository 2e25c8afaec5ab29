"""A FUSE file system that forgets everything not fsync'd when "power" is cut (after Jepsen's LazyFS).

    python tests/powerloss/lazyfs.py BACKING MOUNTPOINT      # foreground; SIGKILL it = power cut

kill -9 of a process keeps the kernel's page cache, so a missing fsync is invisible to a kill -9
test. Here the page cache is this process's memory: every write, truncate and directory change
is held in memory, and reaches BACKING (the "disk") only when the application asks for it:

* fsync/fdatasync of a file writes that file's pending writes and truncations, its size and its
  metadata (mode, owner, times) to BACKING and fsyncs them there;
* fsync of a directory writes that directory's entries (name -> inode) to BACKING;
* writing ``sync`` to the control file ``/.lazyfs-control`` flushes everything (sync(1)): tests
  use it to put a camera's clips "on the card" before the dock sees them.

A power cut is SIGKILL of this process (whatever it held in memory is gone) followed by a lazy
unmount; mounting BACKING again shows exactly what was made durable. `LazyMount` in this folder
does both.

BACKING is an inode store, not a mirror of the tree, so that names and data become durable
separately, as on a real disk: ``BACKING/data/<ino>`` (file bytes), ``BACKING/meta/<ino>.json``
(kind, mode, owner, times), ``BACKING/dirs/<ino>.json`` (a directory's entries). The root is
inode 1. On mount, inodes no durable directory entry reaches are deleted (orphans).

Limits (what this model assumes; also in docs/RELIABILITY.md):

* Stricter than ext4/xfs on directories: a new file's name survives only a fsync of its
  directory (ext4 usually persists it with the file's fsync; POSIX does not promise it). A rename
  is durable in each directory separately: a cut after fsyncing only one side leaves the file
  under both names (target dir synced) or under neither (source dir synced). Journaling file
  systems make rename atomic; code that fsyncs the target directory first (as the receiver does)
  never sees "neither".
* A file whose name is durable but whose data never was comes back empty (size 0), with default
  metadata if its metadata was never synced either, like a freshly allocated inode.
* No torn writes, no reordering inside one fsync, no lying disk: a fsync that returned is durable
  whole, and nothing reaches the disk without one (a real kernel may write back dirty pages any
  time; this never does, which is the strictest legal behaviour for the application).
* Inode numbers are stable across cuts (``use_ino``); the device number is not (each mount is a
  new device), as after a real reboot of a removable disk.
* Not supported: hard links, symlinks, special files, xattrs, O_DIRECT (refused by FUSE without
  direct_io), file locks are the kernel's local ones (fine for one machine). Shared mmap works
  through the kernel's page cache and is written back through `write`; SQLite's ``-shm`` (the
  WAL index, which SQLite rebuilds after a crash) is treated like any other file.
* Everything is serialised by one lock and pending writes are kept whole in memory until the next
  fsync: fine for tests of a few MB per file, not a performance model.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mfusepy
from mfusepy import FuseOSError

ROOT = 1
CONTROL = "/.lazyfs-control"


@dataclass
class Node:
    """One inode as the running system sees it (durable state plus what is pending)."""

    ino: int
    kind: str  # "file" | "dir"
    mode: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    size: int = 0  # current (volatile) size of a file
    pending: list[tuple[str, int, bytes]] = field(default_factory=list)  # ("write"|"truncate", …)
    entries: dict[str, int] = field(default_factory=dict)  # a directory's names -> inode
    nlink: int = 1

    def meta(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
            "atime_ns": self.atime_ns,
            "mtime_ns": self.mtime_ns,
            "ctime_ns": self.ctime_ns,
        }


def _write_durably(path: Path, data: bytes) -> None:
    """Replace a BACKING file atomically and durably (the store's own crash safety)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LazyFS(mfusepy.Operations):
    use_ns = True

    def __init__(self, backing: Path) -> None:
        self.backing = backing
        self.data_dir = backing / "data"
        self.meta_dir = backing / "meta"
        self.dirs_dir = backing / "dirs"
        for directory in (self.data_dir, self.meta_dir, self.dirs_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._mutex = threading.RLock()
        self.nodes: dict[int, Node] = {}
        self.handles: dict[int, int] = {}  # fh -> ino (an unlinked file stays readable)
        self.next_fh = 1
        self._load()

    # -- the durable state --

    def _load(self) -> None:
        """Rebuild the tree from what reached BACKING; delete what nothing durable points at."""
        inos = {
            int(p.name.split(".")[0])
            for d in (self.data_dir, self.meta_dir, self.dirs_dir)
            for p in d.iterdir()
            if p.name.split(".")[0].isdigit()
        }
        self.next_ino = max(inos | {ROOT}) + 1
        now = time.time_ns()
        reached: set[int] = set()
        todo = [(ROOT, "dir")]
        while todo:
            ino, kind = todo.pop()
            if ino in reached:
                continue  # a rename synced on one side only: the same inode under two names
            reached.add(ino)
            meta = self._read_json(self.meta_dir / f"{ino}.json")
            default_mode = 0o755 if kind == "dir" else 0o644
            node = Node(
                ino=ino,
                kind=kind,
                mode=int(meta.get("mode", default_mode)),
                uid=int(meta.get("uid", os.getuid())),
                gid=int(meta.get("gid", os.getgid())),
                atime_ns=int(meta.get("atime_ns", now)),
                mtime_ns=int(meta.get("mtime_ns", now)),
                ctime_ns=int(meta.get("ctime_ns", now)),
            )
            if kind == "dir":
                listing = self._read_json(self.dirs_dir / f"{ino}.json")
                node.entries = {name: int(v[0]) for name, v in listing.items()}
                todo += [(int(v[0]), str(v[1])) for v in listing.values()]
            else:
                try:
                    node.size = (self.data_dir / str(ino)).stat().st_size
                except FileNotFoundError:
                    node.size = 0
            self.nodes[ino] = node
        for ino in inos - reached:
            for path in (
                self.data_dir / str(ino),
                self.meta_dir / f"{ino}.json",
                self.dirs_dir / f"{ino}.json",
            ):
                path.unlink(missing_ok=True)
        for node in self.nodes.values():
            if node.kind == "file":
                node.nlink = sum(
                    list(n.entries.values()).count(node.ino)
                    for n in self.nodes.values()
                    if n.kind == "dir"
                )

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        return data if isinstance(data, dict) else {}

    def _sync_file(self, node: Node) -> None:
        """fsync: replay the pending writes and truncations onto BACKING, in order, durably."""
        path = self.data_dir / str(node.ino)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for op, offset, data in node.pending:
                if op == "write":
                    os.pwrite(fd, data, offset)
                else:
                    os.ftruncate(fd, offset)
            os.ftruncate(fd, node.size)
            os.fsync(fd)
        finally:
            os.close(fd)
        node.pending.clear()
        _write_durably(self.meta_dir / f"{node.ino}.json", json.dumps(node.meta()).encode())
        _fsync_dir(self.data_dir)

    def _sync_dir(self, node: Node) -> None:
        listing = {name: [ino, self.nodes[ino].kind] for name, ino in node.entries.items()}
        _write_durably(self.dirs_dir / f"{node.ino}.json", json.dumps(listing).encode())
        _write_durably(self.meta_dir / f"{node.ino}.json", json.dumps(node.meta()).encode())

    def sync_all(self) -> None:
        for node in list(self.nodes.values()):
            if node.kind == "dir":
                self._sync_dir(node)
            else:
                self._sync_file(node)

    # -- the volatile view --

    def _read_file(self, node: Node, size: int, offset: int) -> bytes:
        end = min(offset + size, node.size)
        if end <= offset:
            return b""
        window = bytearray(end - offset)
        try:
            with open(self.data_dir / str(node.ino), "rb") as durable:
                durable.seek(offset)
                base = durable.read(end - offset)
            window[: len(base)] = base
        except FileNotFoundError:
            pass
        for op, at, data in node.pending:
            if op == "write":
                lo, hi = max(at, offset), min(at + len(data), end)
                if lo < hi:
                    window[lo - offset : hi - offset] = data[lo - at : hi - at]
            elif at < end:  # a truncation zeroes what lay past it, even if re-extended later
                lo = max(at, offset)
                window[lo - offset :] = bytes(end - lo)
        return bytes(window)

    def _lookup(self, path: str) -> Node:
        node = self.nodes[ROOT]
        for part in (p for p in path.split("/") if p):
            if node.kind != "dir":
                raise FuseOSError(errno.ENOTDIR)
            ino = node.entries.get(part)
            if ino is None:
                raise FuseOSError(errno.ENOENT)
            node = self.nodes[ino]
        return node

    def _parent(self, path: str) -> tuple[Node, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self._lookup(head or "/")
        if parent.kind != "dir":
            raise FuseOSError(errno.ENOTDIR)
        return parent, name

    def _node(self, path: str | None, fh: int | None) -> Node:
        if fh is not None and fh in self.handles:
            return self.nodes[self.handles[fh]]
        if path is None:
            raise FuseOSError(errno.EBADF)
        return self._lookup(path)

    def _new_node(self, kind: str, mode: int) -> Node:
        now = time.time_ns()
        uid, gid, _pid = mfusepy.fuse_get_context()
        node = Node(self.next_ino, kind, stat.S_IMODE(mode), uid, gid, now, now, now)
        self.next_ino += 1
        self.nodes[node.ino] = node
        return node

    def _open_handle(self, node: Node) -> int:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = node.ino
        return fh

    @staticmethod
    def _touch(node: Node) -> None:
        node.mtime_ns = node.ctime_ns = time.time_ns()

    # -- FUSE operations --

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        with self._mutex:
            if path == CONTROL:
                return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": 0}
            node = self._node(path, fh)
            kind = stat.S_IFDIR if node.kind == "dir" else stat.S_IFREG
            return {
                "st_ino": node.ino,
                "st_mode": kind | node.mode,
                "st_nlink": 2 if node.kind == "dir" else node.nlink,
                "st_uid": node.uid,
                "st_gid": node.gid,
                "st_size": node.size if node.kind == "file" else 4096,
                "st_blocks": (node.size + 511) // 512,
                "st_atime": node.atime_ns,
                "st_mtime": node.mtime_ns,
                "st_ctime": node.ctime_ns,
            }

    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        with self._mutex:
            node = self._node(path, fh)
            # With use_ino a listing needs real inode numbers: readdir(3) hides entries with 0.
            listing = [(".", node.ino, "dir"), ("..", ROOT, "dir")]
            listing += [(name, ino, self.nodes[ino].kind) for name, ino in node.entries.items()]
            return [
                (
                    name,
                    {"st_ino": ino, "st_mode": stat.S_IFDIR if kind == "dir" else stat.S_IFREG},
                    0,
                )
                for name, ino, kind in listing
            ]

    def opendir(self, path: str) -> int:
        with self._mutex:
            node = self._lookup(path)
            if node.kind != "dir":
                raise FuseOSError(errno.ENOTDIR)
            return self._open_handle(node)

    def releasedir(self, path: str | None, fh: int) -> int:
        with self._mutex:
            self.handles.pop(fh, None)
            return 0

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        with self._mutex:
            self._sync_dir(self._node(path, fh))
            return 0

    def mkdir(self, path: str, mode: int) -> int:
        with self._mutex:
            parent, name = self._parent(path)
            if name in parent.entries:
                raise FuseOSError(errno.EEXIST)
            parent.entries[name] = self._new_node("dir", mode).ino
            self._touch(parent)
            return 0

    def rmdir(self, path: str) -> int:
        with self._mutex:
            parent, name = self._parent(path)
            node = self._lookup(path)
            if node.kind != "dir":
                raise FuseOSError(errno.ENOTDIR)
            if node.entries:
                raise FuseOSError(errno.ENOTEMPTY)
            del parent.entries[name]
            self._touch(parent)
            return 0

    def create(self, path: str, mode: int, flags: int = 0) -> int:
        with self._mutex:
            if path == CONTROL:
                return 0
            parent, name = self._parent(path)
            if name in parent.entries:
                node = self.nodes[parent.entries[name]]
                if flags & os.O_EXCL:
                    raise FuseOSError(errno.EEXIST)
            else:
                node = self._new_node("file", mode)
                parent.entries[name] = node.ino
                self._touch(parent)
            if flags & os.O_TRUNC:
                self._truncate(node, 0)
            return self._open_handle(node)

    def open(self, path: str, flags: int) -> int:
        with self._mutex:
            if path == CONTROL:
                return 0
            node = self._lookup(path)
            if node.kind == "dir":
                raise FuseOSError(errno.EISDIR)
            return self._open_handle(node)

    def release(self, path: str | None, fh: int) -> int:
        with self._mutex:
            self.handles.pop(fh, None)
            return 0

    def flush(self, path: str | None, fh: int) -> int:
        return 0  # close(2) promises nothing about durability

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        with self._mutex:
            node = self._node(path, fh)
            node.atime_ns = time.time_ns()
            return self._read_file(node, size, offset)

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        with self._mutex:
            if path == CONTROL and fh not in self.handles:
                if data.strip() == b"sync":
                    self.sync_all()
                return len(data)
            node = self._node(path, fh)
            node.pending.append(("write", offset, bytes(data)))
            node.size = max(node.size, offset + len(data))
            self._touch(node)
            return len(data)

    def _truncate(self, node: Node, length: int) -> None:
        if node.kind == "dir":
            raise FuseOSError(errno.EISDIR)
        node.pending.append(("truncate", length, b""))
        node.size = length
        self._touch(node)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        with self._mutex:
            if path == CONTROL:
                return 0
            self._truncate(self._node(path, fh), length)
            return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        with self._mutex:
            node = self._node(path, fh)
            if node.kind == "dir":
                self._sync_dir(node)
            else:
                self._sync_file(node)
            return 0

    def unlink(self, path: str) -> int:
        with self._mutex:
            parent, name = self._parent(path)
            node = self._lookup(path)
            if node.kind == "dir":
                raise FuseOSError(errno.EISDIR)
            del parent.entries[name]
            node.nlink -= 1
            node.ctime_ns = time.time_ns()
            self._touch(parent)
            return 0

    def rename(self, old: str, new: str) -> int:
        with self._mutex:
            old_parent, old_name = self._parent(old)
            new_parent, new_name = self._parent(new)
            node = self._lookup(old)
            replaced = new_parent.entries.get(new_name)
            if replaced is not None and replaced != node.ino:
                target = self.nodes[replaced]
                if target.kind == "dir":
                    if node.kind != "dir":
                        raise FuseOSError(errno.EISDIR)
                    if target.entries:
                        raise FuseOSError(errno.ENOTEMPTY)
                elif node.kind == "dir":
                    raise FuseOSError(errno.ENOTDIR)
                target.nlink -= 1
            del old_parent.entries[old_name]
            new_parent.entries[new_name] = node.ino
            self._touch(old_parent)
            self._touch(new_parent)
            node.ctime_ns = time.time_ns()
            return 0

    def chmod(self, path: str | None, mode: int) -> int:
        with self._mutex:
            node = self._node(path, None)
            node.mode = stat.S_IMODE(mode)
            node.ctime_ns = time.time_ns()
            return 0

    def chown(self, path: str | None, uid: int, gid: int) -> int:
        with self._mutex:
            node = self._node(path, None)
            if uid != -1 and uid != 0xFFFFFFFF:
                node.uid = uid
            if gid != -1 and gid != 0xFFFFFFFF:
                node.gid = gid
            node.ctime_ns = time.time_ns()
            return 0

    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        with self._mutex:
            node = self._node(path, None)
            now = time.time_ns()
            node.atime_ns, node.mtime_ns = times if times is not None else (now, now)
            node.ctime_ns = now
            return 0

    def access(self, path: str, amode: int) -> int:
        with self._mutex:
            if path != CONTROL:
                self._lookup(path)
            return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.backing)
        return {
            key: getattr(st, key)
            for key in (
                "f_bsize",
                "f_frsize",
                "f_blocks",
                "f_bfree",
                "f_bavail",
                "f_files",
                "f_ffree",
                "f_favail",
                "f_namemax",
            )
        }


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: lazyfs.py BACKING MOUNTPOINT", file=sys.stderr)
        return 2
    backing, mountpoint = Path(argv[1]), argv[2]
    mfusepy.FUSE(
        LazyFS(backing),
        mountpoint,
        foreground=True,
        nothreads=True,
        use_ino=True,
        hard_remove=True,
        # No kernel caching of names or attributes: every lookup reaches this process.
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
        fsname="lazyfs",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
