"""What is kept, for how long, and the bucket lifecycle rules that carry it out.

Every object in the evidence bucket carries the tag `retention=routine` or `retention=evidence`.
The lifecycle rule expires only `routine` ones: `Expiration` after `retention_days` hides the
object behind a delete marker, `NoncurrentVersionExpiration` one day later removes the data
(on a versioned bucket, which every Object Lock bucket is, `Expiration` alone deletes nothing:
docs/RECEIVER.md, "S3 backend: client and RGW facts"). That day in between is also a grace
period: `dockd store flag` still rescues the footage then (it removes the delete marker).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("dockd.receiver.retention")

TAG_KEY = "retention"
ROUTINE = "routine"
EVIDENCE = "evidence"

EVIDENCE_METADATA_KEY = "evidence"
# The dock sends "true"/"false" (pipeline.py); other tus clients get the usual spellings of yes.
_EVIDENCE_VALUES = frozenset({"true", "yes", "1", "on"})
_ROUTINE_VALUES = frozenset({"", "false", "no", "0", "off"})

EXPIRY_RULE_ID = "dockd-routine-expiry"
ABANDONED_RULE_ID = "dockd-abandoned-multipart"
CLIP_PREFIX = "clips/"


@dataclass(frozen=True)
class RetentionPolicy:
    """How long routine footage lives; what marks an upload as evidence.

    `day` is the length of a lifecycle day: 24 h in production, `rgw lc debug interval` seconds
    on a test cluster, so that the reconciler's "is it due?" matches what RGW does.
    `abandoned_upload_days` aborts multipart uploads nobody finished; it must be longer than the
    server's `--expire-after` (7 days by default), or RGW would abort an upload a dock can still
    resume.
    """

    retention_days: int = 31
    abandoned_upload_days: int = 14
    day: dt.timedelta = dt.timedelta(days=1)

    def __post_init__(self) -> None:
        if self.retention_days < 1:
            raise ValueError(f"retention_days must be at least 1, not {self.retention_days}")
        if self.abandoned_upload_days < 1:
            raise ValueError(
                f"abandoned_upload_days must be at least 1, not {self.abandoned_upload_days}"
            )

    def classify(self, metadata: Mapping[str, str | None]) -> str:
        """`evidence` when the upload's metadata says evidence=true (or yes/1/on), else routine."""
        raw = metadata.get(EVIDENCE_METADATA_KEY)
        value = (raw or "").strip().lower()
        if value in _EVIDENCE_VALUES:
            return EVIDENCE
        if value not in _ROUTINE_VALUES:
            # Not a spelling we know: routine, as documented, but say so where someone looks.
            log.warning("retention.evidence_value_unrecognised", value=raw[:64] if raw else raw)
        return ROUTINE

    def hidden_at(self, last_modified: dt.datetime) -> dt.datetime:
        """When the lifecycle rule puts a delete marker on a routine version (at the earliest)."""
        return last_modified + self.retention_days * self.day

    def deleted_at(self, last_modified: dt.datetime) -> dt.datetime:
        """When the data of a routine version is gone (a day after it was hidden)."""
        return self.hidden_at(last_modified) + self.day

    def lifecycle_rules(self) -> list[dict[str, Any]]:
        """The bucket's lifecycle rules, in the form GetBucketLifecycleConfiguration returns."""
        return [
            {
                "ID": EXPIRY_RULE_ID,
                "Status": "Enabled",
                "Filter": {"Tag": {"Key": TAG_KEY, "Value": ROUTINE}},
                "Expiration": {"Days": self.retention_days},
                # One day after the delete marker: the data really goes, and a late flag
                # can still rescue it until then.
                "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
            },
            {
                # S3 forbids AbortIncompleteMultipartUpload in a rule filtered on tags, so
                # it has its own rule, on the clip prefix.
                "ID": ABANDONED_RULE_ID,
                "Status": "Enabled",
                "Filter": {"Prefix": CLIP_PREFIX},
                "AbortIncompleteMultipartUpload": {
                    "DaysAfterInitiation": self.abandoned_upload_days
                },
            },
        ]


def is_evidence_tagging(tags: list[dict[str, str]]) -> bool:
    return any(t.get("Key") == TAG_KEY and t.get("Value") == EVIDENCE for t in tags)


def retention_tag(tags: list[dict[str, str]]) -> str | None:
    for tag in tags:
        if tag.get("Key") == TAG_KEY:
            return tag.get("Value")
    return None


def with_retention_tag(tags: list[dict[str, str]], value: str) -> list[dict[str, str]]:
    """The tag set with `retention` set to `value`, other tags kept (PutObjectTagging replaces
    the whole set)."""
    return [t for t in tags if t.get("Key") != TAG_KEY] + [{"Key": TAG_KEY, "Value": value}]


def same_rules(current: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> bool:
    """Whether the bucket already has exactly these rules (order and key order do not matter)."""

    def canon(rules: list[dict[str, Any]]) -> list[Any]:
        return sorted((_freeze(rule) for rule in rules), key=repr)

    return canon(current) == canon(wanted)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value
