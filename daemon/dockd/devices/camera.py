"""Safe clip discovery and access on a camera's storage, which is hostile input.

Everything here walks from a file descriptor of the camera root, one path component at a time,
with `O_NOFOLLOW`: no symlink is ever followed (file or directory), so nothing can lead outside
the camera root; special files (FIFOs, device nodes, sockets) are never read, and files are opened
with `O_NONBLOCK` so a FIFO swapped in after a check cannot block the open. Names are raw bytes
(`rel_path`, `b"/"`-separated); globs see them `os.fsdecode`d (surrogateescape), so non-UTF-8
names, newlines and 255-byte names all work. Nothing loads a clip into memory: `open_clip` hands
back a stream and only small sidecar/identity files are read, with a byte cap.

All functions are blocking; the pipeline runs them in a thread.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from dockd.devices.globs import GlobSet, States
from dockd.devices.writers import WriterCheck, WriterPresent, write_lease
from dockd.durable import fsync_dir

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. O_NOCTTY: a tty
# device node swapped in must not become our controlling terminal.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY

SYMLINK_REASON = "symlink (not followed)"
DEPTH_REASON = "directory depth limit"


class UnsafeFile(Exception):
    """The path does not lead to a regular file that is safe to read; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ClipReplaced(UnsafeFile):
    """Wipe refused: what is at the path now is not the file that was read. Nothing was deleted."""


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def wrap_u64(value: int) -> int:
    """An unsigned 64-bit kernel number (st_dev, st_ino) as SQLite can hold it: two's
    complement, so distinct values stay distinct."""
    return value - (1 << 64) if value > INT64_MAX else value


def saturate_i64(value: int) -> int:
    """A nanosecond time as SQLite can hold it. The kernel's are 64-bit seconds * 1e9, so a
    camera can claim years far past 2262 (ext4 stores up to 2446, tmpfs and crafted images
    anywhere) or before 1678: those saturate. Both sides of every identity comparison go through
    here, so a comparison never mixes forms; the raw value is kept in the clip's metadata."""
    return max(INT64_MIN, min(INT64_MAX, value))


