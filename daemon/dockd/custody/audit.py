"""The audit log: append-only, each record carrying the SHA-256 of the one before it.

Where: a table (`audit`) in the journal database, written by the journal *in the same SQLite
transaction* as the state change it records. So a transition without its audit record (or the
reverse) cannot exist, even after a power cut; and it inherits the journal's durability (WAL,
synchronous=FULL). A separate JSON-lines file would need its own fsync per event and could
disagree with the journal after a crash.

Record (stored as its canonical JSON text, see `canonical.py`)::

    seq        1, 2, 3, ... with no gaps
    time       UTC RFC 3339 with microseconds
    component  journal | pipeline | offloader | daemon | operator
    event      e.g. clip.confirmed, camera.docked, config.loaded, operator.flag
    subject    what it is about: "clip 12", "camera CAM-0001", a config path
    outcome    ok | failure | refused
    actor      "dockd", or "uid:1000" for an operator action
    detail     a JSON object with the particulars (states, hashes, reasons)
    prev       the `hash` of record seq-1; for seq 1 the fixed GENESIS value

`hash` = SHA-256 hex of the record's canonical bytes (which include `prev`), kept beside it.

What the verifier detects: an edited record (its hash, and the next record's `prev`, no longer
match), a deleted one (a gap in `seq`, and a broken `prev`), reordered ones (`seq` out of order
and broken `prev`), and a truncated tail: the head `(seq, hash)` is also written after each commit
to `state_dir/audit.head` and copied into every signed manifest sent to the server. Honest limit:
whoever controls the dock (root) can rewrite the whole chain and the head file consistently; only
heads that already left the dock (in manifests on the server) bound what such a rewrite can hide.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dockd import canonical
from dockd.journal.chain import GENESIS, HEAD_FILE, record_hash


def read_head(state_dir: Path) -> tuple[int, str] | None:
    try:
        data = json.loads((state_dir / HEAD_FILE).read_text(encoding="utf-8"))
        return int(data["seq"]), str(data["hash"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{state_dir / HEAD_FILE}: unreadable head anchor: {exc}") from None


# ---- reading and verifying (read-only: works with the daemon stopped) ----------------------
def open_readonly(state_dir: Path) -> sqlite3.Connection:
    path = state_dir / "journal.db"
    if not path.exists():
        raise FileNotFoundError(f"no journal at {path} (has dockd run yet?)")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def rows(conn: sqlite3.Connection) -> Iterator[tuple[int, str, str]]:
    """(seq, record text, hash) in storage order of seq, streamed (the log grows without bound)."""
    try:
        cursor = conn.execute("SELECT seq, record, hash FROM audit ORDER BY rowid")
    except sqlite3.OperationalError as exc:
        raise ValueError(f"journal has no audit log ({exc}); it predates schema 2") from None
    yield from cursor


@dataclass
class Verdict:
    records: int = 0
    head: tuple[int, str] = (0, GENESIS)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(
    stored: Iterable[tuple[int, str, str]],
    anchors: Iterable[tuple[str, int, str]] = (),
    *,
    max_problems: int = 20,
) -> Verdict:
    """Check seq continuity, each record's hash and each `prev` link, then every anchor.

    `anchors` are (where, seq, hash) claims from outside the table (the head file, manifests):
    the chain must reach `seq` and have exactly `hash` there; a chain shorter than an anchor was
    truncated.
    """
    verdict = Verdict()
    expected_seq, prev = 1, GENESIS
    by_seq: dict[int, str] = {}
    wanted = list(anchors)
    wanted_seqs = {seq for _, seq, _ in wanted}

    def problem(text: str) -> None:
        if len(verdict.problems) < max_problems:
            verdict.problems.append(text)

    for row_seq, text, stored_hash in stored:
        verdict.records += 1
        try:
            record = json.loads(text)
        except ValueError:
            problem(f"record at seq {row_seq}: not JSON")
            continue
        if not isinstance(record, dict):
            problem(f"record at seq {row_seq}: not an object")
            continue
        digest = record_hash(record)
        if canonical.dumps(record).decode("utf-8") != text:
            problem(f"record {row_seq}: stored text is not canonical (edited by hand?)")
        if digest != stored_hash:
            problem(f"record {row_seq}: content does not match its hash (edited)")
        seq = record.get("seq")
        if seq != row_seq:
            problem(f"record in row {row_seq} says seq {seq} (moved or reordered)")
        if seq != expected_seq:
            gap = isinstance(seq, int) and seq > expected_seq
            problem(
                f"record {seq}: expected seq {expected_seq} "
                f"({'missing records (deleted)' if gap else 'out of order'})"
            )
        if record.get("prev") != prev:
            problem(
                f"record {seq}: prev does not equal the hash of the record before it "
                "(a record before it was edited, deleted or reordered)"
            )
        if isinstance(seq, int) and seq in wanted_seqs:
            by_seq[seq] = digest
        prev = digest
        expected_seq = (seq + 1) if isinstance(seq, int) else expected_seq + 1
        verdict.head = (seq if isinstance(seq, int) else -1, digest)
    for where, seq, digest in wanted:
        if seq > verdict.head[0]:
            problem(
                f"{where} says the log reached seq {seq}, but it ends at {verdict.head[0]} "
                "(truncated)"
            )
        elif seq > 0 and by_seq.get(seq) != digest:
            problem(f"{where}: record {seq} differs from the one anchored there (rewritten)")
        elif where == HEAD_FILE and seq < verdict.head[0]:
            verdict.notes.append(
                f"{HEAD_FILE} lags the log by {verdict.head[0] - seq} record(s) "
                "(a crash between a commit and the anchor update; the next event refreshes it)"
            )
    return verdict


def export(stored: Iterable[tuple[int, str, str]], since: float | None) -> Iterator[str]:
    """JSON lines (record + its hash) of every record at or after `since` (epoch seconds)."""
    for _seq, text, digest in stored:
        record = json.loads(text)
        if since is not None:
            try:
                when = canonical.parse_rfc3339(str(record.get("time", ""))).timestamp()
            except ValueError:
                when = float("inf")  # unparseable time: show it rather than hide it
            if when < since:
                continue
        record["hash"] = digest
        yield canonical.dumps(record).decode("utf-8")
