"""`dockd serve --store`: a directory or file:DIR is the file store; any other scheme is refused
by name before anything is created (an `s3:bucket` directory would silently take evidence)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from dockd.receiver.storage import open_store
from dockd.receiver.storage.file import FileStore


@pytest.mark.parametrize("spec", ["{d}", "file:{d}"])
def test_directory_or_file_scheme_is_the_file_store(tmp_path: Path, spec: str) -> None:
    store = open_store(spec.format(d=tmp_path / "store"))
    assert isinstance(store, FileStore) and store.root == tmp_path / "store"


def test_unknown_scheme_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dockd.cli",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-anonymous",
            "--store",
            "s3:evidence-bucket",
            "--signing-key",
            str(tmp_path / "missing.key"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "'s3'" in proc.stderr
    assert list(tmp_path.iterdir()) == []
