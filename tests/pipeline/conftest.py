"""Fixtures for end-to-end dock tests: keys and the counting in-process receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dockd.crypto.keys import KeygenResult, keygen
from support.counting_receiver import CountingReceiver, start_counting_receiver


@pytest.fixture
def keys(tmp_path: Path) -> KeygenResult:
    return keygen(tmp_path / "keys")


@pytest.fixture
def recipient(keys: KeygenResult) -> str:
    return keys.age_recipient.read_text().strip()


@pytest.fixture
async def receiver(tmp_path: Path, keys: KeygenResult) -> AsyncIterator[CountingReceiver]:
    running = await start_counting_receiver(tmp_path / "store", keys)
    yield running
    await running.stop()
