"""`dockd serve` never starts anonymous or in clear text on a network address by accident: it
refuses (exit 78, one line) before reading a key or binding a socket."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from dockd import exitcodes
from dockd.loopback import is_loopback
from dockd.receiver.exposure import Exposure, ExposureError, check
from support.receiver import write_tokens_file


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The signing key does not exist: a refusal that names the exposure instead proves the
    # policy runs before any file is read, let alone a socket bound.
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "dockd.cli",
            "serve",
            "--store",
            str(tmp_path / "store"),
            "--signing-key",
            str(tmp_path / "absent.key"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _assert_refused(result: subprocess.CompletedProcess[str], tmp_path: Path, *words: str) -> None:
    assert result.returncode == exitcodes.CONFIG, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
    for word in words:
        assert word in result.stderr
    assert "absent.key" not in result.stderr
    assert not (tmp_path / "store").exists()


def test_no_authentication_on_loopback_is_refused_without_the_explicit_flag(tmp_path):
    result = _serve(tmp_path, "--listen", "127.0.0.1:0")
    _assert_refused(result, tmp_path, "no authentication", "--tokens", "--allow-anonymous")


@pytest.mark.parametrize("listen", ["0.0.0.0:8443", ":8443", "[::]:8443", "192.0.2.7:8443"])
def test_anonymous_is_refused_on_a_network_address_even_when_asked_for(tmp_path, listen):
    result = _serve(tmp_path, "--listen", listen, "--allow-anonymous", "--allow-plaintext")
    _assert_refused(result, tmp_path, "--allow-anonymous is refused", "loopback")


def test_tokens_over_plain_http_on_a_network_address_are_refused(tmp_path):
    tokens = write_tokens_file(tmp_path / "tokens", {"tok-0123456789abcdef": "dock-1"})
    result = _serve(tmp_path, "--listen", "0.0.0.0:8443", "--tokens", str(tokens))
    _assert_refused(result, tmp_path, "without TLS", "--tls-cert", "--allow-plaintext")


def test_plaintext_on_a_network_address_is_allowed_only_explicitly_and_with_a_warning():
    exposure = Exposure(host="0.0.0.0", tls=False, tokens=True, client_certs=False)
    with pytest.raises(ExposureError):
        check(exposure)
    warnings = check(
        Exposure(host="0.0.0.0", tls=False, tokens=True, client_certs=False, allow_plaintext=True)
    )
    assert len(warnings) == 1 and "plain HTTP" in warnings[0]
    # TLS with client certificates on a network address needs no flag and warns about nothing.
    assert check(Exposure(host="0.0.0.0", tls=True, tokens=False, client_certs=True)) == []
    # Loopback: anonymous with the flag, no TLS needed.
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert (
            check(Exposure(host, tls=False, tokens=False, client_certs=False, allow_anonymous=True))
            == []
        )


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("", False),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("evidence.example", False),
        ("127.0.0.1.example", False),
    ],
)
def test_what_counts_as_loopback(host, loopback):
    assert is_loopback(host) is loopback
