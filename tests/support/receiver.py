"""Real reference receivers for tests: `dockd serve` as a subprocess, or one in this process.

    proc = ReceiverProcess(tmp_path).start()        # dockd serve on a free port, fresh keys
    proc.url                                         # creation endpoint, http://127.0.0.1:PORT/files/
    proc.kill9(); proc.restart()                     # crash and come back on the same port/store
    proc.stop()                                      # SIGTERM, returns the exit code

    async with running_receiver(tmp_path, expire_after=1) as rx:   # in-process, port 0
        rx.url, rx.public_key, rx.sidecar(upload_id), rx.stored_bytes(upload_id)
        rx.store (the UploadStore), rx.store_dir (a file store's directory)

`ReceiverProcess` methods block (they wait for the process); call them from async tests freely
as long as the receiver is not served by the test's own event loop.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import os
import resource
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from dockd.crypto.keys import keygen, load_signing_key, load_verify_key
from dockd.receiver.app import ReceiverSettings, RunningReceiver, start
from dockd.receiver.storage.api import UploadStore
from dockd.receiver.storage.file import FileStore
from multidict import CIMultiDict, CIMultiDictProxy

LISTENING = "dockd serve: listening on "
TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = "application/offset+octet-stream"


def checksum_header(algorithm: str, data: bytes) -> str:
    digest = hashlib.new(algorithm, data).digest()
    return f"{algorithm} {base64.b64encode(digest).decode()}"


def metadata_header(values: Mapping[str, str | None]) -> str:
    pairs = []
    for key, value in values.items():
        pairs.append(key if value is None else f"{key} {base64.b64encode(value.encode()).decode()}")
    return ",".join(pairs)


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    text: str

    @property
    def offset(self) -> int:
        return int(self.headers["Upload-Offset"])


class Tus:
    """A deliberately thin tus client: each call is one request, returning status and headers."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str | None = None) -> None:
        self.session = session
        self.url = url
        self.token = token

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> Reply:
        merged = dict(TUS)
        if self.token is not None:
            merged["Authorization"] = f"Bearer {self.token}"
        merged.update(headers or {})
        async with self.session.request(method, url, headers=merged, data=data) as response:
            return Reply(response.status, response.headers, await response.text())

    async def create(
        self,
        length: int,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        checksum: str | None = None,
    ) -> Reply:
        merged = {"Upload-Length": str(length), **(headers or {})}
        if body is not None:
            merged["Content-Type"] = OFFSET_STREAM
            if checksum is not None:
                merged["Upload-Checksum"] = checksum_header(checksum, body)
        return await self.request("POST", self.url, merged, body)

    async def patch(
        self,
        location: str,
        offset: int,
        data: bytes,
        *,
        checksum: str | None = "sha256",
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        merged = {"Upload-Offset": str(offset), "Content-Type": OFFSET_STREAM}
        if checksum is not None:
            merged["Upload-Checksum"] = checksum_header(checksum, data)
        merged.update(headers or {})
        return await self.request("PATCH", location, merged, data)

    async def head(self, location: str) -> Reply:
        return await self.request("HEAD", location)

    async def delete(self, location: str) -> Reply:
        return await self.request("DELETE", location)

    async def upload(
        self,
        data: bytes,
        *,
        chunk: int,
        checksum: str | None = "sha256",
        headers: Mapping[str, str] | None = None,
    ) -> tuple[str, Reply]:
        """Create and PATCH `data` in `chunk`-sized pieces; return the location and last reply."""
        created = await self.create(len(data), headers=headers)
        assert created.status == 201, created
        location = created.headers["Location"]
        reply = created
        offset = 0
        while offset < len(data):
            reply = await self.patch(
                location, offset, data[offset : offset + chunk], checksum=checksum
            )
            assert reply.status == 204, reply
            offset = reply.offset
        return location, reply


class RawRequest:
    """A request written by hand on its own connection, so a test decides when each byte goes
    (slow, stalled or abandoned bodies)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str, method: str, headers: Mapping[str, str]) -> RawRequest:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        lines = [f"{method} {parts.path} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        return cls(reader, writer)

    @classmethod
    async def patch(
        cls,
        location: str,
        *,
        offset: int,
        content_length: int,
        checksum: str | None = None,
        token: str | None = None,
    ) -> RawRequest:
        headers = {
            **TUS,
            "Upload-Offset": str(offset),
            "Content-Type": OFFSET_STREAM,
            "Content-Length": str(content_length),
        }
        if checksum is not None:
            headers["Upload-Checksum"] = checksum
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await cls.open(location, "PATCH", headers)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> tuple[int, CIMultiDict[str]]:
        """Status and headers of the response (the body is not read)."""
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("connection closed without a response")
        status = int(status_line.split()[1])
        headers: CIMultiDict[str] = CIMultiDict()
        while True:
            line = (await self.reader.readline()).decode().rstrip("\r\n")
            if not line:
                return status, headers
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()

    def abort(self) -> None:
        """Drop the connection mid-request (like a client losing the network)."""
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


def upload_id_of(upload_url: str) -> str:
    """The upload id: last path segment of a tus upload URL."""
    return upload_url.rstrip("/").rsplit("/", 1)[-1]


def as_store(store: UploadStore | Path) -> UploadStore:
    """A store object; a directory (a `dockd serve --store DIR` subprocess) is a file store."""
    return store if isinstance(store, UploadStore) else FileStore(store)


def read_sidecar(store: UploadStore | Path, upload_id: str) -> dict[str, Any]:
    """The completion sidecar of a finished upload (sha256, receipt, metadata…)."""
    record = as_store(store).load_completed(upload_id)
    assert record is not None, f"upload {upload_id} is not complete"
    return dataclasses.asdict(record)


def stored_bytes(store: UploadStore | Path, upload_id: str) -> bytes:
    """The bytes a finished upload stored (tests only: loads the whole object)."""
    with as_store(store).open_completed(upload_id) as stream:
        return stream.read()


def partial_size(store: Path, upload_id: str) -> int:
    """Size of an unfinished upload's data file in a file store's directory (a file-store detail:
    may include unacknowledged bytes, which the file store truncates on restart)."""
    try:
        return (store / "partial" / f"{upload_id}.bin").stat().st_size
    except FileNotFoundError:
        return -1


def _make_keys(directory: Path) -> tuple[Path, Path]:
    if not (directory / "server-receipt.key").exists():
        keygen(directory)
    return directory / "server-receipt.key", directory / "server-receipt.pub"


def write_tokens_file(path: Path, tokens: Mapping[str, str]) -> Path:
    """Write a `--tokens` file (mode 0600) from token -> dock id."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("# dock-id token\n")
        for token, dock in tokens.items():
            handle.write(f"{dock} {token}\n")
    return path


class ReceiverProcess:
    """`dockd serve` in a subprocess with its own keys and store under `workdir`."""

    def __init__(
        self,
        workdir: Path,
        *,
        tokens: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        host: str = "127.0.0.1",
        nofile: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.nofile = nofile  # RLIMIT_NOFILE (soft and hard) for the server process
        workdir.mkdir(parents=True, exist_ok=True)
        self.signing_key_path, self.public_key_path = _make_keys(workdir / "receiver-keys")
        self.store = workdir / "receiver-store"
        self.tokens_path = write_tokens_file(workdir / "tokens", tokens) if tokens else None
        self.extra_args = list(extra_args)
        self.host = host
        self.port = 0
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_paths: list[Path] = []

    @property
    def public_key(self) -> Ed25519PublicKey:
        return load_verify_key(self.public_key_path)

    def argv(self, port: int) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "dockd.cli",
            "serve",
            "--listen",
            f"{self.host}:{port}",
            "--store",
            str(self.store),
            "--signing-key",
            str(self.signing_key_path),
        ]
        if self.tokens_path is not None:
            argv += ["--tokens", str(self.tokens_path)]
        elif "--client-ca" not in self.extra_args:
            # Without credentials `dockd serve` refuses to start unless told that anonymous
            # access is meant (loopback only): tests about the protocol itself say so.
            argv.append("--allow-anonymous")
        return argv + self.extra_args

    def start(self, timeout: float = 20.0) -> ReceiverProcess:
        """Start (port 0 the first time, then the same port) and wait for the listening line."""
        assert self.process is None, "already running"
        self.starts += 1
        out_path = self.workdir / f"serve-{self.starts}.out"
        err_path = self.workdir / f"serve-{self.starts}.log"
        self._log_paths.append(err_path)
        with out_path.open("wb") as out, err_path.open("wb") as err:
            self.process = subprocess.Popen(
                self.argv(self.port),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                preexec_fn=None if self.nofile is None else self._limit_descriptors,
            )
        deadline = time.monotonic() + timeout
        while True:
            text = out_path.read_text()
            if LISTENING in text:
                self.url = text.split(LISTENING, 1)[1].split()[0]
                self.port = int(self.url.split(":")[2].split("/")[0])
                return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                code = self.process.poll()
                self._reap()
                raise RuntimeError(
                    f"dockd serve did not start (exit {code}):\n{err_path.read_text()[-3000:]}"
                )
            time.sleep(0.02)

    def _limit_descriptors(self) -> None:  # runs in the child, before exec
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def kill9(self) -> None:
        """SIGKILL: no cleanup, no flush — a crash or power cut as far as the store can tell."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self._reap()

    def restart(self, timeout: float = 20.0) -> ReceiverProcess:
        """Start again on the same port, store and key (after kill9 or stop)."""
        if self.process is not None:
            self.stop()
        return self.start(timeout)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL if it does not stop in time)."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    def _reap(self) -> None:
        if self.process is not None:
            self.process.wait()
            self.process = None

    def log_text(self) -> str:
        """Everything every run logged on stderr."""
        return "".join(p.read_text() for p in self._log_paths if p.exists())

    def __enter__(self) -> ReceiverProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.kill()
            self._reap()


@dataclass
class InProcessReceiver:
    """A receiver served by the current event loop."""

    running: RunningReceiver
    public_key_path: Path

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def store(self) -> UploadStore:
        return self.running.store

    @property
    def store_dir(self) -> Path:
        """The file store's directory (tests of the file store's own layout only)."""
        store = self.running.store
        assert isinstance(store, FileStore), "not a file store"
        return store.root

    @property
    def settings(self) -> ReceiverSettings:
        return self.running.settings

    @property
    def public_key(self) -> Ed25519PublicKey:
        return load_verify_key(self.public_key_path)

    def sidecar(self, upload_id: str) -> dict[str, Any]:
        return read_sidecar(self.store, upload_id)

    def stored_bytes(self, upload_id: str) -> bytes:
        return stored_bytes(self.store, upload_id)


@asynccontextmanager
async def running_receiver(
    tmp_path: Path, *, ssl_context: ssl.SSLContext | None = None, **settings: Any
) -> AsyncIterator[InProcessReceiver]:
    """Serve a receiver on 127.0.0.1 (free port) in this loop; keys and store under tmp_path.

    Keyword arguments are `ReceiverSettings` fields (expire_after=, idle_timeout=, tokens=…);
    `ssl_context` serves HTTPS. Entering twice with the same tmp_path reuses the store and key
    (a restart).
    """
    signing_key_path, public_key_path = _make_keys(tmp_path / "receiver-keys")
    settings.setdefault("store", tmp_path / "receiver-store")
    config = ReceiverSettings(signing_key=load_signing_key(signing_key_path), **settings)
    running = await start(config, "127.0.0.1", 0, ssl_context)
    try:
        yield InProcessReceiver(running, public_key_path)
    finally:
        await running.stop()


async def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.01
) -> None:
    """Poll an async or plain predicate until it is true (fails the test after `timeout`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(interval)
