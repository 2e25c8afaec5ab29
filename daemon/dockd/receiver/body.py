"""Receiving one PATCH (or creation-with-upload) body: stream it into the store while hashing.

The body is read piece by piece from aiohttp, gathered into ~1 MiB batches, and each batch is
handed to the store's `ChunkWriter` at its absolute offset and fed to the hashers on worker
threads (the file store's pwrite and hashlib both release the GIL), so the event loop never
blocks on the disk. One batch is processed while the
next one arrives: memory per request stays around two batches whatever the chunk size.

Each network read runs under an idle deadline (`Cutoff`): a client that stops sending for
`idle_timeout` is cut off. The same deadline lets a newer request for the same upload, or a server
shutdown, cut a body off at once. Disk work is never interrupted: a write in flight is always
waited for, so nobody truncates a file a worker thread is still writing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import StreamReader
from aiohttp.http_exceptions import HttpProcessingError

from dockd.receiver.storage.api import ChunkWriter
from dockd.receiver.threads import wait_through_cancellation

BATCH_BYTES = 1 << 20


class BodyCut(Exception):
    """The body read was ended on purpose (newer request, shutdown) while no read was pending."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Cutoff:
    """Idle deadline for the network reads of one body, which other tasks may also trigger.

    Built on one `asyncio.timeout` per body, rescheduled around each read: cheaper than a new
    timeout per piece, and `cut()` from another task just moves the deadline to now.
    """

    def __init__(self, idle_timeout: float) -> None:
        self._idle = idle_timeout
        self._deadline: asyncio.Timeout | None = None
        self._reading = False
        self.reason: str | None = None  # why the body was cut off on purpose
        self.superseded = False  # a newer request for the upload is waiting (see supersede)

    def cut(self, reason: str) -> None:
        """End the body read as soon as possible (bytes already received are kept)."""
        if self.reason is None:
            self.reason = reason
        deadline = self._deadline
        if self._reading and deadline is not None and not deadline.expired():
            deadline.reschedule(asyncio.get_running_loop().time())

    def supersede(self, grace: float) -> None:
        """A newer request for this upload waits: this body may now be silent for `grace` s at most.

        A dead connection (a client resuming after a network drop) is cut off within `grace`
        instead of the full idle timeout, while a transfer that keeps flowing completes. Cutting
        at once instead would let a stale request, delayed in the network and arriving after
        the client's live resume, cut off the live one.
        """
        self.superseded = True
        self._idle = min(self._idle, grace)
        deadline = self._deadline
        if self._reading and deadline is not None and not deadline.expired():
            soon = asyncio.get_running_loop().time() + grace
            when = deadline.when()
            if when is None or when > soon:
                deadline.reschedule(soon)

    async def read(self, deadline: asyncio.Timeout, content: StreamReader) -> bytes:
        if self.reason is not None:
            raise BodyCut(self.reason)
        self._deadline = deadline
        deadline.reschedule(asyncio.get_running_loop().time() + self._idle)
        self._reading = True
        try:
            return await content.readany()
        finally:
            self._reading = False
            if not deadline.expired():
                deadline.reschedule(None)  # no deadline while the disk works


class BodyWriter:
    """Writes body bytes at `start` onwards through the store's `writer`, feeding `hashers`.

    Each batch is written, and fed to each hasher, by separate worker jobs running at once (all
    release the GIL, so they spread over the cores); the next batch is submitted only when all
    are done, which keeps every hasher fed in order and bounds memory.
    """

    def __init__(self, writer: ChunkWriter, start: int, hashers: Sequence[Any]) -> None:
        self._writer = writer
        self._position = start
        self._hashers = hashers
        self._batch: list[bytes] = []
        self._batch_size = 0
        self._in_flight: list[asyncio.Future[None]] = []

    async def add(self, piece: bytes) -> None:
        self._batch.append(piece)
        self._batch_size += len(piece)
        if self._batch_size >= BATCH_BYTES:
            await self._submit()

    async def finish(self) -> None:
        """Write what is gathered and wait until the store has every byte (not yet committed)."""
        if self._batch:
            await self._submit()
        await self._wait_in_flight()

    async def settle(self) -> None:
        """On a failure path: drop what is gathered and wait for the jobs in flight, ignoring
        their outcome (the caller discards the whole chunk anyway)."""
        self._batch, self._batch_size = [], 0
        with contextlib.suppress(Exception):
            await self._wait_in_flight()

    async def _submit(self) -> None:
        await self._wait_in_flight()
        data = self._batch[0] if len(self._batch) == 1 else b"".join(self._batch)
        self._batch, self._batch_size = [], 0
        position, self._position = self._position, self._position + len(data)
        loop = asyncio.get_running_loop()
        self._in_flight = [loop.run_in_executor(None, self._writer.write, data, position)]
        self._in_flight += [loop.run_in_executor(None, h.update, data) for h in self._hashers]

    async def _wait_in_flight(self) -> None:
        """Wait for every job in flight (even if one fails), then raise the first failure."""
        jobs, self._in_flight = self._in_flight, []
        failure: BaseException | None = None
        for job in jobs:
            try:
                await wait_through_cancellation(job)
            except BaseException as exc:  # each job must be waited for, even after a failure
                failure = failure or exc
        if failure is not None:
            raise failure


@dataclass(frozen=True)
class Received:
    """How a body read ended."""

    count: int  # bytes read and handed to the store (not yet committed)
    interrupted: (
        str | None
    )  # None: the whole body arrived; else "disconnected", "idle", or a cut reason
    too_long: bool  # the body went past what the upload may still take (nothing of it counts)


async def receive_body(
    content: StreamReader, cutoff: Cutoff, writer: BodyWriter, *, limit: int
) -> Received:
    """Stream `content` through `writer` until the body ends, is cut off, or exceeds `limit`.

    Store errors (StoreFull…) propagate once any write in flight has settled; the caller discards.
    """
    count = 0
    interrupted: str | None = None
    too_long = False
    try:
        async with asyncio.timeout(None) as deadline:
            while True:
                piece = await cutoff.read(deadline, content)
                if not piece:
                    break
                if count + len(piece) > limit:
                    too_long = True
                    break
                count += len(piece)
                await writer.add(piece)
    except TimeoutError:
        interrupted = cutoff.reason or ("superseded" if cutoff.superseded else "idle")
    except BodyCut as exc:
        interrupted = exc.reason
    except (ConnectionError, HttpProcessingError):
        interrupted = "disconnected"
    except BaseException:
        await writer.settle()
        raise
    if too_long:
        await writer.settle()
    else:
        try:
            await writer.finish()
        except BaseException:
            await writer.settle()
            raise
    return Received(count, interrupted, too_long)
