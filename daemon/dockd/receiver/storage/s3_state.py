"""Per-upload state of the S3 store, behind a small interface so that a shared database
(PostgreSQL, issue 16) can replace the work bucket when several receiver nodes share one store.

`S3UploadState` is what a restart needs to resume an upload: the multipart upload id, the parts
and the staged tail that were committed (only those count: anything else in RGW under that upload
is an orphan), and the next part number to use.

Fencing rules every backend keeps (the PostgreSQL one relies on them):

* a part number is taken from `allocate_part` before each UploadPart, durably, and never handed
  out twice; tail keys are unique per write (`tail/<upload>/<uuid>`). So a late UploadPart or tail
  PUT from a stalled holder can never overwrite committed bytes: it lands under a name no saved
  state refers to;
* `save(state, fence=...)` refuses (`Fenced`) a fence older than the upload's current lock;
* orphans (parts and tails no saved state names) are deleted at completion, termination and
  expiry, best effort.

`WorkBucketState` keeps each state as `state/<upload>.json` in the work bucket. It ignores
`fence`: one process owns a work bucket, and `run_blocking` waits for every store call's thread,
so no stale writer of this process can still be running when the next holder writes.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from dockd.receiver.storage.api import CreationInfo, NotFound, StoreError
from dockd.receiver.storage.s3_errors import s3_call, s3_required


@dataclass(frozen=True)
class PartRecord:
    """One committed part of the multipart upload."""

    number: int
    etag: str  # as UploadPart returned it (quoted), passed back to CompleteMultipartUpload
    size: int


@dataclass(frozen=True)
class S3UploadState:
    info: CreationInfo
    key: str  # object key in the evidence bucket, "clips/<upload>"
    multipart_id: str  # S3 UploadId
    offset: int  # committed bytes = sum(part sizes) + tail_size
    parts: tuple[PartRecord, ...]  # committed parts in order
    tail_key: str | None  # work-bucket key of the committed tail (< part size), or None
    tail_size: int
    hash_state: bytes  # serialised SHA-256 state of [0, offset); b"": not persisted
    next_part: int  # part numbers are never reused (see fencing)
    expires: float

    def __post_init__(self) -> None:
        stored = sum(part.size for part in self.parts) + self.tail_size
        if stored != self.offset:
            raise StoreError(
                f"{self.info.upload}: state says offset {self.offset} but its parts and tail "
                f"hold {stored} bytes"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "info": asdict(self.info),
            "key": self.key,
            "multipart_id": self.multipart_id,
            "offset": self.offset,
            "parts": [asdict(part) for part in self.parts],
            "tail_key": self.tail_key,
            "tail_size": self.tail_size,
            "hash_state": base64.b64encode(self.hash_state).decode("ascii"),
            "next_part": self.next_part,
            "expires": self.expires,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> S3UploadState:
        return cls(
            info=CreationInfo.from_json(data["info"]),
            key=str(data["key"]),
            multipart_id=str(data["multipart_id"]),
            offset=int(data["offset"]),
            parts=tuple(
                PartRecord(int(p["number"]), str(p["etag"]), int(p["size"])) for p in data["parts"]
            ),
            tail_key=data.get("tail_key"),
            tail_size=int(data.get("tail_size", 0)),
            hash_state=base64.b64decode(data.get("hash_state", "")),
            next_part=int(data["next_part"]),
            expires=float(data["expires"]),
        )


class UploadStateBackend(Protocol):
    """Where `S3UploadState`s live. Every method blocks and is durable when it returns."""

    def create(self, state: S3UploadState) -> None: ...
    def load(self, upload: str) -> S3UploadState | None: ...
    def save(self, state: S3UploadState, *, fence: int | None) -> None:
        """Replace the upload's state; raises `Fenced` if `fence` is older than the lock's."""
        ...

    def allocate_part(self, upload: str, *, fence: int | None) -> int:
        """The next part number for this upload, recorded durably: never returned again."""
        ...

    def delete(self, upload: str) -> None: ...
    def all(self) -> Iterator[S3UploadState]: ...


STATE_PREFIX = "state/"


def state_key(upload: str) -> str:
    return f"{STATE_PREFIX}{upload}.json"


class WorkBucketState:
    """`UploadStateBackend` as JSON objects `state/<upload>.json` in the work bucket.

    S3 failures leave as the store's errors (`s3_errors`), as for the bytes. States are cached
    after the first read: this process is the work bucket's only writer.
    """

    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self._bucket = bucket
        self._cache: dict[str, S3UploadState] = {}
        self._lock = threading.Lock()

    def _put(self, state: S3UploadState) -> None:
        body = json.dumps(state.to_json(), sort_keys=True, separators=(",", ":")).encode()
        s3_required(
            self._client.put_object,
            Bucket=self._bucket,
            Key=state_key(state.info.upload),
            Body=body,
            ContentType="application/json",
        )
        with self._lock:
            self._cache[state.info.upload] = state

    def create(self, state: S3UploadState) -> None:
        self._put(state)

    def load(self, upload: str) -> S3UploadState | None:
        with self._lock:
            cached = self._cache.get(upload)
        if cached is not None:
            return cached
        body = s3_call(
            self._client.get_object, Bucket=self._bucket, Key=state_key(upload), missing_ok=True
        )
        if body is None:
            return None
        state = S3UploadState.from_json(json.loads(body["Body"].read()))
        with self._lock:
            self._cache[upload] = state
        return state

    def save(self, state: S3UploadState, *, fence: int | None) -> None:
        self._put(state)

    def allocate_part(self, upload: str, *, fence: int | None) -> int:
        state = self.load(upload)
        if state is None:
            raise NotFound(f"{upload}: no unfinished upload")
        self._put(replace(state, next_part=state.next_part + 1))
        return state.next_part

    def delete(self, upload: str) -> None:
        s3_required(self._client.delete_object, Bucket=self._bucket, Key=state_key(upload))
        with self._lock:
            self._cache.pop(upload, None)

    def all(self) -> Iterator[S3UploadState]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = s3_required(
            lambda: list(paginator.paginate(Bucket=self._bucket, Prefix=STATE_PREFIX))
        )
        for page in pages:
            for entry in page.get("Contents", []):
                upload = entry["Key"].removeprefix(STATE_PREFIX).removesuffix(".json")
                state = self.load(upload)
                if state is not None:
                    yield state
