"""Fixtures for end-to-end dock tests: keys, the counting in-process receiver, the fake uploader.

Tests that prove interop with the ingest side (what the real receiver stores decrypts, a
third-party tus server, kill -9 of real processes) use the receiver; tests of what the dock does
with its camera and its journal use the in-memory `fake` (no HTTP, real signed receipts).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dockd.crypto.keys import KeygenResult, keygen, load_signing_key
from support.counting_receiver import CountingReceiver, start_counting_receiver
from support.fake_uploader import FakeUploader


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


@pytest.fixture
def fake(keys: KeygenResult) -> FakeUploader:
    return FakeUploader(load_signing_key(keys.server_signing_key), keep_bytes=True)
