"""The systemd units, checked by systemd itself: verify, the security score, sysusers, tmpfiles."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
MAX_EXPOSURE = 2.5

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (apt: systemd)"
)


UNITS = ("dockd.service", "dockd-serve.service", "dockd-store-reconcile.service")


def unit_for_test(tmp_path: Path, name: str = "dockd.service") -> Path:
    """The unit with ExecStart pointing at this checkout's dockd (verify checks it exists)."""
    dockd = Path(sys.executable).parent / "dockd"
    assert dockd.exists()
    text = (SYSTEMD / name).read_text()
    assert "ExecStart=/opt/dockd/venv/bin/dockd " in text
    unit = tmp_path / name
    unit.write_text(text.replace("/opt/dockd/venv/bin/dockd", str(dockd)))
    return unit


def _settings(name: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", " ")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.parametrize("name", UNITS)
def test_verify_is_silent(tmp_path, name):
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit_for_test(tmp_path, name))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 even for a misspelt key: any output at all is a finding.
    assert proc.stderr == "" and proc.stdout == "", proc.stderr + proc.stdout
    assert proc.returncode == 0


@pytest.mark.parametrize("name", UNITS)
def test_security_exposure_is_low(tmp_path, name):
    proc = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=true",
            "--no-pager",
            str(unit_for_test(tmp_path, name)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    exposure = float(match.group(1))
    print(f"systemd-analyze security exposure of {name}: {exposure}")
    assert exposure <= MAX_EXPOSURE, proc.stdout


def test_unit_is_a_hardened_notify_service():
    text = (SYSTEMD / "dockd.service").read_text()
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["Type"] == "notify"
    assert settings["WatchdogSec"] == "30s"
    assert settings["User"] == "dockd"
    assert settings["CapabilityBoundingSet"] == "CAP_SYS_ADMIN CAP_LEASE"
    assert settings["ProtectSystem"] == "strict"
    assert settings["NoNewPrivileges"] == "yes"
    assert set(settings["RestrictAddressFamilies"].split()) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
        "AF_NETLINK",
    }


def test_serve_unit_runs_unprivileged_with_room_for_its_connections():
    settings = _settings("dockd-serve.service")
    assert settings["DynamicUser"] == ["yes"]
    assert settings["CapabilityBoundingSet"] == [""]
    assert settings["RestartPreventExitStatus"] == ["78"]
    assert int(settings["LimitNOFILE"][0]) >= 4096
    # Keys reach the service as credentials, never as world- or group-readable files.
    loaded = {entry.split(":", 1)[0] for entry in settings["LoadCredential"]}
    assert {"server-receipt.key", "tokens", "tls.key"} <= loaded
    exec_start = (SYSTEMD / "dockd-serve.service").read_text().split("ExecStart=", 1)[1]
    exec_start = exec_start.split("\nLoadCredential", 1)[0]
    for flag in ("--tokens", "--tls-cert", "--tls-key"):
        assert flag in exec_start
    assert "--allow-anonymous" not in exec_start and "--allow-plaintext" not in exec_start


def test_reconcile_runs_daily_as_the_serve_user_on_its_audit_log():
    """The reconciler appends to the audit log dockd serve writes: same dynamic user and state
    directory, or the log would be unreadable to one of them."""
    reconcile = _settings("dockd-store-reconcile.service")
    serve = _settings("dockd-serve.service")
    assert reconcile["User"] == ["dockd-serve"] and reconcile["DynamicUser"] == ["yes"]
    assert reconcile["StateDirectory"] == serve["StateDirectory"]
    text = (SYSTEMD / "dockd-store-reconcile.service").read_text()
    assert f"--audit-dir /var/lib/{serve['StateDirectory'][0]}" in text
    assert reconcile["CapabilityBoundingSet"] == [""]
    timer = _settings("dockd-store-reconcile.timer")
    assert timer["OnCalendar"] == ["daily"] and timer["Persistent"] == ["true"]


def test_udev_rule_keeps_automounters_off_cameras():
    rules = [
        line
        for line in (SYSTEMD / "99-dockd-cameras.rules").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert rules
    for rule in rules:
        assert 'ENV{UDISKS_IGNORE}="1"' in rule
        assert re.search(r'ENV\{ID_VENDOR_ID\}=="[0-9a-f]{4}"', rule)


@pytest.mark.skipif(
    shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None,
    reason="needs systemd-sysusers and systemd-tmpfiles (apt: systemd)",
)
def test_sysusers_and_tmpfiles_make_a_private_user_and_dirs(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run(
        ["systemd-sysusers", f"--root={root}", str(SYSTEMD / "dockd.sysusers")],
        check=True,
        capture_output=True,
    )
    passwd = (root / "etc" / "passwd").read_text()
    entry = next(line for line in passwd.splitlines() if line.startswith("dockd:"))
    uid = int(entry.split(":")[2])
    assert uid != 0 and entry.endswith(":/usr/sbin/nologin")
    subprocess.run(
        ["systemd-tmpfiles", f"--root={root}", "--create", str(SYSTEMD / "dockd.tmpfiles")],
        check=True,
        capture_output=True,
    )
    for path, mode in (("var/lib/dockd", 0o700), ("run/dockd", 0o750), ("run/dockd/bays", 0o700)):
        st = (root / path).stat()
        assert (st.st_uid, st.st_mode & 0o777) == (uid, mode), path
