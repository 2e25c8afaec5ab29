"""A real HAProxy (Debian's 2.6) in front of several `dockd serve` nodes, for multi-node tests.

`HAProxy(backends).start()` writes a configuration (the shape of config/haproxy.cfg.example, with
test timings), runs `haproxy -db` as our child on 127.0.0.1 and a free port, and waits until
every backend's health check (`GET /ready`) passes. `url` is the creation endpoint through the
proxy; each response carries `X-Dockd-Node` (the backend's name, test configuration only) so a
test can see which node answered. `server_states()` reads HAProxy's own view from its stats CSV;
`stop()` stops it by PID.

Why it runs the way it does:
* `-db` keeps HAProxy in the foreground as our child (no daemon fork), so PR_SET_PDEATHSIG
  applies and a killed pytest leaves no HAProxy behind; SIGUSR1 is its soft stop (finish the
  requests in flight), SIGKILL after a bound.
* `-c` first: a configuration error is reported as such, not as "did not come up".
* health checks every 500 ms, down after 2 failures, up after 1 success: a test sees a node
  leave and rejoin within ~1 s (production: see the example configuration).
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import io
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType


class HAProxyError(RuntimeError):
    """HAProxy refused its configuration or did not come up; the message has its output."""


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )


class HAProxy:
    """HAProxy balancing round-robin over `backends` ("127.0.0.1:PORT" each)."""

    def __init__(
        self,
        backends: Sequence[str],
        *,
        base_path: str = "/files/",
        check_interval_ms: int = 500,
        start_timeout: float = 20.0,
    ) -> None:
        binary = haproxy_binary()
        if binary is None:
            raise HAProxyError("HAProxy is not installed; run scripts/setup --multinode")
        self.binary = binary
        self.backends = list(backends)
        self.base_path = base_path
        self.check_interval_ms = check_interval_ms
        self.start_timeout = start_timeout
        self.root = Path(tempfile.mkdtemp(prefix="dockd-haproxy-"))
        self.config = self.root / "haproxy.cfg"
        self.log = self.root / "haproxy.out"
        # Chosen now, so nodes can be started with --public-origin naming the proxy.
        self.port = free_loopback_port()
        self.stats_port = free_loopback_port()
        self.timings: dict[str, float] = {}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.origin + self.base_path

    def node_names(self) -> list[str]:
        return [f"node{i + 1}" for i in range(len(self.backends))]

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> str:
        began = time.monotonic()
        self.config.write_text(self.render())
        checked = subprocess.run(
            [self.binary, "-c", "-f", str(self.config)], capture_output=True, text=True
        )
        if checked.returncode != 0:
            raise HAProxyError(
                f"haproxy -c refused the configuration:\n{checked.stdout}{checked.stderr}"
            )
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                [self.binary, "-db", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # only the test's main thread spawns
            )
        try:
            self.wait_for_states({name: "UP" for name in self.node_names()}, self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.timings["start_s"] = time.monotonic() - began
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGUSR1)  # soft stop
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> HAProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- HAProxy's view ---------------------------------------------------------------------

    def server_states(self) -> dict[str, str]:
        """Each backend server's status as HAProxy sees it ("UP", "DOWN", "UP 1/2", ...)."""
        url = f"http://127.0.0.1:{self.stats_port}/stats;csv"
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == "dockd_nodes" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_for_states(self, wanted: dict[str, str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise HAProxyError(
                    f"haproxy exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError):
                states = self.server_states()
                if all(states.get(name) == state for name, state in wanted.items()):
                    return
            if time.monotonic() > deadline:
                raise HAProxyError(f"servers not {wanted} after {timeout:.0f}s: {states}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return "(no HAProxy output)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    # ---- configuration ------------------------------------------------------------------------

    def render(self) -> str:
        servers = "\n".join(
            f"    server {name} {address} check"
            for name, address in zip(self.node_names(), self.backends, strict=True)
        )
        return f"""# generated by tests/support/haproxy.py (shape of config/haproxy.cfg.example)
global
    maxconn 2000

defaults
    mode http
    log global
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 15s
    timeout check 4s
    option redispatch
    retries 1

frontend dockd_in
    bind 127.0.0.1:{self.port}
    default_backend dockd_nodes

backend dockd_nodes
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server inter {self.check_interval_ms}ms fall 2 rise 1
    # Tests only: which node answered.
    http-response set-header X-Dockd-Node %[srv_name]
{servers}

listen stats
    bind 127.0.0.1:{self.stats_port}
    stats enable
    stats uri /stats
"""
