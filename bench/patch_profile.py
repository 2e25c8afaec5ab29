"""Where the receiver's time goes per PATCH: each step of a durable commit, timed alone.

Run: `.venv/bin/python bench/patch_profile.py [--chunk-mib 8] [--chunks 32] [--dir DIR]`

For `--chunks` PATCH-sized bodies written into one data file it times, per chunk and in this
order: pwrite of the body (page cache), the running SHA-256 of the whole upload, the
Upload-Checksum of the body (sha256 as docks sent it, and crc32c), fdatasync of the data, and the
state commit as two designs do it: the old one (state to a temp file, fsync, rename, dir fsync)
and the one `FileStore` uses now (`dockd.receiver.storage.offset_record`: one pwrite into a fixed
slot + fdatasync). It also runs the store's real `FileChunkWriter.commit` end to end.

DIR defaults to a fresh directory under $BENCH_DIR (else the system temp dir): put it on the
disk the receiver's store is on, since fsync costs are the disk's. Prints a table of medians (ms).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from dockd import checksums
from dockd.durable import fsync_dir, write_synced
from dockd.receiver.storage.api import CreationInfo, new_upload_id
from dockd.receiver.storage.file import FileStore

MIB = 1 << 20
SLOT = 512  # offset_record.SLOT_SIZE


def _timed(samples: dict[str, list[float]], name: str, step: Callable[[], object]) -> None:
    start = time.perf_counter()
    step()
    samples.setdefault(name, []).append((time.perf_counter() - start) * 1000)


def profile_steps(directory: Path, chunk: bytes, chunks: int) -> dict[str, list[float]]:
    """Each step of the per-PATCH work, timed separately on a scratch data file."""
    samples: dict[str, list[float]] = {}
    state_path = directory / "steps.state"
    tmp = state_path.with_name("steps.state.tmp")
    fd = os.open(directory / "steps.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    slot_fd = os.open(directory / "steps.slots", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.pwrite(slot_fd, bytes(2 * SLOT), 0)
    os.fsync(slot_fd)
    whole = hashlib.sha256()
    try:
        for index in range(chunks):
            position = index * len(chunk)
            record = f'{{"offset":{position + len(chunk)}}}'.encode()
            slot = (index % 2) * SLOT
            steps: list[tuple[str, Callable[[], object]]] = [
                ("pwrite body (page cache)", partial(os.pwrite, fd, chunk, position)),
                ("running SHA-256 (whole file)", partial(whole.update, chunk)),
                ("Upload-Checksum sha256", partial(checksums.digest_of, "sha256", chunk)),
                ("Upload-Checksum crc32c", partial(checksums.digest_of, "crc32c", chunk)),
                ("fdatasync data", partial(os.fdatasync, fd)),
                # As the store does: drop the synced pages. Without it each later pwrite took
                # ~24 ms instead of ~2 ms here (the page cache reclaimed on the write path).
                (
                    "fadvise DONTNEED (synced pages)",
                    partial(os.posix_fadvise, fd, position, len(chunk), os.POSIX_FADV_DONTNEED),
                ),
                ("old: state tmp write + fsync", partial(write_synced, tmp, record)),
                ("old: rename + dir fsync", partial(_rename_and_sync, tmp, state_path)),
                (
                    "new: state slot pwrite + fdatasync",
                    partial(_slot_write, slot_fd, record.ljust(SLOT, b" "), slot),
                ),
            ]
            for name, step in steps:
                _timed(samples, name, step)
    finally:
        os.close(fd)
        os.close(slot_fd)
    return samples


def _rename_and_sync(tmp: Path, target: Path) -> None:
    os.rename(tmp, target)
    fsync_dir(target.parent)


def _slot_write(fd: int, record: bytes, position: int) -> None:
    os.pwrite(fd, record, position)
    os.fdatasync(fd)


def profile_commit(directory: Path, chunk: bytes, chunks: int) -> list[float]:
    """The store's real commit (fdatasync + state), per chunk, after an untimed pwrite."""
    store = FileStore(directory / "store")
    store.prepare()
    upload = new_upload_id()
    info = CreationInfo(upload, len(chunk) * chunks, "", {}, "2026-01-01T00:00:00Z", None)
    store.create(info, time.time() + 3600)
    whole = store.new_hash()
    timings = []
    writer = store.open_writer(upload, 0)
    try:
        for index in range(chunks):
            writer.write(chunk, index * len(chunk))
            start = time.perf_counter()
            writer.commit((index + 1) * len(chunk), time.time() + 3600, whole)
            timings.append((time.perf_counter() - start) * 1000)
    finally:
        writer.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-mib", type=int, default=8)
    parser.add_argument("--chunks", type=int, default=32)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    base = args.dir or Path(
        tempfile.mkdtemp(prefix="dockd-patch-", dir=os.environ.get("BENCH_DIR"))
    )
    base.mkdir(parents=True, exist_ok=True)
    chunk = os.urandom(args.chunk_mib * MIB)
    try:
        steps = profile_steps(base, chunk, args.chunks)
        commits = profile_commit(base, chunk, args.chunks)
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    print(f"per PATCH of {args.chunk_mib} MiB, {args.chunks} chunks, medians (p90) in ms:")
    for name, values in [*steps.items(), ("FileChunkWriter.commit (as shipped)", commits)]:
        p90 = statistics.quantiles(values, n=10)[-1] if len(values) >= 2 else values[0]
        print(f"  {name:<40} {statistics.median(values):8.2f} ({p90:.2f})")


if __name__ == "__main__":
    main()
