"""A state record shaped like the S3 store's `S3UploadState` (storage/s3_state.py, branch
s3-store): the same JSON keys the PostgreSQL backend reads (`info`, `offset`, `next_part`,
`expires`, `hash_state` as base64). Used until that module is on this branch; the backend takes
the record type as `decode`, so the tests then switch to the real one without other changes."""

from __future__ import annotations

import base64
import datetime as dt
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from dockd.receiver.storage.api import CreationInfo, new_upload_id, rfc3339


@dataclass(frozen=True)
class StateRecord:
    info: CreationInfo
    offset: int
    parts: tuple[int, ...]  # part numbers committed
    hash_state: bytes
    next_part: int
    expires: float

    def to_json(self) -> dict[str, Any]:
        return {
            "info": asdict(self.info),
            "offset": self.offset,
            "parts": list(self.parts),
            "hash_state": base64.b64encode(self.hash_state).decode("ascii"),
            "next_part": self.next_part,
            "expires": self.expires,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StateRecord:
        return cls(
            info=CreationInfo.from_json(data["info"]),
            offset=int(data["offset"]),
            parts=tuple(int(p) for p in data["parts"]),
            hash_state=base64.b64decode(data["hash_state"]),
            next_part=int(data["next_part"]),
            expires=float(data["expires"]),
        )

    def advanced(self, part: int, size: int, hash_state: bytes) -> StateRecord:
        """The state after one more committed part."""
        return replace(
            self,
            offset=self.offset + size,
            parts=(*self.parts, part),
            hash_state=hash_state,
            next_part=max(self.next_part, part + 1),
        )


def new_state(length: int = 64 << 20, dock: str | None = "dock-1") -> StateRecord:
    info = CreationInfo(
        upload=new_upload_id(),
        length=length,
        metadata_header="",
        metadata={},
        created=rfc3339(dt.datetime.now(dt.UTC)),
        dock=dock,
    )
    return StateRecord(info, 0, (), b"", 1, time.time() + 3600)
