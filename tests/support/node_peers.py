"""Third-party tus peers from npm, driven from Python: @tus/server and tus-js-client.

The peers live in ``tests/peers`` (exact versions pinned in its package.json/package-lock.json):

- ``tus-server.mjs``: @tus/server + @tus/file-store, wrapped here by :class:`TusNodeServer`;
- ``tus-upload.mjs``: a tus-js-client uploader, run by :func:`run_tus_js_upload` (or its async
  twin, for tests whose event loop also serves the receiver under test).

Tests call :func:`ensure_node_peers` first: it installs the pinned packages with ``npm ci`` when
they are missing or stale, and skips the test when node/npm are not installed at all. Benchmarks
call :func:`install_node_peers`, which raises :class:`NodePeersUnavailable` instead of skipping.
"""

from __future__ import annotations

import asyncio
import json
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

PEERS_DIR = Path(__file__).resolve().parents[1] / "peers"
TUS_SERVER_SCRIPT = PEERS_DIR / "tus-server.mjs"
TUS_UPLOAD_SCRIPT = PEERS_DIR / "tus-upload.mjs"

# npm ci fetches ~40 small packages; generous because a cold npm cache is slow.
_NPM_CI_TIMEOUT_S = 300.0
_SERVER_START_TIMEOUT_S = 20.0
_SERVER_STOP_TIMEOUT_S = 10.0
_LISTENING_PREFIX = "listening "


class NodePeersUnavailable(RuntimeError):
    """node or npm is not installed, so the npm peers cannot run here."""


class TusUploadFailed(RuntimeError):
    """tus-upload.mjs exited non-zero; the message carries its stderr."""

    def __init__(self, returncode: int, stderr: str) -> None:
        super().__init__(f"tus-upload.mjs exited {returncode}: {stderr.strip()}")
        self.returncode = returncode
        self.stderr = stderr


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise NodePeersUnavailable("node is not on PATH (the tus peers need Node.js >= 20)")
    return node


