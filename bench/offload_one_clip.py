"""Benchmark: one clip from a bay to a confirmed receipt, with a baseline measured in the same run.

    .venv/bin/python bench/offload_one_clip.py [--size-mib 1024] [--chunk-mib 8]

Runs the real processes (`dockd serve` and `dockd run`) on loopback. Reports:
- dockd: plaintext MB/s from docking to CONFIRMED (hash pass + encrypt + upload + receipt),
  and to WIPED; the daemon's peak RSS (VmHWM);
- baseline: `age -r KEY < clip | sha256sum` on the same clip (one pass, no network);
- the ratio dockd / baseline.
The clip is written once and read from the page cache by both, so the ratio compares work, not disk.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.dock import dock_config, write_toml  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from receiver_vs_tus_server import write_bench_token  # noqa: E402

DOCKD = [sys.executable, "-m", "dockd.cli"]


def _write_clip(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(1 << 20)
    with path.open("wb") as handle:
        for i in range(size >> 20):
            handle.write(hashlib.sha256(i.to_bytes(8, "big")).digest()[:16] + block[16:])


def _state(db: Path) -> str | None:
    if not db.exists():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT state FROM clips LIMIT 1").fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()
    return row[0] if row else None


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--chunk-mib", type=int, default=8)
    args = parser.parse_args()
    size = args.size_mib << 20
    work = Path(tempfile.mkdtemp(prefix="dockd-bench-", dir=os.environ.get("BENCH_DIR")))
    subprocess.run([*DOCKD, "keygen", "--out", str(work / "keys")], check=True, capture_output=True)
    recipient = (work / "keys/recipient.txt").read_text().strip()
    staging = work / "staging"
    _write_clip(staging / "DCIM/CLIP.MP4", size)
    (staging / "camera.json").write_text(json.dumps({"serial": "BENCH-1", "model": "cam"}))

    started = time.perf_counter()
    subprocess.run(
        f"age -r {recipient} < {staging}/DCIM/CLIP.MP4 | sha256sum > /dev/null",
        shell=True,
        check=True,
    )
    baseline = time.perf_counter() - started

    tokens, token_file = write_bench_token(work / "auth")
    server = subprocess.Popen(
        [
            *DOCKD,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            str(work / "store"),
            "--signing-key",
            str(work / "keys/server-receipt.key"),
            "--tokens",
            str(tokens),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    url = None
    assert server.stdout is not None
    for line in server.stdout:
        if "listening on" in line:
            url = line.strip().rsplit(" ", 1)[-1]
            break
    assert url, "dockd serve did not start"
    data = dock_config(
        work,
        url,
        recipient,
        public_key=work / "keys/server-receipt.pub",
        chunk_size=args.chunk_mib << 20,
        max_parallel=4,
    )
    data["server"]["token_file"] = str(token_file)
    data["discovery"] = {"scan_interval": 0.05, "settle_time": 0.0}
    config = write_toml(work / "dockd.toml", data)
    (work / "bays").mkdir()
    daemon = subprocess.Popen(
        [*DOCKD, "run", "--config", str(config), "--log-format", "json"],
        stdout=subprocess.DEVNULL,
        stderr=(work / "daemon.log").open("wb"),
    )
    try:
        time.sleep(1.5)  # let the daemon start before the camera is docked
        db = work / "state/journal.db"
        docked = time.perf_counter()
        os.rename(staging, work / "bays/bay-1")
        confirmed = wiped = None
        while wiped is None:
            state = _state(db)
            now = time.perf_counter()
            if confirmed is None and state in ("CONFIRMED", "WIPED"):
                confirmed = now - docked
            if state == "WIPED":
                wiped = now - docked
            if state in ("QUARANTINED", "FAILED") or now - docked > 1800:
                raise SystemExit(f"bench: clip ended {state}; see {work / 'daemon.log'}")
            time.sleep(0.01)
        rss = _peak_rss_kib(daemon.pid)
    finally:
        daemon.terminate()
        daemon.wait(15)
        server.terminate()
        server.wait(15)
    mbps = size / 1e6 / confirmed
    base_mbps = size / 1e6 / baseline
    result = {
        "size_bytes": size,
        "chunk_bytes": args.chunk_mib << 20,
        "dockd_to_confirmed_s": round(confirmed, 2),
        "dockd_to_wiped_s": round(wiped, 2),
        "dockd_MBps": round(mbps, 1),
        "baseline_age_sha256sum_s": round(baseline, 2),
        "baseline_MBps": round(base_mbps, 1),
        "ratio_dockd_over_baseline": round(mbps / base_mbps, 3),
        "daemon_peak_rss_MiB": round(rss / 1024, 1),
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench/results"
    out.mkdir(exist_ok=True)
    (out / f"offload_one_clip-{int(time.time())}.json").write_text(json.dumps(result, indent=2))
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
