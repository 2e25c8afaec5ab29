"""Throughput of dockd's receiver against the stock @tus/server, with the same client and file.

    .venv/bin/python bench/receiver_vs_tus_server.py [--size-mib 256] [--chunk-mib 8] [--repeat 3]

In one run, on loopback, the same random file is uploaded by tus-js-client 4.3.1 to
`dockd serve` (our real CLI, as a subprocess) and to @tus/server 2.4.5 + FileStore, both storing
on the same file system, alternating which goes first. Each upload gets a fresh server and an
empty store; the time is tus-js-client's own wall time from start() to success (creation POST
included, process start-up excluded). Every stored copy is checked against the source's SHA-256
after timing, so a fast wrong answer cannot win.

What the two servers do per byte differs, and the table says so: tus-js-client sends no
Upload-Checksum by default, so neither server verifies chunks here, but dockd still hashes every
byte (for the signed receipt) and fdatasyncs each chunk before acknowledging it; @tus/server's
FileStore never fsyncs.

Prints a table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import secrets
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.node_peers import (  # noqa: E402  (tests/ is not a package on sys.path by default)
    PEERS_DIR,
    TusNodeServer,
    install_node_peers,
    run_tus_js_upload,
)

try:  # optional: CPU seconds each server spent, a first hint of where time goes
    import psutil
except ImportError:  # pragma: no cover
    psutil = None

MIB = 1 << 20
RESULTS_DIR = REPO / "bench" / "results"
OURS = "dockd serve"
THEIRS = "@tus/server 2.4.5"
_DOCKD_LISTENING = "dockd serve: listening on "
_START_TIMEOUT_S = 30.0


@dataclass
class Run:
    server: str
    index: int
    position: int  # 0: went first in its round, 1: second
    seconds: float
    mb_per_s: float
    server_cpu_seconds: float | None
    client_cpu_seconds: float  # tus-js-client's node process: is the client the limit?
    verified: bool


def _cpu_seconds(pid: int) -> float | None:
    if psutil is None:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def _dockd_command() -> list[str]:
    """The installed `dockd` entry point next to this interpreter (what operators run)."""
    script = Path(sys.executable).parent / "dockd"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "dockd.cli"]


def write_bench_token(directory: Path, dock_id: str = "test-dock") -> tuple[Path, Path]:
    """A throwaway bearer token, as `dockd serve --tokens` and a dock's `token_file` want them
    (both 0600): returns (tokens file, token file). The bench measures the authenticated path
    every real dock takes."""
    token = secrets.token_urlsafe(32)
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "bench-tokens", directory / "bench-token")
    for path, text in zip(paths, (f"{dock_id} {token}\n", token + "\n"), strict=True):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    return paths


class DockdServe(AbstractContextManager["DockdServe"]):
    """`dockd serve` on 127.0.0.1 with a free port, an empty store, a given signing key and a
    fresh bearer token (`token_file` for a dock, `auth_headers` for other clients)."""

    def __init__(self, store: Path, signing_key: Path, log_path: Path) -> None:
        self.store = store
        tokens, self.token_file = write_bench_token(log_path.parent / f"{store.name}-auth")
        self.auth_headers = {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}
        self._argv = [
            *_dockd_command(),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            str(store),
            "--signing-key",
            str(signing_key),
            "--tokens",
            str(tokens),
        ]
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def __enter__(self) -> DockdServe:
        with self._log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL
            )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + _START_TIMEOUT_S
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline and selector.select(deadline - time.monotonic()):
                line = self._proc.stdout.readline().decode()
                if line.startswith(_DOCKD_LISTENING):
                    self.url = line.removeprefix(_DOCKD_LISTENING).strip()
                    return self
                if not line:
                    break
        self._stop()
        log_tail = self._log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"dockd serve did not start:\n{log_tail}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(8 * MIB):
            digest.update(piece)
    return digest.hexdigest()


def write_random_file(path: Path, size: int) -> str:
    """Write `size` random bytes (incompressible, like ciphertext); return their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        remaining = size
        while remaining:
            piece = os.urandom(min(8 * MIB, remaining))
            digest.update(piece)
            handle.write(piece)
            remaining -= len(piece)
    return digest.hexdigest()


