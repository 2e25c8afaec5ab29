"""The storage contract suite (tests/receiver/contract/test_contract.py) on the S3 store, on the
session's real RGW.

The suite's tests are imported here rather than parametrised in its conftest: the `ceph` session
fixture lives in tests/ceph/conftest.py, and this keeps one Ceph per run. Each test gets a fresh
evidence bucket (`support.stores.rgw_store_under_test`). The store cannot be made full here (RGW
quotas are enforced on lazily synced statistics), so the two "full" tests skip.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from support.ceph import CephCluster
from support.stores import StoreUnderTest, rgw_store_under_test

pytestmark = pytest.mark.ceph

_SUITE = Path(__file__).resolve().parents[1] / "receiver" / "contract" / "test_contract.py"
_spec = importlib.util.spec_from_file_location("contract_suite_on_rgw", _SUITE)
assert _spec is not None and _spec.loader is not None
_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_suite)
globals().update({name: test for name, test in vars(_suite).items() if name.startswith("test_")})


@pytest.fixture
def under_test(ceph: CephCluster) -> StoreUnderTest:
    return rgw_store_under_test(ceph)
