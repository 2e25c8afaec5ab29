"""`dockd serve`'s multi-node options refuse what cannot work, with exit 78 and one line, before
anything connects (no services needed: these run in the default suite)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dockd import exitcodes
from support.receiver import _make_keys


def serve(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    key, _ = _make_keys(tmp_path / "keys")
    argv = [sys.executable, "-m", "dockd.cli", "serve", "--listen", "127.0.0.1:0"]
    argv += ["--signing-key", str(key), "--allow-anonymous", *args]
    environment = {k: v for k, v in os.environ.items() if k != "DOCKD_SHARED_STATE_DSN"}
    environment.update(env or {})
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=environment)


def dsn_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "dsn"
    path.write_text("host=127.0.0.1 port=1 dbname=x\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--node-id", "a"], "need --shared-state"),
        (["--lease-seconds", "5"], "need --shared-state"),
        (["--shared-state", "DSN"], "needs --store s3:"),
    ],
)
def test_multi_node_options_are_refused_outside_multi_node_mode(
    tmp_path: Path, args: list[str], says: str
) -> None:
    args = [str(dsn_file(tmp_path)) if arg == "DSN" else arg for arg in args]
    done = serve(tmp_path, "--store", str(tmp_path / "store"), *args)
    assert done.returncode == exitcodes.CONFIG
    assert says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_dsn_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = dsn_file(tmp_path, 0o644)
    done = serve(tmp_path, "--store", "s3:http://127.0.0.1:1/b", "--shared-state", str(path))
    assert done.returncode == exitcodes.CONFIG
    assert "chmod 600" in done.stderr


def test_the_dsn_from_the_environment_also_needs_the_s3_store(tmp_path: Path) -> None:
    done = serve(
        tmp_path,
        "--store",
        str(tmp_path / "store"),
        env={"DOCKD_SHARED_STATE_DSN": "host=127.0.0.1 port=1"},
    )
    assert done.returncode == exitcodes.CONFIG
    assert "needs --store s3:" in done.stderr


def test_postgresql_unreachable_at_start_is_exit_69_which_systemd_restarts(tmp_path: Path) -> None:
    done = serve(
        tmp_path,
        "--store",
        "s3:http://127.0.0.1:1/bucket",
        "--shared-state",
        str(dsn_file(tmp_path)),
        env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
    )
    assert done.returncode == exitcodes.UNAVAILABLE, done.stderr
    assert "shared state unavailable" in done.stderr
