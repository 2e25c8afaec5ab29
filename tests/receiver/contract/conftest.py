"""The contract suite runs once per store factory (tests/support/stores.py); add a store there."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.stores import StoreUnderTest, store_under_test

STORES = ["file", "memory"]


@pytest.fixture(params=STORES)
def under_test(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> StoreUnderTest:
    return store_under_test(request.param, tmp_path, monkeypatch)
