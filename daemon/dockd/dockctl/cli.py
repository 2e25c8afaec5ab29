"""`dockctl`: what the station desk needs to know, and the few actions it may take.

Talks to the running daemon over its control socket (`[status] socket` in the config, or
`--socket`; with `--state-dir DIR` alone, DIR/control.sock beside the journal). When the daemon
is not running, `status` and `clips` fall back to reading the journal read-only and say "daemon
not running" (exit 69); actions need the daemon.

Exit codes: 0 ok, 1 the daemon refused the action, 2 usage, 69 daemon not running,
77 permission denied, 78 configuration error.
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

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from dockd import exitcodes
from dockd.control.client import AccessDenied, ApiError, DaemonUnavailable
from dockd.devices.camera import display_path
from dockd.dockctl import audit_cli
from dockd.dockctl.common import (
    DEFAULT_CONFIG,
    SOCKET_NAME,
    NoSocket,
    cmd_action,
    control_client,
    state_dir_of,
)

CLOSED = {"WIPED", "DISMISSED"}
SAFE = "SAFE TO REMOVE"
NOT_RUNNING = "daemon not running"


# ---- journal fallback (daemon down) ------------------------------------------------------------
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


def _row_reason(row: dict[str, Any]) -> str | None:
    from dockd.control.views import operator_reason

    return operator_reason(row["state"], row["reason"])


def camera_summaries(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per camera, from journal rows alone: SAFE TO REMOVE, REMOVABLE (held, not offloaded),
    OFFLOADING, or the first problem. Without the daemon nobody knows which files are still on
    the camera, so every open row counts."""
    by_camera: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_camera[row["camera"]].append(row)
    out = []
    for camera, clips in sorted(by_camera.items()):
        live = [c for c in clips if c["state"] not in CLOSED]
        counts = Counter(c["state"] for c in clips)
        held = [c for c in live if c["state"] == "HELD"]
        not_offloaded = [c for c in held if not c["confirmation"]]
        problems = [
            c
            for c in live
            if c["state"] in ("FAILED", "QUARANTINED") or (c["state"] != "HELD" and c["reason"])
        ]
        code = "offloading"
        if all(c["state"] == "HELD" for c in live) and not_offloaded:
            n = len(not_offloaded)
            verdict, code = (
                f"REMOVABLE: {n} clip{'' if n == 1 else 's'} held, NOT offloaded",
                "removable_not_offloaded",
            )
            why = None
        elif all(c["state"] == "HELD" for c in live):
            verdict, code = SAFE, "safe_to_remove"
            why = f"{len(held)} clip(s) kept on the camera (held; confirmed)" if held else None
        elif problems:
            first = problems[0]
            verdict, code = first["state"], "error"
            why = f"{display_path(bytes(first['rel_path']))}: {_row_reason(first)}"
            if first["retry_at"]:
                why += f" (next try {time.strftime('%H:%M:%S', time.localtime(first['retry_at']))})"
        else:
            verdict, why = "OFFLOADING", None
        out.append(
            {
                "camera": camera,
                "bay": clips[-1]["bay"],
                "state": verdict,
                "state_code": code,
                "why": why,
                "clips": dict(counts),
                "bytes_left": sum(c["size"] for c in live if c["state"] != "HELD"),
            }
        )
    return out


def _journal_clip(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "camera": r["camera"],
        "bay": r["bay"],
        "path": display_path(bytes(r["rel_path"])),
        "size": r["size"],
        "state": r["state"],
        "reason": _row_reason(r),
        "evidence": bool(r["evidence"]),
        "sha256": r["plaintext_sha256"],
        "upload_url": r["upload_url"],
    }


# ---- rendering ------------------------------------------------------------------------------
def _mb(n: float | None) -> str:
    return "" if n is None else f"{n / 1e6:.1f} MB"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _style(state: str) -> str:
    if state == SAFE:
        return "bold green"
    if state.startswith("REMOVABLE"):
        return "bold magenta"  # never SAFE TO REMOVE's green: clips are NOT offloaded
    if state.startswith(("error", "QUARANTINED", "FAILED", "receipt key mismatch")):
        return "bold red"
    if state.startswith("waiting"):
        return "yellow"
    return "cyan"


