"""Retention options shared by `dockd serve` (with an S3 store) and `dockd store`."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

from dockd.receiver.audit import FileServerAudit
from dockd.receiver.retention.policy import RetentionPolicy

if TYPE_CHECKING:
    from dockd.receiver.retention.lock import ObjectLockRetention

DEFAULT_AUDIT_DIR = Path("/var/lib/dockd-receiver")  # systemd StateDirectory of dockd-serve


def _days(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of days >= 1: {text!r}")
    return int(text)


def _seconds(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds >= 1: {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--retention-days",
        type=_days,
        default=RetentionPolicy.retention_days,
        metavar="N",
        help="S3 store: routine footage is deleted N days after upload unless flagged as "
        f"evidence (default {RetentionPolicy.retention_days})",
    )
    parser.add_argument(
        "--abandoned-upload-days",
        type=_days,
        default=RetentionPolicy.abandoned_upload_days,
        metavar="N",
        help="S3 store: abort multipart uploads unfinished after N days; an unfinished upload "
        "expires before then, however active; keep it above --expire-after "
        f"(default {RetentionPolicy.abandoned_upload_days})",
    )
    parser.add_argument(
        "--audit-dir",
        type=Path,
        default=DEFAULT_AUDIT_DIR,
        metavar="DIR",
        help=f"the server's audit log (flag, unflag, expiry) lives here (default {DEFAULT_AUDIT_DIR})",
    )
    parser.add_argument(
        "--lifecycle-day-seconds",
        type=_seconds,
        default=86400,
        metavar="S",
        help="length of a lifecycle day: 86400, or `rgw lc debug interval` on a test cluster",
    )


def policy_from_args(args: argparse.Namespace) -> RetentionPolicy:
    return RetentionPolicy(
        retention_days=args.retention_days,
        abandoned_upload_days=args.abandoned_upload_days,
        day=dt.timedelta(seconds=args.lifecycle_day_seconds),
    )


def retention_from_args(
    args: argparse.Namespace, work_bucket: str | None = None
) -> ObjectLockRetention:
    """The `ObjectRetention` an S3-backed `dockd serve` hands to its store."""
    from dockd.receiver.retention.lock import ObjectLockRetention

    return ObjectLockRetention(
        policy_from_args(args), FileServerAudit(args.audit_dir), work_bucket=work_bucket
    )
