"""Noticing what the lifecycle rule deleted, and recording each expiry in the audit log once.

RGW deletes routine footage inside the gateway, telling nobody. The reconciler walks the
retention index (one entry per completed upload): an entry that is routine, not yet marked
expired and past its deletion date has its clip's versions listed; if none is left (nothing, or
only a delete marker), the clip has really gone and the reconciler appends `store.expired` to the
audit log, then marks the index entry. The audit append is "once per upload" (`append_once`), so
a crash between the two, or two reconcilers at once, still gives exactly one record; the mark
only saves the next pass a listing. Run it as `dockd store reconcile` (e.g. from a daily timer);
it reads and writes nothing an upload in progress uses.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from dockd import canonical
from dockd.receiver.audit import EXPIRED, AuditEvent, ServerAudit, upload_subject
from dockd.receiver.retention import objects
from dockd.receiver.retention.index import RetentionIndex, clip_key
from dockd.receiver.retention.policy import ROUTINE, RetentionPolicy

log = structlog.get_logger("dockd.receiver.retention")

RECONCILER_ACTOR = "dockd store reconcile"


@dataclass
class ReconcileReport:
    checked: int = 0
    expired: list[str] = field(default_factory=list)  # newly recorded this pass
    still_there: int = 0  # due, but RGW has not deleted the data yet


def reconcile(
    client: Any,
    bucket: str,
    policy: RetentionPolicy,
    audit: ServerAudit,
    *,
    work_bucket: str | None = None,
    now: dt.datetime | None = None,
) -> ReconcileReport:
    when = now or dt.datetime.now(dt.UTC)
    index = RetentionIndex(client, bucket, work_bucket)
    report = ReconcileReport()
    for upload in index.uploads():
        entry = index.get(upload)
        if entry is None or entry.expired is not None or entry.retention != ROUTINE:
            continue
        completed = canonical.parse_rfc3339(entry.completed) if entry.completed else None
        if completed is not None and when < policy.deleted_at(completed):
            continue
        report.checked += 1
        history = objects.history(client, bucket, clip_key(upload))
        if history.versions:
            report.still_there += 1
            continue
        recorded = audit.append_once(
            AuditEvent(
                event=EXPIRED,
                subject=upload_subject(upload),
                actor=RECONCILER_ACTOR,
                detail={
                    "bucket": bucket,
                    "key": clip_key(upload),
                    "version_id": entry.version_id,
                    "completed": entry.completed,
                    "retention_days": policy.retention_days,
                },
            )
        )
        index.put(entry.with_changes(expired=canonical.rfc3339(time.time())))
        if recorded is not None:
            report.expired.append(upload)
            log.info("retention.expired", upload=upload)
    return report
