"""The package installed for real: a fresh Debian 12 root, apt, upgrade, purge.

The tests run in order on one root (module scope), like a station PC's life: install, use,
upgrade with an edited configuration, purge.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from package.debian_root import chroot

pytestmark = pytest.mark.package

EDITED = "# edited by the station's configuration management\n"


def apt_install(root: Path, deb: Path) -> None:
    shutil.copy(deb, root / "tmp" / deb.name)
    chroot(root, "apt-get", "install", "-y", "-q", "--no-install-recommends", f"/tmp/{deb.name}")


def units(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "lib" / "systemd" / "system").glob("dockd*.service"))


@pytest.fixture(scope="module")
def installed(debian_root: Path, debs, timings) -> Path:
    chroot(debian_root, "apt-get", "update", "-q")
    started = time.monotonic()
    apt_install(debian_root, debs.first)
    timings["install_s"] = time.monotonic() - started
    return debian_root


def test_install_creates_the_user_and_private_directories_and_starts_nothing(installed):
    root = installed
    assert chroot(root, "id", "-u", "dockd").stdout.strip().isdigit()
    stat = chroot(root, "stat", "-c", "%a %U:%G", "/etc/dockd", "/etc/dockd/dockd.toml").stdout
    assert stat.split("\n")[:2] == ["750 root:dockd", "640 root:dockd"]
    assert chroot(root, "stat", "-c", "%a %U", "/var/lib/dockd").stdout.strip() == "700 dockd"
    # Not started, and not enabled to start at the next boot either: configure first.
    assert units(root), "no unit installed"
    for unit in units(root):
        assert not list((root / "etc" / "systemd" / "system").rglob(unit)), f"{unit} is enabled"
    # Byte-code compiled in place by postinst (dockd cannot write it under ProtectSystem=strict).
    assert list((root / "opt" / "dockd" / "venv" / "lib").rglob("dockd/__pycache__/*.pyc"))


def test_commands_run_from_path(installed):
    root = installed
    version = chroot(root, "dockd", "--version").stdout
    assert version.startswith("dockd ")
    chroot(root, "dockd", "keygen", "--out", "/root/keys")
    keys = sorted(p.name for p in (root / "root" / "keys").iterdir())
    assert {"server-receipt.key", "identity.txt", "dock-signing.key"} <= set(keys)
    assert chroot(root, "dockctl", "--help").returncode == 0


def test_installed_units_verify(installed):
    root = installed
    done = chroot(
        root,
        "systemd-analyze",
        "verify",
        *(f"/lib/systemd/system/{u}" for u in units(root)),
        check=False,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_demo_runs_the_whole_chain_inside(installed, timings):
    started = time.monotonic()
    done = chroot(installed, "dockd", "demo", "--workdir", "/root/demo")
    timings["demo_s"] = time.monotonic() - started
    assert done.returncode == 0
    # Every clip the demo docked was decrypted from the server's store and matched its hash.
    assert done.stdout.count("verified") >= 8, done.stdout[-3000:]


def test_upgrade_keeps_the_edited_configuration(installed, debs):
    root = installed
    conffile = root / "etc" / "dockd" / "dockd.toml"
    conffile.write_text(EDITED)
    apt_install(root, debs.second)
    status = chroot(root, "dpkg-query", "-W", "-f", "${Version}", "dockd").stdout
    assert status.endswith("-2")
    assert conffile.read_text() == EDITED
    assert (
        chroot(root, "stat", "-c", "%a %G", "/etc/dockd/dockd.toml").stdout.strip() == "640 dockd"
    )
    assert chroot(root, "dockd", "--version").returncode == 0


def test_purge_removes_the_package_and_keeps_custody_records_and_the_user(installed):
    root = installed
    journal = root / "var" / "lib" / "dockd" / "journal.db"
    journal.write_bytes(b"stands in for the custody journal")
    # A key the administrator put in /etc/dockd: dpkg does not know it, so purge must not take it.
    key = root / "etc" / "dockd" / "dock-signing.key"
    key.write_bytes(b"stands in for the dock's signing key")
    chroot(root, "apt-get", "purge", "-y", "-q", "dockd")
    # Gone: the program, its links, units, rule, conffile, permission overrides.
    for gone in (
        "opt/dockd",
        "usr/bin/dockd",
        "usr/bin/dockctl",
        "lib/systemd/system/dockd.service",
        "lib/udev/rules.d/99-dockd-cameras.rules",
        "etc/dockd/dockd.toml",
        "run/dockd",
    ):
        assert not (root / gone).exists(), gone
    # (exit 1: no override left at all)
    assert "dockd" not in chroot(root, "dpkg-statoverride", "--list", check=False).stdout
    assert chroot(root, "dpkg-query", "-W", "dockd", check=False).returncode != 0
    # Kept: the journal (signed receipts: evidence of custody), the key, the system user.
    assert journal.read_bytes() == b"stands in for the custody journal"
    assert key.read_bytes() == b"stands in for the dock's signing key"
    assert chroot(root, "id", "-u", "dockd").returncode == 0
