"""The storage contract suite on the S3 store with its upload state in PostgreSQL: the
multi-node configuration of issue 16 (bytes in RGW, state in the shared database).

The suite's tests are imported as tests/ceph/test_s3_contract.py does; the store under test is
the same RGW store with `states=PgStateBackend(...)`, on a fresh database per test. This module
starts its own Ceph (the session one lives in tests/ceph/conftest.py) and uses the session's
PostgreSQL; it runs with `-m pg` and needs `scripts/setup --test` (Ceph and PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockd.receiver.shared.connection import PgPool
from dockd.receiver.shared.state import PgStateBackend
from dockd.receiver.storage.api import CreationInfo, new_upload_id, rfc3339
from dockd.receiver.storage.s3 import S3Store
from dockd.receiver.storage.s3_state import S3UploadState
from support.ceph import CephCluster, missing_binaries
from support.stores import StoreUnderTest, rgw_store_under_test

pytestmark = pytest.mark.pg

_SUITE = Path(__file__).resolve().parents[1] / "receiver" / "contract" / "test_contract.py"
_spec = importlib.util.spec_from_file_location("contract_suite_on_rgw_and_pg", _SUITE)
assert _spec is not None and _spec.loader is not None
_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_suite)
globals().update({name: test for name, test in vars(_suite).items() if name.startswith("test_")})


@pytest.fixture(scope="module")
def ceph() -> Iterator[CephCluster]:
    if missing_binaries():
        pytest.fail(f"Ceph is not installed ({missing_binaries()}): run scripts/setup --test")
    with CephCluster(store_bytes=1 << 30) as cluster:
        yield cluster


@pytest.fixture
def under_test(ceph: CephCluster, pool: PgPool) -> StoreUnderTest:
    on_rgw = rgw_store_under_test(ceph)
    first = on_rgw.reopen()
    assert isinstance(first, S3Store)
    settings, client = first.settings, first.client
    states = PgStateBackend(pool, S3UploadState.from_json)
    on_rgw.reopen = lambda: S3Store(settings, client=client, states=states)
    return on_rgw


def test_the_upload_state_lives_in_postgresql_not_in_the_work_bucket(
    under_test: StoreUnderTest, pool: PgPool
) -> None:
    store = under_test.reopen()
    assert isinstance(store, S3Store)
    store.recover()
    info = CreationInfo(
        upload=new_upload_id(),
        length=12 << 20,
        metadata_header="",
        metadata={},
        created=rfc3339(dt.datetime.now(dt.UTC)),
        dock="dock-7",
    )
    store.create(info, time.time() + 3600)
    with pool.connection() as conn:
        rows = conn.execute("SELECT upload, dock FROM dockd_upload_state").fetchall()
    assert rows == [(info.upload, "dock-7")]
    listed = store.client.list_objects_v2(Bucket=store.settings.work_bucket, Prefix="state/")
    assert listed.get("KeyCount", 0) == 0
