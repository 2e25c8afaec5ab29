"""The journal: guarded transitions, durable facts, sealed secrets, refusal of damaged files."""

import sqlite3
import time

import pytest
from dockd.journal import Journal, JournalError, State
from support.clips import confirmed, new_clip, uploading


def _new(path=b"DCIM/A.MP4", size=10, mtime=1, evidence=False, camera="CAM1"):
    return new_clip(path, size=size, mtime_ns=mtime, evidence=evidence, camera=camera)


def test_happy_path_and_history(tmp_path):
    journal = Journal.open(tmp_path)
    clip = journal.add_clip(_new())
    assert clip.state is State.DISCOVERED
    record = confirmed(journal, clip.id)
    assert record.state is State.CONFIRMED
    with pytest.raises(JournalError):  # the key material is erased once confirmed
        journal.secrets(clip.id)
    assert journal.mark_wiped(clip.id).state is State.WIPED
    states = [row[2] for row in journal.history(clip.id)]
    assert states == ["DISCOVERED", "HASHED", "UPLOADING", "UPLOADED", "CONFIRMED", "WIPED"]


def test_wipe_is_refused_unless_confirmed(tmp_path):
    journal = Journal.open(tmp_path)
    clip = journal.add_clip(_new())
    uploading(journal, clip.id)
    with pytest.raises(JournalError, match="not allowed from UPLOADING"):
        journal.mark_wiped(clip.id)
    with pytest.raises(JournalError):
        journal.mark_confirmed(clip.id, {"policy": "offset"})  # must be UPLOADED first
    assert journal.get(clip.id).state is State.UPLOADING


def test_state_survives_reopen_and_secrets_are_sealed(tmp_path):
    journal = Journal.open(tmp_path)
    clip = journal.add_clip(_new())
    uploading(journal, clip.id, secrets=b"S" * 32)
    journal.close()
    raw = (
        sqlite3.connect(tmp_path / "journal.db")
        .execute("SELECT sealed_secrets FROM clips")
        .fetchone()[0]
    )
    assert b"S" * 32 not in raw  # not stored in clear
    reopened = Journal.open(tmp_path)
    record = reopened.get(clip.id)
    assert (record.state, record.upload_url) == (State.UPLOADING, "http://x/files/u")
    assert reopened.secrets(clip.id) == b"S" * 32


def test_failed_resumes_where_the_facts_say(tmp_path):
    journal = Journal.open(tmp_path)
    clip = journal.add_clip(_new())
    uploading(journal, clip.id)
    failed = journal.mark_failed(clip.id, "server down", retry_at=0)
    assert (failed.state, failed.reason, failed.attempts) == (State.FAILED, "server down", 1)
    assert journal.resume_failed(clip.id).state is State.UPLOADING


def test_hold_release_and_priority_order(tmp_path):
    journal = Journal.open(tmp_path)
    old = journal.add_clip(_new(b"a", mtime=1))
    flagged = journal.add_clip(_new(b"b", mtime=2, evidence=True))
    order = [c.id for c in journal.workable(["CAM1"], now=0)]
    assert order == [flagged.id, old.id]
    journal.hold(old.id, actor="uid:1000")
    assert [c.id for c in journal.workable(["CAM1"], now=0)] == [flagged.id]
    assert journal.release(old.id, actor="uid:1000").state is State.DISCOVERED


def test_one_live_row_per_file_version(tmp_path):
    journal = Journal.open(tmp_path)
    clip = journal.add_clip(_new())
    with pytest.raises(sqlite3.IntegrityError):
        journal.add_clip(_new())
    confirmed(journal, clip.id)
    journal.mark_wiped(clip.id)
    assert journal.add_clip(_new()).id != clip.id  # next shift reuses the name: a new clip


def test_damaged_or_foreign_journal_is_refused(tmp_path):
    (tmp_path / "journal.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalError, match="damaged"):
        Journal.open(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    conn = sqlite3.connect(other / "journal.db")
    conn.execute("CREATE TABLE x (y)")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="not a dockd journal"):
        Journal.open(other)
    newer = tmp_path / "newer"
    Journal.open(newer).close()
    conn = sqlite3.connect(newer / "journal.db")
    conn.execute("PRAGMA user_version=99")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="newer"):
        Journal.open(newer)


def test_sealing_key_must_be_private(tmp_path):
    Journal.open(tmp_path).close()
    (tmp_path / "journal.key").chmod(0o644)
    with pytest.raises(Exception, match="chmod 600"):
        Journal.open(tmp_path)


def test_a_journal_that_looks_empty_is_damaged_not_new(tmp_path):
    journal = Journal.open(tmp_path)
    journal.add_clip(_new())
    journal.close()
    db = tmp_path / "journal.db"
    head = db.read_bytes()[:2048]  # less than one page: SQLite would call it an empty database
    db.write_bytes(head)
    for extra in ("journal.db-wal", "journal.db-shm"):
        (tmp_path / extra).unlink(missing_ok=True)
    with pytest.raises(JournalError, match="damaged"):
        Journal.open(tmp_path)


