"""One camera read per clip (issue 14): measured from outside a real `dockd run` process.

`rchar` in /proc/PID/io counts every byte the daemon's read calls returned (files, sockets,
its journal): with a server that offers tus concatenation, offloading one clip reads it once
(ratio <= 1.05), against a server without it twice (the two-pass fallback, ~2.0: the same
measurement fails when one pass is lost). A kill -9 mid-stream resumes from the server's offset:
the prefix is re-read (counted in the metrics) but never re-sent, and what the server stores
decrypts with the `age` CLI to the original.
"""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

from dockd import camera_read
from support.counting_receiver import start_counting_receiver
from support.dock import (
    DaemonProcess,
    decrypt_sha256,
    dock_config,
    journal_rows,
    make_bay,
    stored_objects,
    wait_for,
    write_toml,
)
from support.receiver import ReceiverProcess

SIZE = 64 * 1024 * 1024
CHUNK = 1024 * 1024


def _rchar(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/PID/io")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def _wiped(state_dir: Path) -> bool:
    rows = journal_rows(state_dir)
    return bool(rows) and all(r["state"] == "WIPED" for r in rows)


async def _camera_bytes_per_clip_byte(tmp_path: Path, url: str, public_key: Path, recipient: str):
    """Dock one clip into an idle real daemon; rchar of the daemon from then to WIPED / SIZE."""
    (tmp_path / "bays").mkdir()
    data = dock_config(tmp_path, url, recipient, public_key=public_key, chunk_size=CHUNK)
    daemon = DaemonProcess(write_toml(tmp_path / "dockd.toml", data), tmp_path / "daemon.log")
    daemon.start()
    try:
        daemon.wait_ready()
        assert daemon.proc is not None
        before = _rchar(daemon.proc.pid)  # imports and start-up reads are behind us
        digests = make_bay(tmp_path / "bays", "bay-1", "CAM-1", {"DCIM/A.MP4": SIZE})
        await wait_for(lambda: _wiped(tmp_path / "state"), timeout=180, what="clip wiped")
        ratio = (_rchar(daemon.proc.pid) - before) / SIZE
        assert daemon.terminate() == 0
    finally:
        if daemon.alive():
            daemon.kill9()
    return ratio, digests["DCIM/A.MP4"]


async def test_dockd_run_reads_a_clip_once_from_the_camera(tmp_path, keys, recipient):
    with ReceiverProcess(tmp_path / "rx") as rx:  # a real `dockd serve`: file store, concatenation
        ratio, digest = await _camera_bytes_per_clip_byte(
            tmp_path, rx.url, rx.public_key_path, recipient
        )
    print(f"one pass: daemon rchar / clip bytes = {ratio:.4f}")
    assert ratio <= 1.05, f"the camera was read {ratio:.3f} times"
    [stored] = stored_objects(rx.store)
    assert stored["metadata"]["sha256"] == digest  # the custody hash reached the server
    assert decrypt_sha256(stored["data_path"], keys.age_identity) == digest


async def test_a_server_without_concatenation_gets_two_passes(tmp_path, keys, recipient):
    receiver = await start_counting_receiver(tmp_path / "store", keys)
    receiver.concatenation = False
    try:
        ratio, digest = await _camera_bytes_per_clip_byte(
            tmp_path, receiver.url, keys.server_public_key, recipient
        )
    finally:
        await receiver.stop()
    print(f"two passes: daemon rchar / clip bytes = {ratio:.4f}")
    assert 1.95 <= ratio <= 2.1, ratio
    [stored] = stored_objects(receiver.store)
    assert decrypt_sha256(stored["data_path"], keys.age_identity) == digest


async def test_kill9_mid_stream_resumes_rereading_the_prefix_never_resending_it(
    tmp_path, receiver, keys, recipient
):
    (tmp_path / "bays").mkdir()
    metrics_port = _free_port()
    data = dock_config(
        tmp_path, receiver.url, recipient, public_key=keys.server_public_key, chunk_size=CHUNK
    )
    data["status"] = {"metrics": f"127.0.0.1:{metrics_port}"}
    size = 24 * CHUNK + 12345
    daemon = DaemonProcess(write_toml(tmp_path / "dockd.toml", data), tmp_path / "daemon.log")
    digests = make_bay(tmp_path / "bays", "bay-1", "CAM-1", {"DCIM/A.MP4": size})
    receiver.patch_delay = 0.05
    daemon.start()
    try:
        await wait_for(lambda: receiver.patches >= 6, timeout=60, what="stream under way")
        daemon.kill9()
        [row] = journal_rows(tmp_path / "state")
        assert row["state"] == "STREAMING" and row["plaintext_sha256"] is None
        partial = row["partial_url"].rsplit("/", 1)[-1]
        receiver.patch_delay = 0
        daemon.start()
        await wait_for(lambda: _wiped(tmp_path / "state"), timeout=120, what="clip wiped")
        read = _metric(metrics_port, "dockd_camera_read_bytes_total")
        reread = _metric(metrics_port, "dockd_camera_reread_bytes_total")
        assert daemon.terminate() == 0
    finally:
        if daemon.alive():
            daemon.kill9()
    [stored] = stored_objects(receiver.store)
    resent = receiver.patch_bytes[partial] - stored["length"]
    assert 0 <= resent <= CHUNK, f"{resent} bytes re-sent"
    resumed_at = min(offset for upload, offset, _ in receiver.patch_log[6:] if upload == partial)
    prefix = camera_read.plaintext_before(len(bytes(row["age_header"])), resumed_at, size)
    # The restarted daemon streamed the clip with one read (the prefix only to rebuild both
    # hashes), and read it once more at the wipe: a restart is a new docking session, so the
    # wipe proves the file is the one sent by its content (unchanged rule).
    assert reread == prefix > 0
    assert read == 2 * size
    print(f"kill -9 resume: prefix re-read {reread:.0f} of {size} bytes, {resent} bytes re-sent")
    [final] = journal_rows(tmp_path / "state")
    assert final["ciphertext_sha256"] == stored["sha256"]  # the receipt was checked against it
    assert decrypt_sha256(stored["data_path"], keys.age_identity) == digests["DCIM/A.MP4"]
