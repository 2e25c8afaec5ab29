"""An S3 acknowledgement from RGW means the bytes are on the OSD's store (bluestore).

The backend's durability argument (an acknowledged tus chunk is durable, invariant 4) rests on
RGW answering 200 only after the OSD has committed the data. Here the OSD and radosgw are both
SIGKILLed right after the acknowledgements, as a crash of the storage node would, and restarted
on the same data: the completed object and the parts of an unfinished upload are all there.
(This shows the commit order, not power-loss safety of the VM's disk.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from support.ceph import CephCluster, S3Endpoint

pytestmark = pytest.mark.ceph

MiB = 1 << 20


@pytest.fixture
def bluestore() -> Iterator[CephCluster]:
    cluster = CephCluster(objectstore="bluestore")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_acknowledged_bytes_survive_an_osd_and_gateway_crash(
    bluestore: CephCluster, make_s3: Any
) -> None:
    endpoint = bluestore.endpoint
    assert isinstance(endpoint, S3Endpoint)
    whole = os.urandom(3 * MiB)
    part = os.urandom(5 * MiB)
    async with make_s3(target=endpoint) as s3:
        await s3.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
        stored = await s3.put_object(Bucket="evidence", Key="clips/whole.age", Body=whole)
        upload = await s3.create_multipart_upload(Bucket="evidence", Key="clips/partial.age")
        acked = await s3.upload_part(
            Bucket="evidence",
            Key="clips/partial.age",
            UploadId=upload["UploadId"],
            PartNumber=1,
            Body=part,
        )

    bluestore.kill_rgw()
    bluestore.kill_osd()
    bluestore.start_osd()
    bluestore.start_rgw()

    async with make_s3(target=endpoint) as s3:
        got = await s3.get_object(
            Bucket="evidence", Key="clips/whole.age", VersionId=stored["VersionId"]
        )
        async with got["Body"] as body:
            assert await body.read() == whole
        parts = await s3.list_parts(
            Bucket="evidence", Key="clips/partial.age", UploadId=upload["UploadId"]
        )
        assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts["Parts"]] == [
            (1, acked["ETag"], len(part))
        ]