def test_a_zero_byte_journal_is_new(tmp_path):
    (tmp_path / "journal.db").write_bytes(b"")  # a crash right after the file was created
    journal = Journal.open(tmp_path)
    assert journal.all_clips() == []
    assert journal.add_clip(_new()).state is State.DISCOVERED  # a working, empty journal


def test_holding_evidence_needs_force_and_keeps_the_reason(tmp_path):
    journal = Journal.open(tmp_path)
    flagged = journal.add_clip(_new(evidence=True))
    with pytest.raises(JournalError, match=r"evidence.*--force"):
        journal.hold(flagged.id, actor="alice (uid 1000)", reason="court order")
    assert journal.get(flagged.id).state is State.DISCOVERED
    held = journal.hold(flagged.id, actor="alice (uid 1000)", reason="court order", force=True)
    assert (held.state, held.reason) == (State.HELD, "court order")
    assert journal.history(flagged.id)[-1][3:] == ("alice (uid 1000)", "forced: court order")


def test_retry_now_asks_again_for_an_uploaded_clips_confirmation(tmp_path):
    journal = Journal.open(tmp_path)
    clip = journal.add_clip(_new())
    uploading(journal, clip.id)
    journal.mark_uploaded(clip.id)
    journal.note(clip.id, "server receipt rejected: ...", retry_at=2e9)
    retried = journal.retry_now(clip.id, actor="uid 0")
    assert (retried.state, retried.retry_at, retried.reason) == (State.UPLOADED, None, None)
    assert [c.id for c in journal.workable(["CAM1"], now=0)] == [clip.id]  # picked up now


def test_dismiss_only_closes_quarantined_rows_with_a_reason(tmp_path):
    journal = Journal.open(tmp_path)
    clip = journal.add_clip(_new())
    with pytest.raises(JournalError, match="not allowed from DISCOVERED"):
        journal.dismiss(clip.id, actor="uid 0", reason="gone")
    journal.quarantine(clip.id, "unreadable on camera: No such file or directory")
    with pytest.raises(JournalError, match="needs a reason"):
        journal.dismiss(clip.id, actor="uid 0", reason="  ")
    dismissed = journal.dismiss(clip.id, actor="alice (uid 1000)", reason="file deleted on camera")
    assert dismissed.state is State.DISMISSED
    assert journal.history(clip.id)[-1][1:] == (
        "QUARANTINED",
        "DISMISSED",
        "alice (uid 1000)",
        "file deleted on camera",
    )
    with pytest.raises(JournalError):  # terminal: no way back to work
        journal.release(clip.id, actor="uid 0")
    assert journal.workable(["CAM1"], now=0) == []


def test_sealing_key_with_a_wrong_mode_is_a_journal_error(tmp_path):
    Journal.open(tmp_path).close()
    (tmp_path / "journal.key").chmod(0o644)
    with pytest.raises(JournalError, match=r"journal.key.*0644.*chmod 600"):
        Journal.open(tmp_path)


def test_secure_delete_is_set_explicitly(tmp_path, monkeypatch):
    """Freed pages are zeroed whatever this SQLite build's default: a build without
    SQLITE_SECURE_DELETE is simulated by switching it off on every new connection."""
    real_connect = sqlite3.connect

    def connect_without_default(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        conn.execute("PRAGMA secure_delete=OFF")
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect_without_default)
    journal = Journal.open(tmp_path)
    assert journal._conn.execute("PRAGMA secure_delete").fetchone()[0] == 1


def test_a_restart_asks_again_at_once_for_clips_waiting_on_the_server(tmp_path):
    """A new [server] confirm policy or receipt key applies at the next start, not after the
    stored recheck time (issue 11, operator truth)."""
    journal = Journal.open(tmp_path)
    waiting = journal.add_clip(new_clip(b"DCIM/W.MP4"))
    uploading(journal, waiting.id)
    journal.mark_uploaded(waiting.id)
    journal.note(waiting.id, "server receipt rejected: ...", time.time() + 300)
    failed = journal.add_clip(new_clip(b"DCIM/F.MP4"))
    journal.mark_failed(failed.id, "network", time.time() + 300)
    assert journal.workable(["CAM1"], time.time()) == []
    assert journal.ask_again((State.UPLOADED, State.CONFIRMED)) == 1
    assert [c.id for c in journal.workable(["CAM1"], time.time())] == [waiting.id]
    assert journal.get(failed.id).retry_at is not None  # a transient failure keeps its back-off


def test_the_declared_steps_allow_a_wipe_only_from_confirmed():
    from dockd.journal.transitions import RESUMABLE, STEPS, check_target

    into_wiped = {name: step.sources for name, step in STEPS.items() if step.target is State.WIPED}
    assert into_wiped == {"wipe": (State.CONFIRMED,)}
    assert State.WIPED not in RESUMABLE and State.DISMISSED not in RESUMABLE
    for name, step in STEPS.items():
        if step.target is None:
            with pytest.raises(JournalError):
                check_target(name, State.WIPED)  # a resume can never land on WIPED
    with pytest.raises(JournalError):
        check_target("confirm", State.WIPED)  # a fixed step enters only its own state


