"""The .deb holds what a station PC needs and nothing from the developer's tree."""

from __future__ import annotations

import re
import subprocess

import pytest

from package.debian_root import REPO

pytestmark = pytest.mark.package


def members(deb) -> list[str]:
    listing = subprocess.run(
        ["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    # "drwxr-xr-x root/root 0 2026-01-01 00:00 ./opt/dockd/" -> "/opt/dockd/"; links keep "->".
    return [line.split(maxsplit=5)[5][1:] for line in listing.splitlines()]


def control_file(deb, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "--info", str(deb), name], capture_output=True, text=True, check=True
    ).stdout


def test_the_package_installs_every_piece_a_station_needs(debs):
    paths = members(debs.first)
    expected = [
        "/opt/dockd/venv/bin/dockd",
        "/opt/dockd/venv/bin/dockctl",
        "/usr/bin/dockd -> /opt/dockd/venv/bin/dockd",
        "/usr/bin/dockctl -> /opt/dockd/venv/bin/dockctl",
        "/lib/udev/rules.d/99-dockd-cameras.rules",
        "/usr/lib/sysusers.d/dockd.conf",
        "/usr/lib/tmpfiles.d/dockd.conf",
        "/etc/dockd/dockd.toml",
        "/opt/dockd/share/doc/DEPLOYMENT.md",
        "/usr/share/man/man1/dockd.1.gz",
        "/usr/share/man/man1/dockctl.1.gz",
    ]
    # Every unit in systemd/, including ones other branches add (dockd-serve.service).
    expected += [
        f"/lib/systemd/system/{unit.name}"
        for pattern in ("*.service", "*.timer")
        for unit in (REPO / "systemd").glob(pattern)
    ]
    missing = [path for path in expected if path not in paths]
    assert not missing, missing
    assert control_file(debs.first, "conffiles").split() == ["/etc/dockd/dockd.toml"]
    control = control_file(debs.first, "control")
    assert re.search(r"^Version: \d+\.\d+\.\d+.*-1$", control, re.MULTILINE), control
    assert "python3.11" in control


def test_the_package_holds_no_tests_caches_keys_or_vcs(debs):
    forbidden = re.compile(
        r"(^|/)(tests?|\.git|\.pytest_cache|\.ruff_cache|node_modules|__pycache__)(/|$)"
        r"|\.pyc$|\.egg-info(/|$)"
        r"|(^|/)(identity\.txt|[^/]*\.key|[^/]*-receipt\.pub|token)$"
    )
    bad = [path for path in members(debs.first) if forbidden.search(path.split(" -> ")[0])]
    assert not bad, bad
    # Only the project's own code: dockd itself is the dockd package, nothing else of the repo.
    site = "/opt/dockd/venv/lib/python3.11/site-packages/"
    ours = {p[len(site) :].split("/")[0] for p in members(debs.first) if p.startswith(site)}
    assert "dockd" in ours
    assert not ours & {"bench", "daemon", "scripts", "packaging", "support"}


def test_lintian_finds_no_error_or_warning(debs):
    done = subprocess.run(
        ["lintian", "--fail-on", "error,warning", str(debs.first)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    tags = [line for line in done.stdout.splitlines() if re.match(r"^[EW]: ", line)]
    assert done.returncode == 0 and not tags, done.stdout + done.stderr


def test_maintainer_scripts_never_start_a_unit_and_an_upgrade_restarts_a_running_one(debs):
    # No systemd runs in the test root, so the unit handling is read from the scripts dpkg runs.
    postinst = control_file(debs.first, "postinst")
    assert "deb-systemd-invoke start" not in postinst  # (not enabled: test_installed checks)
    # Upgrade: the new version try-restarts what was running; nothing stops it beforehand, or it
    # would stay stopped (debhelper's --no-start default).
    assert "deb-systemd-invoke try-restart" in postinst
    preinst = subprocess.run(
        ["dpkg-deb", "--info", str(debs.first), "preinst"], capture_output=True, text=True
    )
    assert "stop" not in preinst.stdout
    # Removal stops every unit of the package (debhelper leaves that out with --no-start).
    assert "deb-systemd-invoke stop" in control_file(debs.first, "prerm")
