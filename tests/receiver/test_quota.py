"""Per-dock quotas and the store's free space: a dock (or an attacker holding one dock's token)
cannot reserve the store, and every refusal names its limit."""

from __future__ import annotations

import asyncio
import time

from dockd.receiver.quota import LIMIT_HEADER, Quotas
from dockd.receiver.storage.file import FileStore
from support.receiver import Tus, running_receiver

TiB = 1 << 40
TOKEN_A = "tok-A-4f0c1e9b7d2a58c3e6f1"
TOKEN_B = "tok-B-9a8b7c6d5e4f3a2b1c0d"
TOKENS = {TOKEN_A: "dock-a", TOKEN_B: "dock-b"}
ATTEMPTS = 2000


async def _flood(tus: Tus, length: int, attempts: int = ATTEMPTS) -> dict[int, int]:
    """`attempts` creations of `length` bytes, 50 at a time; status -> how many."""
    statuses: dict[int, int] = {}
    for start in range(0, attempts, 50):
        replies = await asyncio.gather(
            *(tus.create(length) for _ in range(min(50, attempts - start)))
        )
        for reply in replies:
            statuses[reply.status] = statuses.get(reply.status, 0) + 1
    return statuses


def _partials(store) -> int:
    return len(list((store / "partial").glob("*.json")))


async def test_2000_creations_of_1_tib_on_this_disk_are_refused_for_free_space(tmp_path, session):
    async with running_receiver(tmp_path, tokens=TOKENS) as rx:
        started = time.monotonic()
        statuses = await _flood(Tus(session, rx.url, TOKEN_A), TiB)
        elapsed = time.monotonic() - started
        print(f"\n2000 x 1 TiB on the real disk: {statuses} in {elapsed:.1f} s")
        assert statuses == {507: ATTEMPTS}
        assert _partials(rx.store_dir) == 0
        reply = await Tus(session, rx.url, TOKEN_A).create(TiB)
        assert reply.headers[LIMIT_HEADER] == "store-free-space"
        assert "store-free-space" in reply.text


async def test_2000_creations_of_1_tib_stop_at_the_reserved_bytes_quota(
    tmp_path, session, monkeypatch
):
    # A store with a petabyte free, so the per-dock reservation is what stops the flood.
    monkeypatch.setattr(FileStore, "free_bytes", lambda store: 1 << 50)
    async with running_receiver(tmp_path, tokens=TOKENS) as rx:
        started = time.monotonic()
        statuses = await _flood(Tus(session, rx.url, TOKEN_A), TiB)
        elapsed = time.monotonic() - started
        print(f"\n2000 x 1 TiB, 1 PiB free: {statuses} in {elapsed:.1f} s")
        default = Quotas()
        accepted = default.max_reserved_per_dock // TiB
        assert statuses == {201: accepted, 413: ATTEMPTS - accepted}
        assert _partials(rx.store_dir) == accepted
        refused = await Tus(session, rx.url, TOKEN_A).create(TiB)
        assert refused.status == 413
        assert refused.headers[LIMIT_HEADER] == "reserved-bytes-per-dock"
        assert "dock-a" in refused.text
        # Another dock is not affected by dock-a's reservations.
        assert (await Tus(session, rx.url, TOKEN_B).create(TiB)).status == 201


async def test_a_dock_stops_at_its_count_of_unfinished_uploads_and_frees_it_by_finishing(
    tmp_path, session
):
    quotas = Quotas(max_uploads_per_dock=20)
    async with running_receiver(tmp_path, tokens=TOKENS, quotas=quotas) as rx:
        tus = Tus(session, rx.url, TOKEN_A)
        statuses = await _flood(tus, 1 << 20, attempts=200)
        assert statuses == {201: 20, 429: 180}
        refused = await tus.create(1 << 20)
        assert refused.headers[LIMIT_HEADER] == "uploads-per-dock"
        assert "uploads-per-dock" in refused.text and "limit 20" in refused.text
        # Finished uploads hold nothing: a completed one and a terminated one free two places.
        some = [p.stem for p in (rx.store_dir / "partial").glob("*.json")][:2]
        location = rx.url + some[0]
        assert (await tus.patch(location, 0, b"\0" * (1 << 20))).status == 204
        assert (await tus.delete(rx.url + some[1])).status == 204
        assert (await tus.create(1 << 20)).status == 201
        assert (await tus.create(0)).status == 201  # completes at once, reserves nothing
        assert (await tus.create(1 << 20)).status == 201
        assert (await tus.create(1 << 20)).status == 429


async def test_anonymous_clients_count_as_one_identity(tmp_path, session):
    quotas = Quotas(max_uploads_per_dock=3)
    async with running_receiver(tmp_path, quotas=quotas) as rx:
        statuses = await _flood(Tus(session, rx.url), 10, attempts=10)
        assert statuses == {201: 3, 429: 7}


async def test_free_space_counts_what_unfinished_uploads_still_have_to_write(
    tmp_path, session, monkeypatch
):
    length = TiB
    free = 3 * TiB
    monkeypatch.setattr(FileStore, "free_bytes", lambda store: free)
    quotas = Quotas(max_reserved_per_dock=100 * TiB, free_space_margin=0)
    async with running_receiver(tmp_path, tokens=TOKENS, quotas=quotas) as rx:
        a, b = Tus(session, rx.url, TOKEN_A), Tus(session, rx.url, TOKEN_B)
        assert (await a.create(length)).status == 201
        assert (await b.create(length)).status == 201
        assert (await a.create(length)).status == 201
        refused = await b.create(1)  # 3 TiB free, 3 TiB promised
        assert refused.status == 507
        assert refused.headers[LIMIT_HEADER] == "store-free-space"


async def test_over_tus_max_size_names_its_limit(tmp_path, session):
    async with running_receiver(tmp_path, tokens=TOKENS, max_size=1000) as rx:
        reply = await Tus(session, rx.url, TOKEN_A).create(1001)
        assert reply.status == 413
        assert reply.headers[LIMIT_HEADER] == "max-size"
        assert reply.headers["Tus-Max-Size"] == "1000"