@dataclass(frozen=True)
class FileIdentity:
    """What must not change between reading a clip and wiping it.

    ctime is the one a writer cannot forge: `utimensat` restores mtime to the nanosecond, but
    every write, truncate, chmod, link or utimensat sets ctime to the kernel's clock. `ctime_ns`
    None means "not recorded" (a journal row from before ctime was kept): it then matches any.
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int | None = None

    @classmethod
    def from_stat(cls, st: os.stat_result) -> FileIdentity:
        return cls(
            dev=wrap_u64(st.st_dev),
            ino=wrap_u64(st.st_ino),
            size=st.st_size,
            mtime_ns=saturate_i64(st.st_mtime_ns),
            ctime_ns=saturate_i64(st.st_ctime_ns),
        )

    def differs_from(self, found: FileIdentity) -> list[str]:
        """The fields in which `found` (read now) is not this identity (what was read)."""
        changed = [
            name
            for name in ("dev", "ino", "size", "mtime_ns")
            if getattr(self, name) != getattr(found, name)
        ]
        if self.ctime_ns is not None and self.ctime_ns != found.ctime_ns:
            changed.append("ctime_ns")
        return changed


@dataclass(frozen=True)
class FoundClip:
    """A regular file that matched a clip glob."""

    rel_path: bytes  # raw relative path, b"/"-separated; no leading "/", no "."/".." components
    identity: FileIdentity
    sidecar: dict[str, Any] | None  # the parsed sidecar object, if there is a sane one
    sidecar_error: str | None  # why an existing sidecar was ignored
    writing: bool = False  # some process holds it open for writing: not settled, whatever its size
    nlink: int = 1  # names of this inode: > 1 means a wipe of this name would leave the data
    raw_mtime_ns: int = 0  # st_mtime_ns as the kernel gave it (identity.mtime_ns may be saturated)


@dataclass(frozen=True)
class Skipped:
    """Something that looked relevant (matched a glob, or could have held a match) but is unsafe."""

    rel_path: bytes
    reason: str


@dataclass(frozen=True)
class ScanLimits:
    """Bounds on how much of a hostile filesystem one scan will look at."""

    max_depth: int = 16
    max_entries: int = 200_000
    max_sidecar_bytes: int = 64 * 1024
    max_sidecar_depth: int = 32

    def __post_init__(self) -> None:
        # The walk recurses once per directory level; keep it far from Python's recursion limit.
        if not 0 <= self.max_depth <= 256:
            raise ValueError("max_depth must be between 0 and 256")
        if self.max_entries < 1 or self.max_sidecar_bytes < 1 or self.max_sidecar_depth < 1:
            raise ValueError("scan limits must be positive")


@dataclass(frozen=True)
class ScanResult:
    """Clips and skipped entries, each sorted by rel_path."""

    clips: list[FoundClip]
    skipped: list[Skipped]
    truncated: bool  # max_entries was hit: the listing is incomplete


# ---------------------------------------------------------------------------------------------
# Names


def display_path(rel_path: bytes) -> str:
    r"""A printable, unambiguous rendering of raw path bytes for logs and status.

    Undecodable bytes become `\xNN` (always >= 0x80), non-printable characters become `\n`,
    `\t`, `\r`, `\xNN` (ASCII controls), `\uNNNN` or `\UNNNNNNNN` (C1 controls, bidi overrides),
    and a literal backslash becomes `\\`, so a hostile name can neither forge log lines nor pass
    for another name.
    """
    out: list[str] = []
    for ch in rel_path.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, smuggled through surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        elif ch in "\n\r\t":
            out.append(repr(ch)[1:-1])
        elif code < 0x80:  # a \xNN from 0x80 up always means an undecodable byte
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def _split_rel_path(rel_path: bytes) -> list[bytes]:
    """The components of a relative path; anything that could escape the root is refused."""
    if not isinstance(rel_path, bytes):
        raise TypeError("rel_path must be bytes")
    if not rel_path or rel_path.startswith(b"/") or b"\0" in rel_path:
        raise UnsafeFile(f"invalid relative path: {display_path(rel_path)!r}")
    parts = rel_path.split(b"/")
    if any(part in (b"", b".", b"..") for part in parts):
        raise UnsafeFile(f"invalid relative path: {display_path(rel_path)!r}")
    return parts


def _file_type(mode: int) -> str:
    """Operator-readable name of a file type."""
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return SYMLINK_REASON
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device node"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "unknown file type"


def _unreadable(exc: OSError) -> str:
    return f"unreadable: {exc.strerror or exc}"


# ---------------------------------------------------------------------------------------------
# Safe opening


def _open_dir(name: bytes | Path, dir_fd: int | None = None) -> int:
    """Open a directory without following a symlink; UnsafeFile if it is not a directory."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        # O_DIRECTORY|O_NOFOLLOW reports a symlink as ENOTDIR: say which it was.
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except OSError:
            raise UnsafeFile("not a directory") from exc
        raise UnsafeFile(_file_type(mode)) from exc


def _open_root(root: Path) -> int:
    try:
        return _open_dir(root)
    except UnsafeFile as exc:
        raise UnsafeFile(f"camera root is a {exc.reason}: {root}") from exc


@contextlib.contextmanager
def _parent_dir(root: Path, dir_parts: Sequence[bytes]) -> Iterator[int]:
    """Yield an fd of root/dir_parts, reached one no-follow component at a time."""
    fd = _open_root(root)
    try:
        for index, part in enumerate(dir_parts):
            try:
                child = _open_dir(part, fd)
            except UnsafeFile as exc:
                where = display_path(b"/".join(dir_parts[: index + 1]))
                raise UnsafeFile(f"{exc.reason}: {where}") from exc
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _open_regular(dir_fd: int, name: bytes) -> tuple[int, os.stat_result]:
    """Open `name` in `dir_fd` for reading only if it is, and stays, a regular file.

    The lstat first keeps us from ever opening a device node (opening some has side effects);
    the fstat after the open catches a swap between the two.
    """
    before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISREG(before.st_mode):
        raise UnsafeFile(_file_type(before.st_mode))
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(SYMLINK_REASON) from exc
        if exc.errno == errno.ENXIO:  # a socket or a device without a driver was swapped in
            raise UnsafeFile("not a regular file (replaced while opening)") from exc
        raise
    try:
        after = os.fstat(fd)
        if not stat.S_ISREG(after.st_mode):
            raise UnsafeFile(_file_type(after.st_mode))
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            raise UnsafeFile("file replaced while opening")
    except BaseException:
        os.close(fd)
        raise
    return fd, after


