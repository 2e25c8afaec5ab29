"""Several `dockd serve` nodes behind HAProxy serve any request of any upload (issue 16), and
survive a node killed, a node stalled past its lease, and PostgreSQL stopped: nothing
acknowledged is lost, no stale node's write counts, every receipt verifies.

8 docks upload 3-PATCH clips (5 MiB chunks: the S3 part size) through HAProxy round-robin, each
request on a new connection, so consecutive PATCHes of one upload land on different nodes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp
import pytest
from cluster import LEASE_SECONDS, PART, Cluster, MiB
from docks import DockRun, upload_clip
from support.dock import wait_for
from support.receiver import RawRequest, Tus, upload_id_of

pytestmark = pytest.mark.multinode

DOCKS = 8
CHUNK = PART
CLIP = 2 * CHUNK + 3 * MiB // 2  # three PATCHes: two whole parts and a tail


def clips(count: int = DOCKS, length: int = CLIP) -> list[DockRun]:
    return [DockRun(os.urandom(length), CHUNK) for _ in range(count)]


async def upload_all(cluster: Cluster, runs: list[DockRun]) -> list[DockRun]:
    return list(await asyncio.gather(*(upload_clip(cluster.url, run) for run in runs)))


def assert_all_stored(cluster: Cluster, runs: list[DockRun]) -> None:
    """Every clip has a receipt that verifies, and its object in RGW is the bytes sent."""
    missing = [run.location for run in runs if not run.receipt_header]
    assert not missing, f"no receipt for {missing}"
    for run in runs:
        assert run.verify(cluster.public_key), run.location
        assert cluster.object_bytes(run.upload) == run.data, run.location


async def test_consecutive_patches_of_one_upload_land_on_different_nodes(
    cluster: Cluster,
) -> None:
    # One dock alone: round-robin sends each of its requests to the next node.
    alone = (await upload_all(cluster, clips(1)))[0]
    assert cluster.patches_by_node(alone.upload) == {"node1": 1, "node2": 1, "node3": 1}
    # Eight at once: their requests interleave, so most (not all) uploads span nodes.
    runs = await upload_all(cluster, clips())
    assert_all_stored(cluster, [alone, *runs])
    spread = 0
    for run in runs:
        by_node = cluster.patches_by_node(run.upload)  # the nodes' own logs
        assert sum(by_node.values()) == 3, by_node
        spread += sum(1 for count in by_node.values() if count) >= 2
        assert run.resent == 0
    assert spread >= len(runs) // 2, spread
    print(f"\nround-robin: {spread} of {len(runs)} concurrent uploads had PATCHes on 2+ nodes")


async def test_kill9_of_a_node_mid_patch_loses_nothing_and_resends_at_most_one_chunk(
    cluster: Cluster,
) -> None:
    victim = cluster.nodes[1]
    runs = clips()
    docks = asyncio.gather(*(upload_clip(cluster.url, run) for run in runs))
    held = await wait_for(
        lambda: {u for u, node in cluster.lease_holders().items() if node == "node2"},
        timeout=60,
        interval=0.02,
        what="node2 holding an upload's lock (mid-PATCH)",
    )
    killed_at = time.monotonic()
    victim.kill9()
    await docks
    took = time.monotonic() - killed_at
    assert_all_stored(cluster, runs)
    in_flight = [run for run in runs if run.upload in held]
    assert in_flight, "the kill hit no upload"
    for run in runs:
        assert run.resent <= CHUNK, (run.location, run.resent, run.statuses)
    print(
        f"\nkill -9: {len(in_flight)} upload(s) in flight on the killed node; all {len(runs)} "
        f"completed {took:.1f} s after the kill; re-sent bytes per upload: "
        f"{sorted(run.resent for run in runs)}"
    )


async def test_a_stalled_node_past_its_lease_is_fenced_and_its_late_write_never_counts(
    cluster: Cluster,
) -> None:
    stalled = cluster.nodes[0]
    data = os.urandom(3 * CHUNK)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        tus = Tus(session, cluster.url)
        location = (await tus.create(len(data))).headers["Location"]
        upload = upload_id_of(location)
        assert (await tus.patch(location, 0, data[:CHUNK])).status == 204
        # The second chunk goes straight to node1, which stops while reading it.
        direct = stalled.url + upload
        raw = await RawRequest.patch(direct, offset=CHUNK, content_length=CHUNK)
        await raw.send(data[CHUNK : CHUNK + 3 * MiB])
        await wait_for(
            lambda: cluster.lease_holders().get(upload) == "node1",
            what="node1 holding the upload's lock",
        )
        assert stalled.process is not None
        stalled.process.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            # HAProxy's health checks take node1 out (a request already sent to it would wait
            # for HAProxy's server timeout); the others wait for node1's lease to run out.
            assert cluster.proxy is not None
            await asyncio.to_thread(cluster.proxy.wait_for_states, {"node1": "DOWN"}, 30)
            out_after = time.monotonic() - stopped_at
            head = await tus.head(location)
            assert head.offset == CHUNK
            began = time.monotonic()
            reply = await tus.patch(location, CHUNK, data[CHUNK : 2 * CHUNK])
            takeover = time.monotonic() - began
            assert reply.status == 204, reply
            assert reply.offset == 2 * CHUNK
        finally:
            stalled.process.send_signal(signal.SIGCONT)
        # node1 wakes up and gets the rest of its body, with different bytes: refused.
        await raw.send(b"\xee" * (CHUNK - 3 * MiB))
        status, _ = await raw.response()
        await raw.close()
        assert status == 409
        assert cluster.committed_offset(upload) == 2 * CHUNK
        fenced = [e for e in cluster.log_events(stalled) if e.get("event") == "upload.fenced"]
        assert fenced and fenced[0]["upload"] == upload
        last = await tus.patch(location, 2 * CHUNK, data[2 * CHUNK :])
        assert last.status == 204, last
        run = DockRun(data, CHUNK, location=location, receipt_header=last.headers["Dockd-Receipt"])
        assert run.verify(cluster.public_key)
        assert cluster.object_bytes(upload) == data
    print(
        f"\nSIGSTOP: HAProxy took node1 out after {out_after:.1f} s; the resumed PATCH took "
        f"{takeover:.1f} s (lease {LEASE_SECONDS:.0f} s); node1's late write: 409, fenced"
    )


async def test_postgresql_stopped_for_10s_means_503_and_backoff_then_everything_completes(
    cluster: Cluster,
) -> None:
    runs = clips()
    docks = asyncio.gather(*(upload_clip(cluster.url, run) for run in runs))
    await wait_for(lambda: cluster.lease_holders(), interval=0.02, what="uploads in progress")
    cluster.postgres.stop()
    stopped_at = time.monotonic()
    await asyncio.sleep(10)
    cluster.postgres.start()
    await docks
    took = time.monotonic() - stopped_at
    assert_all_stored(cluster, runs)
    statuses = [status for run in runs for status in run.statuses]
    assert 503 in statuses
    assert any(run.retry_after for run in runs), "no 503 carried Retry-After"
    print(
        f"\nPostgreSQL outage 10 s: {statuses.count(503)} answers 503, "
        f"{sum(len(run.retry_after) for run in runs)} with Retry-After; all {len(runs)} clips "
        f"completed {took:.1f} s after the stop; re-sent bytes {sorted(r.resent for r in runs)}"
    )


async def test_a_committed_part_replaced_by_a_late_write_ends_the_upload_with_410(
    cluster: Cluster,
) -> None:
    """What fencing cannot stop (a stalled node's UploadPart already past its fence check) is
    caught at completion: RGW refuses the committed ETag, and the dock is told to start again
    instead of being given a receipt or a completion retried for ever."""
    data = os.urandom(CLIP)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        tus = Tus(session, cluster.url)
        location = (await tus.create(len(data))).headers["Location"]
        upload = upload_id_of(location)
        for start in (0, CHUNK):
            assert (await tus.patch(location, start, data[start : start + CHUNK])).status == 204
        # The late part: same number, other bytes, straight into the multipart upload.
        assert cluster.settings is not None
        cluster.client.upload_part(
            Bucket=cluster.settings.bucket,
            Key=f"clips/{upload}",
            UploadId=cluster.multipart_id(upload),
            PartNumber=1,
            Body=b"\xee" * CHUNK,
        )
        last = await tus.patch(location, 2 * CHUNK, data[2 * CHUNK :])
        assert last.status == 410, last
        assert "Dockd-Receipt" not in last.headers
        assert (await tus.head(location)).status == 410
        logged = [
            event
            for node in cluster.nodes
            for event in cluster.log_events(node)
            if event.get("event") == "upload.parts_replaced"
        ]
        assert [event["upload"] for event in logged] == [upload]
        # The dock starts the clip again, and that upload completes.
        again = (await upload_all(cluster, [DockRun(data, CHUNK)]))[0]
        assert_all_stored(cluster, [again])
