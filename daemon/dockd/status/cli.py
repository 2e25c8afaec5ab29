"""`dockctl`: what the station desk needs to know, read from the dock's journal.

This first version reads the journal read-only (it needs read access to the state directory);
the control-socket API that adds live progress and operator actions builds on the same views.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dockd import exitcodes
from dockd.devices.camera import display_path

DEFAULT_CONFIG = Path("/etc/dockd/dockd.toml")
SETTLED = {"WIPED", "HELD"}


def _state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir is not None:
        return args.state_dir
    from dockd.config import load

    return load(args.config).dock.state_dir


def _rows(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / "journal.db"
    if not path.exists():
        raise FileNotFoundError(f"no journal at {path} (has dockd run yet?)")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM clips ORDER BY camera, id")]
    finally:
        conn.close()


def camera_summaries(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_camera: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_camera[row["camera"]].append(row)
    out = []
    for camera, clips in sorted(by_camera.items()):
        live = [c for c in clips if c["state"] != "WIPED"]
        counts = Counter(c["state"] for c in clips)
        problems = [c for c in live if c["state"] in ("FAILED", "QUARANTINED") or c["reason"]]
        if not live or all(c["state"] in SETTLED for c in live):
            verdict, why = "SAFE TO REMOVE", None
        elif problems:
            first = problems[0]
            verdict = first["state"]
            why = f"{display_path(bytes(first['rel_path']))}: {first['reason']}"
            if first["retry_at"]:
                why += f" (next try {time.strftime('%H:%M:%S', time.localtime(first['retry_at']))})"
        else:
            verdict, why = "OFFLOADING", None
        out.append(
            {
                "camera": camera,
                "bay": clips[-1]["bay"],
                "state": verdict,
                "why": why,
                "clips": dict(counts),
                "bytes_left": sum(c["size"] for c in live),
            }
        )
    return out


def cmd_status(args: argparse.Namespace) -> int:
    summaries = camera_summaries(_rows(_state_dir(args)))
    if args.json:
        print(json.dumps({"cameras": summaries}, indent=2))
        return exitcodes.OK
    table = Table(title="dockd status")
    for column in ("bay", "camera", "state", "clips", "left", "why"):
        table.add_column(column)
    for s in summaries:
        style = {"SAFE TO REMOVE": "green", "OFFLOADING": "cyan"}.get(s["state"], "red")
        clips = ", ".join(f"{n} {state.lower()}" for state, n in sorted(s["clips"].items()))
        table.add_row(
            s["bay"],
            s["camera"],
            f"[{style}]{s['state']}[/]",
            clips,
            f"{s['bytes_left'] / 1e6:.1f} MB",
            s["why"] or "",
        )
    Console().print(table)
    return exitcodes.OK


def cmd_clips(args: argparse.Namespace) -> int:
    rows = [r for r in _rows(_state_dir(args)) if args.camera in (None, r["camera"])]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": r["id"],
                        "camera": r["camera"],
                        "bay": r["bay"],
                        "path": display_path(bytes(r["rel_path"])),
                        "size": r["size"],
                        "state": r["state"],
                        "reason": r["reason"],
                        "evidence": bool(r["evidence"]),
                        "sha256": r["plaintext_sha256"],
                        "upload_url": r["upload_url"],
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return exitcodes.OK
    table = Table(title="clips")
    for column in ("id", "camera", "path", "bytes", "state", "reason"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["camera"],
            display_path(bytes(r["rel_path"])),
            f"{r['size']:,}",
            r["state"],
            r["reason"] or "",
        )
    Console().print(table)
    return exitcodes.OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dockctl", description=__doc__)
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="dockd config (for state_dir)"
    )
    parser.add_argument("--state-dir", type=Path, help="read this state directory instead")
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser(
        "status", help="a row per camera: safe to remove, offloading, or why not"
    )
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    clips = sub.add_parser("clips", help="every clip the journal knows, with state and reason")
    clips.add_argument("--camera", metavar="SERIAL")
    clips.add_argument("--json", action="store_true")
    clips.set_defaults(func=cmd_clips)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except FileNotFoundError as exc:
        print(f"dockctl: {exc}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    except PermissionError as exc:
        print(
            f"dockctl: permission denied: {exc.filename or exc} (run as root or the dockd group)",
            file=sys.stderr,
        )
        return exitcodes.NOPERM
    except Exception as exc:
        from dockd.config import ConfigError

        if isinstance(exc, ConfigError):
            print(f"dockctl: configuration error: {exc}", file=sys.stderr)
            return exitcodes.CONFIG
        raise


if __name__ == "__main__":
    sys.exit(main())
