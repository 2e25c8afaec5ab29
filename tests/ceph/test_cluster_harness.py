"""The harness itself: stop() ends every daemon cleanly and leaves no process or file behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.ceph import CephCluster, CephError

pytestmark = pytest.mark.ceph


@pytest.mark.parametrize("objectstore", ["memstore", "bluestore"])
def test_stop_ends_every_daemon_and_removes_the_directory(objectstore: str) -> None:
    cluster = CephCluster(objectstore=objectstore)
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
    # Each exited on SIGTERM, none needed SIGKILL: the stop order lets every daemon finish
    # (radosgw hangs if the OSD goes first, and the OSD waits 5 s if the mon does).
    assert cluster.exit_codes == {"rgw": 0, "osd": 0, "mon": 0}
    assert cluster.timings["stop_s"] < cluster.stop_timeout


def test_a_failed_start_says_why_and_leaves_no_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no Ceph programs here
    cluster = CephCluster()
    with pytest.raises(CephError, match="scripts/setup --ceph"):
        cluster.start()
    assert not cluster.root.exists()
