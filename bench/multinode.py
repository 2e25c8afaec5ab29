"""Benchmark: aggregate upload MB/s with 1, 2 and 3 `dockd serve` nodes behind HAProxy, in one run.

    .venv/bin/python bench/multinode.py [--clip-mib 48] [--docks 8]

Real components, as tests/multinode starts them: Ceph (memstore) RGW, PostgreSQL 15, HAProxy
round-robin, nodes in multi-node mode (`--shared-state`, 5 MiB parts = 5 MiB PATCHes). For each
node count, `--docks` concurrent uploads of random clips go through HAProxy, each request on a new
connection; MB/s is all clip bytes / wall time from the first POST to the last receipt. Every
receipt is verified and every object compared with the bytes sent.

Where the CPU goes: the CPU seconds each process (and its children) used during the row, as a
percentage of the wall time; this machine has `os.cpu_count()` cores, so 100 % x cores is the
ceiling, shared with the bench's own client (this process) and whatever else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "multinode"))

from cluster import PART, Cluster, MiB  # noqa: E402
from docks import DockRun, upload_clip  # noqa: E402
from support.ceph import CephCluster  # noqa: E402
from support.postgres import PostgresServer  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int, *, reaped: bool = True) -> float:
    """User + system CPU of `pid` (all its threads), and of its reaped children if `reaped`
    (postgres backends that ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime + (cutime + cstime if reaped else 0)) / _TICK


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _tree_cpu(pid: int) -> float:
    return _cpu_seconds(pid) + sum(_tree_cpu(child) for child in _children(pid))


def _processes(cluster: Cluster, ceph: CephCluster, postgres: PostgresServer) -> dict[str, int]:
    found = {
        f"node{i + 1}": node.process.pid for i, node in enumerate(cluster.nodes) if node.process
    }
    proxy = cluster.proxy._process if cluster.proxy is not None else None
    if proxy is not None:
        found["haproxy"] = proxy.pid
    found.update({name: pid for name, pid in ceph.pids().items()})
    if postgres.pid is not None:
        found["postgres"] = postgres.pid
    return found


def _cpu(processes: dict[str, int]) -> dict[str, float]:
    used = {name: _tree_cpu(pid) for name, pid in processes.items()}
    # The bench's own process only: every server above is its child.
    used["bench client"] = _cpu_seconds(os.getpid(), reaped=False)
    return used


async def _row(
    cluster: Cluster, runs: list[DockRun], processes: dict[str, int]
) -> tuple[float, dict[str, float]]:
    """Upload every run at once; the wall time and each process's CPU % over exactly it."""
    before, began = _cpu(processes), time.monotonic()
    await asyncio.gather(*(upload_clip(cluster.url, run) for run in runs))
    after, wall = _cpu(processes), time.monotonic() - began
    return wall, {name: 100 * (after[name] - before[name]) / wall for name in after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip-mib", type=int, default=48)
    parser.add_argument("--docks", type=int, default=8)
    options = parser.parse_args()
    clip = options.clip_mib * MiB
    print(
        f"{options.docks} concurrent uploads of {options.clip_mib} MiB, 5 MiB PATCHes; "
        f"{os.cpu_count()} cores"
    )
    with CephCluster(store_bytes=4 << 30) as ceph, PostgresServer() as postgres:
        rows = []
        for count in (1, 2, 3):
            with tempfile.TemporaryDirectory(prefix="dockd-bench-mn-") as workdir:
                cluster = Cluster(Path(workdir), ceph, postgres)
                try:
                    cluster.start(count)
                    processes = _processes(cluster, ceph, postgres)
                    clips = [DockRun(os.urandom(clip), PART) for _ in range(options.docks)]
                    wall, usage = asyncio.run(_row(cluster, clips, processes))
                    megabytes = sum(len(run.data) for run in clips) / 1e6
                    for run in clips:
                        assert run.receipt_header and run.verify(cluster.public_key), run.location
                        assert cluster.object_bytes(run.upload) == run.data, run.location
                finally:
                    cluster.stop()
            rows.append((count, megabytes / wall, wall, usage))
            print(
                f"\n{count} node(s): {megabytes / wall:.1f} MB/s ({megabytes:.0f} MB in "
                f"{wall:.1f} s)"
            )
            for name, percent in sorted(usage.items(), key=lambda item: -item[1]):
                print(f"    {name:14s} {percent:5.0f} % CPU")
            print(
                f"    {'total':14s} {sum(usage.values()):5.0f} % of {100 * (os.cpu_count() or 1)} %"
            )
    print(
        "\n| nodes | MB/s | wall s | CPU of nodes | CPU of all (incl. RGW, OSD, PG, HAProxy, client) |"
    )
    print("|---|---|---|---|---|")
    for count, rate, wall, usage in rows:
        nodes = sum(percent for name, percent in usage.items() if name.startswith("node"))
        print(
            f"| {count} | {rate:.1f} | {wall:.1f} | {nodes:.0f} % | {sum(usage.values()):.0f} % |"
        )


if __name__ == "__main__":
    main()
