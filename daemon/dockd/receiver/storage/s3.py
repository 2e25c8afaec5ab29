"""The S3 store: every upload as one S3 multipart upload, on Ceph RGW or any S3 endpoint.

Layout (docs/RECEIVER.md "S3 backend"):

    evidence bucket (Object Lock, versioned; made by the retention hook's prepare_bucket)
        clips/<id>              the stored bytes: one multipart upload while unfinished
        clips/<id>.json         the sidecar (CompletedUpload as JSON); its presence = complete
    work bucket (plain, unversioned; default "<bucket>-work")
        state/<id>.json         per-upload state (`s3_state.WorkBucketState`)
        tail/<id>/<uuid>        committed bytes that do not fill a part yet (`s3_writer`)
        completing/<id>.json    the CompletedUpload of a completion in progress
        tombstones/<id>.json    an expired upload, answering 410 for a while

Completion (`complete`), each step idempotent, so a crash anywhere is finished by `recover` (or by
the next `complete` with the same record):

1. the committed tail becomes the last part (UploadPart), and the state says so;
2. the record goes to `completing/<id>.json`, so recovery can finish without the coordinator;
3. CompleteMultipartUpload with exactly the committed parts (number, ETag);
4. HEAD: the object's length must be the record's; its VersionId is kept;
5. the retention hook tags/holds that version; the sidecar is put (and hooked the same way);
6. state, tails and the completing record are deleted, in that order (the record last: while it
   is there, recovery still knows to clean up).

If step 3 happened but the state says the multipart upload is open, recovery sees the upload id
gone (404) and the object there with the right length, and goes on from step 4.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from typing import Any, BinaryIO

import structlog
from botocore.exceptions import ClientError

from dockd.canonical import parse_rfc3339
from dockd.receiver.shared.capability import PartsReplaced
from dockd.receiver.storage.api import (
    ChunkWriter,
    CompletedUpload,
    CreationInfo,
    Fenced,
    NotFound,
    PartialState,
    RunningHash,
    StoreError,
    StoreUnavailable,
    Tombstone,
    is_upload_id,
    same_bytes,
)
from dockd.receiver.storage.s3_config import MiB, S3Settings, make_client
from dockd.receiver.storage.s3_errors import error_code, list_objects, s3_call, s3_required
from dockd.receiver.storage.s3_hash import new_hash, restore
from dockd.receiver.storage.s3_retention_api import NoRetention, ObjectRetention
from dockd.receiver.storage.s3_state import (
    PartRecord,
    S3UploadState,
    UploadStateBackend,
    WorkBucketState,
)
from dockd.receiver.storage.s3_writer import S3ChunkWriter, Spool, copy_stream, tail_prefix

log = structlog.get_logger("dockd.receiver.store")

# Size parts so a whole upload fits in 9,000 of them, whatever its length: a margin below
# S3's 10,000 for a part size that changes between restarts.
_PART_BUDGET = 9_000
# A multipart upload no state names is aborted at start once it is this old (seconds): a younger
# one may be another node's creation between CreateMultipartUpload and its state write.
ORPHAN_MULTIPART_AGE = 3600.0
# An unfinished upload expires this long before the lifecycle rule may abort it (seconds; a
# quarter of the rule's delay if that is shorter, as on a test cluster's 10-second "days"):
# room for clock skew between the nodes and RGW and for the sweep's interval.
_DEADLINE_MARGIN = 6 * 3600.0


def _json_bytes(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")


class S3Store:
    """`UploadStore` on S3. Blocking (boto3); called on worker threads through `run_blocking`."""

    def __init__(
        self,
        settings: S3Settings,
        *,
        client: Any | None = None,
        retention: ObjectRetention | None = None,
        states: UploadStateBackend | None = None,
        spool_dir: str | None = None,
        orphan_age: float = ORPHAN_MULTIPART_AGE,
    ) -> None:
        self.settings = settings
        self.client = client if client is not None else make_client(settings)
        self.retention: ObjectRetention = retention if retention is not None else NoRetention()
        self.states: UploadStateBackend = (
            states if states is not None else WorkBucketState(self.client, settings.work_bucket)
        )
        self.spool_dir = spool_dir  # None: $TMPDIR
        self.orphan_age = orphan_age

    # -- keys --

    @staticmethod
    def _checked(upload: str) -> str:
        if not is_upload_id(upload):
            raise ValueError(f"not an upload id: {upload[:40]!r}")
        return upload

    def clip_key(self, upload: str) -> str:
        return f"clips/{self._checked(upload)}"

    def sidecar_key(self, upload: str) -> str:
        return f"clips/{self._checked(upload)}.json"

    def _completing_key(self, upload: str) -> str:
        return f"completing/{self._checked(upload)}.json"

    def _tombstone_key(self, upload: str) -> str:
        return f"tombstones/{self._checked(upload)}.json"

    def part_size_for(self, length: int) -> int:
        """The configured part size, or more (whole MiB) if the upload needs more than
        `_PART_BUDGET` parts of it."""
        needed = math.ceil(length / _PART_BUDGET / MiB) * MiB
        return max(self.settings.part_size, needed)

    def part_size_of(self, state: S3UploadState) -> int:
        """The upload's part size: its first part's, once there is one (part n must stay
        bytes [(n-1)P, nP) even if the configured size changed across a restart)."""
        return state.parts[0].size if state.parts else self.part_size_for(state.info.length)

    # -- small helpers --

    def _put_json(self, bucket: str, key: str, data: dict[str, Any], **extra: Any) -> Any:
        body = _json_bytes(data)
        return s3_required(
            self.client.put_object,
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentMD5=_md5(body),
            ContentType="application/json",
            **extra,
        )

    def _get_json(self, bucket: str, key: str) -> dict[str, Any] | None:
        reply = s3_call(self.client.get_object, Bucket=bucket, Key=key, missing_ok=True)
        if reply is None:
            return None
        try:
            data = json.loads(s3_required(reply["Body"].read))
        except ValueError:
            log.error("s3.unreadable_json", bucket=bucket, key=key)
            return None
        return data if isinstance(data, dict) else None

    def delete_quietly(self, bucket: str, key: str) -> None:
        """Best-effort delete of an orphan (a replaced tail...): failures are only logged."""
        try:
            s3_call(self.client.delete_object, Bucket=bucket, Key=key, missing_ok=True)
        except StoreError as exc:
            log.warning("s3.orphan_not_deleted", bucket=bucket, key=key, error=str(exc))

    def _delete_tails(self, upload: str) -> None:
        """Delete every tail object of the upload (best effort)."""
        try:
            keys = [
                e["Key"]
                for e in list_objects(self.client, self.settings.work_bucket, tail_prefix(upload))
            ]
        except StoreError as exc:
            log.warning("s3.tails_not_listed", upload=upload, error=str(exc))
            return
        for key in keys:
            self.delete_quietly(self.settings.work_bucket, key)

    def _state(self, upload: str) -> S3UploadState:
        state = self.states.load(self._checked(upload))
        if state is None:
            raise NotFound(f"{upload}: no unfinished upload")
        return state

    def read_tail_into(self, state: S3UploadState, spool: Spool) -> None:
        assert state.tail_key is not None
        reply = s3_call(
            self.client.get_object,
            Bucket=self.settings.work_bucket,
            Key=state.tail_key,
            missing_ok=True,
        )
        if reply is None:
            raise StoreError(
                f"{state.info.upload}: committed tail {state.tail_key} is missing from the "
                "work bucket (acknowledged bytes lost outside the receiver)"
            )
        copy_stream(reply["Body"], spool, state.tail_size, f"{state.info.upload} tail")

    # -- UploadStore: lifecycle --

    def describe(self) -> str:
        return self.settings.describe()

    def free_bytes(self) -> int | None:
        return None  # RGW quotas answer per request (QuotaExceeded -> StoreFull)

    def ready(self) -> None:
        """The /ready probe (readiness.ReadinessProbe): both buckets answer a HeadBucket, and
        the state backend answers too when it has a probe of its own (PostgreSQL in multi-node
        mode). Raises StoreUnavailable (gateway unreachable) or StoreError (bucket gone)."""
        for bucket in (self.settings.bucket, self.settings.work_bucket):
            if s3_call(self.client.head_bucket, Bucket=bucket, missing_ok=True) is None:
                raise StoreError(f"bucket {bucket} does not exist")
        probe = getattr(self.states, "ready", None)
        if callable(probe):
            probe()

    def partial(self, upload: str) -> PartialState | None:
        """The unfinished upload's committed state as the state backend has it now (another
        node may have committed since this one last looked), or None if it is not unfinished."""
        state = self.states.load(self._checked(upload))
        return None if state is None else PartialState(state.info, state.offset, state.expires)

    def unfinished(self) -> Iterator[PartialState]:
        """Every unfinished upload's committed state, streamed from the state backend."""
        for state in self.states.all():
            yield PartialState(state.info, state.offset, state.expires)

    def recover(self) -> list[PartialState]:
        """Make sure both buckets exist, finish interrupted completions, list unfinished ones."""
        self.retention.prepare_bucket(self.client, self.settings.bucket)
        self._ensure_work_bucket()
        completing = list_objects(self.client, self.settings.work_bucket, "completing/")
        for key in [entry["Key"] for entry in completing]:
            upload = key.removeprefix("completing/").removesuffix(".json")
            if not is_upload_id(upload):
                log.warning("s3.unknown_object", key=key)
                continue
            data = self._get_json(self.settings.work_bucket, key)
            if data is None:
                self.delete_quietly(self.settings.work_bucket, key)
                continue
            try:
                self.recover_completion(CompletedUpload.from_json(data))
            except PartsReplaced:
                continue  # stays unfinished; the coordinator ends it (410) at its completion
        self._abort_orphan_multiparts(time.time() - self.orphan_age)
        return sorted(
            (PartialState(s.info, s.offset, s.expires) for s in self.states.all()),
            key=lambda partial: partial.info.upload,
        )

    def recover_completion(self, record: CompletedUpload) -> None:
        """Finish a completion a crash interrupted (its `completing/` record is there). One
        process owns this store, so nothing else can be completing it now."""
        self._finish_completion(record, fence=None)
        log.info("s3.completion_finished_on_recovery", upload=record.upload)

    def _abort_orphan_multiparts(self, initiated_before: float) -> None:
        """Abort multipart uploads under clips/ that no state names: a crash between
        CreateMultipartUpload and the state PUT leaves one that nothing would ever complete."""
        pages = iter(
            self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.settings.bucket, Prefix="clips/"
            )
        )
        while (page := s3_call(next, pages, None)) is not None:
            for entry in page.get("Uploads", []):
                upload = str(entry["Key"]).removeprefix("clips/")
                if entry["Initiated"].timestamp() >= initiated_before or not is_upload_id(upload):
                    continue
                state = self.states.load(upload)
                if state is not None and state.multipart_id == entry["UploadId"]:
                    continue
                log.warning("s3.orphan_multipart_aborted", upload=upload)
                self._abort_quietly(upload, str(entry["Key"]), str(entry["UploadId"]))

    def _ensure_work_bucket(self) -> None:
        bucket = self.settings.work_bucket
        if s3_call(self.client.head_bucket, Bucket=bucket, missing_ok=True) is None:
            s3_required(self.client.create_bucket, Bucket=bucket)

    def unfinished_deadline(self, info: CreationInfo) -> float | None:
        """`_DEADLINE_MARGIN` before the bucket's rule may abort the upload's multipart upload
        (RGW counts whole days from its initiation, which comes after `info.created`): from
        then on committed parts could vanish under a live upload, so it expires (410, the dock
        sends the clip again) before that, however active it is."""
        after = self.retention.abort_unfinished_after()
        if after is None:
            return None
        margin = min(_DEADLINE_MARGIN, after / 4)
        return parse_rfc3339(info.created).timestamp() + after - margin

    def create(self, info: CreationInfo, expires: float) -> None:
        key = self.clip_key(info.upload)
        reply = s3_required(
            self.client.create_multipart_upload,
            Bucket=self.settings.bucket,
            Key=key,
            ContentType="application/octet-stream",
            **self.retention.creation_args(info.metadata),
        )
        state = S3UploadState(
            info=info,
            key=key,
            multipart_id=str(reply["UploadId"]),
            offset=0,
            parts=(),
            tail_key=None,
            tail_size=0,
            hash_state=b"",
            expires=expires,
        )
        try:
            self.states.create(state)
        except StoreError as exc:
            self._abort_quietly(state.info.upload, state.key, state.multipart_id)
            if isinstance(exc, StoreUnavailable):
                self._drop_unanswered_creation(state)
            raise

    def _drop_unanswered_creation(self, state: S3UploadState) -> None:
        """The state write of a creation failed without an answer, so it may have been stored:
        remove it if it is this creation's (its multipart upload id; the upload is being
        refused, its multipart upload aborted), or it would stay an unfinished upload nobody can
        resume, counted against its dock's quota. Best effort: logged if it fails too."""
        upload = state.info.upload
        try:
            stored = self.states.load(upload)
            if stored is not None and stored.multipart_id == state.multipart_id:
                self.states.delete(upload)
                log.info("s3.unanswered_creation_removed", upload=upload)
        except StoreError as exc:
            log.warning("s3.unanswered_creation_left", upload=upload, error=str(exc))

    def open_writer(self, upload: str, offset: int, *, fence: int | None = None) -> ChunkWriter:
        state = self._state(upload)
        if state.offset != offset:
            self.states.check_fence(upload, fence=fence)  # moved on under a newer lock: Fenced
            raise StoreError(f"{upload}: writer at {offset}, but {state.offset} are committed")
        return S3ChunkWriter(self, state, fence)

    def new_hash(self) -> RunningHash:
        return new_hash()

    def running_hash(self, upload: str, offset: int, *, fence: int | None = None) -> RunningHash:
        """As `UploadStore.running_hash`; with the shared lock's `fence`, an offset another
        holder has moved since is `Fenced` (409) rather than an error (500)."""
        state = self._state(upload)
        if state.offset != offset:
            self.states.check_fence(upload, fence=fence)
            raise StoreError(f"{upload}: hash asked at {offset}, but {state.offset} are committed")
        if offset == 0:
            return new_hash()
        return restore(state.hash_state, offset)

    # -- completion --

    def complete(self, record: CompletedUpload, *, fence: int | None = None) -> None:
        upload = self._checked(record.upload)
        stored = self.load_completed(upload)
        if stored is not None and same_bytes(stored, record):
            # An earlier attempt stored its record (its clean-up failed, or it ran on another
            # node): that one stands, the caller hands it out; only the clean-up is finished.
            self._finish_completion(stored, fence=fence)
            return
        if stored is not None:
            raise StoreError(f"{upload}: completed already, with other bytes than the record's")
        state = self._state(upload)
        if state.offset != record.length:
            raise StoreError(
                f"{upload}: {state.offset} bytes committed, the record says {record.length}"
            )
        state = self._tail_as_last_part(state, fence)
        self._put_json(self.settings.work_bucket, self._completing_key(upload), asdict(record))
        self._finish_completion(record, fence=fence)

    def _tail_as_last_part(self, state: S3UploadState, fence: int | None) -> S3UploadState:
        """Step 1: the committed tail (any size: it is the last part) joins the parts."""
        if state.tail_key is None:
            return state
        spool = Spool(self.spool_dir)
        try:
            self.read_tail_into(state, spool)
            number = len(state.parts) + 1
            self.states.check_fence(state.info.upload, fence=fence)
            reply = s3_required(
                self.client.upload_part,
                Bucket=self.settings.bucket,
                Key=state.key,
                UploadId=state.multipart_id,
                PartNumber=number,
                Body=spool.rewound(),
                ContentLength=spool.size,
                ContentMD5=spool.md5(),
            )
        finally:
            spool.close()
        moved = replace(
            state,
            parts=(*state.parts, PartRecord(number, str(reply["ETag"]), state.tail_size)),
            tail_key=None,
            tail_size=0,
        )
        self.states.save(moved, fence=fence)
        return moved

    def _finish_completion(self, record: CompletedUpload, *, fence: int | None) -> None:
        """Steps 3-6; safe to run again from any point (recovery does)."""
        upload = record.upload
        bucket, key, sidecar_key = (
            self.settings.bucket,
            self.clip_key(upload),
            self.sidecar_key(upload),
        )
        sidecar = s3_call(self.client.head_object, Bucket=bucket, Key=sidecar_key, missing_ok=True)
        if sidecar is None:
            state = self.states.load(upload)
            if state is not None and state.tail_key is not None:
                state = self._tail_as_last_part(state, fence)
            if state is not None:
                self._complete_multipart(state, record)
            version = self._confirm_length(record)
            self.retention.after_complete(self.client, bucket, key, version, record.metadata)
            # RGW 16.2 ignores If-None-Match on PUT, so a stalled holder's sidecar would replace
            # the one the next holder stored and handed out: still ours (else Fenced/NotFound)?
            self.states.check_fence(upload, fence=fence)
            sidecar = self._put_json(
                bucket,
                sidecar_key,
                {**asdict(record), "object_version": version},
                **self.retention.creation_args(record.metadata),
            )
        # Again on recovery: a crash may have come between the sidecar PUT and this call.
        self.retention.after_complete(
            self.client, bucket, sidecar_key, sidecar.get("VersionId"), record.metadata
        )
        self._clean_up_after_completion(upload)

    def _complete_multipart(self, state: S3UploadState, record: CompletedUpload) -> None:
        """Step 3, unless it already happened (upload id gone, object there: step 4 checks)."""
        if record.length == 0 and not state.parts:
            # S3 cannot complete a multipart upload of no parts: an empty object instead.
            self._abort_quietly(state.info.upload, state.key, state.multipart_id)
            s3_required(
                self.client.put_object,
                Bucket=self.settings.bucket,
                Key=state.key,
                Body=b"",
                ContentMD5=_md5(b""),
                **self.retention.creation_args(record.metadata),
            )
            return
        self._check_no_stray_parts(state)
        try:
            done = s3_call(
                self.client.complete_multipart_upload,
                Bucket=self.settings.bucket,
                Key=state.key,
                UploadId=state.multipart_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in state.parts]
                },
                missing_ok=True,
            )
        except StoreError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, ClientError) and error_code(cause) == "InvalidPart"):
                raise
            # A committed part's ETag no longer matches RGW's part: never retried (it would
            # fail forever, and recovery would stop at it), the upload is ended instead.
            log.error("s3.committed_part_replaced", upload=record.upload, parts=len(state.parts))
            self.delete_quietly(self.settings.work_bucket, self._completing_key(record.upload))
            raise PartsReplaced(
                f"{record.upload}: a committed part was replaced in S3; it cannot be completed"
            ) from exc
        if done is None:
            log.info("s3.multipart_already_completed", upload=record.upload)

    def _check_no_stray_parts(self, state: S3UploadState) -> None:
        """RGW 16.2 completes only with every uploaded part listed: name a part beyond the
        committed ones (left by a refused chunk before the part size changed) instead of
        failing with a bare InvalidPart."""
        paginator = self.client.get_paginator("list_parts")
        pages = s3_call(
            lambda: list(
                paginator.paginate(
                    Bucket=self.settings.bucket, Key=state.key, UploadId=state.multipart_id
                )
            ),
            missing_ok=True,
        )
        if pages is None:
            return  # completed already: step 4 checks the object
        stray = sorted(
            int(part["PartNumber"])
            for page in pages
            for part in page.get("Parts", [])
            if int(part["PartNumber"]) > len(state.parts)
        )
        if stray:
            raise StoreError(
                f"{state.info.upload}: parts {stray} were uploaded past the committed "
                f"{len(state.parts)}; S3 cannot complete the upload without them"
            )

    def _confirm_length(self, record: CompletedUpload) -> str | None:
        """Step 4: the stored object is exactly `record.length` bytes; its version id."""
        head = s3_call(
            self.client.head_object,
            Bucket=self.settings.bucket,
            Key=self.clip_key(record.upload),
            missing_ok=True,
        )
        if head is None:
            raise StoreError(
                f"{record.upload}: multipart upload is gone and no object was stored; "
                "the upload cannot be completed"
            )
        if int(head["ContentLength"]) != record.length:
            raise StoreError(
                f"{record.upload}: stored object has {head['ContentLength']} bytes, "
                f"the receipt would say {record.length}"
            )
        version = head.get("VersionId")
        return str(version) if version is not None else None

    def _clean_up_after_completion(self, upload: str) -> None:
        """Step 6: state first, the completing record last."""
        self.states.delete(upload)
        self._delete_tails(upload)
        s3_call(
            self.client.delete_object,
            Bucket=self.settings.work_bucket,
            Key=self._completing_key(upload),
            missing_ok=True,
        )

    # -- reading completed uploads --

    def load_completed(self, upload: str) -> CompletedUpload | None:
        data = self._get_json(self.settings.bucket, self.sidecar_key(upload))
        return CompletedUpload.from_json(data) if data is not None else None

    def completed(self) -> Iterator[CompletedUpload]:
        # Listed in key order, which is upload-id order (ids have one length), page by page.
        for entry in list_objects(self.client, self.settings.bucket, "clips/"):
            upload = entry["Key"].removeprefix("clips/").removesuffix(".json")
            if entry["Key"].endswith(".json") and is_upload_id(upload):
                record = self.load_completed(upload)
                if record is not None:
                    yield record

    def open_completed(self, upload: str) -> BinaryIO:
        data = self._get_json(self.settings.bucket, self.sidecar_key(upload))
        if data is None:
            raise NotFound(f"{upload}: no completed upload")
        version = data.get("object_version")
        extra = {"VersionId": version} if version else {}
        reply = s3_call(
            self.client.get_object,
            Bucket=self.settings.bucket,
            Key=self.clip_key(upload),
            missing_ok=True,
            **extra,
        )
        if reply is None:
            raise NotFound(f"{upload}: completed, but its object is gone from the bucket")
        return io.BufferedReader(_ObjectReader(reply["Body"]))

    # -- ending unfinished uploads --

    def terminate(self, upload: str, *, fence: int | None = None) -> None:
        """Delete an unfinished upload. With the shared lock's `fence` (multi-node), a holder
        whose lock was taken over ends nothing (`Fenced`): the state goes first, in one fenced
        step, and only then the bytes it named. Checking the fence first and deleting after
        would let a holder that stalls in between abort what the next holder committed and
        acknowledged meanwhile."""
        state = self.states.load(self._checked(upload))
        if state is None:
            self.states.check_fence(upload, fence=fence)
        else:
            # NotFound here: ended meanwhile on another node (completed, removed); not ours.
            self.states.delete(upload, fence=fence)
            self._abort_quietly(state.info.upload, state.key, state.multipart_id)
        self._delete_tails(upload)

    def expire(self, upload: str, dock: str | None, *, fence: int | None = None) -> None:
        """Delete an unfinished upload as `terminate` does, leaving a tombstone (410). The
        tombstone goes first, so a crash after the state is gone still answers 410; if the
        termination is refused (`Fenced`, or `NotFound`: ended elsewhere meanwhile), the
        tombstone is taken back."""
        tombstone = self._tombstone_key(upload)
        self._put_json(
            self.settings.work_bucket,
            tombstone,
            {"reason": "expired", "at": time.time(), "dock": dock},
        )
        try:
            self.terminate(upload, fence=fence)
        except (Fenced, NotFound):
            self.delete_quietly(self.settings.work_bucket, tombstone)
            raise

    def _abort_quietly(self, upload: str, key: str, multipart_id: str) -> None:
        try:
            s3_call(
                self.client.abort_multipart_upload,
                Bucket=self.settings.bucket,
                Key=key,
                UploadId=multipart_id,
                missing_ok=True,
            )
        except StoreError as exc:
            log.warning("s3.abort_failed", upload=upload, error=str(exc))

    def load_tombstone(self, upload: str) -> Tombstone | None:
        data = self._get_json(self.settings.work_bucket, self._tombstone_key(upload))
        if data is None:
            return None
        return Tombstone(
            upload, str(data.get("reason", "")), float(data.get("at", 0)), data.get("dock")
        )

    def sweep_tombstones(self, older_than: float) -> int:
        old = [
            entry["Key"]
            for entry in list_objects(self.client, self.settings.work_bucket, "tombstones/")
            if entry["LastModified"].timestamp() < older_than
        ]
        for key in old:
            s3_call(
                self.client.delete_object,
                Bucket=self.settings.work_bucket,
                Key=key,
                missing_ok=True,
            )
        return len(old)


class _ObjectReader(io.RawIOBase):
    """An S3 object body as a raw stream; a gateway failure mid-read is StoreUnavailable."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = s3_call(self._body.read, len(buffer)) or b""
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