def open_clip(root: Path, rel_path: bytes) -> BinaryIO:
    """Open a clip for streaming reads (buffered; `read(n)` returns n bytes until EOF).

    Raises UnsafeFile (with `.reason`) if the path is malformed, goes through a symlink, or does
    not end at a regular file; OSError (FileNotFoundError, PermissionError...) otherwise.
    """
    parts = _split_rel_path(rel_path)
    with _parent_dir(root, parts[:-1]) as parent_fd:
        fd, _ = _open_regular(parent_fd, parts[-1])
    with contextlib.suppress(OSError):  # only a hint: the pipeline reads front to back
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    return cast(BinaryIO, os.fdopen(fd, "rb"))


def stat_clip(root: Path, rel_path: bytes) -> FileIdentity:
    """The clip's current identity, via the same no-follow walk as `open_clip` (raises the same)."""
    parts = _split_rel_path(rel_path)
    with _parent_dir(root, parts[:-1]) as parent_fd:
        st = os.stat(parts[-1], dir_fd=parent_fd, follow_symlinks=False)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(_file_type(st.st_mode))
    return FileIdentity.from_stat(st)


def wipe_clip(root: Path, rel_path: bytes, expected: FileIdentity) -> None:
    """Delete the clip, durably, only if it is still exactly the file that was read.

    Raises ClipReplaced (nothing deleted) if a directory on the way is now a symlink, or the
    entry is not a regular file, or its (dev, ino, size, mtime_ns, ctime_ns) differ from
    `expected`; HardLinked (nothing deleted) if the inode has other names, since unlinking this
    one would leave the data on the camera; WriterPresent (nothing deleted) if some process has
    it open for writing; UnsafeFile for a malformed rel_path; FileNotFoundError if it is already
    gone (the caller decides what that means). The directory is fsynced after the unlink so the
    wipe survives a power cut.

    The check and the unlink happen under a read lease on the very inode (see devices/writers):
    no process can open it for writing in between. The name is re-checked against the leased fd
    just before the unlink; a local process renaming another file over the name in the
    microseconds between that check and unlink(2) remains undetectable with POSIX calls (the
    camera itself cannot do that while it is mounted here).
    """
    parts = _split_rel_path(rel_path)
    try:
        with _parent_dir(root, parts[:-1]) as parent_fd:
            _unlink_if_unchanged(parent_fd, parts[-1], expected)
    except (ClipReplaced, HardLinked):
        raise
    except UnsafeFile as exc:  # a symlink on the way: whatever is there now was not read
        raise ClipReplaced(exc.reason) from exc


class HardLinked(UnsafeFile):
    """Wipe refused: the clip's inode has other names; unlinking one would leave the data."""


def _unlink_if_unchanged(parent_fd: int, name: bytes, expected: FileIdentity) -> None:
    st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    if not stat.S_ISREG(st.st_mode):
        raise ClipReplaced(f"{_file_type(st.st_mode)} where the clip was")
    fd, opened = _open_regular(parent_fd, name)
    try:
        with write_lease(fd) as lease:
            found = FileIdentity.from_stat(os.fstat(fd))
            if changed := expected.differs_from(found):
                raise ClipReplaced(
                    f"file changed since it was read ({', '.join(changed)}): expected "
                    f"{expected}, found {found}"
                )
            if opened.st_nlink > 1 or os.fstat(fd).st_nlink > 1:
                raise HardLinked(
                    f"the clip's data has {opened.st_nlink} names on the camera (hard links): "
                    "removing this one would leave the data under another name: not wiped (the "
                    "server holds the confirmed copy; remove the other names, then `dockctl "
                    "release`)"
                )
            now = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
                raise ClipReplaced("file replaced during the wipe check")
            # Last look, immediately before the unlink: a writer that began opening the file
            # during the checks (it waits on our lease), or a name linked meanwhile (link(2) does
            # not break a lease), would otherwise lose its data with the unlink.
            if not lease.intact():
                raise WriterPresent("a process began opening the clip for writing during the wipe")
            if os.fstat(fd).st_nlink > 1:
                raise HardLinked("a second name was linked to the clip during the wipe: not wiped")
            os.unlink(name, dir_fd=parent_fd)
    finally:
        os.close(fd)
    fsync_dir(parent_fd)  # the unlink is durable before the clip is reported wiped


