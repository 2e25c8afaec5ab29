"""Helpers for building hostile camera trees on real files (imported by the device tests)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
NOBODY = 65534


def put(root: Path, rel: bytes, data: bytes = b"x") -> bytes:
    """Create the file root/rel (raw bytes path, parents included) holding `data`; return rel."""
    full = os.path.join(os.fsencode(root), rel)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data)
    return rel


def tree(root: Path) -> set[bytes]:
    """Every path under root (files, dirs, links), relative, as bytes: to prove what was deleted."""
    found: set[bytes] = set()
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), base))
    return found


def call_unprivileged(fn: Callable[..., T], *args: Any) -> T:
    """Call fn(*args) where permission bits apply: in a forked child as `nobody` if we are root.

    Root reads everything, so a chmod 000 test would prove nothing when run as root.
    """
    if os.geteuid() != 0:
        return fn(*args)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            payload = pickle.dumps((True, fn(*args)))
        except BaseException as exc:
            payload = pickle.dumps((False, repr(exc)))
        with os.fdopen(write_end, "wb") as out:
            out.write(payload)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as inp:
        payload = inp.read()
    os.waitpid(pid, 0)
    ok, value = pickle.loads(payload)
    assert ok, f"unprivileged call failed: {value}"
    return value
