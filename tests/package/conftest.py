"""Fixtures for the package tests (marker `package`, run with `scripts/test -m package`)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from package.debian_root import REPO, can_chroot, fresh_root


@dataclass
class Builds:
    """Two builds of the package, -1 and -2, as an upgrade sees them, and what they cost."""

    first: Path
    second: Path
    build_s: float
    timings: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="session")
def timings() -> Iterator[dict[str, float]]:
    measured: dict[str, float] = {}
    yield measured
    # The figures the closing note asks for, in the test log (-s or -rA shows them).
    print("\npackage figures: " + ", ".join(f"{k}={v:.1f}" for k, v in sorted(measured.items())))


def build(revision: int, out: Path) -> Path:
    subprocess.run(
        [
            str(REPO / "scripts" / "package"),
            "--no-lint",
            "--revision",
            str(revision),
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    (deb,) = out.glob(f"dockd_*-{revision}_*.deb")
    return deb


@pytest.fixture(scope="session")
def debs(timings: dict[str, float]) -> Iterator[Builds]:
    # A private directory: other pytest sessions on this machine prune old tmp_path directories.
    out = Path(tempfile.mkdtemp(prefix="dockd-debs-"))
    try:
        started = time.monotonic()
        first = build(1, out)
        build_s = time.monotonic() - started
        timings["build_s"] = build_s
        timings["package_kib"] = first.stat().st_size / 1024
        second = build(2, out)
        yield Builds(first, second, build_s, timings)
    finally:
        shutil.rmtree(out)


@pytest.fixture(scope="module")
def debian_root(timings: dict[str, float]) -> Iterator[Path]:
    """A fresh Debian 12 root with /proc and /sys mounted; unmounted and deleted whatever happens."""
    reason = can_chroot()
    if reason:
        pytest.skip(reason)
    with fresh_root(timings) as root:
        yield root
