"""The S3 store on a real RGW: what RGW 16.2 makes it do, staging of small PATCHes, a kill -9 of
`dockd serve --store s3:` mid-upload, radosgw killed mid-PATCH, and real clients (tus-js-client,
`dockd run`) uploading into it. The store contract suite runs on RGW in test_s3_contract.py.

Parts are 5 MiB here (the S3 minimum) so that a few MiB exercise parts, tails and their mix.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import io
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dockd.crypto import receipt
from dockd.crypto.keys import keygen
from dockd.receiver.storage.api import (
    CompletedUpload,
    CreationInfo,
    StoreError,
    StoreFull,
    StoreUnavailable,
    new_upload_id,
    rfc3339,
)
from dockd.receiver.storage.s3 import S3Store
from dockd.receiver.storage.s3_config import S3Settings, make_client
from dockd.receiver.storage.s3_retention_api import NoRetention
from dockd.receiver.uploads import UploadCoordinator
from support.ceph import CephCluster
from support.dock import (
    DaemonProcess,
    StoredObject,
    decrypt_sha256,
    dock_config,
    journal_rows,
    make_bay,
    write_toml,
)
from support.dock import wait_for as wait_for_condition
from support.node_peers import ensure_node_peers, run_tus_js_upload_async
from support.receiver import (
    RawRequest,
    ReceiverProcess,
    Tus,
    checksum_header,
    running_receiver,
    upload_id_of,
)
from support.stores import SimulatedCrash, rgw_settings

pytestmark = pytest.mark.ceph

MiB = 1 << 20
PART = 5 * MiB


@dataclass
class RgwTarget:
    """A fresh evidence bucket on the session's RGW, and how to serve it."""

    settings: S3Settings
    credentials: Path
    client: Any

    def store(self) -> S3Store:
        return S3Store(self.settings, client=self.client)

    def serve_args(self) -> list[str]:
        return [
            "--store",
            f"s3:{self.settings.endpoint_url}/{self.settings.bucket}",
            "--s3-credentials",
            str(self.credentials),
            "--s3-region",
            self.settings.region,
            "--s3-part-size",
            str(self.settings.part_size),
        ]

    def object_bytes(self, upload: str) -> bytes:
        reply = self.client.get_object(Bucket=self.settings.bucket, Key=f"clips/{upload}")
        return bytes(reply["Body"].read())

    def work_keys(self, prefix: str) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.settings.work_bucket, Prefix=prefix)
        return [entry["Key"] for entry in listed.get("Contents", [])]

    def uploaded_parts(self, upload: str) -> int:
        state = self.store().states.load(upload)
        assert state is not None
        listed = self.client.list_parts(
            Bucket=self.settings.bucket, Key=state.key, UploadId=state.multipart_id
        )
        return len(listed.get("Parts", []))


@pytest.fixture
def rgw(ceph: CephCluster, tmp_path: Path) -> Iterator[RgwTarget]:
    ceph.ensure_rgw()
    assert ceph.endpoint is not None
    settings = rgw_settings(ceph.endpoint, part_size=PART)
    credentials = tmp_path / "s3.credentials"
    fd = os.open(credentials, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(
            f"[default]\naws_access_key_id = {settings.access_key}\n"
            f"aws_secret_access_key = {settings.secret_key}\n"
        )
    target = RgwTarget(settings, credentials, make_client(settings))
    target.store().recover()  # creates both buckets, as `dockd serve` does at start
    yield target
    ceph.ensure_rgw()


# -- what RGW 16.2 does, which the store's design follows --


def test_rgw_completes_only_with_every_uploaded_part_listed(rgw: RgwTarget) -> None:
    """Why part n is always bytes [(n-1)P, nP) and an uncommitted part is overwritten, never
    skipped: RGW 16.2 refuses (400 InvalidPart) a completion that leaves out any uploaded part,
    below or above the listed ones."""
    s3, bucket = rgw.client, rgw.settings.bucket
    etags = {}
    key = f"clips/{uuid.uuid4().hex}"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    for number, body in ((1, b"a" * PART), (2, b"b" * 100)):
        etags[number] = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=body
        )["ETag"]
    for listed in ([2], [1]):
        with pytest.raises(ClientError) as refused:
            s3.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in listed]},
            )
        assert refused.value.response["Error"]["Code"] == "InvalidPart", listed
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in (1, 2)]},
    )
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"a" * PART + b"b" * 100


