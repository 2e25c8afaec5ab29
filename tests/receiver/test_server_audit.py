"""The server's audit log (issue 15): chained, durable, one writer at a time across processes,
and a verifier that catches an edited, removed or cut-off record."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest
from dockd.cli import main
from dockd.receiver.audit import FLAG, AuditEvent, AuditLogMissing, FileServerAudit

EVENTS = 5


def fill(directory: Path, count: int = EVENTS) -> FileServerAudit:
    audit = FileServerAudit(directory)
    for n in range(count):
        audit.append(AuditEvent(event=FLAG, subject=f"upload u{n}", actor="alice", detail={"n": n}))
    return audit


def test_records_chain_and_verify(tmp_path: Path) -> None:
    audit = fill(tmp_path)
    verdict = audit.verify()
    assert verdict.ok, verdict.problems
    assert verdict.records == EVENTS
    records = audit.records()
    assert [r["seq"] for r in records] == list(range(1, EVENTS + 1))
    assert records[2]["subject"] == "upload u2" and records[2]["actor"] == "alice"


def test_an_edited_record_fails_verification(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(tmp_path)
    with sqlite3.connect(tmp_path / "server-audit.db") as conn:
        text = conn.execute("SELECT record FROM audit WHERE seq = 3").fetchone()[0]
        record = json.loads(text)
        record["detail"]["reason"] = "changed afterwards"
        edited = json.dumps(record, sort_keys=True, separators=(",", ":"))
        conn.execute("UPDATE audit SET record = ? WHERE seq = 3", (edited,))
    assert not FileServerAudit(tmp_path).verify().ok
    assert main(["store", "audit", "--audit-dir", str(tmp_path), "--verify"]) == 1
    assert "record 3: content does not match its hash (edited)" in capsys.readouterr().out


@pytest.mark.parametrize("seq", [2, EVENTS], ids=["middle", "last"])
def test_a_removed_record_fails_verification(tmp_path: Path, seq: int) -> None:
    fill(tmp_path)
    with sqlite3.connect(tmp_path / "server-audit.db") as conn:
        conn.execute("DELETE FROM audit WHERE seq = ?", (seq,))
    # The last one is caught by the head anchor, not by the chain.
    assert not FileServerAudit(tmp_path).verify().ok


def test_verify_command_accepts_an_intact_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(tmp_path)
    assert main(["store", "audit", "--audit-dir", str(tmp_path), "--verify"]) == 0
    assert f"{EVENTS} records" in capsys.readouterr().out


def test_append_once_records_an_event_about_a_subject_only_once(tmp_path: Path) -> None:
    audit = FileServerAudit(tmp_path)
    event = AuditEvent(event="store.expired", subject="upload u1", actor="reconciler")
    assert audit.append_once(event) == 1
    assert audit.append_once(event) is None
    assert audit.append_once(AuditEvent(event="store.expired", subject="upload u2", actor="r")) == 2


def _append_many(directory: str, writer: int, count: int) -> None:
    audit = FileServerAudit(Path(directory))
    for n in range(count):
        audit.append(AuditEvent(event=FLAG, subject=f"upload w{writer}-{n}", actor=f"w{writer}"))


def test_two_processes_appending_at_once_keep_one_unbroken_chain(tmp_path: Path) -> None:
    # `dockd serve` (evidence at upload) and `dockd store flag` write the same log.
    FileServerAudit(tmp_path)
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_append_many, args=(str(tmp_path), w, 25)) for w in range(2)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(60)
        assert process.exitcode == 0
    verdict = FileServerAudit(tmp_path).verify()
    assert verdict.ok, verdict.problems
    assert verdict.records == 50
    assert not verdict.notes  # the head anchor names the last record, not an earlier one


def test_a_deleted_log_is_not_silently_replaced_by_a_new_one(tmp_path: Path) -> None:
    fill(tmp_path)
    for name in ("server-audit.db", "server-audit.db-wal", "server-audit.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    with pytest.raises(AuditLogMissing, match=f"reached seq {EVENTS}"):
        FileServerAudit(tmp_path)
    assert main(["store", "audit", "--audit-dir", str(tmp_path), "--verify"]) == 1


def test_the_log_is_created_at_its_first_record_not_before(tmp_path: Path) -> None:
    # `dockd serve` opens it at start; a server that never records anything (no evidence
    # upload, no flag) must not leave a directory behind, e.g. under /var/lib in a test.
    directory = tmp_path / "not" / "yet"
    audit = FileServerAudit(directory)
    assert not directory.exists()
    assert audit.records() == [] and audit.verify().ok
    audit.append(AuditEvent(event=FLAG, subject="upload u1", actor="alice"))
    assert [r["seq"] for r in audit.records()] == [1]
