"""Every legal change of a clip's state, declared once.

Each step names the states it may leave and the state it enters. A step whose target is
`RESUME` goes where the clip's recorded facts say it stands (`ClipRecord.resume_state`: a
receipt → CONFIRMED, an upload URL → UPLOADING, hashes → HASHED, a partial upload URL →
STREAMING, else DISCOVERED), or, for
"retry" of an UPLOADED clip, stays UPLOADED; it can never be WIPED. The journal applies a step
with one guarded UPDATE (`... WHERE state IN sources`), so a bug cannot, say, wipe a clip that
is not CONFIRMED: the UPDATE matches no row and the journal raises.
"""

from __future__ import annotations

from dataclasses import dataclass

from dockd.journal.records import WORKABLE, JournalError, State


@dataclass(frozen=True)
class Step:
    sources: tuple[State, ...]
    target: State | None  # None: RESUME (decided from the clip's facts, never WIPED)


RESUME = None
# Where a RESUME step may lead.
RESUMABLE = (
    State.DISCOVERED,
    State.STREAMING,
    State.HASHED,
    State.UPLOADING,
    State.UPLOADED,
    State.CONFIRMED,
)

STEPS: dict[str, Step] = {
    # the pipeline
    "hash": Step((State.DISCOVERED,), State.HASHED),
    # the one pass (server with tus concatenation): the partial upload and the encryption
    # header/key are recorded before a byte is sent; the hashes when the last byte was read
    "open_partial": Step((State.DISCOVERED,), State.STREAMING),
    "streamed": Step((State.STREAMING,), State.HASHED),
    # the server lost the partial upload (before or at the final's creation), or the final
    # made of it (which used the partial up): read again
    "forget_partial": Step(
        (State.STREAMING, State.HASHED, State.UPLOADING, State.UPLOADED), State.DISCOVERED
    ),
    "create_upload": Step((State.HASHED, State.UPLOADING), State.UPLOADING),
    "forget_upload": Step((State.UPLOADING, State.UPLOADED), State.HASHED),
    "uploaded": Step((State.UPLOADING, State.UPLOADED), State.UPLOADED),
    "confirm": Step((State.UPLOADED,), State.CONFIRMED),
    "wipe": Step((State.CONFIRMED,), State.WIPED),
    "fail": Step(WORKABLE, State.FAILED),
    "quarantine": Step((*WORKABLE, State.HELD), State.QUARANTINED),
    "resume_failed": Step((State.FAILED,), RESUME),
    # operators
    "hold": Step((*WORKABLE, State.QUARANTINED), State.HELD),
    "release": Step((State.HELD, State.QUARANTINED), RESUME),
    "retry": Step((State.FAILED, State.UPLOADED), RESUME),
    "dismiss": Step((State.QUARANTINED,), State.DISMISSED),
}


def check_target(step: str, to: State | None) -> tuple[tuple[State, ...], State]:
    """(states the step may leave, the state it enters) for applying `step`."""
    declared = STEPS[step]
    if declared.target is not None:
        if to is not None and to is not declared.target:
            raise JournalError(f"step {step} enters {declared.target}, not {to}")
        return declared.sources, declared.target
    if to not in RESUMABLE:
        raise JournalError(f"step {step} cannot enter {to}")
    return declared.sources, to
