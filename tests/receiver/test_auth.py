"""Bearer-token auth: who may talk to the receiver, whose uploads they see, and no token in logs."""

from __future__ import annotations

import aiohttp
import pytest
from support.receiver import ReceiverProcess, Tus, running_receiver

TOKEN_A = "tok-A-4f0c1e9b7d2a58c3e6f1"
TOKEN_B = "tok-B-9a8b7c6d5e4f3a2b1c0d"
TOKENS = {TOKEN_A: "dock-a", TOKEN_B: "dock-b"}


@pytest.fixture
async def receiver(tmp_path):
    async with running_receiver(tmp_path, tokens=TOKENS) as rx:
        yield rx


async def test_missing_or_wrong_token_is_401(receiver, session):
    for token in (None, "tok-C-not-a-known-token-000", TOKEN_A + "x", TOKEN_A[:-1]):
        reply = await Tus(session, receiver.url, token).create(10)
        assert reply.status == 401, token
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        assert reply.headers["Tus-Resumable"] == "1.0.0"
    async with session.post(
        receiver.url,
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Length": "1",
            "Authorization": f"Basic {TOKEN_A}",
        },
    ) as response:
        assert response.status == 401
    assert list((receiver.store_dir / "partial").iterdir()) == []
    async with session.options(receiver.url) as response:  # discovery needs no token
        assert response.status == 204


async def test_an_upload_belongs_to_the_dock_that_created_it(receiver, session):
    owner, other = Tus(session, receiver.url, TOKEN_A), Tus(session, receiver.url, TOKEN_B)
    location = (await owner.create(8)).headers["Location"]
    assert (await owner.patch(location, 0, b"1234")).status == 204

    assert (await other.head(location)).status == 404
    assert (await other.patch(location, 4, b"5678")).status == 404
    assert (await other.delete(location)).status == 404
    assert (await owner.head(location)).offset == 4  # untouched by the other dock

    reply = await owner.patch(location, 4, b"5678")
    assert reply.status == 204
    assert (await other.head(location)).status == 404  # completed uploads too
    head = await owner.head(location)
    assert head.headers["Dockd-Receipt"] == reply.headers["Dockd-Receipt"]
    upload_id = location.rsplit("/", 1)[1]
    assert receiver.sidecar(upload_id)["dock"] == "dock-a"


async def test_tokens_never_reach_the_logs(tmp_path):
    with ReceiverProcess(tmp_path, tokens=TOKENS) as server:
        async with aiohttp.ClientSession() as session:
            good = Tus(session, server.url, TOKEN_A)
            location = (await good.create(4)).headers["Location"]
            assert (await good.patch(location, 0, b"data")).status == 204
            assert (await Tus(session, server.url, TOKEN_B).head(location)).status == 404
            assert (await Tus(session, server.url, "tok-wrong-0123456789").create(1)).status == 401
        assert server.stop() == 0
        logs = server.log_text()
    assert "upload.completed" in logs and "auth.rejected" in logs  # the logs did capture the run
    for secret in (TOKEN_A, TOKEN_B, "tok-wrong-0123456789"):
        assert secret not in logs


async def test_a_final_upload_takes_only_its_own_docks_partials(receiver, session):
    """tus concatenation: a dock cannot make a final upload (and get a receipt) of another
    dock's partial upload; the refusal does not reveal that the partial exists."""
    dock_a, dock_b = Tus(session, receiver.url, TOKEN_A), Tus(session, receiver.url, TOKEN_B)
    partial = (await dock_a.create(4, headers={"Upload-Concat": "partial"})).headers["Location"]
    assert (await dock_a.patch(partial, 0, b"evid")).status == 204
    stolen = await dock_b.request("POST", receiver.url, {"Upload-Concat": f"final;{partial}"})
    assert stolen.status == 404
    own = await dock_a.request("POST", receiver.url, {"Upload-Concat": f"final;{partial}"})
    assert own.status == 201
