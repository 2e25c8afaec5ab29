"""The dock's own disk: one condition, a back-off that does not flap back to 5 s (review finding)."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from dockd import dockhealth
from dockd.dockhealth import StorageHealth, is_storage_error
from dockd.metrics import DockMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_what_counts_as_the_docks_storage_failing():
    full = sqlite3.OperationalError("database or disk is full")
    assert is_storage_error(full)
    assert is_storage_error(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_storage_error(OSError(errno.EIO, "camera pulled"))  # a camera's, not ours
    assert not is_storage_error(sqlite3.OperationalError("no such table: clips"))  # a bug
    assert not is_storage_error(ValueError("x"))


def test_a_probe_that_fits_where_clip_work_does_not_cannot_make_the_state_flap(
    tmp_path: Path, monkeypatch
):
    clock = Clock()
    monkeypatch.setattr(dockhealth.time, "monotonic", clock)
    metrics = DockMetrics()
    health = StorageHealth(tmp_path, metrics)
    waits = []
    for _cycle in range(5):  # fail, wait out the back-off, probe succeeds, clip work fails again
        health.failed(OSError(errno.ENOSPC, "No space left on device"))
        assert health.problem and health.problem.startswith("dock disk full")
        assert health.paused() and metrics.storage_ok._value.get() == 0
        waits.append(health._until - clock.now)
        clock.now = health._until
        assert health.problem and not health.paused()  # the back-off ran out: probe now
        health.recovered()
        assert health.problem is None and metrics.storage_ok._value.get() == 1
        clock.now += 1
    assert waits == [5.0, 10.0, 20.0, 40.0, 80.0]  # it grows; it does not start at 5 s each time
    assert metrics.storage_failures._value.get() == 5  # one event per cycle, not per clip task
    clock.now += dockhealth.CALM_SECONDS + 1  # a long calm: the next failure starts small again
    health.failed(OSError(errno.ENOSPC, "No space left on device"))
    assert health._until - clock.now == 5.0
