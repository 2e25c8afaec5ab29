"""The dock's memory budget with a real `dockd run` process and several bays docked at once.

Without a budget, every upload streams its own ~3 chunk buffers at once, so peak RSS grows with
chunk_size x max_parallel. With `[upload] memory_budget` room for one stream, the other bays wait
for it: their PATCHes never interleave, and the daemon's peak RSS (VmHWM) stays near one
stream's buffers above the interpreter's own footprint.
"""

from __future__ import annotations

from pathlib import Path

from support.dock import DaemonProcess, dock_config, journal_rows, make_bay, wait_for, write_toml

MIB = 1 << 20
CHUNK = 16 * MIB  # large, so buffers dominate the interpreter's ~70 MiB and noise
BAYS = 4
CLIP = 64 * MIB


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def _streams_at_once(patch_log: list[tuple[str, int, int]]) -> int:
    """The most uploads whose PATCH sequences overlapped (each upload's first to last PATCH)."""
    spans: dict[str, list[int]] = {}
    for index, (upload, _offset, _length) in enumerate(patch_log):
        spans.setdefault(upload, [index, index])[1] = index
    return max(sum(1 for a, b in spans.values() if a <= i <= b) for i in range(len(patch_log)))


async def test_bays_beyond_the_memory_budget_wait_and_peak_rss_stays_bounded(
    tmp_path, receiver, keys, recipient
):
    (tmp_path / "bays").mkdir()
    data = dock_config(
        tmp_path,
        receiver.url,
        recipient,
        public_key=keys.server_public_key,
        chunk_size=CHUNK,
        max_parallel=BAYS,
        memory_budget=3 * CHUNK,  # one upload's stream at a time
    )
    daemon = DaemonProcess(write_toml(tmp_path / "dockd.toml", data), tmp_path / "daemon.log")
    daemon.start()
    try:
        daemon.wait_ready()
        for index in range(1, BAYS + 1):
            make_bay(tmp_path / "bays", f"bay-{index}", f"CAM-{index}", {"DCIM/A.MP4": CLIP})
        await wait_for(
            lambda: (
                len(rows := journal_rows(tmp_path / "state")) == BAYS
                and all(r["state"] == "WIPED" for r in rows)
            ),
            timeout=240,
            what="every clip WIPED",
        )
        assert daemon.proc is not None
        peak = _peak_rss_mib(daemon.proc.pid)
    finally:
        daemon.terminate()
    assert _streams_at_once(receiver.patch_log) == 1, receiver.patch_log
    # Four unbudgeted streams of 3 x 16 MiB measured ~250 MiB; one stream ~130 MiB.
    assert peak < 190, f"peak RSS {peak:.0f} MiB"
