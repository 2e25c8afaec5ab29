"""Per-upload state of the S3 store, behind a small interface so that a shared database
(PostgreSQL, issue 16) can replace the work bucket when several receiver nodes share one store.

`S3UploadState` is what a restart needs to resume an upload: the multipart upload id, the parts
and the staged tail that were committed (only those count: anything else in RGW under that upload
is an orphan). The next part number is not stored: it is len(parts) + 1 (below).

Part numbering and fencing (what the PostgreSQL backend relies on):

* part n is always bytes [(n-1)P, nP) of the upload (P: the upload's part size, fixed by its
  first part), so the committed parts are 1..N, the committed tail is [NP, offset), and an
  upload of part n for a chunk that is then refused is simply overwritten when the right bytes
  for that range arrive. RGW 16.2 insists on it: CompleteMultipartUpload must list every part
  ever uploaded (400 InvalidPart otherwise, below or above the listed ones; seen in
  tests/ceph/test_s3_store.py), so a part that is skipped rather than overwritten would make the
  upload impossible to complete;
* a late UploadPart from a stalled holder can thus overwrite a committed part number, but not
  silently: completion passes each committed part's ETag (the MD5 of its bytes, recorded at
  commit) and RGW refuses a part whose ETag differs. Wrong bytes are never completed under a
  receipt; the price of that race (multi-node only) is an upload that cannot complete;
* tail keys are unique per write (`tail/<upload>/<uuid>`): a late tail PUT lands under a key no
  saved state names;
* `check_fence` runs before every part upload and `save` refuses (`Fenced`) a fence older than
  the upload's current lock, so a holder that knows it lost the lock stops early; `delete` with
  a fence (termination, expiry) refuses the same way, in the same step as the delete;
* only the parts and the tail named in the saved state count; orphans (replaced tails) are
  deleted at commit, completion, termination and expiry, best effort.

`WorkBucketState` keeps each state as `state/<upload>.json` in the work bucket, sent with
Content-MD5 like every part and tail (RGW refuses a body altered on the way: BadDigest). It ignores
`fence`: one process owns a work bucket, and `run_blocking` waits for every store call's thread,
so no stale writer of this process can still be running when the next holder writes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from dockd.receiver.storage.api import CreationInfo, StoreError
from dockd.receiver.storage.s3_errors import list_objects, s3_call, s3_required


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
    expires: float

    def __post_init__(self) -> None:
        stored = sum(part.size for part in self.parts) + self.tail_size
        if stored != self.offset:
            raise StoreError(
                f"{self.info.upload}: state says offset {self.offset} but its parts and tail "
                f"hold {stored} bytes"
            )
        numbers = [part.number for part in self.parts]
        if numbers != list(range(1, len(numbers) + 1)):
            raise StoreError(f"{self.info.upload}: committed parts are not numbered 1..N")

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
            expires=float(data["expires"]),
        )


class UploadStateBackend(Protocol):
    """Where `S3UploadState`s live. Every method blocks and is durable when it returns."""

    def create(self, state: S3UploadState) -> None: ...
    def load(self, upload: str) -> S3UploadState | None: ...
    def save(self, state: S3UploadState, *, fence: int | None) -> None:
        """Replace the upload's state; raises `Fenced` if `fence` is older than the lock's."""
        ...

    def check_fence(self, upload: str, *, fence: int | None) -> None:
        """Raise `Fenced` if `fence` is older than the upload's lock (before each UploadPart)."""
        ...

    def delete(self, upload: str, *, fence: int | None = None) -> None:
        """Forget the upload's state; with `fence`, only if it is still the lock's token, tested
        in the same step as the delete (`Fenced` otherwise, nothing deleted)."""
        ...

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
        digest = hashlib.md5(body, usedforsecurity=False).digest()  # transport check, as parts
        s3_required(
            self._client.put_object,
            Bucket=self._bucket,
            Key=state_key(state.info.upload),
            Body=body,
            ContentMD5=base64.b64encode(digest).decode("ascii"),
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
        raw = s3_required(body["Body"].read)
        try:
            state = S3UploadState.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"{upload}: its state in the work bucket is unreadable: {exc}"
            ) from exc
        with self._lock:
            self._cache[upload] = state
        return state

    def save(self, state: S3UploadState, *, fence: int | None) -> None:
        self._put(state)

    def check_fence(self, upload: str, *, fence: int | None) -> None:
        return None  # one process: no other holder (see the class docstring)

    def delete(self, upload: str, *, fence: int | None = None) -> None:
        # `fence` ignored: one process, no other holder (see the class docstring).
        s3_required(self._client.delete_object, Bucket=self._bucket, Key=state_key(upload))
        with self._lock:
            self._cache.pop(upload, None)

    def all(self) -> Iterator[S3UploadState]:
        for entry in list_objects(self._client, self._bucket, STATE_PREFIX):
            upload = entry["Key"].removeprefix(STATE_PREFIX).removesuffix(".json")
            state = self.load(upload)
            if state is not None:
                yield state
