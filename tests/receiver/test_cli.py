"""`dockd serve` as operators run it: exit 78 with a clear message on bad configuration, TLS
with client certificates, a clean exit on SIGTERM."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from dockd import exitcodes
from dockd.crypto.keys import keygen
from support.receiver import (
    ReceiverProcess,
    Tus,
    metadata_header,
    read_sidecar,
    upload_id_of,
    write_tokens_file,
)


def _serve(*args: str, anonymous: bool = True) -> subprocess.CompletedProcess[str]:
    """`dockd serve ARGS`; `anonymous` adds --allow-anonymous, as these tests are about other
    refusals (the exposure rules have their own tests below)."""
    extra = ["--allow-anonymous"] if anonymous and "--tokens" not in args else []
    return subprocess.run(
        [sys.executable, "-m", "dockd.cli", "serve", *args, *extra],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return keygen(tmp_path / "keys").server_signing_key


def test_group_readable_signing_key_is_refused(tmp_path, key):
    key.chmod(0o640)
    result = _serve(
        "--listen", "127.0.0.1:0", "--store", str(tmp_path / "s"), "--signing-key", str(key)
    )
    assert result.returncode == exitcodes.CONFIG
    assert str(key) in result.stderr
    assert "chmod 600" in result.stderr
    assert result.stderr.count("\n") == 1  # one clear line, no traceback
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "problem",
    [
        "missing key",
        "not a key",
        "bad listen",
        "tokens 0644",
        "empty tokens",
        "store is a file",
        "port in use",
    ],
)
def test_configuration_errors_exit_78_naming_the_culprit(tmp_path, key, problem):
    args = {
        "--listen": "127.0.0.1:0",
        "--store": str(tmp_path / "store"),
        "--signing-key": str(key),
    }
    culprit = ""
    holder = None
    if problem == "missing key":
        culprit = args["--signing-key"] = str(tmp_path / "nope.key")
    elif problem == "not a key":
        bogus = tmp_path / "bogus.key"
        bogus.write_text("hello")
        bogus.chmod(0o600)
        culprit = args["--signing-key"] = str(bogus)
    elif problem == "bad listen":
        culprit = args["--listen"] = "localhost"
    elif problem in ("tokens 0644", "empty tokens"):
        tokens = write_tokens_file(
            tmp_path / "tokens",
            {} if problem == "empty tokens" else {"tok-0123456789abcdef": "dock-1"},
        )
        if problem == "tokens 0644":
            tokens.chmod(0o644)
        culprit = args["--tokens"] = str(tokens)
    elif problem == "store is a file":
        (tmp_path / "store").write_text("")
        culprit = args["--store"]
    elif problem == "port in use":
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        args["--listen"] = f"127.0.0.1:{port}"
        culprit = str(port)
    try:
        result = _serve(*[part for pair in args.items() for part in pair])
    finally:
        if holder is not None:
            holder.close()
    assert result.returncode == exitcodes.CONFIG, result.stderr
    assert culprit in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_exits_0_after_printing_the_listening_line(tmp_path):
    server = ReceiverProcess(tmp_path).start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.url.endswith("/files/")
    finally:
        assert server.stop() == 0


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_pki(directory: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all EC P-256."""
    directory.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        cwd=directory,
    )
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        _openssl(
            "req",
            *ec,
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=directory,
        )
        (directory / f"{name}.ext").write_text(extension + "\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            cwd=directory,
        )
    os.chmod(directory / "server.key", 0o600)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
async def test_tls_with_required_client_certificates(tmp_path):
    pki = tmp_path / "pki"
    _make_pki(pki)
    server = ReceiverProcess(
        tmp_path / "rx",
        extra_args=[
            "--tls-cert",
            str(pki / "server.pem"),
            "--tls-key",
            str(pki / "server.key"),
            "--client-ca",
            str(pki / "ca.pem"),
        ],
    )
    with server:
        assert server.url.startswith("https://127.0.0.1:")
        with_cert = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        with_cert.load_cert_chain(pki / "client.pem", pki / "client.key")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=with_cert)) as session:
            tus = Tus(session, server.url)
            location, last = await tus.upload(b"over tls", chunk=4)
            assert location.startswith("https://")
            assert last.headers["Dockd-Receipt"]
            # The certificate's subject names the dock: recorded, and its uploads are its own.
            assert read_sidecar(server.store, upload_id_of(location))["dock"] == "client"
            claim = {"Upload-Metadata": metadata_header({"dock": "someone-else"})}
            assert (await tus.create(1, headers=claim)).status == 403

        without_cert = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=without_cert)) as s:
            with pytest.raises(aiohttp.ClientError):
                async with s.options(server.url) as response:
                    await response.read()
