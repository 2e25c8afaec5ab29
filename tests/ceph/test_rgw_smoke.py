"""What the S3 store backend relies on, proven against the real radosgw 16.2 (issue 15).

Each test states one behaviour of RGW that the backend's durability or retention argument
needs, including the ones RGW does NOT give (If-None-Match on a versioned bucket), so that a
Ceph upgrade that changes them fails here rather than in court.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from support.ceph import CephCluster

pytestmark = pytest.mark.ceph

MiB = 1 << 20
PART = 5 * MiB  # S3's smallest part except the last


def refusal(exc_info: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    response = exc_info.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def multipart_etag(parts: list[bytes]) -> str:
    """S3's ETag of a completed multipart object: md5 of the parts' md5s, dash, part count."""
    digests = b"".join(hashlib.md5(part).digest() for part in parts)  # S3's format, not security
    return f'"{hashlib.md5(digests).hexdigest()}-{len(parts)}"'


async def read_all(s3: Any, bucket: str, key: str) -> bytes:
    response = await s3.get_object(Bucket=bucket, Key=key)
    async with response["Body"] as body:
        return bytes(await body.read())


async def upload_parts(
    s3: Any, bucket: str, key: str, upload_id: str, parts: list[bytes], first: int = 1
) -> list[dict[str, Any]]:
    done = []
    for number, data in enumerate(parts, start=first):
        answer = await s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
        )
        done.append({"PartNumber": number, "ETag": answer["ETag"]})
    return done


async def test_bucket_created_with_object_lock_is_locked_and_versioned(
    s3: Any, locked_bucket: str
) -> None:
    lock = await s3.get_object_lock_configuration(Bucket=locked_bucket)
    assert lock["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    versioning = await s3.get_bucket_versioning(Bucket=locked_bucket)
    assert versioning["Status"] == "Enabled"


async def test_multipart_three_parts_listed_in_pages_then_completed(
    s3: Any, locked_bucket: str
) -> None:
    parts = [os.urandom(PART), os.urandom(PART), os.urandom(MiB + 17)]
    key = "clips/three-parts.age"
    upload = await s3.create_multipart_upload(Bucket=locked_bucket, Key=key)
    upload_id = upload["UploadId"]
    done = await upload_parts(s3, locked_bucket, key, upload_id, parts)

    first = await s3.list_parts(Bucket=locked_bucket, Key=key, UploadId=upload_id, MaxParts=2)
    assert [p["PartNumber"] for p in first["Parts"]] == [1, 2]
    assert first["IsTruncated"] is True
    rest = await s3.list_parts(
        Bucket=locked_bucket,
        Key=key,
        UploadId=upload_id,
        MaxParts=2,
        PartNumberMarker=first["NextPartNumberMarker"],
    )
    assert [p["PartNumber"] for p in rest["Parts"]] == [3]
    assert rest["IsTruncated"] is False
    listed = first["Parts"] + rest["Parts"]
    assert [p["Size"] for p in listed] == [len(p) for p in parts]
    assert [p["ETag"] for p in listed] == [d["ETag"] for d in done]

    await s3.complete_multipart_upload(
        Bucket=locked_bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
    )
    head = await s3.head_object(Bucket=locked_bucket, Key=key)
    assert head["ContentLength"] == sum(len(p) for p in parts)
    assert head["ETag"] == multipart_etag(parts)
    stored = await read_all(s3, locked_bucket, key)
    assert hashlib.sha256(stored).digest() == hashlib.sha256(b"".join(parts)).digest()


async def test_a_part_under_5_mib_is_refused_at_completion_unless_last(
    s3: Any, locked_bucket: str
) -> None:
    # Why the backend must stage small PATCHes: RGW accepts the small part, then refuses to
    # complete, so a tus chunk of 1 MiB cannot simply become a part.
    key = "clips/small-first-part.age"
    upload = await s3.create_multipart_upload(Bucket=locked_bucket, Key=key)
    done = await upload_parts(s3, locked_bucket, key, upload["UploadId"], [b"a" * MiB, b"b" * MiB])
    with pytest.raises(ClientError) as refused:
        await s3.complete_multipart_upload(
            Bucket=locked_bucket,
            Key=key,
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": done},
        )
    assert refusal(refused) == (400, "EntityTooSmall")


async def test_aborted_multipart_upload_is_gone(s3: Any, locked_bucket: str) -> None:
    key = "clips/aborted.age"
    upload = await s3.create_multipart_upload(Bucket=locked_bucket, Key=key)
    await upload_parts(s3, locked_bucket, key, upload["UploadId"], [os.urandom(PART)])
    await s3.abort_multipart_upload(Bucket=locked_bucket, Key=key, UploadId=upload["UploadId"])

    with pytest.raises(ClientError) as missing:
        await s3.list_parts(Bucket=locked_bucket, Key=key, UploadId=upload["UploadId"])
    # AWS answers NoSuchUpload; RGW 16.2 answers NoSuchKey. The backend must take either 404
    # as "this upload no longer exists".
    assert refusal(missing) in ((404, "NoSuchUpload"), (404, "NoSuchKey"))
    pending = await s3.list_multipart_uploads(Bucket=locked_bucket)
    assert upload["UploadId"] not in [u["UploadId"] for u in pending.get("Uploads", [])]


async def test_upload_part_copy_builds_an_object_from_a_stored_range(
    s3: Any, locked_bucket: str
) -> None:
    source = os.urandom(PART + MiB)
    await s3.put_object(Bucket=locked_bucket, Key="staging/source", Body=source)
    key = "clips/copied.age"
    upload = await s3.create_multipart_upload(Bucket=locked_bucket, Key=key)
    copied = await s3.upload_part_copy(
        Bucket=locked_bucket,
        Key=key,
        UploadId=upload["UploadId"],
        PartNumber=1,
        CopySource={"Bucket": locked_bucket, "Key": "staging/source"},
        CopySourceRange=f"bytes=0-{PART - 1}",
    )
    tail = b"tail bytes sent by the dock"
    done = [{"PartNumber": 1, "ETag": copied["CopyPartResult"]["ETag"]}]
    done += await upload_parts(s3, locked_bucket, key, upload["UploadId"], [tail], first=2)
    await s3.complete_multipart_upload(
        Bucket=locked_bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": done}
    )
    assert await read_all(s3, locked_bucket, key) == source[:PART] + tail


async def test_if_none_match_star_refuses_overwrite_only_on_an_unversioned_bucket(
    s3: Any, locked_bucket: str
) -> None:
    # RGW 16.2 honours If-None-Match: * as a create-only PUT on a plain bucket (412), but on a
    # versioned bucket, which every Object Lock bucket is, it ignores it and writes a new
    # version. The backend cannot use it as its "never overwrite" guard on the evidence bucket.
    plain = f"plain-{locked_bucket}"
    await s3.create_bucket(Bucket=plain)
    await s3.put_object(Bucket=plain, Key="k", Body=b"first")
    with pytest.raises(ClientError) as refused:
        await s3.put_object(Bucket=plain, Key="k", Body=b"second", IfNoneMatch="*")
    assert refusal(refused) == (412, "PreconditionFailed")
    assert await read_all(s3, plain, "k") == b"first"

    first = await s3.put_object(Bucket=locked_bucket, Key="k", Body=b"first")
    second = await s3.put_object(Bucket=locked_bucket, Key="k", Body=b"second", IfNoneMatch="*")
    assert await read_all(s3, locked_bucket, "k") == b"second"
    # Nothing is lost, though: the first version is still there under its id.
    kept = await s3.get_object(Bucket=locked_bucket, Key="k", VersionId=first["VersionId"])
    async with kept["Body"] as body:
        assert await body.read() == b"first"
    assert second["VersionId"] != first["VersionId"]


async def test_if_match_on_put_wants_the_unquoted_etag_and_never_passes_on_a_versioned_bucket(
    s3: Any, locked_bucket: str
) -> None:
    # RGW 16.2 compares PUT's If-Match with the ETag without its quotes: the quoted form that
    # S3 returns (and AWS accepts) fails. On a versioned bucket every PUT If-Match fails, so
    # neither conditional PUT works on the evidence bucket. (HEAD/GET If-Match take either.)
    plain = f"plain-if-match-{locked_bucket}"
    await s3.create_bucket(Bucket=plain)
    etag = (await s3.put_object(Bucket=plain, Key="k", Body=b"first"))["ETag"]
    with pytest.raises(ClientError) as quoted:
        await s3.put_object(Bucket=plain, Key="k", Body=b"second", IfMatch=etag)
    assert refusal(quoted) == (412, "PreconditionFailed")
    await s3.put_object(Bucket=plain, Key="k", Body=b"second", IfMatch=etag.strip('"'))
    assert await read_all(s3, plain, "k") == b"second"

    etag = (await s3.put_object(Bucket=locked_bucket, Key="k", Body=b"first"))["ETag"]
    for form in (etag, etag.strip('"')):
        with pytest.raises(ClientError) as refused:
            await s3.put_object(Bucket=locked_bucket, Key="k", Body=b"second", IfMatch=form)
        assert refusal(refused) == (412, "PreconditionFailed")
    await s3.head_object(Bucket=locked_bucket, Key="k", IfMatch=etag)
    await s3.head_object(Bucket=locked_bucket, Key="k", IfMatch=etag.strip('"'))


async def test_legal_hold_blocks_deleting_that_version_until_released(
    s3: Any, locked_bucket: str
) -> None:
    put = await s3.put_object(
        Bucket=locked_bucket, Key="clips/held.age", Body=b"evidence", ObjectLockLegalHoldStatus="ON"
    )
    version = put["VersionId"]
    hold = await s3.get_object_legal_hold(
        Bucket=locked_bucket, Key="clips/held.age", VersionId=version
    )
    assert hold["LegalHold"]["Status"] == "ON"
    with pytest.raises(ClientError) as refused:
        await s3.delete_object(Bucket=locked_bucket, Key="clips/held.age", VersionId=version)
    assert refusal(refused) == (403, "AccessDenied")

    # The hold, and nothing else, was the obstacle: released, the same delete succeeds.
    await s3.put_object_legal_hold(
        Bucket=locked_bucket, Key="clips/held.age", VersionId=version, LegalHold={"Status": "OFF"}
    )
    await s3.delete_object(Bucket=locked_bucket, Key="clips/held.age", VersionId=version)


async def test_compliance_retention_blocks_delete_and_cannot_be_shortened(
    s3: Any, locked_bucket: str
) -> None:
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    put = await s3.put_object(
        Bucket=locked_bucket,
        Key="clips/retained.age",
        Body=b"evidence",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until,
    )
    version = {"Bucket": locked_bucket, "Key": "clips/retained.age", "VersionId": put["VersionId"]}

    with pytest.raises(ClientError) as delete:
        await s3.delete_object(**version)
    assert refusal(delete) == (403, "AccessDenied")
    with pytest.raises(ClientError) as bypass:
        await s3.delete_object(**version, BypassGovernanceRetention=True)
    assert refusal(bypass) == (403, "AccessDenied")
    with pytest.raises(ClientError) as shorten:
        await s3.put_object_retention(
            **version,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until - timedelta(hours=1)},
        )
    assert refusal(shorten) == (403, "AccessDenied")
    with pytest.raises(ClientError) as weaken:
        await s3.put_object_retention(
            **version, Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until}
        )
    assert refusal(weaken) == (403, "AccessDenied")

    later = until + timedelta(days=1)
    await s3.put_object_retention(
        **version, Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later}
    )
    retention = await s3.get_object_retention(**version)
    assert retention["Retention"]["RetainUntilDate"] == later
    assert await read_all(s3, locked_bucket, "clips/retained.age") == b"evidence"


async def test_lifecycle_expires_routine_objects_by_tag_and_spares_flagged_ones(
    s3: Any, locked_bucket: str
) -> None:
    # One lifecycle "day" is `rgw lc debug interval` = 10 s here. On a versioned bucket,
    # Expiration only puts a delete marker on top; NoncurrentVersionExpiration then removes
    # the data. The rule selects by tag, so flagging an object later (legal hold + re-tag)
    # takes it out of the rule's scope; a held object left in scope keeps its bytes but is
    # hidden behind the delete marker.
    await s3.put_bucket_lifecycle_configuration(
        Bucket=locked_bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "retention-days",
                    "Status": "Enabled",
                    "Filter": {"Tag": {"Key": "retention", "Value": "routine"}},
                    "Expiration": {"Days": 1},
                    "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
                }
            ]
        },
    )
    routine = "retention=routine"
    await s3.put_object(Bucket=locked_bucket, Key="clips/routine.age", Body=b"r", Tagging=routine)
    held = await s3.put_object(
        Bucket=locked_bucket,
        Key="clips/held-in-scope.age",
        Body=b"held",
        Tagging=routine,
        ObjectLockLegalHoldStatus="ON",
    )
    flagged = await s3.put_object(
        Bucket=locked_bucket, Key="clips/flagged.age", Body=b"flagged", Tagging=routine
    )
    flagged_version = {
        "Bucket": locked_bucket,
        "Key": "clips/flagged.age",
        "VersionId": flagged["VersionId"],
    }
    await s3.put_object_legal_hold(**flagged_version, LegalHold={"Status": "ON"})
    await s3.put_object_tagging(
        **flagged_version, Tagging={"TagSet": [{"Key": "retention", "Value": "evidence"}]}
    )

    async def versions() -> dict[str, list[str]]:
        listing = await s3.list_object_versions(Bucket=locked_bucket, Prefix="clips/")
        found: dict[str, list[str]] = {}
        for version in listing.get("Versions", []):
            found.setdefault(version["Key"], []).append(version["VersionId"])
        return found

    began = time.monotonic()
    while "clips/routine.age" in await versions():
        assert time.monotonic() - began < 120, "lifecycle did not expire the object in 2 min"
        await asyncio.sleep(2)

    left = await versions()
    assert left["clips/held-in-scope.age"] == [held["VersionId"]]
    with pytest.raises(ClientError) as hidden:
        await s3.head_object(Bucket=locked_bucket, Key="clips/held-in-scope.age")
    assert refusal(hidden)[0] == 404
    kept = await s3.get_object(
        Bucket=locked_bucket, Key="clips/held-in-scope.age", VersionId=held["VersionId"]
    )
    async with kept["Body"] as body:
        assert await body.read() == b"held"

    assert left["clips/flagged.age"] == [flagged["VersionId"]]
    assert await read_all(s3, locked_bucket, "clips/flagged.age") == b"flagged"


async def test_parts_survive_a_radosgw_crash_mid_multipart(
    s3: Any, locked_bucket: str, ceph: CephCluster
) -> None:
    parts = [os.urandom(PART), os.urandom(PART), os.urandom(MiB)]
    key = "clips/across-a-crash.age"
    upload = await s3.create_multipart_upload(Bucket=locked_bucket, Key=key)
    before = await upload_parts(s3, locked_bucket, key, upload["UploadId"], parts[:2])

    ceph.kill_rgw()
    with pytest.raises(Exception):  # noqa: B017 - any connection error: nobody is listening
        await s3.list_parts(Bucket=locked_bucket, Key=key, UploadId=upload["UploadId"])
    ceph.start_rgw()

    listed = await s3.list_parts(Bucket=locked_bucket, Key=key, UploadId=upload["UploadId"])
    assert [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in listed["Parts"]] == before
    after = await upload_parts(s3, locked_bucket, key, upload["UploadId"], parts[2:], first=3)
    await s3.complete_multipart_upload(
        Bucket=locked_bucket,
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": before + after},
    )
    assert await read_all(s3, locked_bucket, key) == b"".join(parts)


async def test_default_botocore_checksums_round_trip_on_rgw_16(
    make_s3: Any, locked_bucket: str
) -> None:
    # botocore >= 1.36 adds CRC32 checksums to uploads by default. RGW 16.2 ignores
    # x-amz-checksum-* (it neither verifies nor returns them) but must still store the exact
    # bytes; the backend turns them off anyway (s3_config) and relies on its own SHA-256.
    data = os.urandom(PART + 3)
    async with make_s3(
        request_checksum_calculation="when_supported",
        response_checksum_validation="when_supported",
    ) as client:
        await client.put_object(Bucket=locked_bucket, Key="crc/put", Body=data)
        upload = await client.create_multipart_upload(Bucket=locked_bucket, Key="crc/mpu")
        done = await upload_parts(client, locked_bucket, "crc/mpu", upload["UploadId"], [data])
        await client.complete_multipart_upload(
            Bucket=locked_bucket,
            Key="crc/mpu",
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": done},
        )
        assert await read_all(client, locked_bucket, "crc/put") == data
        assert await read_all(client, locked_bucket, "crc/mpu") == data


async def test_rgw_verifies_content_md5_but_not_x_amz_checksum(s3: Any, locked_bucket: str) -> None:
    # The only integrity check RGW 16.2 makes on what it receives is Content-MD5 (on PUT and on
    # UploadPart): a wrong one is refused with 400 BadDigest. A wrong x-amz-checksum-sha256 is
    # stored without a word, and no checksum comes back. The backend can send Content-MD5 per
    # part to have RGW check the bytes it acknowledges; its own SHA-256 remains the receipt's.
    def b64(digest: bytes) -> str:
        return base64.b64encode(digest).decode()

    other_md5 = b64(hashlib.md5(b"other bytes").digest())  # S3's format, not security
    with pytest.raises(ClientError) as put:
        await s3.put_object(Bucket=locked_bucket, Key="md5/put", Body=b"data", ContentMD5=other_md5)
    assert refusal(put) == (400, "BadDigest")
    upload = await s3.create_multipart_upload(Bucket=locked_bucket, Key="md5/mpu")
    with pytest.raises(ClientError) as part:
        await s3.upload_part(
            Bucket=locked_bucket,
            Key="md5/mpu",
            UploadId=upload["UploadId"],
            PartNumber=1,
            Body=b"data",
            ContentMD5=other_md5,
        )
    assert refusal(part) == (400, "BadDigest")

    wrong_sha256 = b64(hashlib.sha256(b"other bytes").digest())
    stored = await s3.put_object(
        Bucket=locked_bucket, Key="md5/sha", Body=b"data", ChecksumSHA256=wrong_sha256
    )
    assert not [name for name in stored if name.startswith("Checksum")]
    head = await s3.head_object(Bucket=locked_bucket, Key="md5/sha", ChecksumMode="ENABLED")
    assert not [name for name in head if name.startswith("Checksum")]
