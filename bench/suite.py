"""The whole throughput/memory/bandwidth bench in one run, baselines included (run it as bench/run).

    bench/run [--big-mib 1024] [--small-mib 256] [--bays 8] [--with-8x-big] [--cap 20MB]
              [--usb-mib 256] [--usb-rate 35MB] [--skip-usb]

Everything on loopback, real processes (`dockd serve`, `dockd run`, node for the peers):
  (a) dockd end to end, plaintext MB/s from docking to CONFIRMED: one big clip (1 GiB), and
      N bays x one small clip (8 x 256 MiB) docked at once (max_parallel = N);
  (b) baseline on the same big clip: `age -r KEY < clip | sha256sum` (kept for continuity:
      coreutils sha256sum has no SHA-NI here, so it flatters dockd);
  (b') the fair baseline: `age -r KEY < clip | openssl dgst -sha256`;
  (c) peer on the same big clip: tus-js-client 4.3.1 -> @tus/server 2.4.5 (no hash, no crypto);
  (d) the daemon's peak RSS (VmHWM) for N x small and, with --with-8x-big, N x big;
  (e) the limiter: 4 bays under a cap (default 20 MB/s); the rate the bucket granted and the
      bytes the receiver stored, over 30 s after a 5 s warm-up, against the cap;
  (f) camera read ratio: bytes the `dockd run` process read (rchar, /proc/PID/io) from docking
      to CONFIRMED, over the clip's bytes, in the 1-bay run (1.00 = the camera read once);
  (g) a camera behind a USB-2-speed link (slow_camera.py: loop device + cgroup read throttle):
      time from docking to SAFE TO REMOVE against clip bytes / rate.
Clips are written once and copied into each run's bays (a wipe unlinks them, and the daemon
will not wipe a clip that has other hard links); the copies are in the page cache when docked,
except on the throttled camera. Prints every figure, the issue 14 target table with ratios, and
writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from offload_one_clip import DOCKD, ROOT, _peak_rss_kib, _write_clip  # noqa: E402
from receiver_vs_tus_server import DockdServe, _versions  # noqa: E402
from slow_camera import SlowCamera, probe  # noqa: E402
from support.dock import dock_config, write_toml  # noqa: E402
from support.node_peers import TusNodeServer, install_node_peers, run_tus_js_upload  # noqa: E402

MIB = 1 << 20
CHUNK = 8 * MIB  # the daemon's default [upload] chunk_size; the peer uses the same
RESULTS = ROOT / "bench" / "results"


def _states(db: Path) -> list[str]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return [r[0] for r in conn.execute("SELECT state FROM clips")]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def _control(sock: Path, path: str, method: str = "GET") -> Any:
    from dockd.control.client import ControlClient

    client = ControlClient(sock)
    return client.get(path) if method == "GET" else client.post(path)


def _phases(log: Path) -> dict[str, float]:
    """Seconds between the daemon's own events (first discovery, last hash, upload, receipt)."""
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
            at = dt.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        event = entry.get("event")
        first.setdefault(event, at)
        last[event] = at
    try:
        return {
            "discovered_to_all_hashed": round(last["clip.hashed"] - first["clip.discovered"], 2),
            "all_hashed_to_all_uploaded": round(last["clip.uploaded"] - last["clip.hashed"], 2),
            "all_uploaded_to_all_confirmed": round(
                last["clip.confirmed"] - last["clip.uploaded"], 2
            ),
        }
    except KeyError:
        return {}


