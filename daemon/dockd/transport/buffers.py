"""One memory budget for the chunk buffers of every upload on the dock (`[upload] memory_budget`).

Without it, memory grows with `chunk_size x max_parallel`: each upload streaming its ciphertext
holds about three blocks (the one on the wire, the next one being encrypted ahead, and the
pieces it is joined from while that happens); 8 bays x 8 MiB chunks measured 297 MiB peak RSS.
With it, an upload reserves those three blocks from the dock's budget before its stream opens
and gives them back when the stream closes; when the budget is spent, the next upload waits for
a reservation (FIFO, so no bay starves) instead of allocating. Throughput is bounded by the CPU
and the link, not by how many uploads stream at once, so a waiting bay costs little: it starts
the moment another upload's round ends.

The reservation is bookkeeping, not an allocator: the blocks are still made by the ciphertext
stream. What it bounds is how many such streams exist at once, which is what multiplied.

The allocator must also give freed blocks back: glibc raises its mmap threshold each time a
large mmap'd block is freed (up to 32 MiB), after which 8 MiB blocks come from per-thread arenas
and stay resident as fragments; 8 bays then crept from ~110 to 150-210 MiB over a run.
`return_freed_blocks_to_the_os` pins the threshold (as MALLOC_MMAP_THRESHOLD_ would), so every
block is its own mapping and freeing it returns it: measured peak 126 MiB, flat.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
from collections.abc import AsyncIterator

# Blocks an upload's stream holds at its peak: on the wire, encrypted ahead, and being joined.
BLOCKS_PER_STREAM = 3


# glibc's mallopt parameter number (malloc.h); allocations of at least this size use mmap.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20


def return_freed_blocks_to_the_os(threshold: int = MMAP_THRESHOLD) -> bool:
    """Serve every allocation >= `threshold` with its own mmap, for the whole process (glibc).

    Returns False where there is no glibc mallopt (musl, other platforms): nothing changes.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))


def stream_reservation(chunk_size: int) -> int:
    """Bytes one upload's stream reserves from the budget."""
    return BLOCKS_PER_STREAM * chunk_size


class MemoryBudget:
    """A byte budget shared by every upload of the dock, handed out first come, first served.

    `per_stream` is what one upload's ciphertext stream reserves (`stream_reservation`).
    """

    def __init__(self, total: int, per_stream: int) -> None:
        if total <= 0 or per_stream <= 0:
            raise ValueError("the memory budget and a stream's share must be positive")
        self.total = total
        self.per_stream = per_stream
        self.in_use = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @property
    def waiting(self) -> int:
        """Reservations waiting for room (bays whose upload is held back)."""
        return len(self._waiters)

    def stream(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Reserve one upload stream's share for the duration of the block."""
        return self.reserve(self.per_stream)

    @contextlib.asynccontextmanager
    async def reserve(self, amount: int) -> AsyncIterator[None]:
        """Hold `amount` bytes of the budget for the block; wait (FIFO) until they are free.

        A reservation larger than the whole budget is cut to the budget: it then runs alone
        rather than never (config refuses such settings; this keeps a bad caller from hanging).
        """
        amount = min(max(amount, 0), self.total)
        await self._acquire(amount)
        try:
            yield
        finally:
            self._release(amount)

    async def _acquire(self, amount: int) -> None:
        if not self._waiters and self.in_use + amount <= self.total:
            self.in_use += amount
            return
        granted = asyncio.get_running_loop().create_future()
        entry = (amount, granted)
        self._waiters.append(entry)
        try:
            await granted
        except BaseException:
            if granted.done() and not granted.cancelled():
                self._release(amount)  # granted just as the waiter was cancelled: give it back
            else:
                with contextlib.suppress(ValueError):  # already popped by _grant if cancelled
                    self._waiters.remove(entry)
                self._grant()  # a smaller reservation behind this one may fit now
            raise

    def _release(self, amount: int) -> None:
        self.in_use -= amount
        self._grant()

    def _grant(self) -> None:
        """Wake waiters in order while the one at the head fits (never overtaking it)."""
        while self._waiters and self.in_use + self._waiters[0][0] <= self.total:
            amount, granted = self._waiters.popleft()
            if granted.done():  # cancelled meanwhile; its task removes nothing (already popped)
                continue
            self.in_use += amount
            granted.set_result(None)
