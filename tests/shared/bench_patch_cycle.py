"""What the shared state costs per PATCH: the PostgreSQL statements one PATCH makes in this
design (acquire, load, check_fence, save, release), timed against a real PostgreSQL with fsync
on, from 1 and from 8 threads (8 docks' PATCHes on different uploads at once).

    .venv/bin/python tests/shared/bench_patch_cycle.py [CYCLES]

Prints the mean and p99 milliseconds per PATCH cycle and the cycles per second. Not a test: the
figures go to docs/SCALE.md.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from dockd.receiver.shared.connection import PgPool, PgSettings
from dockd.receiver.shared.locker import PgLocker
from dockd.receiver.shared.schema import migrate
from dockd.receiver.shared.state import PgStateBackend
from dockd.receiver.storage.s3_state import S3UploadState
from pg_records import advanced, new_state
from support.postgres import PostgresServer


def _nothing() -> None:
    pass


def run(threads: int, cycles: int, dsn: str) -> tuple[list[float], float]:
    pool = PgPool(PgSettings(dsn, max_connections=threads + 2))
    backend = PgStateBackend(pool, S3UploadState.from_json)
    locker = PgLocker(pool, node="bench", lease_seconds=10)
    timings: list[float] = []
    guard = threading.Lock()

    def one_dock() -> None:
        state = new_state(length=1 << 40)
        backend.create(state)
        upload = state.info.upload
        mine = []
        for _ in range(cycles):
            began = time.perf_counter()
            lock = locker.acquire(upload, timeout=5, release_requested=_nothing)
            current = backend.load(upload)
            assert current is not None
            backend.check_fence(upload, fence=lock.fence)  # before the UploadPart
            backend.save(advanced(current, 8 << 20, b"h" * 120), fence=lock.fence)
            lock.release()
            mine.append(time.perf_counter() - began)
        with guard:
            timings.extend(mine)

    began = time.perf_counter()
    workers = [threading.Thread(target=one_dock) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    locker.close()
    pool.close()
    return timings, elapsed


def main() -> None:
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with PostgresServer() as server:
        with psycopg.connect(server.dsn) as conn:
            migrate(conn)
        for threads in (1, 8):
            timings, elapsed = run(threads, cycles, server.dsn)
            ms = sorted(t * 1000 for t in timings)
            print(
                f"{threads} thread(s) x {cycles} PATCH cycles: mean {statistics.mean(ms):.2f} ms,"
                f" p99 {ms[int(len(ms) * 0.99) - 1]:.2f} ms, {len(ms) / elapsed:.0f} cycles/s"
            )


if __name__ == "__main__":
    main()