# ---------------------------------------------------------------------------------------------
# Small JSON files (sidecars, bay identity files)


def read_small_file(dir_fd: int, name: bytes, max_bytes: int) -> bytes:
    """Read a small regular file safely: no symlinks, no special files, at most max_bytes.

    Raises UnsafeFile (symlink, special file, too big), FileNotFoundError, or OSError.
    """
    fd, st = _open_regular(dir_fd, name)
    try:
        if st.st_size > max_bytes:
            raise UnsafeFile(f"too big ({st.st_size} bytes, limit {max_bytes})")
        chunks: list[bytes] = []
        remaining = max_bytes + 1  # one byte over proves a file that grew after the fstat
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise UnsafeFile(f"too big (more than {max_bytes} bytes)")
    return data


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def json_nesting_depth(text: str, limit: int) -> int:
    """Bracket depth of JSON text outside strings, stopping as soon as it passes `limit`.

    Checked before `json.loads` because the decoder recurses per level: `[[[[…` 60 KiB deep
    would otherwise raise RecursionError (or worse) inside the parser.
    """
    depth = deepest = 0
    for token in _JSON_TOKEN.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif char in "]}":
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def load_json_object(data: bytes, max_depth: int) -> dict[str, Any]:
    """Parse UTF-8 JSON that must be an object no deeper than max_depth; ValueError says why."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError("not UTF-8") from exc
    if json_nesting_depth(text, max_depth) > max_depth:
        raise ValueError(f"nested deeper than {max_depth} levels")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # ValueError covers JSONDecodeError
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object (a {type(value).__name__})")
    return value


# ---------------------------------------------------------------------------------------------
# Scanning


class _SidecarNamer:
    """Turns a clip name into its sidecar's name: `{stem}` (name minus last suffix), `{name}`."""

    def __init__(self, pattern: str) -> None:
        if not pattern or "/" in pattern or "\0" in pattern:
            raise ValueError(f"sidecar pattern must be a plain file name: {pattern!r}")
        self.pattern = pattern

    def __call__(self, clip_name: str) -> str | None:
        dot = clip_name.rfind(".")
        stem = clip_name[:dot] if dot > 0 else clip_name
        name = self.pattern.replace("{stem}", stem).replace("{name}", clip_name)
        return None if name in ("", ".", "..", clip_name) else name


