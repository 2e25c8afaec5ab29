"""A receiver node in miniature, as a separate process: holds one upload's lock and reports.

    python lease_holder.py DSN NODE UPLOAD LEASE_SECONDS

Prints `held FENCE` once it holds the lock. Then reads commands, one per line, from stdin:
`wait-asked` (print `asked` when another node asks for the lock), `release` (print `released`),
`write` (check its fence, as before an UploadPart, then save the state it loaded plus one
part; print `done` or `fenced` for each),
`exit`. The tests SIGSTOP and SIGCONT it as a stalled node.
"""

from __future__ import annotations

import sys
import threading

import structlog
from dockd.receiver.shared.connection import PgPool, PgSettings
from dockd.receiver.shared.locker import PgLocker
from dockd.receiver.shared.state import PgStateBackend
from dockd.receiver.storage.api import Fenced
from dockd.receiver.storage.s3_state import S3UploadState
from pg_records import advanced


def main() -> None:
    # Log lines go to stderr: stdout is the answer channel the test reads.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    dsn, node, upload, lease_seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    pool = PgPool(PgSettings(dsn))
    locker = PgLocker(pool, node=node, lease_seconds=lease_seconds)
    backend = PgStateBackend(pool, S3UploadState.from_json)
    asked = threading.Event()
    lock = locker.acquire(upload, timeout=10, release_requested=asked.set)
    if not locker.listening.wait(10):
        sys.exit("the LISTEN connection did not come up")
    before = backend.load(upload)  # the state as this holder found it
    print(f"held {lock.fence}", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "wait-asked":
            asked.wait(30)
            print("asked" if asked.is_set() else "not-asked", flush=True)
        elif command == "release":
            lock.release()
            print("released", flush=True)
        elif command == "write":  # the commit it was about to make when it stalled
            outcomes = []
            for attempt in (
                lambda: backend.check_fence(upload, fence=lock.fence),
                lambda: backend.save(advanced(before, 5 << 20, b"late"), fence=lock.fence),
            ):
                try:
                    attempt()
                    outcomes.append("done")
                except Fenced:
                    outcomes.append("fenced")
            print(" ".join(outcomes), flush=True)
        elif command == "exit":
            break
    locker.close()
    pool.close()


if __name__ == "__main__":
    main()
