"""Journal rows for tests: a discovered clip, and the steps that take it further."""

from __future__ import annotations

from typing import Any

from dockd.journal import ClipRecord, Journal, NewClip


def new_clip(path: bytes = b"DCIM/A.MP4", **fields: Any) -> NewClip:
    """A discovered clip with plain defaults; any NewClip field can be given."""
    values: dict[str, Any] = {
        "camera": "CAM1",
        "model": "m",
        "bay": "bay-1",
        "rel_path": path,
        "size": 10,
        "mtime_ns": 1,
        "dev": 1,
        "ino": 2,
        "session": "s1",
        "evidence": False,
        "recorded_at": "2026-01-01T00:00:00Z",
        "recorded_at_source": "mtime",
        "metadata": {},
    }
    return NewClip(**{**values, **fields})


def hashed(journal: Journal, clip_id: int, *, secrets: bytes = b"k" * 32) -> ClipRecord:
    return journal.mark_hashed(
        clip_id,
        plaintext_sha256="a" * 64,
        ciphertext_sha256="b" * 64,
        ciphertext_length=300,
        age_header=b"hdr",
        secrets=secrets,
    )


def streaming(
    journal: Journal, clip_id: int, url: str = "http://x/files/p", *, secrets: bytes = b"k" * 32
) -> ClipRecord:
    """The one pass under way: the partial upload, header and key journaled, no hash yet."""
    return journal.mark_streaming(
        clip_id, partial_url=url, ciphertext_length=300, age_header=b"hdr", secrets=secrets
    )


def uploading(
    journal: Journal, clip_id: int, url: str = "http://x/files/u", **kw: Any
) -> ClipRecord:
    hashed(journal, clip_id, **kw)
    return journal.mark_uploading(clip_id, url)


def confirmed(journal: Journal, clip_id: int, policy: str = "offset") -> ClipRecord:
    uploading(journal, clip_id)
    journal.mark_uploaded(clip_id)
    return journal.mark_confirmed(clip_id, {"policy": policy, "length": 300})
