"""One real Ceph (mon + osd + radosgw) per test run, and S3 clients for it.

Tests here carry the `ceph` marker, which the default addopts exclude; run them with
`scripts/test -m ceph` (or `.venv/bin/pytest tests/ceph -m ceph`) after `scripts/setup --ceph`.
The cluster's start time, stop time and daemon RSS go to the end-of-run summary.
DOCKD_CEPH_OBJECTSTORE=bluestore puts the OSD on a sparse file instead of in RAM (memstore).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from support.ceph import CephCluster, S3Endpoint

_measured: dict[str, str] = {}


def s3_config(**overrides: Any) -> AioConfig:
    """The client settings the S3 backend uses against RGW 16.2 (see docs/RECEIVER.md)."""
    settings: dict[str, Any] = {
        "s3": {"addressing_style": "path"},
        # RGW 16.2 neither checks nor returns x-amz-checksum-*; send and expect none.
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
        # A test sees RGW's own answer, not botocore's retry of it.
        "retries": {"max_attempts": 1},
        "connect_timeout": 5,
        "read_timeout": 30,
    }
    settings.update(overrides)
    return AioConfig(**settings)


@pytest.fixture(scope="session")
def ceph() -> Iterator[CephCluster]:
    cluster = CephCluster(objectstore=os.environ.get("DOCKD_CEPH_OBJECTSTORE", "memstore"))
    cluster.start()
    _measured[f"ceph start, {cluster.objectstore} (s)"] = f"{cluster.timings['start_s']:.1f}"
    try:
        yield cluster
    finally:
        rss = cluster.rss_bytes()
        _measured["daemon RSS at end (MiB)"] = ", ".join(
            f"{name} {size / 2**20:.0f}" for name, size in sorted(rss.items())
        )
        cluster.stop()
        _measured["ceph stop (s)"] = (
            ", ".join(
                f"{name} {cluster.timings[f'stop_{name}_s']:.1f}" for name in ("rgw", "osd", "mon")
            )
            + f"; total {cluster.timings['stop_s']:.1f}"
        )
        _measured["daemon exit codes"] = str(cluster.exit_codes)


@pytest.fixture(scope="session")
def endpoint(ceph: CephCluster) -> S3Endpoint:
    assert ceph.endpoint is not None
    return ceph.endpoint


S3ClientFactory = Callable[..., AbstractAsyncContextManager[Any]]


@pytest.fixture
def make_s3(ceph: CephCluster, endpoint: S3Endpoint) -> S3ClientFactory:
    """`async with make_s3(**config_overrides) as client`: an aiobotocore S3 client for the
    session's RGW, or for another cluster's with `make_s3(target=other.endpoint)`."""
    ceph.ensure_rgw()  # one test crashing the shared gateway must not fail the ones after it

    def create(target: S3Endpoint = endpoint, **overrides: Any) -> AbstractAsyncContextManager[Any]:
        return get_session().create_client(
            "s3",
            endpoint_url=target.url,
            region_name=target.region,
            aws_access_key_id=target.access_key,
            aws_secret_access_key=target.secret_key,
            config=s3_config(**overrides),
        )

    return create


@pytest.fixture
async def s3(make_s3: S3ClientFactory) -> AsyncIterator[Any]:
    async with make_s3() as client:
        yield client


@pytest.fixture
async def locked_bucket(s3: Any) -> str:
    """A fresh bucket created with Object Lock (and so versioning) enabled, as the backend makes it."""
    name = f"evidence-{uuid.uuid4().hex[:12]}"
    await s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _measured:
        terminalreporter.section("ceph")
        for name, value in _measured.items():
            terminalreporter.write_line(f"{name}: {value}")
