"""`dockd store`: evidence decisions on the S3 store, and the server's audit log.

    dockd store flag UPLOAD --reason TEXT            legal hold + retention=evidence
    dockd store unflag UPLOAD --reason TEXT --admin  back to routine (an administrator's act)
    dockd store status UPLOAD                        versions, tags, holds, expiry dates
    dockd store reconcile                            record what the lifecycle rule deleted
    dockd store audit [--verify]                     print / verify the audit log

The S3 options are `dockd serve`'s (`--store s3:URL/BUCKET`, `--s3-credentials`, ...), and
`--retention-days` must be the server's, or the dates shown are wrong. Exit 0 done, 1 refused or
failed (unknown or expired upload, a change that did not stick, a broken audit chain), 2 usage,
69 S3 unreachable, 78 configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dockd import exitcodes
from dockd.receiver.audit import AuditLogError, FileServerAudit
from dockd.receiver.retention import options

if TYPE_CHECKING:  # botocore is the s3 extra's: `dockd` itself must start without it
    from dockd.receiver.retention.evidence import Evidence, UploadStatus
    from dockd.receiver.storage.s3_config import S3Settings

PROG = "dockd store"


def register(sub: Any) -> None:
    """Add `store` and its subcommands to the `dockd` parser."""
    store = sub.add_parser("store", help="flag evidence, show retention, audit (S3 store)")
    commands = store.add_subparsers(dest="store_command", required=True)

    flag = commands.add_parser("flag", help="keep an upload as evidence (legal hold)")
    _upload_arguments(flag)
    flag.set_defaults(func=_run, action=_flag)

    unflag = commands.add_parser("unflag", help="release an upload to routine retention (admin)")
    _upload_arguments(unflag)
    unflag.add_argument(
        "--admin",
        action="store_true",
        help="required: releasing evidence is an administrator's decision",
    )
    unflag.set_defaults(func=_run, action=_unflag)

    status = commands.add_parser("status", help="retention state of one upload")
    _s3_arguments(status)
    status.add_argument("upload", type=_upload_id, metavar="UPLOAD", help=_UPLOAD_HELP)
    status.set_defaults(func=_run, action=_status)

    reconciler = commands.add_parser(
        "reconcile", help="record in the audit log each upload the lifecycle rule deleted"
    )
    _s3_arguments(reconciler)
    reconciler.set_defaults(func=_run, action=_reconcile)

    audit = commands.add_parser("audit", help="print the audit log, or --verify its chain")
    audit.add_argument("--audit-dir", type=Path, default=options.DEFAULT_AUDIT_DIR, metavar="DIR")
    audit.add_argument("--verify", action="store_true", help="check the hash chain and head")
    audit.set_defaults(func=_audit)


_UPLOAD_HELP = "the upload id (the last segment of the tus upload URL)"


def _upload_id(text: str) -> str:
    from dockd.receiver.storage.api import is_upload_id

    if not is_upload_id(text):
        raise argparse.ArgumentTypeError(f"not an upload id (32 base64url characters): {text!r}")
    return text


def _upload_arguments(parser: argparse.ArgumentParser) -> None:
    _s3_arguments(parser)
    parser.add_argument("upload", type=_upload_id, metavar="UPLOAD", help=_UPLOAD_HELP)
    parser.add_argument("--reason", required=True, help="why (recorded in the audit log)")


def _s3_arguments(parser: argparse.ArgumentParser) -> None:
    """`dockd serve`'s S3 options (one definition, so both reach the bucket the same way)."""
    from dockd.receiver import cli as serve_cli

    parser.add_argument("--store", required=True, metavar="s3:URL/BUCKET", help="the S3 store")
    serve_cli.add_s3_arguments(parser)
    parser.add_argument(
        "--allow-plaintext", action="store_true", help="plain http to a non-loopback S3"
    )
    options.add_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    from dockd.crypto.keys import KeyFileError
    from dockd.receiver import cli as serve_cli
    from dockd.receiver.storage.api import StoreError, StoreUnavailable
    from dockd.receiver.storage.s3_config import S3ConfigError, S3Settings, make_client

    try:
        from dockd.receiver.storage.s3_errors import s3_call
    except ImportError:
        return _fail(exitcodes.CONFIG, "the S3 store needs boto3: pip install 'dockd[s3]'")
    try:
        settings = S3Settings.from_spec(args.store, **serve_cli.s3_options(args))
        client = make_client(settings)
        audit = FileServerAudit(args.audit_dir)
    except (S3ConfigError, KeyFileError, AuditLogError, OSError) as exc:
        return _fail(exitcodes.CONFIG, str(exc))
    try:
        return int(s3_call(args.action, args, client, settings, audit) or 0)
    except AuditLogError as exc:  # a ValueError too, but not the operator's typing
        return _fail(exitcodes.CONFIG, str(exc))
    except (ValueError, argparse.ArgumentTypeError) as exc:
        return _fail(exitcodes.USAGE, str(exc))
    except StoreUnavailable as exc:
        return _fail(exitcodes.UNAVAILABLE, str(exc))
    except StoreError as exc:
        return _fail(exitcodes.FAILURE, str(exc))
    except (OSError, sqlite3.Error) as exc:  # the audit log could not be written
        return _fail(
            exitcodes.FAILURE,
            f"the change may be made in S3 but its audit record failed ({exc}); fix the "
            f"audit directory {args.audit_dir} and run the same command again",
        )
    finally:
        client.close()  # its pooled connections to the gateway


