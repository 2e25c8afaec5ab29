"""Metrics: a real Prometheus scrapes a real dock through an outage and an upload.

The scenario a force's IT team cares about: the ingest server is down, clips queue up (Prometheus
must see that), the server comes back, every clip is confirmed and wiped, and the counters
Prometheus holds match what the journal says happened. `promtool` checks the exposition and the
alert rules shipped in config/dockd-alerts.yml.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest
from dockd import camera_read
from dockd.confirm import ConfirmationMismatch, NotConfirmed
from dockd.devices.camera import ClipReplaced, UnsafeFile
from dockd.reasons import REASON_CLASSES, reason_class
from dockd.transport import tus
from support.dock import journal_rows, make_bay, wait_for
from support.receiver import wait_for as poll

from .conftest import Dock, Receiver, free_port

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "config" / "dockd-alerts.yml"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: scripts/setup --test installs Debian's prometheus")
    return path


def test_alert_rules_check_and_unit_tests_pass():
    check = subprocess.run(
        [_tool("promtool"), "check", "rules", str(ALERTS)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 6 rules found" in check.stdout
    unit = subprocess.run(
        [_tool("promtool"), "test", "rules", "alerts_test.yml"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


class Prometheus:
    """Debian's prometheus on loopback, scraping one dock every 200 ms, with our alert rules."""

    def __init__(self, workdir: Path, target: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 200ms\n"
            "  scrape_timeout: 200ms\n"
            "  evaluation_interval: 1s\n"
            f"rule_files: ['{ALERTS}']\n"
            "scrape_configs:\n"
            "  - job_name: dockd\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                _tool("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    async def query(self, session: aiohttp.ClientSession, expr: str) -> list[dict]:
        async with session.get(f"{self.url}/api/v1/query", params={"query": expr}) as r:
            body = await r.json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    async def value(self, session: aiohttp.ClientSession, expr: str) -> float | None:
        result = await self.query(session, expr)
        return float(result[0]["value"][1]) if result else None

    async def ready(self, session: aiohttp.ClientSession) -> bool:
        assert self.proc.poll() is None, "prometheus exited; see prometheus.log"
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{self.url}/-/ready") as r:
                return r.status == 200
        return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


async def test_real_prometheus_sees_the_outage_and_the_counters(tmp_path, keys):
    server = Receiver(tmp_path, keys)  # down at first
    dock = await Dock(tmp_path, server.url, keys, retry_attempts=2).start()
    prom = Prometheus(tmp_path / "prom", f"127.0.0.1:{dock.metrics_port}")
    clips = {"DCIM/A.MP4": 700_001, "DCIM/B.MP4": 300_000, "DCIM/C.MP4": b""}
    try:
        async with aiohttp.ClientSession() as session:

            async def equals(expr: str, expected: float) -> bool:
                return await prom.value(session, expr) == expected

            await poll(lambda: prom.ready(session), timeout=60, interval=0.1)
            await poll(lambda: equals('up{job="dockd"}', 1), timeout=30, interval=0.1)

            make_bay(dock.bays, "bay-1", "CAM-1", clips)
            # During the outage Prometheus sees the queue and the failures.
            await poll(lambda: equals("dockd_clips_queued", 3), timeout=30, interval=0.1)
            await poll(lambda: equals("dockd_server_up", 0), timeout=30, interval=0.1)
            await poll(
                lambda: equals('dockd_clips_failed_total{reason="server_unavailable"} > bool 0', 1),
                timeout=30,
                interval=0.1,
            )

            await server.start()
            await wait_for(
                lambda: [r["state"] for r in journal_rows(dock.state_dir)] == ["WIPED"] * 3,
                what="all clips wiped",
            )
            rows = journal_rows(dock.state_dir)
            ciphertext = sum(r["ciphertext_length"] for r in rows)
            plaintext = sum(r["size"] for r in rows)
            await poll(lambda: equals("dockd_clips_wiped_total", 3), timeout=30, interval=0.1)
            await poll(lambda: equals("dockd_clips_queued", 0), timeout=30, interval=0.1)
            expected = {
                'dockd_clips_confirmed_total{policy="receipt"}': 3,
                "dockd_uploaded_bytes_total": ciphertext,
                "dockd_camera_read_bytes_total": plaintext,
                "dockd_clip_duration_seconds_count": 3,
                "dockd_cameras_docked": 1,
                "dockd_server_up": 1,
                "max_over_time(dockd_clips_queued[5m])": 3,
                'dockd_clips{state="QUARANTINED"}': 0,
                # at least one PATCH per non-empty clip was timed
                "dockd_upload_chunk_duration_seconds_count >= bool 2": 1,
                # the last confirmation is recent (Prometheus' clock, same machine)
                "time() - dockd_last_confirmation_timestamp_seconds < bool 300": 1,
            }
            for expr, value in expected.items():
                await poll(lambda e=expr, v=value: equals(e, v), timeout=30, interval=0.1)

            async with session.get(f"{prom.url}/api/v1/rules") as r:
                rules = await r.json()
            names = {rule["name"] for g in rules["data"]["groups"] for rule in g["rules"]}
            assert {
                "DockdStoppedConfirming",
                "DockdClipQuarantined",
                "DockdUploadsFailing",
            } <= names

        # promtool lints the exposition itself (names, types, help, units).
        scrape = await dock.scrape()
        lint = await asyncio.to_thread(
            subprocess.run,
            [_tool("promtool"), "check", "metrics"],
            input=scrape,
            capture_output=True,
            text=True,
        )
        assert lint.returncode == 0 and lint.stdout + lint.stderr == "", lint.stdout + lint.stderr
    finally:
        prom.stop()
        await dock.close()
        await server.stop()


FAILURES = [
    (lambda: tus.ServerUnavailable("PATCH http://x/files/1: 503", 1.0), "server_unavailable"),
    (lambda: tus.UploadGone("HEAD http://x/files/1: 404", 404), "upload_gone"),
    (lambda: tus.ServerRejected(413, "too large"), "server_rejected"),
    (lambda: camera_read.ClipChangedError("size changed"), "clip_changed"),
    (lambda: ClipReplaced("other inode"), "clip_changed"),
    (lambda: UnsafeFile("symlink"), "unsafe_file"),
    (lambda: ConfirmationMismatch("sha256 differs"), "receipt_mismatch"),
    (lambda: NotConfirmed("no receipt header"), "no_receipt"),
    (lambda: TimeoutError(), "timeout"),
    (lambda: aiohttp.ServerDisconnectedError(), "network"),
    (lambda: OSError(5, "Input/output error"), "unreadable"),
    (lambda: ValueError("a bug"), "other"),
]


@pytest.mark.parametrize(("make", "expected"), FAILURES)
def test_failure_reasons_become_bounded_label_values(make, expected):
    # the free-text message (URLs, paths) must never become a label value
    assert reason_class(make()) == expected
    assert expected in REASON_CLASSES