def bays_table(bays: list[dict[str, Any]]) -> Table:
    table = Table(title="dockd status", title_justify="left")
    for column in ("bay", "camera", "officer", "state", "left", "speed", "ETA"):
        table.add_column(column, justify="right" if column in ("left", "speed", "ETA") else "left")
    for b in bays:
        state = f"[{_style(b['state'])}]{b['state']}[/]"
        if b.get("reason"):
            state += f"\n{b['reason']}"
        table.add_row(
            b["bay"],
            b["camera"],
            b.get("officer") or "",
            state,
            _mb(b["bytes_left"]) if b["bytes_left"] else "",
            f"{b['throughput'] / 1e6:.1f} MB/s" if b.get("throughput") else "",
            _duration(b.get("eta_seconds")),
        )
    return table


def _server_line(server: dict[str, Any]) -> str:
    ago = (
        f"last answer {_duration(time.time() - server['last_success'])} ago"
        if server.get("last_success")
        else "no answer yet"
    )
    if server.get("reachable") is False:
        return f"server {server['url']}: [bold red]UNREACHABLE[/] ({server['last_error']}; {ago})"
    if server.get("reachable") is None:
        return f"server {server['url']}: not contacted yet"
    return f"server {server['url']}: [green]reachable[/] ({ago})"


def _queue_line(queue: dict[str, Any]) -> str:
    by_state = queue.get("by_state", {})
    extra = [
        f"{by_state[s]['clips']} {s.lower()}"
        for s in ("FAILED", "QUARANTINED", "HELD")
        if by_state.get(s, {}).get("clips")
    ]
    text = f"queue: {queue['queued']} clip(s), {_mb(queue['queued_bytes'])} to offload"
    text += f", {queue['in_flight']} in flight"
    if queue.get("waiting_for_camera"):
        text += f", {queue['waiting_for_camera']} waiting for their camera to be re-docked"
    return text + (f" ({', '.join(extra)})" if extra else "")


def _fallback_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The journal's rows, read-only; FileNotFoundError when it cannot even be located."""
    from dockd.config import ConfigError

    try:
        state_dir = state_dir_of(args)
    except ConfigError as exc:
        raise FileNotFoundError(f"journal not read ({exc}; give --state-dir)") from None
    return _rows(state_dir)


def _print_fallback(args: argparse.Namespace, why: str, console: Console) -> int:
    try:
        summaries = camera_summaries(_fallback_rows(args))
    except FileNotFoundError as exc:
        console.print(f"[bold red]{NOT_RUNNING}[/]: {why}; {exc}")
        return exitcodes.UNAVAILABLE
    if args.json:
        print(json.dumps({"daemon": NOT_RUNNING, "why": why, "cameras": summaries}, indent=2))
        return exitcodes.UNAVAILABLE
    console.print(f"[bold red]{NOT_RUNNING}[/]: {why}")
    console.print("from the journal (last known; cameras may have been removed since):")
    table = Table()
    for column in ("bay", "camera", "state", "clips", "left", "why"):
        table.add_column(column)
    for s in summaries:
        clips = ", ".join(f"{n} {state.lower()}" for state, n in sorted(s["clips"].items()))
        table.add_row(
            s["bay"],
            s["camera"],
            f"[{_style(s['state'])}]{s['state']}[/]",
            clips,
            _mb(s["bytes_left"]),
            s["why"] or "",
        )
    console.print(table)
    return exitcodes.UNAVAILABLE


# ---- commands -------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    console = Console()
    try:
        data = control_client(args).status()
    except (DaemonUnavailable, NoSocket) as exc:
        return _print_fallback(args, str(exc), console)
    if args.json:
        print(json.dumps(data, indent=2))
        return exitcodes.OK
    if data["bays"]:
        console.print(bays_table(data["bays"]))
    else:
        console.print("no camera docked")
    console.print(_queue_line(data["queue"]))
    console.print(_server_line(data["server"]))
    return exitcodes.OK


