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


# tests/pipeline/test_never_falsely_safe.py: one adversarial class each (issue 11). Each test fails
# on any clip lost or wiped before its bytes were stored, so a passing row has zeros there.
SAFE_TO_REMOVE_CLASSES = {
    "test_mtime_past_2262_and_sidecar_year_9999_are_offloaded": (
        "hostile dates: mtime in year 2413 (past int64 ns), sidecar 9999-12-31T23:59:59-14:00",
        2,
    ),
    "test_any_scan_failure_is_a_state_with_a_reason_and_a_retry": (
        "a scan that raises an unexpected exception, 3 times in a row",
        1,
    ),
    "test_a_clip_that_cannot_be_recorded_keeps_the_camera_not_safe": (
        "one clip whose recording raises (OverflowError), beside a good one",
        2,
    ),
    "test_in_place_rewrite_with_restored_mtime_is_not_wiped_unstored": (
        "in-place rewrite between confirmation and wipe: same inode and size, mtime restored",
        4,
    ),
    "test_paused_writer_is_never_settled_nor_wiped": (
        "a writer that keeps the clip open and pauses 6 x settle_time between appends",
        1,
    ),
    "test_hard_linked_clip_is_uploaded_but_not_wiped": (
        "a clip hard-linked to a non-clip name",
        1,
    ),
    "test_receipt_signed_by_another_key_says_key_mismatch": (
        "receipts signed by another key than the configured one",
        1,
    ),
    "test_read_only_camera_says_so_and_keeps_the_clip": ("a read-only camera (bind mount)", 1),
    "test_dock_disk_full_is_a_named_state_without_a_hot_loop_and_recovers": (
        "the dock's state directory full (8 MiB tmpfs) under a running dock, then freed",
        3,
    ),
}


def _cases(results: Path, classname_suffix: str) -> dict[str, str]:
    """test name -> "passed" / "failed" / "skipped" for one test file."""
    out: dict[str, str] = {}
    for case in ET.parse(results / "junit.xml").getroot().iter("testcase"):
        if not case.get("classname", "").endswith(classname_suffix):
            continue
        if case.find("skipped") is not None:
            outcome = "skipped"
        elif case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        else:
            outcome = "passed"
        out[case.get("name", "")] = outcome
    return out


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
    for name, outcome in _cases(results, "test_never_falsely_safe").items():
        injected, clips = SAFE_TO_REMOVE_CLASSES.get(name, (name, ""))
        said = "not safe to remove, reason shown" if outcome == "passed" else outcome.upper()
        lost = 0 if outcome == "passed" else "?"
        rows.append((injected, f"1 case: {said}", clips, "", lost, lost, 0))
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
