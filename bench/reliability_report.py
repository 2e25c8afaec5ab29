"""Render docs/RELIABILITY.md from a fault-suite run (see scripts/reliability).

    python bench/reliability_report.py RESULTS_DIR > docs/RELIABILITY.md

RESULTS_DIR holds the JSON figures the fault tests write (DOCKD_RELIABILITY_OUT) and pytest's
junit.xml for the pass/fail of every test.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path


def _load(results: Path, name: str) -> dict | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _junit(results: Path) -> dict[str, tuple[int, int]]:
    """test file -> (passed, failed)."""
    out: dict[str, list[int]] = {}
    for case in ET.parse(results / "junit.xml").getroot().iter("testcase"):
        name = case.get("classname", "").split(".")[-1]
        bad = case.find("failure") is not None or case.find("error") is not None
        skipped = case.find("skipped") is not None
        if skipped:
            continue
        counts = out.setdefault(name, [0, 0])
        counts[1 if bad else 0] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def main() -> int:
    results = Path(sys.argv[1])
    junit = _junit(results)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    rows = []
    if p := _load(results, "power_cut_loop"):
        kills = ", ".join(f"{v} {k}" for k, v in sorted(p["kills"].items()))
        rows.append(
            (
                "kill -9 at random moments (daemon / receiver / both), cameras docking throughout",
                f"{p['cycles']} cycles ({kills})",
                p["clips"],
                p["plaintext_bytes"],
                p["clips_lost"],
                p["wrong_wipes"],
                p["daemon_crashes"],
            )
        )
    if f := _load(results, "fault_proxy"):
        faults = sum(v for k, v in f["faults"].items() if k != "pass")
        kinds = ", ".join(f"{k} {v}" for k, v in f["faults"].items() if k != "pass")
        rows.append(
            (
                f"network/server faults through a seeded proxy ({kinds}; a completing PATCH's response lost)",
                f"{f['requests']} requests, {faults} faulted",
                f["clips"],
                f["plaintext_bytes"],
                f["clips_lost"],
                f["wrong_wipes"],
                0,
            )
        )
    if h := _load(results, "hostile_camera"):
        rows.append(
            (
                "hostile camera: symlinks in/out, symlinked dirs, FIFO, device node, newline / non-UTF-8 / "
                f"255-byte names, sidecar bombs, {h['junk_files']:,} junk files, clips changed mid-read",
                f"1 camera, {h['skipped_logged']} refusals logged, {h['quarantined']} quarantined",
                h["genuine_clips"],
                "",
                h["clips_lost"],
                h["wrong_wipes"],
                h["daemon_crashes"],
            )
        )
    bad = junit.get("test_bad_inputs")
    if bad:
        rows.append(
            (
                "bad configuration, keys and damaged journals (each: one line, exit 78, camera untouched)",
                f"{sum(bad)} cases, {bad[1]} failed",
                "",
                "",
                0,
                0,
                0,
            )
        )
    if s := _load(results, "soak"):
        rows.append(
            (
                f"soak: {s['bays']} bays, cameras leaving and docking, faults on",
                f"{s['seconds'] / 60:.0f} min, {s['cameras']} cameras, {s['faults']} faults; RSS "
                f"{s['rss_kib_warmup_peak'] // 1024}->{s['rss_kib_late_peak'] // 1024} MiB, fds "
                f"{s['fds_warmup_peak']}->{s['fds_late_peak']}",
                s["clips"],
                "",
                s["clips_lost"],
                s["wrong_wipes"],
                s["daemon_crashes"],
            )
        )
    failed = sum(v[1] for v in junit.values())
    print("# Reliability\n")
    print("What was injected, how much, and the outcome. Regenerate with `scripts/reliability`")
    print("(add `--soak` for the long soak run; `DOCKD_SOAK_SECONDS` sets its length).\n")
    print(
        f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit}, {platform.machine()}, "
        f"Python {platform.python_version()}, {os.cpu_count()} cores. "
        f"Fault-suite tests: {sum(sum(v) for v in junit.values())} run, {failed} failed.\n"
    )
    print(
        "| injected | cycles / cases | clips | plaintext bytes | clips lost | wrong wipes | daemon crashes |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            "| "
            + " | ".join(f"{c:,}" if isinstance(c, int) and c > 999 else str(c) for c in row)
            + " |"
        )
    print(
        '\n"Clips lost": a clip neither on the camera nor stored intact (every stored object is decrypted'
    )
    print(
        'with the age CLI and compared with the original\'s SHA-256). "Wrong wipes": a clip gone from the'
    )
    print(
        "camera without a durable receipt that verifies and names exactly the stored bytes, checked after"
    )
    print(
        "every cycle. The tests fail on any non-zero value in those columns, so a table that renders at all"
    )
    print("has zeros there; the seeds are in the test output (DOCKD_TEST_SEED replays one).")
    _print_kept_sections()
    return 0 if failed == 0 else 1


def _print_kept_sections() -> None:
    """Sections maintained by hand or by other tools (docs/reliability/*.md, in name order):
    this script rewrites docs/RELIABILITY.md whole, so they live there and are appended."""
    folder = Path(__file__).resolve().parent.parent / "docs" / "reliability"
    for section in sorted(folder.glob("*.md")):
        if section.name != "README.md":
            print()
            print(section.read_text().rstrip("\n"))


if __name__ == "__main__":
    sys.exit(main())
