"""A real single-node Ceph (mon + osd + radosgw, no mgr) for tests of the S3 store backend.

`CephCluster` runs Debian's `ceph-mon`, `ceph-osd` and `radosgw` (16.2.x on bookworm; installed by
`scripts/setup --ceph`) as child processes in a temporary directory, on 127.0.0.1 only, and creates
an S3 user with `radosgw-admin`. `start()` returns the `S3Endpoint` (URL, keys, region);
`stop()` stops every daemon by PID (SIGTERM, SIGKILL after a bound; radosgw, then the OSD, then
the mon, since each needs the next to exit cleanly) and removes the directory. `kill_rgw()` /
`start_rgw()` let a test crash the gateway and bring it back on the same port, same cluster.

Why the configuration is what it is (each line was needed on a 2-core VM):

* `auth * required = none`: cephx would add a keyring per daemon and buys nothing on loopback.
  With auth off, msgr2 must be told `ms mon client mode = crc`, or radosgw hangs at start
  waiting for a mon session it never gets.
* `paxos propose interval = 0.1`: RGW creates ~6 pools at first start, each a paxos round; the
  default 1 s interval makes that ~12 s.
* one OSD: `osd pool default size = 1` (+ `min size = 1`), `mon allow pool size one = true`,
  `osd crush chooseleaf type = 0` (replicas over OSDs, not hosts), 8 PGs per pool and a higher
  `mon max pg per osd` so RGW's pools fit on one OSD.
* `osd objectstore = memstore` with `memstore device bytes` as the cap: no disk format step, an
  S3 endpoint in seconds; the OSD's RAM grows with the data stored (so size the cap to the test).
  memstore writes its data out only on a clean OSD shutdown, so a killed OSD loses everything:
  a test of durability across an OSD crash needs bluestore. Crashing and restarting radosgw
  (`kill_rgw`/`start_rgw`) loses nothing with either.
  `objectstore="bluestore"` instead puts a sparse file of that size in the temp dir (slower start).
* `osd client watch timeout = 5`: a SIGKILLed radosgw leaves its watches on RGW's control
  objects; until they time out (default 30 s) every metadata change (CreateBucket) of the
  restarted gateway waits for the dead one to acknowledge its cache notification.
* `rgw lc debug interval = 10`: a lifecycle "day" lasts 10 s, so "expire after 1 day" is testable;
  `rgw enable lc threads` keeps the lifecycle worker on.
* `PR_SET_PDEATHSIG`: every daemon gets SIGKILL if the test process dies without calling stop(),
  so a killed pytest leaves no Ceph behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

CEPH_BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "monmaptool")
GiB = 1 << 30


class CephError(RuntimeError):
    """The cluster could not be started or did not answer in time; the message carries log tails."""


@dataclass(frozen=True)
class S3Endpoint:
    """Where and as whom a test talks S3 to the gateway (path-style addressing)."""

    url: str
    access_key: str
    secret_key: str
    region: str = "default"  # RGW's default zonegroup name; any region signs for it


@dataclass
class _Daemon:
    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None)


def missing_binaries() -> list[str]:
    """The Ceph programs not on PATH (empty when `scripts/setup --ceph` has run)."""
    return [name for name in CEPH_BINARIES if shutil.which(name) is None]


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Run in the child before exec: SIGKILL it when the process that started it dies."""
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise CephError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class CephCluster:
    """One mon, one OSD and one radosgw on loopback in a temporary directory."""

    def __init__(
        self,
        *,
        objectstore: str = "memstore",
        store_bytes: int = 2 * GiB,
        lc_debug_interval: int = 10,
        start_timeout: float = 60.0,
        stop_timeout: float = 20.0,
        root: Path | None = None,
    ) -> None:
        if objectstore not in ("memstore", "bluestore"):
            raise ValueError(f"objectstore must be memstore or bluestore, not {objectstore!r}")
        self.objectstore = objectstore
        self.store_bytes = store_bytes
        self.lc_debug_interval = lc_debug_interval
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._own_root = root is None
        self.root = root if root is not None else Path(tempfile.mkdtemp(prefix="dockd-ceph-"))
        self.conf = self.root / "ceph.conf"
        self.mon_port = 0
        self.rgw_port = 0
        self.endpoint: S3Endpoint | None = None
        self.timings: dict[str, float] = {}
        self.exit_codes: dict[str, int] = {}  # filled by stop(): 0 = clean exit, -9 = killed
        self._daemons: dict[str, _Daemon] = {}
        self._osd_id = "0"

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> S3Endpoint:
        began = time.monotonic()
        try:  # on any failure stop() ends what did start and removes the directory
            missing = missing_binaries()
            if missing:
                raise CephError(
                    f"Ceph is not installed (missing {missing}); run scripts/setup --ceph"
                )
            self.mon_port = free_loopback_port()
            self.rgw_port = free_loopback_port()
            self._write_conf()
            self._start_mon()
            self._start_osd()
            self.timings["osd_up_s"] = time.monotonic() - began
            self.start_rgw()
            self.endpoint = self._create_s3_user()
        except BaseException:
            self.stop()
            raise
        self.timings["start_s"] = time.monotonic() - began
        return self.endpoint

    def stop(self) -> None:
        """Stop the daemons by PID in dependency order, then remove the directory.

        Each gets SIGTERM and, after `stop_timeout`, SIGKILL. The order matters: radosgw needs
        the OSD and mon to shut down (without the OSD it hangs until killed), and the OSD exits
        at once while the mon is there to mark it down (5 s without). So radosgw first (~5 s:
        it joins its lifecycle threads, which sleep in 5 s steps), then the OSD, then the mon.
        """
        began = time.monotonic()
        for name in ("rgw", "osd", "mon"):
            daemon = self._daemons.get(name)
            if daemon is None or daemon.process is None:
                continue
            process = daemon.process
            phase_began = time.monotonic()
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            self.exit_codes[name] = process.returncode
            self.timings[f"stop_{name}_s"] = time.monotonic() - phase_began
        self.timings["stop_s"] = time.monotonic() - began
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> CephCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- the gateway, which tests crash and restart ------------------------------------------

    def start_rgw(self) -> None:
        """Start radosgw on `rgw_port` and wait until it answers HTTP."""
        rgw = self._spawn(
            "rgw",
            [
                "radosgw",
                "-f",
                "-c",
                str(self.conf),
                "-n",
                "client.rgw",
                "--rgw-frontends",
                # tcp_nodelay: without it beast answers every GET/HEAD ~48 ms late (Nagle
                # against the client's delayed ACK; docs/RECEIVER.md, retention costs).
                f"beast endpoint=127.0.0.1:{self.rgw_port} tcp_nodelay=1",
            ],
        )
        began = time.monotonic()
        wait_until(
            lambda: self._alive(rgw) and self._rgw_answers(),
            self.start_timeout,
            f"radosgw on 127.0.0.1:{self.rgw_port}\n{self.log_tail('rgw')}",
        )
        self.timings["rgw_up_s"] = time.monotonic() - began

    def ensure_rgw(self) -> None:
        """Start radosgw again if it is not running (a test that crashed it may have failed)."""
        process = self._daemons["rgw"].process
        if process is None or process.poll() is not None:
            self.start_rgw()

    def kill_rgw(self) -> None:
        """SIGKILL radosgw (a crash, not a shutdown) and reap it."""
        process = self._daemons["rgw"].process
        assert process is not None
        process.kill()
        process.wait()

    # ---- the OSD, which a durability test crashes and restarts -----------------------------

    def start_osd(self) -> None:
        """Start the OSD (again after kill_osd, on the same data) and wait until it is up."""
        osd = self._spawn("osd", ["ceph-osd", "-f", "-c", str(self.conf), "-i", self._osd_id])

        def osd_up() -> bool:
            self._alive(osd)
            stat = json.loads(self.ceph("osd", "stat", "-f", "json"))
            return int(stat.get("num_up_osds", 0)) >= 1 and int(stat.get("num_in_osds", 0)) >= 1

        wait_until(osd_up, self.start_timeout, f"the OSD to be up\n{self.log_tail('osd')}", 0.2)

    def kill_osd(self) -> None:
        """SIGKILL the OSD and mark it down, as its peers' failure reports would in a cluster."""
        process = self._daemons["osd"].process
        assert process is not None
        process.kill()
        process.wait()
        self.ceph("osd", "down", self._osd_id)

    @property
    def rgw_url(self) -> str:
        return f"http://127.0.0.1:{self.rgw_port}"

    # ---- inspection ----------------------------------------------------------------------------

    def pids(self) -> dict[str, int]:
        return {
            name: d.process.pid
            for name, d in self._daemons.items()
            if d.process and d.process.poll() is None
        }

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each running daemon, from /proc."""
        sizes: dict[str, int] = {}
        for name, pid in self.pids().items():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        sizes[name] = int(line.split()[1]) * 1024
        return sizes

    def log_tail(self, name: str, lines: int = 20) -> str:
        daemon = self._daemons.get(name)
        if daemon is None or not daemon.log.exists():
            return f"(no log for {name})"
        tail = daemon.log.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {daemon.log} ---\n" + "\n".join(tail)

    def ceph(self, *args: str, timeout: float = 30.0) -> str:
        return self._run(["ceph", "-c", str(self.conf), "--connect-timeout", "10", *args], timeout)

    def radosgw_admin(self, *args: str, timeout: float = 60.0) -> str:
        # As client.admin, not client.rgw: the same name would fight radosgw for its admin socket.
        return self._run(["radosgw-admin", "-c", str(self.conf), *args], timeout)

    # ---- internals ----------------------------------------------------------------------------

    def _write_conf(self) -> None:
        for sub in ("run", "log", "mon", "osd", "rgw"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        root = self.root
        store_lines = (
            f"memstore device bytes = {self.store_bytes}"
            if self.objectstore == "memstore"
            else f"bluestore block path = {root}/osd/block\n"
            f"bluestore block size = {self.store_bytes}\n"
            "bluestore block create = true"
        )
        self.conf.write_text(
            f"""[global]
