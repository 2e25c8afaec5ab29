"""Docks for the multi-node tests: a resuming tus client as a dock's uploader behaves (HEAD for
the offset after anything went wrong, back off on 503 as Retry-After says), which counts what it
had to send again and what it was told."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

import aiohttp
from dockd.crypto import receipt
from support.receiver import Tus, upload_id_of

RETRYABLE = {409, 423, 460, 500, 502, 503, 504}


@dataclass
class DockRun:
    """One clip's upload as the dock saw it."""

    data: bytes
    chunk: int
    location: str = ""
    receipt_header: str = ""
    sent: int = 0  # PATCH body bytes sent, all attempts
    statuses: list[int] = field(default_factory=list)
    retry_after: list[str] = field(default_factory=list)  # Retry-After of each 503 that had one
    nodes: list[str] = field(default_factory=list)  # X-Dockd-Node of each 204 PATCH

    @property
    def upload(self) -> str:
        return upload_id_of(self.location)

    @property
    def resent(self) -> int:
        return self.sent - len(self.data)

    def verify(self, public_key: object) -> bool:
        signed = receipt.verify(self.receipt_header, public_key)  # type: ignore[arg-type]
        return signed.matches(
            upload=self.upload,
            length=len(self.data),
            sha256=hashlib.sha256(self.data).hexdigest(),
        )


async def _backoff(run: DockRun, status: int, headers: object, attempt: int) -> None:
    retry_after = getattr(headers, "get", lambda _k: None)("Retry-After")
    if status == 503 and retry_after is not None:
        run.retry_after.append(retry_after)
        await asyncio.sleep(min(float(retry_after), 5.0))
    else:
        await asyncio.sleep(min(0.2 * attempt, 2.0))


async def upload_clip(url: str, run: DockRun, *, deadline: float = 240.0) -> DockRun:
    """Create and upload `run.data` through `url`, resuming after every failure until the
    receipt arrives (or `deadline` seconds pass: the test then fails on the missing receipt)."""
    # A new connection per request, so round-robin really spreads one upload's PATCHes.
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=60)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tus = Tus(session, url)
        attempt = 0
        while not run.location:
            attempt += 1
            try:
                created = await tus.create(len(run.data))
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.5)
                continue
            run.statuses.append(created.status)
            if created.status == 201:
                run.location = created.headers["Location"]
            elif loop.time() > give_up:
                return run
            else:
                await _backoff(run, created.status, created.headers, attempt)
        offset, attempt = 0, 0
        need_head = False
        while loop.time() < give_up:
            try:
                if need_head:
                    head = await tus.head(run.location)
                    run.statuses.append(head.status)
                    if head.status != 200:
                        attempt += 1
                        await _backoff(run, head.status, head.headers, attempt)
                        continue
                    if receipt.HEADER in head.headers:
                        run.receipt_header = head.headers[receipt.HEADER]
                        return run
                    offset, need_head = head.offset, False
                body = run.data[offset : offset + run.chunk]
                run.sent += len(body)
                reply = await tus.patch(run.location, offset, body)
            except (aiohttp.ClientError, TimeoutError):
                need_head, attempt = True, attempt + 1
                await asyncio.sleep(min(0.2 * attempt, 2.0))
                continue
            run.statuses.append(reply.status)
            if reply.status == 204:
                attempt = 0
                run.nodes.append(reply.headers.get("X-Dockd-Node", "?"))
                if receipt.HEADER in reply.headers:
                    run.receipt_header = reply.headers[receipt.HEADER]
                    return run
                offset = reply.offset
            elif reply.status in RETRYABLE:
                need_head, attempt = True, attempt + 1
                await _backoff(run, reply.status, reply.headers, attempt)
            else:
                raise AssertionError(f"{run.location}: PATCH answered {reply.status}: {reply.text}")
    return run