def _rchar(pid: int) -> int:
    """Bytes the process has read through read(2) and friends (page-cache hits included)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError(f"no rchar in /proc/{pid}/io")


def _stored_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in store.rglob("*.bin") if p.is_file())


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.big = args.big_mib * MIB
        self.small = args.small_mib * MIB
        self.masters: dict[int, Path] = {}
        subprocess.run(
            [*DOCKD, "keygen", "--out", str(work / "keys")], check=True, capture_output=True
        )
        self.recipient = (work / "keys/recipient.txt").read_text().strip()
        self.signing_key = work / "keys/server-receipt.key"

    def master(self, size: int) -> Path:
        if size not in self.masters:
            path = self.work / "masters" / f"clip-{size >> 20}MiB.MP4"
            _write_clip(path, size)
            self.masters[size] = path
        return self.masters[size]

    # -- (b) and (c) ---------------------------------------------------------------------------
    def baseline(self, hasher: str = "sha256sum") -> dict[str, Any]:
        """`age -r KEY < clip | HASHER` on the big clip: (b) sha256sum, (b') openssl dgst."""
        clip = self.master(self.big)
        started = time.perf_counter()
        subprocess.run(
            f"age -r {self.recipient} < {clip} | {hasher} > /dev/null", shell=True, check=True
        )
        seconds = time.perf_counter() - started
        return {"seconds": round(seconds, 2), "MBps": round(self.big / 1e6 / seconds, 1)}

    def peer(self) -> dict[str, Any]:
        install_node_peers()
        clip = self.master(self.big)
        store = self.work / "peer-store"
        try:
            with TusNodeServer(store) as server:
                report = run_tus_js_upload(server.url, clip, chunk_size=CHUNK)
        finally:
            shutil.rmtree(store, ignore_errors=True)
        if not report["completed"] or report["bytes_sent"] != self.big:
            raise RuntimeError(f"tus-js-client upload did not complete: {report}")
        seconds = float(report["seconds"])
        return {"seconds": round(seconds, 2), "MBps": round(self.big / 1e6 / seconds, 1)}

    # -- (a), (d), (e): the real daemon ----------------------------------------------------------
    def offload(
        self,
        name: str,
        sizes: list[int],
        *,
        cap: str | None = None,
        window: float = 0.0,
        camera: SlowCamera | None = None,
        camera_rate: int = 0,
    ) -> dict[str, Any]:
        """Dock len(sizes) bays at once; time to all CONFIRMED, peak RSS, and under `cap` the
        measured rate over `window` seconds (the run is then stopped, not finished). With a
        `camera`, the bays live on it, the daemon's reads from it are throttled to
        `camera_rate`, and the run also times SAFE TO REMOVE."""
        run = self.work / name
        run.mkdir()
        disk = camera.root if camera is not None else run
        store = run / "store"
        sock = run / "control.sock"
        with DockdServe(store, self.signing_key, run / "serve.log") as server:
            data = dock_config(
                run,
                server.url,
                self.recipient,
                public_key=self.work / "keys/server-receipt.pub",
                chunk_size=self.args.chunk_mib * MIB,
                max_parallel=len(sizes),
            )
            data["server"]["token_file"] = str(server.token_file)
            data["discovery"] = {"scan_interval": 0.05, "settle_time": 0.0}
            data["status"] = {"socket": str(sock)}
            data["bays"] = {"folder": str(disk / "bays")}
            if cap is not None:
                data["bandwidth"] = {"limit": cap}
            config = write_toml(run / "dockd.toml", data)
            (disk / "bays").mkdir()
            staged = []
            for index, size in enumerate(sizes, start=1):
                staging = disk / f"staging-{index}"
                (staging / "DCIM").mkdir(parents=True)
                # A copy per bay (in-kernel copy_file_range): the daemon refuses to wipe a clip
                # whose data has other names (hard links), so linking the master would end each
                # run in QUARANTINED instead of WIPED.
                shutil.copyfile(self.master(size), staging / "DCIM/CLIP.MP4")
                serial = f"BENCH-{index}"
                (staging / "camera.json").write_text(json.dumps({"serial": serial, "model": "cam"}))
                staged.append((staging, disk / "bays" / f"bay-{index}"))
            if camera is not None:
                camera.cold()
            daemon = subprocess.Popen(
                [*DOCKD, "run", "--config", str(config), "--log-format", "json"],
                stdout=subprocess.DEVNULL,
                stderr=(run / "daemon.log").open("wb"),
            )
            try:
                if camera is not None:
                    camera.throttle(daemon.pid, camera_rate)
                deadline = time.monotonic() + 30
                while not sock.exists():  # the control socket is up once the daemon is ready
                    if time.monotonic() > deadline or daemon.poll() is not None:
                        raise SystemExit(f"bench: dockd did not start; see {run / 'daemon.log'}")
                    time.sleep(0.05)
                read_before = _rchar(daemon.pid)
                docked = time.perf_counter()
                for staging, bay in staged:
                    staging.rename(bay)
                if cap is not None:
                    return self._measure_cap(sock, store, cap, window, daemon.pid)
                seconds = self._until_confirmed(run / "state/journal.db", len(sizes), docked, run)
                read = _rchar(daemon.pid) - read_before
                rss = _peak_rss_kib(daemon.pid)
                safe = self._until_safe(sock, len(sizes), docked) if camera is not None else None
            finally:
                daemon.terminate()
                daemon.wait(30)
        phases = _phases(run / "daemon.log")
        shutil.rmtree(run, ignore_errors=True)
        total = sum(sizes)
        result = {
            "clips": len(sizes),
            "bytes": total,
            "seconds": round(seconds, 2),
            "MBps": round(total / 1e6 / seconds, 1),
            "peak_rss_MiB": round(rss / 1024, 1),
            "camera_read_ratio": round(read / total, 4),
            "phases_s": phases,
        }
        if safe is not None:
            ideal = total / camera_rate
            result |= {
                "camera_rate_Bps": camera_rate,
                "safe_to_remove_s": round(safe, 2),
                "one_read_at_rate_s": round(ideal, 2),
                "one_read_over_safe": round(ideal / safe, 3),
            }
        return result

    def _until_safe(self, sock: Path, count: int, docked: float) -> float:
        """Seconds from docking until every bay says SAFE TO REMOVE (control socket /bays)."""
        while True:
            rows = _control(sock, "/bays")
            if len(rows) == count and all(row["safe_to_remove"] for row in rows):
                return time.perf_counter() - docked
            if time.perf_counter() - docked > 3600:
                raise SystemExit("bench: the throttled camera never became safe to remove")
            time.sleep(0.05)

    def _until_confirmed(self, db: Path, count: int, docked: float, run: Path) -> float:
        while True:
            states = _states(db)
            done = sum(1 for s in states if s in ("CONFIRMED", "WIPED"))
            if done == count:
                return time.perf_counter() - docked
            bad = [s for s in states if s in ("QUARANTINED", "FAILED")]
            if bad or time.perf_counter() - docked > 3600:
                raise SystemExit(f"bench: clip(s) {bad}; see {run / 'daemon.log'}")
            time.sleep(0.01)

    def _measure_cap(
        self, sock: Path, store: Path, cap: str, window: float, pid: int
    ) -> dict[str, Any]:
        from dockd.transport.bandwidth import parse_rate

        rate = parse_rate(cap)
        assert rate is not None
        while _control(sock, "/bandwidth")["granted_bytes"] == 0:
            time.sleep(0.05)
        time.sleep(5.0)  # warm-up: every upload created and streaming
        t1, g1, s1 = (
            time.perf_counter(),
            _control(sock, "/bandwidth")["granted_bytes"],
            _stored_bytes(store),
        )
        time.sleep(window)
        t2, g2, s2 = (
            time.perf_counter(),
            _control(sock, "/bandwidth")["granted_bytes"],
            _stored_bytes(store),
        )
        inflight = len(_control(sock, "/progress"))
        granted = (g2 - g1) / (t2 - t1)
        stored = (s2 - s1) / (t2 - t1)
        return {
            "cap_Bps": rate,
            "window_s": round(t2 - t1, 2),
            "granted_MBps": round(granted / 1e6, 3),
            "stored_MBps": round(stored / 1e6, 3),
            "granted_over_cap": round(granted / rate, 4),
            "stored_over_cap": round(stored / rate, 4),
            "uploads_in_flight_at_end": inflight,
            "peak_rss_MiB": round(_peak_rss_kib(pid) / 1024, 1),
        }


def _machine() -> dict[str, Any]:
    model = ""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    for line in lscpu.splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        **_versions(),
        "python": platform.python_version(),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--small-mib", type=int, default=256)
    parser.add_argument("--bays", type=int, default=8)
    parser.add_argument("--chunk-mib", type=int, default=CHUNK >> 20, help="dockd chunk_size")
    parser.add_argument(
        "--with-8x-big", action="store_true", help="also N bays x the big clip (RSS ratio; slow)"
    )
    parser.add_argument("--cap", default="20MB", help="limiter cap for (e), bytes per second")
    parser.add_argument("--cap-bays", type=int, default=4)
    parser.add_argument("--cap-window", type=float, default=30.0)
    parser.add_argument("--skip-cap", action="store_true")
    parser.add_argument("--usb-mib", type=int, default=256, help="clip on the throttled camera")
    parser.add_argument("--usb-rate", default="35MB", help="throttled camera read rate, B/s")
    parser.add_argument("--skip-usb", action="store_true")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dockd-bench-", dir=os.environ.get("BENCH_DIR")))
    result: dict[str, Any] = {"when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    result["machine"] = _machine()
    try:
        bench = Bench(args, work)
        step = lambda text: print(f"bench: {text} ...", flush=True)  # noqa: E731
        step(f"(b) baseline age | sha256sum on {args.big_mib} MiB")
        result["baseline"] = bench.baseline()
        step(f"(b') baseline age | openssl dgst -sha256 on {args.big_mib} MiB")
        result["baseline_openssl"] = bench.baseline("openssl dgst -sha256")
        step(f"(c) peer tus-js-client -> @tus/server on {args.big_mib} MiB")
        result["peer"] = bench.peer()
        step(f"(a) dockd, one {args.big_mib} MiB clip")
        result["dockd_1_big"] = bench.offload("one-big", [bench.big])
        step(f"(a)(d) dockd, {args.bays} bays x {args.small_mib} MiB")
        result["dockd_n_small"] = bench.offload("n-small", [bench.small] * args.bays)
        if args.with_8x_big:
            step(f"(d) dockd, {args.bays} bays x {args.big_mib} MiB")
            result["dockd_n_big"] = bench.offload("n-big", [bench.big] * args.bays)
        if not args.skip_cap:
            step(f"(e) limiter {args.cap}/s, {args.cap_bays} bays, {args.cap_window:g} s")
            result["limiter"] = bench.offload(
                "cap", [bench.small] * args.cap_bays, cap=args.cap, window=args.cap_window
            )
        if not args.skip_usb:
            result["usb"] = _usb_run(bench, args, step)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    one, many = result["dockd_1_big"], result["dockd_n_small"]
    big_many = result.get("dockd_n_big")
    result["targets"] = _targets(result)
    result["ratios"] = {
        "a_over_c (dockd / tus peer, target >= 1.0)": _ratio(one["MBps"], result["peer"]["MBps"]),
        "a_over_b (dockd / age|sha256sum, target >= 0.8)": _ratio(
            one["MBps"], result["baseline"]["MBps"]
        ),
        "n_bay_aggregate_over_single (target >= 1.0)": _ratio(many["MBps"], one["MBps"]),
        "rss_n_big_over_n_small (target <= 1.15)": _ratio(
            big_many["peak_rss_MiB"] if big_many else None, many["peak_rss_MiB"]
        ),
    }
    _print(result)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench-{int(time.time())}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten {out.relative_to(ROOT)}")
    return 0


def _usb_run(bench: Bench, args: argparse.Namespace, step: Any) -> dict[str, Any]:
    from dockd.transport.bandwidth import parse_rate

    rate = parse_rate(args.usb_rate)
    assert rate is not None
    why_not = probe()
    if why_not is not None:
        print(f"bench: (g) throttled camera skipped: {why_not}")
        return {"skipped": why_not}
    step(f"(g) dockd, one {args.usb_mib} MiB clip on a camera read at {args.usb_rate}/s")
    size = args.usb_mib * MIB
    with SlowCamera(bench.work / "usb-camera", size) as camera:
        return bench.offload("usb", [size], camera=camera, camera_rate=rate)


# issue 14's table: (figure, value before the issue, target, how to judge it)
_TARGETS = [
    ("(a)/(c) dockd vs tus-js-client -> @tus/server", "0.55", ">= 1.0"),
    ("(a)/(b') dockd vs age \\| openssl dgst -sha256", "~0.16", ">= 0.5"),
    ("camera bytes read / clip bytes", "2.00", "1.00"),
    ("peak RSS, 8 bays x 1 GiB (MiB)", "310", "<= 150"),
    ("8-bay aggregate / single bay", "1.58", ">= 1.0"),
    ("limiter accuracy over 30 s (stored / cap)", "0.9999", "within +-5 %"),
]


def _targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    one = result["dockd_1_big"]
    many = result.get("dockd_n_big") or result["dockd_n_small"]
    limiter = result.get("limiter", {})
    values = [
        _ratio(one["MBps"], result["peer"]["MBps"]),
        _ratio(one["MBps"], result["baseline_openssl"]["MBps"]),
        one.get("camera_read_ratio"),
        result["dockd_n_big"]["peak_rss_MiB"] if "dockd_n_big" in result else None,
        _ratio(many["MBps"], one["MBps"]),
        limiter.get("stored_over_cap"),
    ]
    checks = [
        lambda v: v >= 1.0,
        lambda v: v >= 0.5,
        lambda v: abs(v - 1.0) <= 0.01,
        lambda v: v <= 150,
        lambda v: v >= 1.0,
        lambda v: abs(v - 1.0) <= 0.05,
    ]
    rows = []
    for (figure, before, target), value, check in zip(_TARGETS, values, checks, strict=True):
        met = None if value is None else bool(check(value))
        rows.append(
            {"figure": figure, "before": before, "target": target, "now": value, "met": met}
        )
    return rows


def _print(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"\nmachine: {m['nproc']} x {m['cpu']}, Python {m['python']}, node {m.get('node')}")
    rows = [
        ("(b) age -r | sha256sum, big clip", result["baseline"]),
        ("(b') age -r | openssl dgst -sha256, big clip", result["baseline_openssl"]),
        ("(c) tus-js-client -> @tus/server, big clip", result["peer"]),
        ("(a) dockd, 1 bay x big clip", result["dockd_1_big"]),
        ("(a) dockd, N bays x small clip", result["dockd_n_small"]),
    ]
    if "dockd_n_big" in result:
        rows.append(("(d) dockd, N bays x big clip", result["dockd_n_big"]))
    for label, row in rows:
        rss = f"  peak RSS {row['peak_rss_MiB']:.1f} MiB" if "peak_rss_MiB" in row else ""
        print(f"{label:<46} {row['MBps']:8.1f} MB/s  ({row['seconds']:.2f} s){rss}")
    if "limiter" in result:
        lim = result["limiter"]
        print(
            f"{'(e) limiter, cap ' + format(lim['cap_Bps'] / 1e6, 'g') + ' MB/s':<46} "
            f"granted {lim['granted_MBps']:.3f} MB/s ({lim['granted_over_cap']:.4f} x cap), "
            f"stored {lim['stored_MBps']:.3f} MB/s ({lim['stored_over_cap']:.4f} x cap) "
            f"over {lim['window_s']:.1f} s"
        )
    for name, value in result["ratios"].items():
        print(f"  {name}: {value}")
    one = result["dockd_1_big"]
    print(f"(f) camera read ratio, 1 bay x big clip: {one['camera_read_ratio']:.4f}")
    usb = result.get("usb")
    if usb and "safe_to_remove_s" in usb:
        print(
            f"(g) throttled camera ({usb['camera_rate_Bps'] / 1e6:g} MB/s), {usb['bytes'] >> 20} MiB: "
            f"SAFE TO REMOVE after {usb['safe_to_remove_s']:.2f} s; one read at that rate "
            f"{usb['one_read_at_rate_s']:.2f} s (ratio {usb['one_read_over_safe']:.3f}); "
            f"camera read ratio {usb['camera_read_ratio']:.4f}"
        )
    print("\n| figure | before | target | now | met? |\n|---|---:|---|---:|---|")
    for row in result["targets"]:
        met = {None: "not measured", True: "yes", False: "**no**"}[row["met"]]
        now = "-" if row["now"] is None else row["now"]
        print(f"| {row['figure']} | {row['before']} | {row['target']} | {now} | {met} |")


if __name__ == "__main__":
    sys.exit(main())
