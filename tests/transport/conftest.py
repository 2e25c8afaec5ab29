"""Fixtures for the tus client tests: the real receiver, a fault proxy in front of it, a session.

Every request goes client -> FaultProxy -> real receiver (in this process, fresh store and keys
per test), so tests see exactly what the client put on the wire and can inject faults.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from dockd.transport.tus import TusClient
from support.receiver import InProcessReceiver, running_receiver
from yarl import URL

from transport.fault_proxy import FaultProxy
from transport.harness import FAST


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[InProcessReceiver]:
    async with running_receiver(tmp_path) as rx:
        yield rx


@pytest.fixture
async def proxy(receiver: InProcessReceiver) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(str(URL(receiver.url).origin())) as fault_proxy:
        yield fault_proxy


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def endpoint(proxy: FaultProxy, receiver: InProcessReceiver) -> str:
    """The receiver's creation endpoint, reached through the proxy."""
    return proxy.url + URL(receiver.url).path


@pytest.fixture
def client(session: aiohttp.ClientSession, endpoint: str) -> TusClient:
    return TusClient(session, endpoint, retry=FAST)