fsid = {uuid.uuid4()}
mon host = [v2:127.0.0.1:{self.mon_port}]
mon initial members = a
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
keyring = /dev/null
run dir = {root}/run
admin socket = {root}/run/$name.asok
pid file = {root}/run/$name.pid
log file = {root}/log/$name.log
crash dir = {root}/crash
log to stderr = false
err to stderr = false
mon data = {root}/mon/$id
osd data = {root}/osd/$id
paxos propose interval = 0.1
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
osd crush chooseleaf type = 0
osd client watch timeout = 5
osd objectstore = {self.objectstore}
{store_lines}

[client.rgw]
rgw data = {root}/rgw
rgw lc debug interval = {self.lc_debug_interval}
rgw enable lc threads = true
"""
        )

    def _start_mon(self) -> None:
        monmap = self.root / "monmap"
        fsid = next(
            line.split("=", 1)[1].strip()
            for line in self.conf.read_text().splitlines()
            if line.startswith("fsid")
        )
        self._run(
            [
                "monmaptool",
                "--create",
                "--fsid",
                fsid,
                "--addv",
                "a",
                f"[v2:127.0.0.1:{self.mon_port}]",
                str(monmap),
            ],
            30,
        )
        self._run(
            ["ceph-mon", "-c", str(self.conf), "--mkfs", "-i", "a", "--monmap", str(monmap)], 30
        )
        mon = self._spawn("mon", ["ceph-mon", "-f", "-c", str(self.conf), "-i", "a"])
        wait_until(
            lambda: self._alive(mon) and self._mon_answers(),
            self.start_timeout,
            f"ceph-mon quorum\n{self.log_tail('mon')}",
            interval=0.2,
        )

    def _start_osd(self) -> None:
        osd_uuid = str(uuid.uuid4())
        self._osd_id = self.ceph("osd", "new", osd_uuid).strip()
        (self.root / "osd" / self._osd_id).mkdir(parents=True, exist_ok=True)
        self._run(
            [
                "ceph-osd",
                "-c",
                str(self.conf),
                "-i",
                self._osd_id,
                "--mkfs",
                "--osd-uuid",
                osd_uuid,
            ],
            60,
        )
        self.start_osd()

    def _create_s3_user(self) -> S3Endpoint:
        access_key = "DOCKD" + secrets.token_hex(8).upper()
        secret_key = secrets.token_urlsafe(30)
        self.radosgw_admin(
            "user",
            "create",
            "--uid",
            "dockd-test",
            "--display-name",
            "dockd test suite",
            "--access-key",
            access_key,
            "--secret",
            secret_key,
        )
        return S3Endpoint(self.rgw_url, access_key, secret_key)

    def _spawn(self, name: str, argv: list[str]) -> _Daemon:
        log = self.root / "log" / f"{name}.out"
        daemon = _Daemon(name, argv, log)
        with log.open("ab") as out:
            daemon.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # only the test's main thread spawns
            )
        self._daemons[name] = daemon
        return daemon

    def _alive(self, daemon: _Daemon) -> bool:
        assert daemon.process is not None
        code = daemon.process.poll()
        if code is not None:
            raise CephError(
                f"{daemon.name} exited with {code}: {' '.join(daemon.argv)}\n"
                f"{self.log_tail(daemon.name)}\n{self._daemon_log_tail(daemon.name)}"
            )
        return True

    def _daemon_log_tail(self, name: str) -> str:
        log_name = {"mon": "mon.a", "osd": "osd.0", "rgw": "client.rgw"}[name]
        path = self.root / "log" / f"{log_name}.log"
        if not path.exists():
            return ""
        return f"--- {path} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:])

    def _mon_answers(self) -> bool:
        try:
            self._run(["ceph", "-c", str(self.conf), "--connect-timeout", "3", "mon", "stat"], 10)
        except CephError:
            return False
        return True

    def _rgw_answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.rgw_url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # any S3 answer (even 403) means the gateway is serving
        except OSError:
            return False

    def _run(self, argv: list[str], timeout: float) -> str:
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as exc:
            raise CephError(f"{' '.join(argv)} did not finish in {timeout:.0f}s") from exc
        if result.returncode != 0:
            raise CephError(
                f"{' '.join(argv)} exited {result.returncode}:\n{result.stderr.strip()[-2000:]}"
            )
        return result.stdout
