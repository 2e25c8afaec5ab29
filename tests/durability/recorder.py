"""Observe the durable steps of real code, in the order they happen.

`SyncRecorder` wraps the os calls that make data durable or visible (fsync, fdatasync, rename,
replace, unlink/remove) and records each with the path it acted on, resolved from the descriptor at
call time; it also records the journal's COMMITs (with the clip state the transaction set) and
the receiver's responses. Tests then assert the order of those events: the order is the
invariant (data synced before the offset that covers it is committed, before the client hears
of it; CONFIRMED committed before the camera file goes; the unlink made durable before WIPED).
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

_STATE_SET = re.compile(r"UPDATE clips SET state = '([A-Z]+)'")


@dataclass(frozen=True)
class Event:
    kind: str  # fsync | fdatasync | rename | unlink | commit | respond
    path: str = ""  # the file or directory acted on (rename: the source)
    target: str = ""  # rename: the destination; commit: the state set; respond: "METHOD status"


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"<fd {fd}>"


def _at(path: Any, dir_fd: int | None) -> str:
    name = os.fsdecode(path)
    if dir_fd is None or os.path.isabs(name):
        return os.path.abspath(name)
    return os.path.join(_fd_path(dir_fd), name)


class SyncRecorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._pending_state: dict[int, str] = {}

    def add(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> SyncRecorder:
        real_fsync, real_fdatasync = os.fsync, os.fdatasync
        real_rename, real_replace, real_unlink = os.rename, os.replace, os.unlink

        def syncer(kind: str, real: Callable[[int], None]) -> Callable[[int], None]:
            def call(fd: int) -> None:
                path = _fd_path(fd)
                real(fd)
                self.add(Event(kind, path))  # recorded once it returned: then it is durable

            return call

        def mover(real: Callable[..., None]) -> Callable[..., None]:
            def call(
                src: Any, dst: Any, *, src_dir_fd: int | None = None, dst_dir_fd: int | None = None
            ) -> None:
                real(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
                self.add(Event("rename", _at(src, src_dir_fd), _at(dst, dst_dir_fd)))

            return call

        def unlink(path: Any, *, dir_fd: int | None = None) -> None:
            where = _at(path, dir_fd)
            real_unlink(path, dir_fd=dir_fd)
            self.add(Event("unlink", where))

        monkeypatch.setattr(os, "fsync", syncer("fsync", real_fsync))
        monkeypatch.setattr(os, "fdatasync", syncer("fdatasync", real_fdatasync))
        monkeypatch.setattr(os, "rename", mover(real_rename))
        monkeypatch.setattr(os, "replace", mover(real_replace))
        monkeypatch.setattr(os, "unlink", unlink)
        monkeypatch.setattr(os, "remove", unlink)  # the same call under its other name
        return self

    def watch_connection(self, conn: sqlite3.Connection) -> None:
        """Record each COMMIT on `conn`, with the clip state its transaction set (if any)."""
        key = id(conn)

        def trace(sql: str) -> None:
            if match := _STATE_SET.search(sql):
                self._pending_state[key] = match.group(1)
            elif sql.strip().upper() == "COMMIT":
                self.add(Event("commit", target=self._pending_state.pop(key, "")))
            elif sql.strip().upper() == "ROLLBACK":
                self._pending_state.pop(key, None)

        conn.set_trace_callback(trace)

    def index(self, predicate: Callable[[Event], bool], what: str, *, after: int = -1) -> int:
        """Position of the first event after `after` matching `predicate` (fails if none)."""
        for position in range(after + 1, len(self.events)):
            if predicate(self.events[position]):
                return position
        raise AssertionError(f"never happened (after event {after}): {what}\n{self.dump()}")

    def dump(self) -> str:
        return "\n".join(f"{i:4d} {e}" for i, e in enumerate(self.events))