def test_rgw_refuses_to_complete_a_part_overwritten_since_its_etag_was_recorded(
    rgw: RgwTarget,
) -> None:
    """Why a late UploadPart from a stalled holder cannot slip into a receipt: completion
    passes the committed ETag, and RGW refuses a part whose bytes changed since."""
    s3, bucket = rgw.client, rgw.settings.bucket
    key = f"clips/{uuid.uuid4().hex}"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    committed = s3.upload_part(
        Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"committed"
    )["ETag"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"late write")
    with pytest.raises(ClientError) as refused:
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": committed}]},
        )
    assert refused.value.response["Error"]["Code"] == "InvalidPart"


def test_parts_of_an_open_multipart_upload_cannot_be_read_back(rgw: RgwTarget) -> None:
    """Why the hash state is saved rather than rebuilt from the committed prefix."""
    s3, bucket = rgw.client, rgw.settings.bucket
    key = f"clips/{uuid.uuid4().hex}"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * 100)
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=bucket, Key=key, PartNumber=1)
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_rgw_drops_tags_and_legal_hold_given_at_create_multipart_upload(rgw: RgwTarget) -> None:
    """Why the retention hook must tag and hold the clip's version after completion
    (`after_complete`): RGW 16.2 ignores both on CreateMultipartUpload, while PutObject (the
    sidecar) honours them."""
    s3, bucket = rgw.client, rgw.settings.bucket
    wanted = {"Tagging": "retention=evidence", "ObjectLockLegalHoldStatus": "ON"}
    key = f"clips/{uuid.uuid4().hex}"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, **wanted)["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x")["ETag"]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    assert s3.get_object_tagging(Bucket=bucket, Key=key).get("TagSet") is None
    with pytest.raises(ClientError, match="ObjectLockConfigurationNotFound"):
        s3.get_object_legal_hold(Bucket=bucket, Key=key)

    sidecar = f"{key}.json"
    body = b"{}"
    s3.put_object(
        Bucket=bucket,
        Key=sidecar,
        Body=body,
        ContentMD5=base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode(),
        **wanted,
    )
    assert s3.get_object_tagging(Bucket=bucket, Key=sidecar)["TagSet"] == [
        {"Key": "retention", "Value": "evidence"}
    ]
    assert s3.get_object_legal_hold(Bucket=bucket, Key=sidecar)["LegalHold"]["Status"] == "ON"


# -- staging through the real receiver --


