"""The harness itself: a cluster it starts is gone, processes and files, after stop()."""

from __future__ import annotations

import os

import pytest
from support.ceph import CephCluster

pytestmark = pytest.mark.ceph


def test_stop_ends_every_daemon_and_removes_the_directory() -> None:
    cluster = CephCluster()
    cluster.start()
    pids = cluster.pids()
    root = cluster.root
    assert set(pids) == {"mon", "osd", "rgw"}
    assert all(size > 0 for size in cluster.rss_bytes().values())

    cluster.stop()

    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped by stop(): the PID no longer names a process
    assert not root.exists()
    # Bounded even for radosgw's slow SIGTERM: all three are stopped in parallel.
    assert cluster.timings["stop_s"] < cluster.stop_timeout + 1
