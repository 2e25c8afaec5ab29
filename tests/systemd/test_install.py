"""scripts/install --root: the files, their modes, the user, and a venv whose dockd runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-sysusers") is None, reason="needs systemd-sysusers (apt: systemd)"
)


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "scripts" / "install"), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_install_into_a_temporary_root(tmp_path):
    root = tmp_path / "root"
    token = tmp_path / "token"
    token.write_text("secret-token\n")
    token.chmod(0o644)  # however it arrives, installed it is private
    pub = tmp_path / "server-receipt.pub"
    pub.write_text("-----BEGIN PUBLIC KEY-----\n")
    install(root, "--key", str(token), "--public-key", str(pub))

    etc = root / "etc"
    assert mode(etc / "dockd") == 0o750
    assert mode(etc / "dockd" / "dockd.toml") == 0o640
    assert mode(etc / "dockd" / "token") == 0o600
    assert mode(etc / "dockd" / "server-receipt.pub") == 0o644
    for unit in (
        "systemd/system/dockd.service",
        "udev/rules.d/99-dockd-cameras.rules",
        "tmpfiles.d/dockd.conf",
        "sysusers.d/dockd.conf",
    ):
        assert (etc / unit).read_bytes() == (REPO / "systemd" / _source(unit)).read_bytes()
        assert mode(etc / unit) == 0o644
    assert any(line.startswith("dockd:") for line in (etc / "passwd").read_text().splitlines())
    assert mode(root / "var" / "lib" / "dockd") == 0o700
    assert mode(root / "run" / "dockd" / "bays") == 0o700

    dockd = root / "opt" / "dockd" / "venv" / "bin" / "dockd"
    version = subprocess.run([str(dockd), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("dockd ")

    # Again (an upgrade): the operator's configuration is kept, not replaced by the example.
    (etc / "dockd" / "dockd.toml").write_text("# edited by the operator\n")
    install(root, "--no-venv")
    assert (etc / "dockd" / "dockd.toml").read_text() == "# edited by the operator\n"
    assert mode(etc / "dockd" / "dockd.toml") == 0o640


def _source(installed: str) -> str:
    return {
        "systemd/system/dockd.service": "dockd.service",
        "udev/rules.d/99-dockd-cameras.rules": "99-dockd-cameras.rules",
        "tmpfiles.d/dockd.conf": "dockd.tmpfiles",
        "sysusers.d/dockd.conf": "dockd.sysusers",
    }[installed]