@dataclass
class _Walk:
    globs: GlobSet
    sidecar_name: _SidecarNamer | None
    limits: ScanLimits
    clips: list[FoundClip] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    entries_seen: int = 0
    truncated: bool = False
    has_writer: WriterCheck = field(default_factory=WriterCheck)  # one /proc index per scan

    def skip(self, rel: Sequence[bytes], reason: str) -> None:
        self.skipped.append(Skipped(b"/".join(rel), reason))

    def list_dir(self, dir_fd: int, rel: tuple[bytes, ...]) -> list[os.DirEntry[str]]:
        entries: list[os.DirEntry[str]] = []
        try:
            with os.scandir(dir_fd) as listing:
                for entry in listing:
                    self.entries_seen += 1
                    if self.entries_seen > self.limits.max_entries:
                        self.truncated = True
                        break
                    entries.append(entry)
        except OSError as exc:  # keep what was listed before the error
            self.skip(rel, _unreadable(exc))
        return entries

    def walk(self, dir_fd: int, rel: tuple[bytes, ...], depth: int, states: States) -> None:
        entries = self.list_dir(dir_fd, rel)
        names = {entry.name for entry in entries}
        subdirs: list[tuple[bytes, States]] = []
        for entry in entries:
            name = entry.name
            child_rel = (*rel, os.fsencode(name))
            child_states = self.globs.step(states, name)
            is_match = self.globs.accepts(child_states)
            could_hold_match = self.globs.alive(child_states)
            if not (is_match or could_hold_match):
                continue
            try:
                if entry.is_symlink():
                    self.skip(child_rel, SYMLINK_REASON)
                elif entry.is_dir(follow_symlinks=False):
                    if not could_hold_match:
                        continue
                    if depth + 1 > self.limits.max_depth:
                        self.skip(child_rel, DEPTH_REASON)
                    else:
                        subdirs.append((child_rel[-1], child_states))
                elif not is_match:
                    continue
                elif entry.is_file(follow_symlinks=False):
                    self.add_clip(dir_fd, child_rel, name, names)
                else:
                    mode = entry.stat(follow_symlinks=False).st_mode
                    self.skip(child_rel, _file_type(mode))
            except OSError as exc:
                self.skip(child_rel, _unreadable(exc))
        for name_bytes, child_states in subdirs:
            if self.truncated:
                return
            self.descend(dir_fd, (*rel, name_bytes), depth + 1, child_states)

    def descend(self, dir_fd: int, rel: tuple[bytes, ...], depth: int, states: States) -> None:
        try:
            child_fd = _open_dir(rel[-1], dir_fd)
        except UnsafeFile as exc:
            self.skip(rel, exc.reason)
            return
        except OSError as exc:
            self.skip(rel, _unreadable(exc))
            return
        try:
            self.walk(child_fd, rel, depth, states)
        finally:
            os.close(child_fd)

    def add_clip(self, dir_fd: int, rel: tuple[bytes, ...], name: str, names: set[str]) -> None:
        # Opening (not just lstat) proves the clip is readable now and takes its identity from
        # the very file that was opened, not from a name that could be swapped.
        try:
            fd, st = _open_regular(dir_fd, rel[-1])
        except UnsafeFile as exc:
            self.skip(rel, exc.reason)
            return
        except OSError as exc:
            self.skip(rel, _unreadable(exc))
            return
        try:
            writing = self.has_writer(fd)
        except OSError as exc:
            self.skip(rel, _unreadable(exc))
            return
        finally:
            os.close(fd)
        sidecar, sidecar_error = self.read_sidecar(dir_fd, name, names)
        self.clips.append(
            FoundClip(
                b"/".join(rel),
                FileIdentity.from_stat(st),
                sidecar,
                sidecar_error,
                writing=writing,
                nlink=st.st_nlink,
                raw_mtime_ns=st.st_mtime_ns,
            )
        )

    def read_sidecar(
        self, dir_fd: int, clip_name: str, names: set[str]
    ) -> tuple[dict[str, Any] | None, str | None]:
        if self.sidecar_name is None:
            return None, None
        sidecar_name = self.sidecar_name(clip_name)
        if sidecar_name is None or sidecar_name not in names:
            return None, None
        try:
            data = read_small_file(dir_fd, os.fsencode(sidecar_name), self.limits.max_sidecar_bytes)
            return load_json_object(data, self.limits.max_sidecar_depth), None
        except FileNotFoundError:
            return None, None  # vanished since the listing: same as never there
        except UnsafeFile as exc:
            return None, f"sidecar {exc.reason}"
        except OSError as exc:
            return None, f"sidecar {_unreadable(exc)}"
        except ValueError as exc:
            return None, f"sidecar {exc}"


def scan_camera(
    root: Path,
    globs: Sequence[str],
    sidecar_pattern: str | None = None,
    limits: ScanLimits = ScanLimits(),
) -> ScanResult:
    """Find the regular files under `root` that match `globs`, without trusting anything there.

    Symlinks are never followed (reported as Skipped when they match a glob or could be a
    directory holding a match), special files matching a glob are Skipped with their type,
    unreadable directories and files are Skipped with the reason, and the walk stays within
    `limits`. Only the camera root itself failing to open raises (OSError, or UnsafeFile if it
    is a symlink); a malformed glob or sidecar pattern raises ValueError.
    """
    walk = _Walk(
        globs=GlobSet(globs),
        sidecar_name=_SidecarNamer(sidecar_pattern) if sidecar_pattern is not None else None,
        limits=limits,
    )
    root_fd = _open_root(root)
    try:
        walk.walk(root_fd, (), 0, walk.globs.start())
    finally:
        os.close(root_fd)
    walk.clips.sort(key=lambda clip: clip.rel_path)
    walk.skipped.sort(key=lambda item: item.rel_path)
    return ScanResult(clips=walk.clips, skipped=walk.skipped, truncated=walk.truncated)