def _evidence(
    args: argparse.Namespace, client: Any, settings: S3Settings, audit: FileServerAudit
) -> Evidence:
    from dockd.receiver.retention.evidence import Evidence

    return Evidence(
        client, settings.bucket, options.policy_from_args(args), audit, settings.work_bucket
    )


def _flag(args: argparse.Namespace, client: Any, settings: S3Settings, audit: Any) -> int:
    done = _evidence(args, client, settings, audit).flag(
        args.upload, reason=args.reason, actor=operator()
    )
    print(f"{PROG}: upload {args.upload} flagged as evidence (legal hold on {len(done)} versions)")
    return exitcodes.OK


def _unflag(args: argparse.Namespace, client: Any, settings: S3Settings, audit: Any) -> int:
    if not args.admin:
        return _fail(exitcodes.USAGE, "unflag releases evidence: it needs --admin")
    evidence = _evidence(args, client, settings, audit)
    done = evidence.unflag(args.upload, reason=args.reason, actor=operator())
    print(
        f"{PROG}: upload {args.upload} is routine again ({len(done)} versions released); "
        f"it is deleted {args.retention_days} days after upload, at once if that has passed"
    )
    return exitcodes.OK


def _status(args: argparse.Namespace, client: Any, settings: S3Settings, audit: Any) -> int:
    print(describe(_evidence(args, client, settings, audit).status(args.upload)))
    return exitcodes.OK


def _reconcile(args: argparse.Namespace, client: Any, settings: S3Settings, audit: Any) -> int:
    from dockd.receiver.retention.reconcile import reconcile

    report = reconcile(
        client,
        settings.bucket,
        options.policy_from_args(args),
        audit,
        work_bucket=settings.work_bucket,
    )
    print(
        f"{PROG}: {report.checked} due checked, {len(report.expired)} newly expired, "
        f"{report.still_there} due but not yet deleted by the lifecycle rule"
    )
    for upload in report.expired:
        print(f"expired {upload}")
    return exitcodes.OK


def _audit(args: argparse.Namespace) -> int:
    if not (args.audit_dir / "server-audit.db").exists():
        return _fail(exitcodes.FAILURE, f"no audit log in {args.audit_dir}")
    audit = FileServerAudit(args.audit_dir)
    if not args.verify:
        for record in audit.records():
            print(json.dumps(record, sort_keys=True, ensure_ascii=False))
        return exitcodes.OK
    verdict = audit.verify()
    for note in verdict.notes:
        print(f"note: {note}")
    if not verdict.ok:
        for problem in verdict.problems:
            print(f"PROBLEM: {problem}")
        return _fail(exitcodes.FAILURE, f"audit log in {args.audit_dir} does NOT verify")
    print(f"{PROG}: audit log verifies: {verdict.records} records, head seq {verdict.head[0]}")
    return exitcodes.OK


def describe(status: UploadStatus) -> str:
    lines = [f"upload {status.upload}: {status.retention}"]
    if status.hidden:
        lines.append("  clip HIDDEN behind a delete marker (expired; flag now to keep it)")
    for v in status.versions:
        current = "current" if v.current else "noncurrent"
        lines.append(
            f"  {v.key} version {v.version_id} ({current}, {v.size} bytes, "
            f"stored {v.last_modified.isoformat()}): tag retention={v.retention or '(none)'}, "
            f"legal hold {'ON' if v.hold else 'OFF'}"
        )
        if v.hidden_at is not None and v.deleted_at is not None:
            lines.append(
                f"    expires {v.hidden_at.isoformat()} (hidden), "
                f"data deleted from {v.deleted_at.isoformat()} unless flagged before"
            )
    if status.index is None:
        lines.append("  (not in the retention index)")
    return "\n".join(lines)


def operator() -> str:
    """Who runs this command: the kernel's uid, and sudo's claim beside it (as `dockctl hold`
    records it, control/actor.py)."""
    from dockd.control import actor
    from dockd.control.client import operator_headers

    claim = actor.claim_from_headers(operator_headers())
    peer = actor.Peer(pid=os.getpid(), uid=os.getuid())
    return actor.describe(peer, claim, loginuid=actor.login_uid(os.getpid()))


def _fail(code: int, message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code
