"""The retention policy without an S3 endpoint: what counts as evidence, the lifecycle rules,
the creation arguments (issue 15). The behaviour against RGW is tests/ceph/test_retention.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from dockd.receiver.audit import FileServerAudit
from dockd.receiver.retention.lock import ObjectLockRetention
from dockd.receiver.retention.policy import (
    EVIDENCE,
    ROUTINE,
    RetentionPolicy,
    same_rules,
    with_retention_tag,
)


@pytest.mark.parametrize("value", ["true", "TRUE", " True ", "yes", "1", "on"])
def test_the_usual_spellings_of_true_mark_evidence(value: str) -> None:
    assert RetentionPolicy().classify({"evidence": value}) == EVIDENCE


@pytest.mark.parametrize(
    "metadata",
    [{}, {"evidence": None}, {"evidence": ""}, {"evidence": "false"}, {"evidence": "maybe"}],
)
def test_anything_else_is_routine(metadata: dict[str, str | None]) -> None:
    assert RetentionPolicy().classify(metadata) == ROUTINE


def test_expiry_rule_selects_routine_by_tag_and_really_deletes_the_data() -> None:
    rules = {rule["ID"]: rule for rule in RetentionPolicy(retention_days=31).lifecycle_rules()}
    expiry = next(rule for rule in rules.values() if "Expiration" in rule)
    assert expiry["Filter"] == {"Tag": {"Key": "retention", "Value": "routine"}}
    assert expiry["Expiration"] == {"Days": 31}
    # Without it, a versioned bucket only hides "expired" footage behind a delete marker.
    assert expiry["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
    abandoned = next(r for r in rules.values() if "AbortIncompleteMultipartUpload" in r)
    assert "Tag" not in abandoned["Filter"]  # S3 refuses the abort action in a tag-filtered rule
    assert abandoned["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 14}


def test_rules_compare_equal_whatever_the_order_rgw_returns_them_in() -> None:
    wanted = RetentionPolicy().lifecycle_rules()
    returned = [dict(reversed(list(rule.items()))) for rule in reversed(wanted)]
    assert same_rules(returned, wanted)
    assert not same_rules(RetentionPolicy(retention_days=30).lifecycle_rules(), wanted)


def test_routine_dates_hidden_after_retention_days_then_deleted_a_day_later() -> None:
    policy = RetentionPolicy(retention_days=31)
    stored = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    assert policy.hidden_at(stored) == dt.datetime(2026, 2, 1, 12, tzinfo=dt.UTC)
    assert policy.deleted_at(stored) == dt.datetime(2026, 2, 2, 12, tzinfo=dt.UTC)


def test_retention_of_zero_days_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetentionPolicy(retention_days=0)


def test_creation_args_hold_evidence_and_tag_everything(tmp_path: Path) -> None:
    retention = ObjectLockRetention(RetentionPolicy(), FileServerAudit(tmp_path))
    assert retention.creation_args({"evidence": "true"}) == {
        "Tagging": "retention=evidence",
        "ObjectLockLegalHoldStatus": "ON",
    }
    assert retention.creation_args({"evidence": "false"}) == {"Tagging": "retention=routine"}


def test_retagging_keeps_the_other_tags() -> None:
    tags = [{"Key": "case", "Value": "X1"}, {"Key": "retention", "Value": "routine"}]
    assert with_retention_tag(tags, EVIDENCE) == [
        {"Key": "case", "Value": "X1"},
        {"Key": "retention", "Value": "evidence"},
    ]
