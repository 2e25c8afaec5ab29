"""Bad configuration, bad keys and a damaged journal: one clear line, exit 78, nothing touched.

Each case runs the real `dockd run` against a bay with a clip in it: whatever is wrong, the
daemon must say what (naming the file, and the key where there is one) in one line on stderr,
exit 78 (EX_CONFIG), and leave the camera exactly as it was.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dockd.crypto.keys import keygen
from support.dock import dock_config, make_bay, write_toml


@pytest.fixture
def setup(tmp_path: Path):
    keys = keygen(tmp_path / "keys")
    (tmp_path / "bays").mkdir()
    make_bay(tmp_path / "bays", "bay-1", "CAM-1", {"DCIM/A.MP4": b"evidence"})
    data = dock_config(
        tmp_path,
        "http://127.0.0.1:9/files/",
        keys.age_recipient.read_text().strip(),
        public_key=keys.server_public_key,
    )
    return tmp_path, keys, data


def _run(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dockd.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def _assert_refused(proc: subprocess.CompletedProcess[str], tmp_path: Path, *words: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 78, proc.stderr
    assert len(lines) == 1, f"expected one clear line, got: {proc.stderr!r}"
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert (tmp_path / "bays/bay-1/DCIM/A.MP4").read_bytes() == b"evidence"


def _mutate(data: dict, path: list[str], value) -> dict:
    data = json.loads(json.dumps(data))
    table = data
    for key in path[:-1]:
        table = table[key]
    if value is None:
        del table[path[-1]]
    else:
        table[path[-1]] = value
    return data


CASES = {
    "missing section": (["server"], None, ["server", "required"]),
    "wrong type": (["upload", "chunk_size"], True, ["upload.chunk_size", "boolean"]),
    "wrong recipient format": (
        ["encryption", "recipients"],
        ["ssh-ed25519 AAAA"],
        ["recipients[0]"],
    ),
    "unknown key": (["upload", "chunk_sise"], 5, ["upload.chunk_sise", "unknown"]),
    "missing server key file": (
        ["server", "receipt_public_key"],
        "/nonexistent/server.pub",
        ["/nonexistent/server.pub"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_configuration(setup, case):
    tmp_path, _keys, data = setup
    path, value, words = CASES[case]
    config = write_toml(tmp_path / "dockd.toml", _mutate(data, path, value))
    _assert_refused(_run(config), tmp_path, str(config) if "file" not in case else "", *words)


def test_missing_config_file(tmp_path):
    proc = _run(tmp_path / "nope.toml")
    assert proc.returncode == 78 and "nope.toml" in proc.stderr


def test_world_readable_token_file(setup):
    tmp_path, _keys, data = setup
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    token.chmod(0o644)
    config = write_toml(
        tmp_path / "dockd.toml", _mutate(data, ["server", "token_file"], str(token))
    )
    proc = _run(config)
    _assert_refused(proc, tmp_path, str(token), "chmod 600")
    assert "s3cret-token" not in proc.stderr + proc.stdout


def test_malformed_server_key(setup):
    tmp_path, _keys, data = setup
    bad = tmp_path / "bad.pub"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    config = write_toml(
        tmp_path / "dockd.toml", _mutate(data, ["server", "receipt_public_key"], str(bad))
    )
    _assert_refused(_run(config), tmp_path, str(bad))


def _journal_after_one_run(tmp_path: Path, data: dict) -> Path:
    """Create a real journal by starting and stopping the daemon once (the server is down)."""
    config = write_toml(tmp_path / "dockd.toml", data)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dockd.cli", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = tmp_path / "state" / "journal.db"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:  # the file appears before its tables do
                conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
                try:
                    rows = conn.execute("SELECT count(*) FROM clips").fetchone()[0]
                finally:
                    conn.close()
            except sqlite3.Error:
                rows = 0
            if rows:
                break
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(15)
    return config


def test_truncated_journal_refuses_and_wipes_nothing(setup):
    tmp_path, _keys, data = setup
    config = _journal_after_one_run(tmp_path, data)
    journal = tmp_path / "state" / "journal.db"
    for extra in ("-wal", "-shm"):
        Path(str(journal) + extra).unlink(missing_ok=True)
    size = journal.stat().st_size
    with open(journal, "r+b") as handle:
        handle.truncate(size // 2)
    _assert_refused(_run(config), tmp_path, str(journal), "nothing will be wiped")


def test_journal_with_foreign_schema_refuses(setup):
    tmp_path, _keys, data = setup
    config = _journal_after_one_run(tmp_path, data)
    conn = sqlite3.connect(tmp_path / "state" / "journal.db")
    conn.execute("PRAGMA user_version=42")
    conn.commit()
    conn.close()
    _assert_refused(_run(config), tmp_path, "schema version 42")


def test_journal_overwritten_with_garbage_refuses(setup):
    tmp_path, _keys, data = setup
    config = _journal_after_one_run(tmp_path, data)
    journal = tmp_path / "state" / "journal.db"
    for extra in ("-wal", "-shm"):
        Path(str(journal) + extra).unlink(missing_ok=True)
    journal.write_bytes(os.urandom(8192))
    _assert_refused(_run(config), tmp_path, str(journal), "damaged")


def test_malformed_metrics_address(setup):
    tmp_path, _keys, data = setup
    data = _mutate(data, ["status"], {"metrics": "localhost"})
    config = write_toml(tmp_path / "dockd.toml", data)
    _assert_refused(_run(config), tmp_path, str(config), "status.metrics", "host:port")


def test_metrics_port_already_taken(setup):
    tmp_path, _keys, data = setup
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = _mutate(data, ["status"], {"metrics": f"127.0.0.1:{port}"})
        proc = _run(write_toml(tmp_path / "dockd.toml", data))
    # Found only once the daemon runs, so log lines come first; the last line says what and why.
    assert proc.returncode == 78, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "metrics" in last and "cannot listen" in last and "Traceback" not in proc.stderr
    assert (tmp_path / "bays/bay-1/DCIM/A.MP4").read_bytes() == b"evidence"
