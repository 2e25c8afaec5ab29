"""The hash-chained audit log: every transition is recorded, and tampering is detected by
`dockctl audit verify` (exit 1) whether a record is edited, deleted, reordered or cut off."""

import itertools
import json
import sqlite3

import pytest
from dockd.custody import audit
from dockd.dockctl import cli as dockctl
from dockd.journal import SCHEMA_VERSION, Journal, JournalError
from support.clips import hashed, new_clip, uploading


def _new(path=b"DCIM/A.MP4"):
    return new_clip(path, metadata={"category": "traffic"})


@pytest.fixture
def state(tmp_path):
    """A journal with a few clips through their states: about a dozen audit records."""
    journal = Journal.open(tmp_path)
    for name in (b"DCIM/A.MP4", b"DCIM/B.MP4", b"DCIM/C.MP4"):
        clip = journal.add_clip(_new(name))
        hashed(journal, clip.id)
    journal.hold(1, actor="uid:1000")
    journal.audit("config.loaded", "/etc/dockd/dockd.toml", detail={"sha256": "c" * 64})
    journal.close()
    return tmp_path


def _verify(state_dir, capsys):
    code = dockctl.main(["--state-dir", str(state_dir), "audit", "verify"])
    return code, capsys.readouterr().out


def _records(state_dir):
    conn = sqlite3.connect(state_dir / "journal.db")
    try:
        return conn.execute("SELECT seq, record, hash FROM audit ORDER BY seq").fetchall()
    finally:
        conn.close()


def _sql(state_dir, *statements):
    conn = sqlite3.connect(state_dir / "journal.db", isolation_level=None)
    try:
        for statement, params in statements:
            conn.execute(statement, params)
    finally:
        conn.close()


def test_transitions_and_operator_actions_are_chained(state, capsys):
    rows = _records(state)
    events = [json.loads(r[1])["event"] for r in rows]
    assert events[:2] == ["clip.discovered", "clip.hashed"]
    assert events[-2:] == ["clip.held", "config.loaded"]
    held = json.loads(rows[-2][1])
    assert (held["actor"], held["component"], held["subject"]) == ("uid:1000", "operator", "clip 1")
    assert held["detail"]["from"] == "HASHED" and held["detail"]["to"] == "HELD"
    assert json.loads(rows[0][1])["prev"] == audit.GENESIS
    for (_, before, digest), (_, after, _) in itertools.pairwise(rows):
        assert json.loads(after)["prev"] == digest == audit.record_hash(json.loads(before))
    code, out = _verify(state, capsys)
    assert code == 0 and f"{len(rows)} records" in out


def test_edit_is_detected(state, capsys):
    seq, text, _ = _records(state)[3]
    record = json.loads(text)
    record["outcome"] = "failure"
    # even re-hashing the edited record does not help: the next record's prev names the old hash
    edited = json.dumps(record, sort_keys=True, separators=(",", ":"))
    _sql(
        state,
        (
            "UPDATE audit SET record = ?, hash = ? WHERE seq = ?",
            (edited, audit.record_hash(record), seq),
        ),
    )
    code, out = _verify(state, capsys)
    assert code == 1
    assert f"record {seq + 1}: prev does not equal" in out


def test_deletion_is_detected(state, capsys):
    _sql(state, ("DELETE FROM audit WHERE seq = 4", ()))
    code, out = _verify(state, capsys)
    assert code == 1 and "missing records (deleted)" in out


def test_reordering_is_detected(state, capsys):
    rows = _records(state)
    (s2, t2, h2), (s3, t3, h3) = rows[1], rows[2]
    _sql(
        state,
        ("UPDATE audit SET record = ?, hash = ? WHERE seq = ?", (t3, h3, s2)),
        ("UPDATE audit SET record = ?, hash = ? WHERE seq = ?", (t2, h2, s3)),
    )
    code, out = _verify(state, capsys)
    assert code == 1 and "reordered" in out


def test_truncation_of_the_tail_is_detected(state, capsys):
    last = _records(state)[-1][0]
    _sql(state, ("DELETE FROM audit WHERE seq >= ?", (last - 1,)))
    code, out = _verify(state, capsys)
    assert code == 1 and "truncated" in out


def test_removing_the_head_anchor_is_reported(state, capsys):
    (state / audit.HEAD_FILE).unlink()
    code, out = _verify(state, capsys)
    assert code == 1 and "audit.head is missing" in out


def test_export_since_writes_json_lines(state, capsys, tmp_path):
    rows = _records(state)
    cut = json.loads(rows[-2][1])["time"]
    out_file = tmp_path / "export.jsonl"
    code = dockctl.main(
        ["--state-dir", str(state), "audit", "export", "--since", cut, "--output", str(out_file)]
    )
    assert code == 0
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["seq"] for r in lines] == [rows[-2][0], rows[-1][0]]
    assert lines[-1]["hash"] == rows[-1][2]


def test_flag_only_before_the_upload_exists_and_is_audited(tmp_path):
    journal = Journal.open(tmp_path)
    clip = journal.add_clip(_new())
    assert journal.flag(clip.id, actor="uid:1001").evidence is True
    uploading(journal, clip.id, "http://x/files/u")
    other = journal.add_clip(_new(b"DCIM/B.MP4"))
    uploading(journal, other.id, "http://x/files/v")
    with pytest.raises(JournalError, match="only before it starts uploading"):
        journal.flag(other.id, actor="uid:1001")
    assert journal.get(other.id).evidence is False
    flags = [json.loads(r[1]) for r in _records(tmp_path) if '"operator.flag"' in r[1]]
    assert [(f["outcome"], f["actor"]) for f in flags] == [
        ("ok", "uid:1001"),
        ("refused", "uid:1001"),
    ]
    journal.close()


def test_schema_1_journal_migrates_and_keeps_its_clips(tmp_path):
    from dockd import journal as journal_module

    conn = sqlite3.connect(tmp_path / "journal.db", isolation_level=None)
    for statement in journal_module.schema.SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(
        "INSERT INTO clips(camera, model, bay, rel_path, size, mtime_ns, dev, ino, session, state, "
        "recorded_at, recorded_at_source, discovered_at, updated_at) "
        "VALUES ('CAM1', 'm', 'bay-1', x'41', 1, 1, 1, 1, 's', 'HASHED', 't', 'mtime', 0, 0)"
    )
    conn.execute("PRAGMA user_version=1")
    conn.close()
    journal = Journal.open(tmp_path)
    assert journal.get(1).camera == "CAM1"
    assert journal.manifest(1) == (None, None)
    assert journal.audit_head()[0] == 1  # the migration itself is the first audit record
    journal.close()
    version = sqlite3.connect(tmp_path / "journal.db").execute("PRAGMA user_version").fetchone()
    assert version[0] == SCHEMA_VERSION == 4