def cmd_clips(args: argparse.Namespace) -> int:
    try:
        clips = control_client(args).clips(args.camera)
        note = None
    except (DaemonUnavailable, NoSocket) as exc:
        try:
            rows = [r for r in _fallback_rows(args) if args.camera in (None, r["camera"])]
        except FileNotFoundError as missing:
            raise DaemonUnavailable(f"{exc}; {missing}") from None
        clips, note = [_journal_clip(r) for r in rows], f"{NOT_RUNNING}: {exc}"
    if args.json:
        print(json.dumps(clips, indent=2))
    else:
        console = Console()
        if note:
            console.print(f"[bold red]{note}[/]")
        table = Table(title="clips", title_justify="left")
        for column in ("id", "bay", "camera", "path", "bytes", "state", "reason"):
            table.add_column(column)
        for c in clips:
            table.add_row(
                str(c["id"]),
                c["bay"],
                c["camera"],
                c["path"],
                f"{c['size']:,}",
                f"[{_style(c['state'])}]{c['state']}[/]" if c["state"] != "WIPED" else "WIPED",
                c["reason"] or "",
            )
        console.print(table)
    return exitcodes.UNAVAILABLE if note else exitcodes.OK


def cmd_release(args: argparse.Namespace) -> int:
    if (args.clip is None) == (args.bay is None):
        print("dockctl release: give a CLIP id or --bay BAY (not both)", file=sys.stderr)
        return exitcodes.USAGE
    if args.clip is not None:
        return cmd_action(args)
    try:
        result = control_client(args).release_bay(args.bay)
    except ApiError as exc:
        print(f"dockctl release --bay {args.bay}: refused: {exc}", file=sys.stderr)
        return exitcodes.FAILURE
    for clip in result["released"]:
        print(f"clip {clip['id']} {clip['path']} ({clip['camera']}): now {clip['state']}")
    for clip in result["skipped"]:
        print(f"clip {clip['id']} {clip['path']}: not released: {clip['why']} (dockctl dismiss)")
    print(f"{len(result['released'])} quarantined clip(s) of {result['camera']} released")
    return exitcodes.OK


def cmd_rescan(args: argparse.Namespace) -> int:
    try:
        result = control_client(args).rescan(args.bay)
    except ApiError as exc:
        print(f"dockctl rescan {args.bay}: {exc}", file=sys.stderr)
        return exitcodes.FAILURE
    print(f"rescanning camera {result['camera']}")
    return exitcodes.OK


def cmd_bandwidth(args: argparse.Namespace) -> int:
    try:
        limit = control_client(args).bandwidth(args.rate)
    except ApiError as exc:
        print(f"dockctl bandwidth: {exc}", file=sys.stderr)
        return exitcodes.FAILURE
    print(f"upload limit: {limit['rate_text']} ({limit['source']})")
    return exitcodes.OK


