"""Blocking disk work off the event loop, finished even if the waiting task is cancelled.

A worker thread cannot be stopped. If a task awaiting one were cancelled and moved on, it could
close a descriptor, truncate a file or report a state while the thread is still writing,
syncing or renaming. So every store mutation runs through `run_blocking`, which always waits for
the thread and re-raises the cancellation afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_through_cancellation(future: asyncio.Future[T]) -> T:
    """Wait for a worker-thread future; a cancellation meanwhile is re-raised once it is done."""
    cancelled: BaseException | None = None
    while not future.done():
        try:
            await asyncio.wait({future})
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None:
        raise cancelled
    return future.result()


async def run_blocking(function: Callable[..., T], *args: Any) -> T:
    """Run `function(*args)` on the default executor and wait for it to finish, whatever happens."""
    future = asyncio.get_running_loop().run_in_executor(None, function, *args)
    return await wait_through_cancellation(future)
