"""The dock insists on https: its token and the clips' metadata never travel in clear to a
server that is not on this machine, unless `[server] allow_insecure = true` says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dockd import config, exitcodes

RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


def _config(tmp_path: Path, url: str, extra: str = "") -> Path:
    token = tmp_path / "token"
    token.write_text("tok-0123456789abcdef\n")
    os.chmod(token, 0o600)
    path = tmp_path / "dockd.toml"
    path.write_text(
        f"""
[dock]
id = "d1"
state_dir = "state"
[server]
url = "{url}"
confirm = "offset"
token_file = "token"
{extra}
[encryption]
recipients = ["{RECIPIENT}"]
[[camera_models]]
name = "m"
clip_globs = ["**/*.MP4"]
"""
    )
    return path


def test_a_dock_with_a_token_and_a_plain_http_network_url_refuses_to_start(tmp_path):
    path = _config(tmp_path, "http://ingest.example.police.uk/files/")
    result = subprocess.run(
        [sys.executable, "-m", "dockd.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == exitcodes.CONFIG
    assert result.stderr.count("\n") == 1, result.stderr
    assert "server.url" in result.stderr and "https://" in result.stderr
    assert "allow_insecure" in result.stderr
    assert not (tmp_path / "state").exists()  # refused before anything was set up


@pytest.mark.parametrize(
    "url",
    [
        "https://ingest.example.police.uk/files/",
        "http://127.0.0.1:8080/files/",
        "http://localhost:8080/files/",
        "http://[::1]:8080/files/",
    ],
)
def test_https_or_loopback_is_accepted(tmp_path, url):
    assert config.load(_config(tmp_path, url)).server.url == url


def test_allow_insecure_is_the_explicit_way_to_plain_http(tmp_path):
    path = _config(tmp_path, "http://10.0.0.5/files/", "allow_insecure = true")
    settings = config.load(path)
    assert settings.server.allow_insecure is True
    with pytest.raises(config.ConfigError, match=r"server\.allow_insecure"):
        config.load(_config(tmp_path, "http://10.0.0.5/files/", 'allow_insecure = "yes"'))