def cmd_watch(args: argparse.Namespace) -> int:
    """Live bays table and a progress bar per clip in flight, refreshed from the daemon."""
    client = control_client(args)
    console = Console()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
    )
    bars: dict[tuple[int, str], Any] = {}
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        try:
            while True:
                data = client.status()
                entries = client.progress()
                seen = set()
                for e in entries:
                    key = (e["clip"], e["stage"])
                    seen.add(key)
                    if key not in bars:
                        bars[key] = progress.add_task(
                            f"{e['bay']} {e['stage']:<10} {e['name'][-28:]}",
                            total=max(e["total"], 1),
                        )
                    progress.update(bars[key], completed=e["done"])
                for key in set(bars) - seen:
                    progress.remove_task(bars.pop(key))
                live.update(
                    Group(
                        bays_table(data["bays"]),
                        _queue_line(data["queue"]),
                        _server_line(data["server"]),
                        progress,
                    )
                )
                if (
                    args.until_safe
                    and data["bays"]
                    and all(b["safe_to_remove"] for b in data["bays"])
                ):
                    return exitcodes.OK
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return exitcodes.OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dockctl",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", type=Path, help=f"dockd config (socket, state_dir; default {DEFAULT_CONFIG})"
    )
    parser.add_argument("--socket", type=Path, help="the daemon's control socket")
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="the dock's state directory: its journal (read when the daemon is down) and, "
        f"without --config, the socket {SOCKET_NAME} beside it",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="a row per bay: SAFE TO REMOVE, progress, or why not")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    watch = sub.add_parser("watch", help="live progress per bay and clip")
    watch.add_argument("--interval", type=float, default=0.5, metavar="S")
    watch.add_argument(
        "--until-safe", action="store_true", help="exit 0 once every docked camera is safe"
    )
    watch.set_defaults(func=cmd_watch)
    clips = sub.add_parser("clips", help="every clip the journal knows, with state and reason")
    clips.add_argument("--camera", metavar="SERIAL")
    clips.add_argument("--json", action="store_true")
    clips.set_defaults(func=cmd_clips)
    hold = sub.add_parser(
        "hold",
        help="keep a clip on the camera (stops its offload; unless the server confirmed it, "
        "the camera reads REMOVABLE ... NOT offloaded, never SAFE TO REMOVE)",
    )
    hold.add_argument("clip", type=int, metavar="CLIP", help="clip id (dockctl clips)")
    hold.add_argument("--reason", required=True, help="why (recorded in the audit log)")
    hold.add_argument(
        "--force", action="store_true", help="needed to hold an evidence-flagged clip"
    )
    hold.set_defaults(func=cmd_action, action="hold")
    release = sub.add_parser(
        "release",
        help="put a held or quarantined clip (or all of a bay's quarantined) back to work",
    )
    release.add_argument("clip", type=int, nargs="?", metavar="CLIP", help="clip id")
    release.add_argument("--bay", metavar="BAY", help="every QUARANTINED clip of this bay's camera")
    release.set_defaults(func=cmd_release, action="release")
    retry = sub.add_parser(
        "retry",
        help="retry a FAILED clip now, or ask the server again now for an UPLOADED clip's "
        "confirmation (after fixing the receipt key or confirm policy)",
    )
    retry.add_argument("clip", type=int, metavar="CLIP", help="clip id (dockctl clips)")
    retry.set_defaults(func=cmd_action, action="retry")
    dismiss = sub.add_parser(
        "dismiss",
        help="close a QUARANTINED clip whose file version is no longer on the camera (refused "
        "while it is, or may be, still there)",
    )
    dismiss.add_argument("clip", type=int, metavar="CLIP", help="clip id (dockctl clips)")
    dismiss.add_argument("--reason", required=True, help="why (recorded in the audit log)")
    dismiss.set_defaults(func=cmd_action, action="dismiss")
    rescan = sub.add_parser("rescan", help="scan a docked camera now (bay name or camera serial)")
    rescan.add_argument("bay", metavar="BAY")
    rescan.set_defaults(func=cmd_rescan)
    bandwidth = sub.add_parser(
        "bandwidth", help="show or set the dock's upload limit, at once and for uploads in flight"
    )
    bandwidth.add_argument(
        "rate",
        nargs="?",
        metavar="RATE",
        help="e.g. 2MiB or 20MB (per second), off (unlimited), or config (back to the file)",
    )
    bandwidth.set_defaults(func=cmd_bandwidth)
    audit_cli.register(sub)  # chain-of-custody commands (audit, flag)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dockd.config import ConfigError

    try:
        return int(args.func(args))
    except DaemonUnavailable as exc:
        print(f"dockctl: {exc}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    except NoSocket as exc:
        print(f"dockctl: {exc}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    except AccessDenied as exc:
        print(f"dockctl: {exc}", file=sys.stderr)
        return exitcodes.NOPERM
    except FileNotFoundError as exc:
        print(f"dockctl: {exc}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    except PermissionError as exc:
        print(
            f"dockctl: permission denied: {exc.filename or exc} (run as root or the dockd group)",
            file=sys.stderr,
        )
        return exitcodes.NOPERM
    except ConfigError as exc:
        print(f"dockctl: configuration error: {exc}", file=sys.stderr)
        return exitcodes.CONFIG


if __name__ == "__main__":
    sys.exit(main())
