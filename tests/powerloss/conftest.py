"""Power-loss tests run real processes on lazyfs (FUSE): they need /dev/fuse, fusermount3, root."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from powerloss.mount import LazyMount, fuse_unavailable


@pytest.fixture
def lazy_mount(tmp_path: Path) -> Iterator[LazyMount]:
    """A lazyfs over tmp_path/disk mounted at tmp_path/mnt (unmounted afterwards, whatever happens)."""
    reason = fuse_unavailable()
    if reason is None and os.geteuid() != 0:
        reason = "mounting FUSE needs root here"
    if reason is not None:
        pytest.skip(reason)
    with LazyMount(tmp_path / "disk", tmp_path / "mnt") as fs:
        yield fs


def cuts_from_env(default: int) -> int:
    """How many power cuts a loop makes (DOCKD_POWERLOSS_CUTS overrides, e.g. for a long run)."""
    return int(os.environ.get("DOCKD_POWERLOSS_CUTS", default))


def seed_from_env() -> int:
    return int(os.environ.get("DOCKD_TEST_SEED") or int.from_bytes(os.urandom(4), "big"))