def _installed_versions_match() -> bool:
    """True when every dependency in package.json is installed at exactly its pinned version.

    Cheaper than asking npm, and catches a node_modules left over from older pins.
    """
    manifest = json.loads((PEERS_DIR / "package.json").read_text(encoding="utf-8"))
    for name, wanted in manifest.get("dependencies", {}).items():
        installed_manifest = PEERS_DIR / "node_modules" / name / "package.json"
        try:
            installed = json.loads(installed_manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if installed.get("version") != wanted:
            return False
    return True


def install_node_peers() -> Path:
    """Make sure the pinned npm peers are installed; return the peers directory.

    Runs ``npm ci --prefix tests/peers`` only when node_modules is missing or stale.
    Raises NodePeersUnavailable without node/npm, and CalledProcessError if npm ci fails (a real
    failure: the lock file or the registry is broken, not a reason to skip).
    """
    _node()
    if _installed_versions_match():
        return PEERS_DIR
    npm = shutil.which("npm")
    if npm is None:
        raise NodePeersUnavailable("npm is not on PATH (needed once: npm ci --prefix tests/peers)")
    subprocess.run(
        [npm, "ci", "--prefix", str(PEERS_DIR), "--no-audit", "--no-fund"],
        check=True,
        timeout=_NPM_CI_TIMEOUT_S,
        stdout=subprocess.DEVNULL,
    )
    if not _installed_versions_match():
        raise RuntimeError(f"npm ci did not install the versions pinned in {PEERS_DIR}")
    return PEERS_DIR


def ensure_node_peers() -> Path:
    """Like :func:`install_node_peers`, but skips the calling test if node/npm are missing."""
    import pytest

    try:
        return install_node_peers()
    except NodePeersUnavailable as exc:
        pytest.skip(f"npm tus peers unavailable: {exc}")


class TusNodeServer:
    """@tus/server 2.4.5 with a FileStore, run as a child process on loopback.

    Use as a context manager (``with TusNodeServer() as server: server.url``). Without
    ``store_dir`` it stores into a fresh temporary directory that :meth:`stop` removes.
    Uploads land in ``dir/<id>`` with ``dir/<id>.json`` (size, metadata) beside them.
    """

    def __init__(
        self,
        store_dir: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sha256_on_finish: bool = False,
    ) -> None:
        self._host = host
        self._port = port
        self._sha256_on_finish = sha256_on_finish
        # Holds the server's log, and its store unless the caller chose one.
        self._tmp = Path(tempfile.mkdtemp(prefix="tus-node-server-"))
        self.dir = Path(store_dir) if store_dir is not None else self._tmp / "store"
        self._log_path = self._tmp / "tus-server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The creation endpoint, e.g. ``http://127.0.0.1:40123/files/``."""
        if self._url is None:
            raise RuntimeError("TusNodeServer is not running")
        return self._url

    @property
    def pid(self) -> int:
        """Process id of the running server (for CPU accounting in benchmarks)."""
        if self._proc is None:
            raise RuntimeError("TusNodeServer is not running")
        return self._proc.pid

    def start(self) -> TusNodeServer:
        """Start the server and wait for its ``listening URL`` line."""
        argv = [_node(), str(TUS_SERVER_SCRIPT), "--host", self._host, "--port", str(self._port)]
        argv += ["--dir", str(self.dir)]
        if self._sha256_on_finish:
            argv.append("--sha256-on-finish")
        self.dir.mkdir(parents=True, exist_ok=True)
        # stderr to a file: a pipe nobody drains could fill and stall the server mid-benchmark.
        with self._log_path.open("wb") as log:
            self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, cwd=PEERS_DIR)
        try:
            self._url = self._read_listening_url(self._proc)
        except BaseException:
            self.stop()
            raise
        return self

    def _read_listening_url(self, proc: subprocess.Popen[bytes]) -> str:
        assert proc.stdout is not None
        deadline = time.monotonic() + _SERVER_START_TIMEOUT_S
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if selector.select(timeout=deadline - time.monotonic()):
                    line = proc.stdout.readline().decode("utf-8", "replace").strip()
                    if line.startswith(_LISTENING_PREFIX):
                        return line.removeprefix(_LISTENING_PREFIX)
                    if not line and proc.poll() is not None:
                        break
        raise RuntimeError(f"tus-server.mjs did not start (exit {proc.poll()}): {self.log_tail()}")

    def log_tail(self, max_chars: int = 2000) -> str:
        """The end of the server's stderr, for failure messages."""
        try:
            return self._log_path.read_text(encoding="utf-8", errors="replace")[-max_chars:]
        except OSError:
            return ""

    def alive(self) -> bool:
        """True while the server process runs (@tus/server can crash on some requests)."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL); remove the temp dir (not a caller's store_dir)."""
        proc, self._proc, self._url = self._proc, None, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=_SERVER_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> TusNodeServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def tus_js_upload_argv(
    endpoint: str | None,
    file: Path | str,
    *,
    chunk_size: int | None = None,
    metadata: dict[str, str] | None = None,
    stop_after: int | None = None,
    resume_url: str | None = None,
    headers: dict[str, str] | None = None,
) -> list[str]:
    """The command line that runs tus-upload.mjs with these options."""
    argv = [_node(), str(TUS_UPLOAD_SCRIPT), "--file", str(file)]
    if endpoint is not None:
        argv += ["--endpoint", endpoint]
    if chunk_size is not None:
        argv += ["--chunk-size", str(chunk_size)]
    for key, value in (metadata or {}).items():
        argv += ["--metadata", f"{key}={value}"]
    if stop_after is not None:
        argv += ["--stop-after", str(stop_after)]
    if resume_url is not None:
        argv += ["--resume-url", resume_url]
    for name, value in (headers or {}).items():
        argv += ["--header", f"{name}: {value}"]
    return argv


def _parse_report(returncode: int, stdout: bytes, stderr: bytes) -> dict[str, Any]:
    if returncode != 0:
        raise TusUploadFailed(returncode, stderr.decode("utf-8", "replace"))
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    if not lines:
        raise TusUploadFailed(returncode, "no JSON report on stdout; " + stderr.decode())
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def run_tus_js_upload(
    endpoint: str | None,
    file: Path | str,
    *,
    timeout: float = 600.0,
    **options: Any,
) -> dict[str, Any]:
    """Upload ``file`` with tus-js-client 4.3.1; return its JSON report.

    Options (see :func:`tus_js_upload_argv`): chunk_size, metadata, stop_after, resume_url,
    headers. The report has ``url``, ``bytes_sent`` (offset acknowledged by the server),
    ``start_offset`` (where this run began; > 0 on a real resume), ``seconds`` and ``completed``.
    Raises TusUploadFailed when the upload fails.

    Blocks: from a test whose event loop also serves the server, use
    :func:`run_tus_js_upload_async`.
    """
    argv = tus_js_upload_argv(endpoint, file, **options)
    done = subprocess.run(argv, capture_output=True, timeout=timeout, cwd=PEERS_DIR, check=False)
    return _parse_report(done.returncode, done.stdout, done.stderr)


async def run_tus_js_upload_async(
    endpoint: str | None,
    file: Path | str,
    *,
    timeout: float = 600.0,
    **options: Any,
) -> dict[str, Any]:
    """:func:`run_tus_js_upload` without blocking the event loop."""
    argv = tus_js_upload_argv(endpoint, file, **options)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=PEERS_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    assert proc.returncode is not None
    return _parse_report(proc.returncode, stdout, stderr)