def _upload_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _mb_per_s(size: int, seconds: float) -> float:
    return size / seconds / 1e6


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.size = args.size_mib * MIB
        self.chunk = args.chunk_mib * MIB
        self.repeat = args.repeat
        self.workdir = workdir
        self.source = workdir / "source.bin"
        self.source_sha256 = ""
        self.signing_key = workdir / "keys" / "server-receipt.key"

    def prepare(self) -> None:
        install_node_peers()
        self.source_sha256 = write_random_file(self.source, self.size)
        subprocess.run(
            [*_dockd_command(), "keygen", "--out", str(self.workdir / "keys")],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def _upload(
        self, endpoint: str, pid: int, headers: dict[str, str] | None = None
    ) -> tuple[dict[str, Any], float | None, float]:
        """Upload the source; return the client's report, server and client CPU seconds."""
        cpu_before = _cpu_seconds(pid)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        report = run_tus_js_upload(endpoint, self.source, chunk_size=self.chunk, headers=headers)
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_after = _cpu_seconds(pid)
        if not report["completed"] or report["bytes_sent"] != self.size:
            raise RuntimeError(f"upload did not complete: {report}")
        cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        client_cpu = (children_after.ru_utime + children_after.ru_stime) - (
            children_before.ru_utime + children_before.ru_stime
        )
        return report, cpu, client_cpu

    def run_ours(self, index: int, position: int) -> Run:
        store = self.workdir / f"dockd-store-{index}"
        try:
            with DockdServe(store, self.signing_key, self.workdir / "dockd-serve.log") as server:
                report, cpu, client_cpu = self._upload(server.url, server.pid, server.auth_headers)
            upload = _upload_id(report["url"])
            sidecar = json.loads((store / "complete" / f"{upload}.json").read_text())
            verified = (
                sidecar["sha256"] == self.source_sha256
                and sha256_file(store / "complete" / f"{upload}.bin") == self.source_sha256
            )
        finally:
            shutil.rmtree(store, ignore_errors=True)
        return self._run(OURS, index, position, report["seconds"], cpu, client_cpu, verified)

    def run_theirs(self, index: int, position: int) -> Run:
        store = self.workdir / f"tus-node-store-{index}"
        try:
            with TusNodeServer(store) as server:
                report, cpu, client_cpu = self._upload(server.url, server.pid)
            verified = sha256_file(store / _upload_id(report["url"])) == self.source_sha256
        finally:
            shutil.rmtree(store, ignore_errors=True)
        return self._run(THEIRS, index, position, report["seconds"], cpu, client_cpu, verified)

    def _run(
        self,
        server: str,
        index: int,
        position: int,
        seconds: float,
        cpu: float | None,
        client_cpu: float,
        ok: bool,
    ) -> Run:
        mb_per_s = _mb_per_s(self.size, seconds)
        run = Run(server, index, position, seconds, mb_per_s, cpu, client_cpu, ok)
        cpu_text = "" if cpu is None else f", server CPU {cpu:.2f} s"
        cpu_text += f", client CPU {client_cpu:.2f} s"
        print(
            f"  round {index + 1} #{position + 1} {server:<18} {run.mb_per_s:8.1f} MB/s "
            f"({seconds:.2f} s{cpu_text}){'' if ok else '  STORED BYTES DIFFER'}",
            flush=True,
        )
        return run

    def run_all(self) -> list[Run]:
        runs: list[Run] = []
        order: list[Callable[[int, int], Run]] = [self.run_ours, self.run_theirs]
        for index in range(self.repeat):
            for position, run in enumerate(order if index % 2 == 0 else order[::-1]):
                # Flush what earlier steps left dirty (the source file, the last run's store),
                # so background writeback does not land on whichever server runs next.
                os.sync()
                runs.append(run(index, position))
        return runs


def _versions() -> dict[str, str]:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    lock = json.loads((PEERS_DIR / "package-lock.json").read_text())
    packages = lock.get("packages", {})
    versions = {
        "python": platform.python_version(),
        "node": node.stdout.strip(),
        "kernel": platform.release(),
    }
    for name in ("@tus/server", "@tus/file-store", "tus-js-client"):
        versions[name] = packages.get(f"node_modules/{name}", {}).get("version", "?")
    return versions


def summarize(runs: list[Run], size: int) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for server in (OURS, THEIRS):
        mine = [r for r in runs if r.server == server]
        cpu = [r.server_cpu_seconds for r in mine if r.server_cpu_seconds is not None]
        summary[server] = {
            "median_mb_per_s": statistics.median(r.mb_per_s for r in mine),
            "runs_mb_per_s": [round(r.mb_per_s, 1) for r in mine],
            "median_server_cpu_seconds": statistics.median(cpu) if cpu else None,
            "median_client_cpu_seconds": statistics.median(r.client_cpu_seconds for r in mine),
            "all_verified": all(r.verified for r in mine),
        }
    summary["ratio_ours_over_theirs"] = (
        summary[OURS]["median_mb_per_s"] / summary[THEIRS]["median_mb_per_s"]
    )
    summary["bytes"] = size
    return summary


def print_table(summary: dict[str, Any]) -> None:
    print()
    print(
        f"{'server':<20} {'median MB/s':>12}  {'server CPU s':>12}  {'client CPU s':>12}  "
        "runs (MB/s)"
    )
    for server in (OURS, THEIRS):
        row = summary[server]
        cpu = row["median_server_cpu_seconds"]
        cpu_text = "-" if cpu is None else f"{cpu:.2f}"
        client_text = f"{row['median_client_cpu_seconds']:.2f}"
        runs = ", ".join(f"{v:.1f}" for v in row["runs_mb_per_s"])
        print(
            f"{server:<20} {row['median_mb_per_s']:>12.1f}  {cpu_text:>12}  {client_text:>12}  "
            f"{runs}"
        )
    print(f"ratio ours/theirs (median): {summary['ratio_ours_over_theirs']:.2f}")
    print(
        "note: tus-js-client sends no Upload-Checksum, so no chunk is verified by either server; "
        "dockd still SHA-256-hashes every byte for its signed receipt and fdatasyncs each chunk "
        "before acknowledging it, @tus/server never fsyncs. MB = 10^6 bytes."
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--size-mib", type=int, default=256, help="file size (default 256)")
    parser.add_argument("--chunk-mib", type=int, default=8, help="PATCH size (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where the source file and both stores go (default: a temp dir); "
        "pick the file system you want to measure",
    )
    args = parser.parse_args(argv)
    if min(args.size_mib, args.chunk_mib, args.repeat) < 1:
        parser.error("--size-mib, --chunk-mib and --repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-tus-", dir=args.workdir))
    try:
        bench = Bench(args, workdir)
        print(
            f"tus-js-client -> {OURS} vs {THEIRS}: {args.size_mib} MiB random file, "
            f"{args.chunk_mib} MiB chunks, {args.repeat} rounds (alternating order), "
            f"loopback, stores in {workdir}",
            flush=True,
        )
        bench.prepare()
        runs = bench.run_all()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = summarize(runs, bench.size)
    print_table(summary)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"receiver_vs_tus_server-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "receiver_vs_tus_server",
                "when": stamp,
                "config": {
                    "size_mib": args.size_mib,
                    "chunk_mib": args.chunk_mib,
                    "repeat": args.repeat,
                    "client": "tus-js-client (node, fs.ReadStream source, no checksums)",
                },
                "machine": {"cpus": os.cpu_count(), **_versions()},
                "summary": summary,
                "runs": [asdict(r) for r in runs],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results: {out.relative_to(REPO)}")
    all_ok = summary[OURS]["all_verified"] and summary[THEIRS]["all_verified"]
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
