"""Shared pieces of the tus client tests: a fast retry policy and the caller's data source."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from dockd.transport.tus import RetryPolicy

MIB = 1 << 20
# Fast enough that a test with a few retries stays well under a second.
FAST = RetryPolicy(attempts=4, initial=0.01, maximum=0.05, request_timeout=10.0)


class Source:
    """The caller's side of `send`: serves `data` from any offset in fixed-size blocks.

    Records every offset a stream was opened at and how many streams were closed, so tests can
    check that `send` resumed where the server was and closed every stream it opened.
    `before_block(offset)` runs before each block is yielded (to change the server's state
    under the uploader's feet).
    """

    def __init__(
        self,
        data: bytes,
        block: int = MIB,
        before_block: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.data = data
        self.block = block
        self.before_block = before_block
        self.starts: list[int] = []
        self.closed = 0

    def open(self, offset: int) -> AsyncIterator[bytes]:
        self.starts.append(offset)
        return self._blocks(offset)

    async def _blocks(self, offset: int) -> AsyncIterator[bytes]:
        try:
            for start in range(offset, len(self.data), self.block):
                if self.before_block is not None:
                    await self.before_block(start)
                yield self.data[start : start + self.block]
        finally:
            self.closed += 1
