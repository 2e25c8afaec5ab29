"""S3 store states (storage/s3_state.py) for the PostgreSQL backend's tests."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from dataclasses import replace

from dockd.receiver.storage.api import CreationInfo, new_upload_id, rfc3339
from dockd.receiver.storage.s3_state import PartRecord, S3UploadState


def new_state(length: int = 64 << 20, dock: str | None = "dock-1") -> S3UploadState:
    """A freshly created upload: no parts, part 1 next."""
    upload = new_upload_id()
    info = CreationInfo(
        upload=upload,
        length=length,
        metadata_header="",
        metadata={},
        created=rfc3339(dt.datetime.now(dt.UTC)),
        dock=dock,
    )
    return S3UploadState(
        info=info,
        key=f"clips/{upload}",
        multipart_id=secrets.token_hex(16),
        offset=0,
        parts=(),
        tail_key=None,
        tail_size=0,
        hash_state=b"",
        expires=time.time() + 3600,
    )


def advanced(state: S3UploadState, size: int, hash_state: bytes) -> S3UploadState:
    """The state after one more committed part of `size` bytes (numbered len(parts) + 1)."""
    number = len(state.parts) + 1
    return replace(
        state,
        offset=state.offset + size,
        parts=(*state.parts, PartRecord(number, f'"etag-{number}"', size)),
        hash_state=hash_state,
    )
