"""Fixtures for the device tests: camera roots on real files."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def camera(tmp_path: Path) -> Path:
    root = tmp_path / "camera"
    root.mkdir()
    return root


@pytest.fixture
def shared_camera() -> Iterator[Path]:
    """A camera root that an unprivileged uid can reach (pytest's tmp_path is private to root)."""
    with tempfile.TemporaryDirectory(prefix="dockd-cam-") as top:
        os.chmod(top, 0o755)
        root = Path(top) / "camera"
        root.mkdir(mode=0o755)
        try:
            yield root
        finally:
            for dirpath, dirnames, _ in os.walk(top):  # let cleanup into chmod 000 dirs
                for name in dirnames:
                    os.chmod(os.path.join(dirpath, name), 0o755)
