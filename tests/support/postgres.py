"""A real PostgreSQL 15 for tests of the shared upload state (daemon/dockd/receiver/shared/).

`PostgresServer` runs Debian's PostgreSQL (`pg_config --bindir`, /usr/lib/postgresql/15/bin on
bookworm; /usr/local/bin/pg_ctl on the dev machines is only a symlink to the same binary) in a
temporary directory on 127.0.0.1 and a free port. `start()` returns the DSN; `stop()` stops the
postmaster by PID and `start()` brings it back on the same data and port (the "PostgreSQL gone
for 10 s" tests); `close()` stops it and removes the directory.

Why it is run the way it is:

* initdb and postgres refuse to run as root. Under root (CI, the dev machines) both run as the
  `postgres` system user that Debian's package creates (`nobody` if there is none), and the
  directory is chowned to it; otherwise as the caller.
* The postmaster is our direct child, not started by `pg_ctl start`: pg_ctl daemonises it, and a
  fork clears PR_SET_PDEATHSIG, so a killed pytest would leave PostgreSQL running. As a child it
  gets SIGKILL when the test process dies, and we know its PID without reading postmaster.pid.
* `fsync = on` and `synchronous_commit = on` (the defaults, written out): the tests check that a
  committed state survives a restart, which means nothing with fsync off.
* TCP on loopback only, no Unix socket (`unix_socket_directories = ''`), `trust` auth for the
  test role: the DSN is all a node needs, as in production with a password.
* Stopping: SIGINT is PostgreSQL's "fast" shutdown (abort transactions, checkpoint, exit);
  SIGQUIT its "immediate" one (no checkpoint: the next start replays the WAL, like after a crash).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psycopg

ROLE = "dockd"


class PostgresError(RuntimeError):
    """PostgreSQL could not be set up or did not answer in time; the message has the log tail."""


def postgres_bindir() -> Path | None:
    """Debian's PostgreSQL binaries, as `pg_config` names them; None if PostgreSQL is missing."""
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        bindir = Path(result.stdout.strip())
        if result.returncode == 0 and (bindir / "postgres").is_file():
            return bindir
    fallback = Path("/usr/lib/postgresql/15/bin")
    return fallback if (fallback / "postgres").is_file() else None


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Run in the child (after it changed user) before exec: SIGKILL it when its parent dies."""
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _service_user() -> pwd.struct_passwd | None:
    """Whom PostgreSQL runs as: None (the caller) unless the caller is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresError("running as root and neither a postgres nor a nobody user exists")


class PostgresServer:
    """One PostgreSQL cluster on loopback in a temporary directory."""

    def __init__(self, *, start_timeout: float = 60.0, stop_timeout: float = 30.0) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise PostgresError("PostgreSQL is not installed; run scripts/setup --multinode")
        self.bindir = bindir
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.root = Path(tempfile.mkdtemp(prefix="dockd-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = 0
        self.timings: dict[str, float] = {}
        self._user = _service_user()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={ROLE} dbname=postgres"

    def dsn_for(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={ROLE} dbname={database}"

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> str:
        """initdb on first use, then start the postmaster and wait until it accepts queries."""
        began = time.monotonic()
        try:
            if not self.data.exists():
                self._initdb()
                self.timings["initdb_s"] = time.monotonic() - began
            self._spawn()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.timings["start_s"] = time.monotonic() - began
        return self.dsn

    def stop(self, *, immediate: bool = False) -> None:
        """Stop the postmaster by PID: fast shutdown, or immediate (crash-like) if asked."""
        process, self._process = self._process, None
        if process is None:
            return
        began = time.monotonic()
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGQUIT if immediate else signal.SIGINT)
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.timings["stop_s"] = time.monotonic() - began

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process is not None else None

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- databases for tests ---------------------------------------------------------------

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database (tests do not share tables); returns its DSN."""
        name = f"{prefix}_{secrets.token_hex(6)}"
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return "(no PostgreSQL log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    # ---- internals ----------------------------------------------------------------------------

    def _as_service_user(self) -> dict[str, int]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self.port = free_loopback_port()
        result = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                ROLE,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            cwd=self.root,
            **self._as_service_user(),  # type: ignore[arg-type]
        )
        if result.returncode != 0:
            raise PostgresError(f"initdb exited {result.returncode}:\n{result.stderr[-2000:]}")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"""
# tests/support/postgres.py
listen_addresses = '127.0.0.1'
port = {self.port}
unix_socket_directories = ''
fsync = on
synchronous_commit = on
max_connections = 100
shared_buffers = 32MB
logging_collector = off
"""
            )

    def _spawn(self) -> None:
        with self.log.open("ab") as out:
            if self._user is not None:
                os.chown(self.log, self._user.pw_uid, self._user.pw_gid)
            self._process = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                preexec_fn=_die_with_parent,  # only the test's main thread spawns
                **self._as_service_user(),  # type: ignore[arg-type]
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                raise PostgresError(f"postgres exited with {code}:\n{self.log_tail()}")
            try:
                with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise PostgresError(
                        f"PostgreSQL did not answer on 127.0.0.1:{self.port} within "
                        f"{self.start_timeout:.0f}s:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.05)
