"""Fixtures for the receiver tests: an in-process receiver and a thin tus client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from support.receiver import InProcessReceiver, Tus, running_receiver


@pytest.fixture
async def rx(tmp_path: Path) -> AsyncIterator[InProcessReceiver]:
    async with running_receiver(tmp_path) as receiver:
        yield receiver


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def tus(session: aiohttp.ClientSession, rx: InProcessReceiver) -> Tus:
    return Tus(session, rx.url)
