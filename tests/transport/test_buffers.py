"""The dock's memory budget (dockd.transport.buffers): uploads beyond it wait, in order."""

from __future__ import annotations

import asyncio

import pytest
from dockd.transport.buffers import MemoryBudget, return_freed_blocks_to_the_os

MIB = 1 << 20


async def _settle() -> None:
    """Let every ready task run (no I/O here: a few loop turns are enough)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def _hold(budget: MemoryBudget, name: str, log: list[str], release: asyncio.Event) -> None:
    async with budget.stream():
        log.append(name)
        await release.wait()


async def test_streams_beyond_the_budget_wait_and_start_in_arrival_order():
    budget = MemoryBudget(2 * 24 * MIB, per_stream=24 * MIB)  # room for two streams
    started: list[str] = []
    releases = {name: asyncio.Event() for name in "abcd"}
    tasks = [asyncio.create_task(_hold(budget, n, started, releases[n])) for n in "abcd"]
    await _settle()
    assert started == ["a", "b"] and budget.in_use == 48 * MIB and budget.waiting == 2

    releases["b"].set()
    await _settle()
    assert started == ["a", "b", "c"]  # c came before d
    releases["a"].set()
    await _settle()
    assert started == ["a", "b", "c", "d"]
    for event in releases.values():
        event.set()
    await asyncio.gather(*tasks)
    assert budget.in_use == 0 and budget.waiting == 0


async def test_a_cancelled_waiter_gives_its_turn_to_the_next():
    budget = MemoryBudget(10, per_stream=10)
    started: list[str] = []
    hold, never = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(_hold(budget, "first", started, hold))
    await asyncio.sleep(0)
    gone = asyncio.create_task(_hold(budget, "gone", started, never))
    later = asyncio.create_task(_hold(budget, "later", started, hold))
    await _settle()
    gone.cancel()  # e.g. its camera was undocked while it waited
    with pytest.raises(asyncio.CancelledError):
        await gone
    hold.set()
    await asyncio.gather(first, later)
    assert started == ["first", "later"]
    assert budget.in_use == 0


async def test_a_reservation_larger_than_the_budget_runs_alone_instead_of_never():
    budget = MemoryBudget(10, per_stream=10)
    async with budget.reserve(25):
        assert budget.in_use == 10


def test_the_allocator_can_be_told_to_return_freed_blocks():
    assert return_freed_blocks_to_the_os() is True  # glibc: the daemon's platform