def test_a_wipe_of_a_clip_that_is_not_confirmed_is_refused_by_the_journal(tmp_path):
    journal = Journal.open(tmp_path)
    clip = journal.add_clip(new_clip(b"DCIM/A.MP4"))
    uploading(journal, clip.id)
    journal.mark_uploaded(clip.id)
    with pytest.raises(JournalError, match="not allowed from UPLOADED"):
        journal.mark_wiped(clip.id)
    assert journal.get(clip.id).state is State.UPLOADED


def test_each_transition_writes_its_audit_record_with_who_what_and_outcome(tmp_path):
    import json

    journal = Journal.open(tmp_path)
    clip = journal.add_clip(new_clip(b"DCIM/A.MP4", camera="CAM9"))
    journal.quarantine(clip.id, "file replaced")
    journal.hold(clip.id, actor="alice (uid 1000)", reason="keep")
    records = [
        json.loads(text)
        for (text,) in journal._conn.execute("SELECT record FROM audit ORDER BY seq").fetchall()
    ]
    quarantined, held = records[-2], records[-1]
    assert (quarantined["component"], quarantined["outcome"], quarantined["actor"]) == (
        "pipeline",
        "failure",
        "dockd",
    )
    assert quarantined["detail"] == {
        "camera": "CAM9",
        "from": "DISCOVERED",
        "to": "QUARANTINED",
        "detail": "file replaced",
    }
    assert (held["component"], held["outcome"], held["actor"]) == (
        "operator",
        "ok",
        "alice (uid 1000)",
    )
    assert held["detail"]["from"] == "QUARANTINED"


def test_a_confirmation_resets_the_attempt_count(tmp_path):
    journal = Journal.open(tmp_path)
    clip = journal.add_clip(new_clip(b"DCIM/A.MP4"))
    journal.mark_failed(clip.id, "503", time.time())
    journal.resume_failed(clip.id)
    assert journal.get(clip.id).attempts == 1
    assert confirmed(journal, clip.id).attempts == 0


def test_a_migrated_journal_anchors_its_audit_head_at_once(tmp_path):
    from dockd.custody import audit
    from dockd.journal import schema

    fresh = tmp_path / "fresh"
    Journal.open(fresh).close()
    conn = sqlite3.connect(fresh / "journal.db")
    conn.executescript(
        "DROP INDEX clips_live;"
        "ALTER TABLE clips DROP COLUMN partial_url;"
        "ALTER TABLE clips DROP COLUMN superseded_at;"
        "ALTER TABLE clips DROP COLUMN ctime_ns;"
        "CREATE UNIQUE INDEX clips_live ON clips(camera, rel_path, size, mtime_ns) "
        "WHERE state != 'WIPED';"
        "PRAGMA user_version=2;"
    )
    conn.close()
    (fresh / audit.HEAD_FILE).unlink(missing_ok=True)
    migrated = Journal.open(fresh)
    assert migrated.audit_head()[0] >= 1  # the migration itself is an audit record
    assert audit.read_head(fresh) == migrated.audit_head()  # and the head is anchored
    assert schema.SCHEMA_VERSION == 4
    migrated.close()


def test_schema_3_journal_gains_the_partial_upload_and_keeps_uploads_in_flight(tmp_path):
    """Schema 4 (one camera read per clip): a journal of the two-pass dockd keeps its rows and
    where they resume; a clip streaming to a partial upload resumes as STREAMING."""
    journal = Journal.open(tmp_path)
    old = journal.add_clip(_new(b"DCIM/OLD.MP4"))
    journal.mark_hashed(
        old.id,
        plaintext_sha256="a" * 64,
        ciphertext_sha256="b" * 64,
        ciphertext_length=10,
        age_header=b"h",
        secrets=bytes(48),
    )
    journal.mark_uploading(old.id, "http://server/files/x")
    journal.close()
    conn = sqlite3.connect(tmp_path / "journal.db")
    conn.executescript("ALTER TABLE clips DROP COLUMN partial_url; PRAGMA user_version=3;")
    conn.close()

    migrated = Journal.open(tmp_path)
    assert migrated.get(old.id).state is State.UPLOADING
    assert migrated.get(old.id).partial_url is None
    new = migrated.add_clip(_new(b"DCIM/NEW.MP4"))
    streaming = migrated.mark_streaming(
        new.id,
        partial_url="http://server/files/p",
        ciphertext_length=99,
        age_header=b"h",
        secrets=bytes(48),
    )
    assert streaming.state is State.STREAMING and streaming.resume_state is State.STREAMING
    failed = migrated.mark_failed(new.id, "network", time.time())
    assert migrated.resume_failed(failed.id).state is State.STREAMING
    migrated.close()
    version = sqlite3.connect(tmp_path / "journal.db").execute("PRAGMA user_version").fetchone()
    assert version[0] == 4
