"""Configuration: the shipped example parses; every mistake names the file and key; exit 78."""

import subprocess
import sys
from pathlib import Path

import pytest
from dockd import config

ROOT = Path(__file__).resolve().parents[2]
RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dockd.toml"
    path.write_text(text)
    return path


MINIMAL = f"""
[dock]
id = "d1"
state_dir = "state"
[server]
url = "http://127.0.0.1:1/files/"
receipt_public_key = "server.pub"
[encryption]
recipients = ["{RECIPIENT}"]
[[camera_models]]
name = "m"
clip_globs = ["**/*.MP4"]
"""


def test_shipped_example_config_parses():
    settings = config.load(ROOT / "config" / "dockd.toml")
    assert settings.server.confirm == "receipt"
    assert settings.upload.chunk_size == 8 << 20
    assert settings.upload.memory_budget == 64 << 20
    assert settings.model("bwv-x1") is not None


def test_minimal_config_defaults_and_relative_paths(tmp_path):
    settings = config.load(_write(tmp_path, MINIMAL))
    assert settings.dock.state_dir == tmp_path / "state"
    assert settings.server.receipt_public_key == tmp_path / "server.pub"
    assert settings.upload.max_parallel == 4
    assert settings.bay_folder is None


@pytest.mark.parametrize(
    ("edit", "key", "words"),
    [
        (('chunk_size = "8MiB"', 'chunk_size = "8 parsecs"'), "upload.chunk_size", "byte count"),
        (('confirm = "receipt"', 'confirm = "maybe"'), "server.confirm", '"receipt" or "offset"'),
        ((RECIPIENT, "age1notakey"), "encryption.recipients[0]", "recipient"),
        (("max_parallel = 4", "max_parallel = 0"), "upload.max_parallel", ">= 1"),
        (("max_parallel = 4", 'max_parallel = "four"'), "upload.max_parallel", "integer"),
        (("max_parallel = 4", "max_paralel = 4"), "upload.max_paralel", "unknown key"),
        (
            ("max_parallel = 4", 'max_parallel = 4\nmemory_budget = "16MiB"'),
            "upload.memory_budget",
            "at least one upload's buffers (3 x chunk_size",
        ),
        (('url = "http://127.0.0.1:1/files/"', 'url = "ftp://x/"'), "server.url", "http(s)"),
    ],
)
def test_errors_name_file_key_and_problem(tmp_path, edit, key, words):
    text = MINIMAL.replace('url = "http', 'confirm = "receipt"\nurl = "http')
    text += '\n[upload]\nchunk_size = "8MiB"\nmax_parallel = 4\n'
    text = text.replace(*edit)
    path = _write(tmp_path, text)
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert str(path) in message and key in message and words in message


def test_receipt_policy_needs_a_server_key(tmp_path):
    path = _write(tmp_path, MINIMAL.replace('receipt_public_key = "server.pub"\n', ""))
    with pytest.raises(config.ConfigError, match=r"receipt_public_key.*required"):
        config.load(path)


def test_syntax_error_and_missing_file(tmp_path):
    with pytest.raises(config.ConfigError, match="syntax"):
        config.load(_write(tmp_path, "[dock\n"))
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.toml")


def test_dockd_run_exits_78_on_bad_config(tmp_path):
    path = _write(tmp_path, MINIMAL.replace('id = "d1"', 'id = "has spaces"'))
    proc = subprocess.run(
        [sys.executable, "-m", "dockd.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 78
    assert "dock.id" in proc.stderr and str(path) in proc.stderr


def test_dockd_run_exits_78_on_missing_server_key(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dockd.cli", "run", "--config", str(_write(tmp_path, MINIMAL))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 78
    assert "server.pub" in proc.stderr
