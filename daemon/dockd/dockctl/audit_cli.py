"""`dockctl audit verify`, `dockctl audit export --since T` and `dockctl flag CLIP`.

`audit verify` and `audit export` read the journal read-only (`--state-dir`, or the config's
state_dir), so they work with the daemon stopped. `flag` goes through the running daemon's
control socket: the daemon must run (the flag must reach the clip before its upload is created,
and only the daemon knows whether that is under way).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dockd import canonical, exitcodes
from dockd.control.client import DaemonUnavailable
from dockd.custody import audit
from dockd.dockctl.common import cmd_action, config_path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = sub.add_parser("audit", help="the dock's hash-chained audit log")
    actions = group.add_subparsers(dest="audit_command", required=True)
    verify = actions.add_parser(
        "verify", help="check the chain: exit 0 intact, 1 edited/deleted/reordered/truncated"
    )
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=cmd_verify)
    export = actions.add_parser("export", help="write audit records as JSON lines")
    export.add_argument(
        "--since",
        metavar="T",
        help="only records at or after T (RFC 3339, e.g. 2026-11-21T09:00:00Z, or a date)",
    )
    export.add_argument("--output", type=Path, metavar="FILE", help="write here, not stdout")
    export.set_defaults(func=cmd_export)
    flag = sub.add_parser(
        "flag", help="mark a clip as evidence before it uploads (needs the running daemon)"
    )
    flag.add_argument("clip", type=int, metavar="CLIP", help="clip id (dockctl clips)")
    flag.set_defaults(func=cmd_flag, action="flag")


def _state_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "state_dir", None) is not None:
        return Path(args.state_dir)
    from dockd.config import load

    return load(config_path(args)).dock.state_dir


def _manifest_anchors(state_dir: Path) -> list[tuple[str, int, str]]:
    """Audit heads the dock's signed manifests carry (copies of them are on the server)."""
    anchors = []
    for path in sorted((state_dir / "manifests").glob("*.json")):
        try:
            head = json.loads(path.read_bytes())["manifest"]["audit"]
            anchors.append((f"manifests/{path.name}", int(head["seq"]), str(head["hash"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged manifest is `dockd verify`'s finding, not the chain's
    return anchors


def cmd_verify(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    try:
        head = audit.read_head(state_dir)
    except ValueError as exc:
        print(f"dockctl audit verify: FAIL: {exc}", file=sys.stderr)
        return exitcodes.FAILURE
    conn = audit.open_readonly(state_dir)
    try:
        anchors = _manifest_anchors(state_dir)
        if head is not None:
            anchors.append((audit.HEAD_FILE, *head))
        try:
            verdict = audit.verify_chain(audit.rows(conn), anchors)
        except ValueError as exc:
            print(f"dockctl audit verify: FAIL: {exc}", file=sys.stderr)
            return exitcodes.FAILURE
    finally:
        conn.close()
    if head is None and verdict.records:
        verdict.problems.append(f"{audit.HEAD_FILE} is missing: the tail cannot be checked")
    if args.json:
        print(
            json.dumps(
                {
                    "ok": verdict.ok,
                    "records": verdict.records,
                    "head": {"seq": verdict.head[0], "hash": verdict.head[1]},
                    "problems": verdict.problems,
                    "notes": verdict.notes,
                },
                indent=2,
            )
        )
    else:
        for note in verdict.notes:
            print(f"note: {note}")
        if verdict.ok:
            print(
                f"audit log intact: {verdict.records} records, head seq {verdict.head[0]} "
                f"{verdict.head[1]}; {len(anchors)} anchor(s) agree"
            )
        else:
            print(f"AUDIT LOG TAMPERED OR DAMAGED ({state_dir / 'journal.db'}):")
            for problem in verdict.problems:
                print(f"  {problem}")
    return exitcodes.OK if verdict.ok else exitcodes.FAILURE


def cmd_export(args: argparse.Namespace) -> int:
    since = None
    if args.since:
        try:
            since = canonical.parse_rfc3339(args.since).timestamp()
        except ValueError:
            print(
                f"dockctl audit export: --since {args.since!r}: not an RFC 3339 time",
                file=sys.stderr,
            )
            return exitcodes.USAGE
    conn = audit.open_readonly(_state_dir(args))
    out = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
    try:
        for line in audit.export(audit.rows(conn), since):
            out.write(line + "\n")
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        sys.stderr.close()
        return exitcodes.OK
    except ValueError as exc:
        print(f"dockctl audit export: {exc}", file=sys.stderr)
        return exitcodes.FAILURE
    finally:
        conn.close()
        if out is not sys.stdout:
            out.close()
    return exitcodes.OK


def cmd_flag(args: argparse.Namespace) -> int:
    try:
        return cmd_action(args)
    except DaemonUnavailable as exc:
        print(
            f"dockctl flag: {exc}; flagging needs the running daemon (start dockd and retry)",
            file=sys.stderr,
        )
        return exitcodes.UNAVAILABLE