async def test_small_and_odd_patches_are_staged_and_complete_exactly(
    rgw: RgwTarget, tmp_path: Path
) -> None:
    data = os.urandom(3 * PART + 123_457)
    sizes = [MiB] * 7 + [777_777, 1, 4_999_999, PART + 3]
    async with (
        running_receiver(tmp_path, store=rgw.store()) as rx,
        aiohttp.ClientSession() as session,
    ):
        tus = Tus(session, rx.url)
        location = (await tus.create(len(data))).headers["Location"]
        upload = upload_id_of(location)
        offset = 0
        for size in [*sizes, len(data)]:
            piece = data[offset : offset + size]
            reply = await tus.patch(location, offset, piece)
            assert reply.status == 204, reply
            offset = reply.offset
            if offset == len(data):
                break
            state = rgw.store().states.load(upload)
            assert state is not None and state.offset == offset
            # Every acknowledged byte is in a committed part or in the committed tail.
            assert sum(p.size for p in state.parts) + state.tail_size == offset
            assert all(p.size == PART for p in state.parts)
            assert state.tail_size < PART
        signed = receipt.verify(reply.headers[receipt.HEADER], rx.public_key)
    assert signed.matches(upload=upload, length=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert rgw.object_bytes(upload) == data
    assert rgw.work_keys("tail/") == [] and rgw.work_keys("state/") == []


async def test_a_refused_chunk_that_filled_a_part_leaves_nothing_in_the_object(
    rgw: RgwTarget, tmp_path: Path
) -> None:
    """A chunk whose checksum fails after a part of it went to RGW: that part is uncommitted,
    overwritten by the next one, and never in the stored object."""
    data = os.urandom(2 * PART + 1000)
    chunk = PART + 500
    async with (
        running_receiver(tmp_path, store=rgw.store()) as rx,
        aiohttp.ClientSession() as session,
    ):
        tus = Tus(session, rx.url)
        location = (await tus.create(len(data))).headers["Location"]
        upload = upload_id_of(location)
        wrong = {"Upload-Checksum": checksum_header("sha256", b"something else")}
        refused = await tus.patch(location, 0, data[:chunk], checksum=None, headers=wrong)
        assert refused.status == 460, refused
        assert rgw.uploaded_parts(upload) == 1  # the refused chunk's part reached RGW
        for start in range(0, len(data), chunk):
            reply = await tus.patch(location, start, data[start : start + chunk])
            assert reply.status == 204, reply
        signed = receipt.verify(reply.headers[receipt.HEADER], rx.public_key)
    assert signed.matches(upload=upload, length=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert rgw.object_bytes(upload) == data


# -- crashes --


async def test_kill9_of_serve_mid_upload_resumes_exactly_resending_at_most_one_chunk(
    rgw: RgwTarget, tmp_path: Path
) -> None:
    chunk = 8 * MiB
    data = os.urandom(4 * chunk + 4321)
    with ReceiverProcess(tmp_path / "rx", extra_args=rgw.serve_args()) as server:
        async with aiohttp.ClientSession() as session:
            tus = Tus(session, server.url)
            location = (await tus.create(len(data))).headers["Location"]
            upload = upload_id_of(location)
            sent = 0
            for start in (0, chunk):
                assert (await tus.patch(location, start, data[start : start + chunk])).status == 204
                sent += chunk
            parts_before = rgw.uploaded_parts(upload)
            # The third chunk is cut by the kill after one of its parts reached RGW.
            raw = await RawRequest.patch(location, offset=2 * chunk, content_length=chunk)
            await raw.send(data[2 * chunk : 2 * chunk + 6 * MiB])
            sent += 6 * MiB
            await wait_for_condition(
                lambda: rgw.uploaded_parts(upload) > parts_before, what="a part of chunk 3"
            )
            server.kill9()
            raw.abort()
            server.restart()

            offset = (await tus.head(location)).offset
            assert offset == 2 * chunk  # exactly what was acknowledged
            while offset < len(data):
                reply = await tus.patch(location, offset, data[offset : offset + chunk])
                assert reply.status == 204, reply
                sent += len(data[offset : offset + chunk])
                offset = reply.offset
        signed = receipt.verify(reply.headers[receipt.HEADER], server.public_key)
    assert signed.matches(upload=upload, length=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert sent - len(data) <= chunk
    assert rgw.object_bytes(upload) == data


async def test_radosgw_killed_mid_patch_is_503_then_the_upload_completes(
    ceph: CephCluster, rgw: RgwTarget, tmp_path: Path
) -> None:
    chunk = 8 * MiB
    data = os.urandom(2 * chunk + 99)
    async with (
        running_receiver(tmp_path, store=rgw.store()) as rx,
        aiohttp.ClientSession() as session,
    ):
        tus = Tus(session, rx.url)
        location = (await tus.create(len(data))).headers["Location"]
        upload = upload_id_of(location)
        assert (await tus.patch(location, 0, data[:chunk])).status == 204

        raw = await RawRequest.patch(location, offset=chunk, content_length=chunk)
        await raw.send(data[chunk : chunk + 2 * MiB])
        ceph.kill_rgw()
        await raw.send(data[chunk + 2 * MiB : 2 * chunk])  # the part upload at 5 MiB fails
        status, headers = await raw.response()
        await raw.close()
        assert status == 503
        assert int(headers["Retry-After"]) >= 1
        assert (await tus.head(location)).offset == chunk  # the acknowledged chunk only

        # On this thread, not a worker: radosgw dies with the thread that started it (PDEATHSIG).
        ceph.start_rgw()
        offset = chunk
        while offset < len(data):
            reply = await tus.patch(location, offset, data[offset : offset + chunk])
            assert reply.status == 204, reply
            offset = reply.offset
        signed = receipt.verify(reply.headers[receipt.HEADER], rx.public_key)
    assert signed.matches(upload=upload, length=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert rgw.object_bytes(upload) == data


# -- real clients --


async def test_tus_js_client_uploads_into_rgw_backed_serve(rgw: RgwTarget, tmp_path: Path) -> None:
    ensure_node_peers()
    source = tmp_path / "clip.bin"
    source.write_bytes(os.urandom(PART + 3 * MiB + 17))
    with ReceiverProcess(tmp_path / "rx", extra_args=rgw.serve_args()) as server:
        report = await run_tus_js_upload_async(server.url, source, chunk_size=MiB)
    assert report["completed"] is True
    upload = upload_id_of(report["url"])
    record = rgw.store().load_completed(upload)
    expected = hashlib.sha256(source.read_bytes()).hexdigest()
    assert record is not None and record.sha256 == expected
    assert hashlib.sha256(rgw.object_bytes(upload)).hexdigest() == expected


async def test_dockd_run_uploads_into_rgw_and_the_objects_decrypt_to_the_custody_hash(
    rgw: RgwTarget, tmp_path: Path
) -> None:
    keys = keygen(tmp_path / "keys")
    with ReceiverProcess(tmp_path / "rx", extra_args=rgw.serve_args()) as server:
        (tmp_path / "bays").mkdir()
        config = dock_config(
            tmp_path,
            server.url,
            keys.age_recipient.read_text().strip(),
            public_key=server.public_key_path,
            chunk_size=2 * MiB,
        )
        digests = make_bay(
            tmp_path / "bays",
            "bay-1",
            "CAM-S3",
            {"DCIM/A.MP4": 7 * MiB + 3, "DCIM/B.MP4": 100_000, "DCIM/C.MP4": 0},
        )
        daemon = DaemonProcess(write_toml(tmp_path / "dockd.toml", config), tmp_path / "d.log")
        daemon.start()
        try:
            await wait_for_condition(
                lambda: [r["state"] for r in journal_rows(tmp_path / "state")] == ["WIPED"] * 3,
                timeout=120,
                what="all three clips wiped",
            )
        finally:
            daemon.terminate()
    store = rgw.store()
    custody = {r["plaintext_sha256"] for r in journal_rows(tmp_path / "state")}
    assert custody == set(digests.values())
    decrypted = {
        decrypt_sha256(StoredObject(store, record.upload), keys.age_identity)
        for record in store.completed()
    }
    assert decrypted == custody


# -- the retention seam --


class RecordingRetention(NoRetention):
    """Tags objects as the retention module will (at creation, and on the completed version:
    RGW 16.2 drops CreateMultipartUpload's tags), and records the hook's calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None]] = []

    def prepare_bucket(self, client: Any, bucket: str) -> None:
        self.calls.append(("prepare_bucket", bucket, None))
        super().prepare_bucket(client, bucket)

    def creation_args(self, metadata: dict[str, str | None]) -> dict[str, Any]:
        return {"Tagging": f"retention={'evidence' if metadata.get('evidence') else 'routine'}"}

    def after_complete(
        self,
        client: Any,
        bucket: str,
        key: str,
        version_id: str | None,
        metadata: dict[str, str | None],
    ) -> None:
        self.calls.append(("after_complete", key, version_id))
        assert version_id is not None
        tag = "evidence" if metadata.get("evidence") else "routine"
        client.put_object_tagging(
            Bucket=bucket,
            Key=key,
            VersionId=version_id,
            Tagging={"TagSet": [{"Key": "retention", "Value": tag}]},
        )


def test_the_retention_hook_sees_the_bucket_both_objects_and_their_versions(
    rgw: RgwTarget,
) -> None:
    retention = RecordingRetention()
    store = S3Store(rgw.settings, client=rgw.client, retention=retention)
    store.recover()
    data = os.urandom(PART + 10)
    info = CreationInfo(
        new_upload_id(), len(data), "", {"evidence": "true"}, "2026-11-30T00:00:00Z", None
    )
    store.create(info, 0.0)
    whole = store.running_hash(info.upload, 0)
    writer = store.open_writer(info.upload, 0)
    writer.write(data, 0)
    whole.update(data)
    writer.commit(len(data), 0.0, whole)
    writer.close()
    record = CompletedUpload(
        info.upload,
        len(data),
        whole.hexdigest(),
        "receipt",
        "2026-11-30T00:00:01Z",
        metadata=info.metadata,
    )
    store.complete(record)

    bucket = rgw.settings.bucket
    clip, sidecar = f"clips/{info.upload}", f"clips/{info.upload}.json"
    versions = {
        key: rgw.client.head_object(Bucket=bucket, Key=key)["VersionId"] for key in (clip, sidecar)
    }
    assert retention.calls == [
        ("prepare_bucket", bucket, None),
        ("after_complete", clip, versions[clip]),
        ("after_complete", sidecar, versions[sidecar]),
    ]
    for key in (clip, sidecar):
        tags = rgw.client.get_object_tagging(Bucket=bucket, Key=key).get("TagSet")
        assert tags == [{"Key": "retention", "Value": "evidence"}], key
    assert store.load_completed(info.upload) == record
    assert hashlib.sha256(rgw.object_bytes(info.upload)).hexdigest() == record.sha256


def test_a_multipart_upload_whose_state_never_got_written_is_aborted_at_start(
    rgw: RgwTarget,
) -> None:
    """A crash between CreateMultipartUpload and the state PUT leaves a multipart upload that
    nothing would complete; the next start aborts it (here at once: `orphan_age=0`)."""

    def crash_on_put(model: Any, **_: Any) -> None:
        if model.name == "PutObject":
            raise SimulatedCrash("crash before the state PUT")

    store = rgw.store()
    info = CreationInfo(new_upload_id(), 10, "", {}, "2026-11-30T00:00:00Z", None)
    rgw.client.meta.events.register("before-call.s3", crash_on_put, unique_id="crash-put")
    try:
        with pytest.raises(SimulatedCrash):
            store.create(info, 0.0)
    finally:
        rgw.client.meta.events.unregister("before-call.s3", unique_id="crash-put")

    def open_multiparts() -> list[str]:
        listed = rgw.client.list_multipart_uploads(Bucket=rgw.settings.bucket, Prefix="clips/")
        return [entry["Key"] for entry in listed.get("Uploads", [])]

    assert open_multiparts() == [f"clips/{info.upload}"]
    assert S3Store(rgw.settings, client=rgw.client).recover() == []
    assert open_multiparts() == [f"clips/{info.upload}"]  # young: maybe another node's
    assert S3Store(rgw.settings, client=rgw.client, orphan_age=0).recover() == []
    assert open_multiparts() == []


async def test_a_completion_retried_after_its_cleanup_failed_hands_out_the_stored_receipt(
    rgw: RgwTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sidecar was stored, then deleting the upload's state failed (RGW 503): the
    completion is retried at the next HEAD, which signs a new receipt (a new `completed`
    second). The receipt handed to the dock must be the one stored, never a second one that
    exists nowhere on the server."""
    store = rgw.store()
    coordinator = UploadCoordinator(
        store, Ed25519PrivateKey.generate(), expire_after=3600, idle_timeout=30
    )
    data = os.urandom(MiB)
    created = rfc3339(dt.datetime.now(dt.UTC))
    info = CreationInfo(new_upload_id(), len(data), "", {}, created, None)
    upload = await coordinator.create(info)
    whole = await coordinator.running_hash(upload)
    writer = store.open_writer(upload.id, 0)
    writer.write(data, 0)
    whole.update(data)
    writer.commit(len(data), time.time() + 3600, whole)
    writer.close()
    upload.offset, upload.hasher = len(data), whole

    real_delete = store.states.delete
    failures = [StoreUnavailable("RGW answered 503", retry_after=5)]

    def delete_failing_once(upload_id: str, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        real_delete(upload_id, **kwargs)

    monkeypatch.setattr(store.states, "delete", delete_failing_once)
    assert await coordinator.finish_pending_completion(upload) is None  # HEAD: retry later
    first = store.load_completed(upload.id)
    assert first is not None  # the sidecar went in before the cleanup failed
    second = int(time.time())
    while int(time.time()) == second:  # the retry signs in a later second
        await asyncio.sleep(0.05)
    handed_out = await coordinator.finish_pending_completion(upload)
    assert handed_out == store.load_completed(upload.id) == first
    assert store.partial(upload.id) is None


def test_a_state_corrupted_on_its_way_to_rgw_is_refused_not_acknowledged(
    rgw: RgwTarget,
) -> None:
    """The state object decides which bytes count, so it is checked in transit like every part
    and tail (Content-MD5, which RGW verifies): a commit whose state arrived altered fails
    (nothing acknowledged), instead of succeeding and leaving a state a restart cannot read."""
    store = rgw.store()
    data = os.urandom(MiB)
    created = rfc3339(dt.datetime.now(dt.UTC))
    info = CreationInfo(new_upload_id(), 2 * len(data), "", {}, created, None)
    store.create(info, time.time() + 3600)
    whole = store.running_hash(info.upload, 0)

    def corrupt_state_puts(params: dict[str, Any], **_: Any) -> None:
        if "/state/" in params["url_path"]:
            body = bytearray(params["body"].getvalue())  # botocore wraps it in a BytesIO
            body[0] ^= 0x20  # one bit flipped on the wire, after the caller's checksum
            params["body"] = io.BytesIO(bytes(body))

    rgw.client.meta.events.register(
        "before-call.s3.PutObject", corrupt_state_puts, unique_id="corrupt-state"
    )
    committed = True
    try:
        writer = store.open_writer(info.upload, 0)
        writer.write(data, 0)
        whole.update(data)
        try:
            writer.commit(len(data), time.time() + 3600, whole)
        except StoreError:
            committed = False
        writer.close()
    finally:
        rgw.client.meta.events.unregister("before-call.s3.PutObject", unique_id="corrupt-state")
    restarted = rgw.store()  # a fresh state cache, as after a restart
    partial = restarted.partial(info.upload)
    assert partial is not None
    assert partial.offset == (len(data) if committed else 0)


@pytest.mark.root
def test_a_full_spool_directory_is_store_full_and_nothing_counts(
    rgw: RgwTarget, tmp_path: Path
) -> None:
    """The S3 store spools each request's bytes to a local directory before they become a part
    or a tail. That disk filling up is a full store (507: the dock tries again later), as for
    the file store, not an unexplained 500; and none of the chunk counts."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs as the spool directory")
    spool = tmp_path / "spool"
    spool.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(spool)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        store = S3Store(rgw.settings, client=rgw.client, spool_dir=str(spool))
        created = rfc3339(dt.datetime.now(dt.UTC))
        info = CreationInfo(new_upload_id(), MiB, "", {}, created, None)
        store.create(info, time.time() + 3600)
        writer = store.open_writer(info.upload, 0)
        with pytest.raises(StoreFull):
            writer.write(os.urandom(MiB), 0)  # past the spool's 256 KiB, below a part
            writer.commit(MiB, time.time() + 3600, store.running_hash(info.upload, 0))
        writer.discard()
        writer.close()
        partial = store.partial(info.upload)
        assert partial is not None and partial.offset == 0
    finally:
        subprocess.run(["umount", "-l", str(spool)], check=False)


def test_a_creation_whose_state_write_answered_late_leaves_no_ghost_upload(
    rgw: RgwTarget,
) -> None:
    """RGW stored the new upload's state but the answer never came (a read timeout): the POST
    fails (503) and the dock creates another upload. The failed one must not stay behind as an
    unfinished upload naming an aborted multipart upload (counted against the dock's quota,
    resumable by nobody, listed at every start)."""
    store = rgw.store()
    created = rfc3339(dt.datetime.now(dt.UTC))
    info = CreationInfo(new_upload_id(), MiB, "", {}, created, None)

    def answer_lost(http_response: Any, parsed: Any, model: Any, **kwargs: Any) -> None:
        if "/state/" in kwargs["context"].get("dockd_url_path", ""):
            raise ReadTimeoutError(endpoint_url="state PUT answered too late")

    def note_path(params: dict[str, Any], **_: Any) -> None:
        params["context"]["dockd_url_path"] = params["url_path"]

    rgw.client.meta.events.register("before-call.s3.PutObject", note_path, unique_id="note")
    rgw.client.meta.events.register("after-call.s3.PutObject", answer_lost, unique_id="lost")
    try:
        with pytest.raises(StoreUnavailable):
            store.create(info, time.time() + 3600)
    finally:
        rgw.client.meta.events.unregister("after-call.s3.PutObject", unique_id="lost")
        rgw.client.meta.events.unregister("before-call.s3.PutObject", unique_id="note")
    restarted = rgw.store()
    assert restarted.partial(info.upload) is None
    assert info.upload not in {p.info.upload for p in restarted.recover()}
