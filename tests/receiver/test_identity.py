"""The sidecar records the authenticated dock; metadata `dock` naming another dock is refused."""

from __future__ import annotations

from support.receiver import Tus, metadata_header, running_receiver, upload_id_of

TOKEN_A = "tok-A-4f0c1e9b7d2a58c3e6f1"
TOKENS = {TOKEN_A: "dock-a"}


async def test_metadata_dock_must_be_the_authenticated_dock(tmp_path, session):
    async with running_receiver(tmp_path, tokens=TOKENS) as rx:
        tus = Tus(session, rx.url, TOKEN_A)
        for claimed in ("dock-b", "dock-a ", ""):
            reply = await tus.create(
                0, headers={"Upload-Metadata": metadata_header({"dock": claimed})}
            )
            assert reply.status == 403, claimed
            assert "is not the authenticated dock 'dock-a'" in reply.text
        not_utf8 = "dock " + "/w=="  # base64 of b"\xff"
        reply = await tus.create(0, headers={"Upload-Metadata": not_utf8})
        assert reply.status == 403
        assert list((rx.store_dir / "partial").iterdir()) == []
        assert list(rx.store.completed()) == []

        matching = await tus.create(
            0, headers={"Upload-Metadata": metadata_header({"dock": "dock-a"})}
        )
        assert matching.status == 201
        assert rx.sidecar(upload_id_of(matching.headers["Location"]))["dock"] == "dock-a"
        # No claim at all: the sidecar still says who sent it.
        silent = await tus.create(0, headers={"Upload-Metadata": metadata_header({"camera": "C1"})})
        assert rx.sidecar(upload_id_of(silent.headers["Location"]))["dock"] == "dock-a"


async def test_without_authentication_the_claim_is_recorded_as_sent(tmp_path, session):
    async with running_receiver(tmp_path) as rx:  # anonymous: loopback only, nobody to check
        reply = await Tus(session, rx.url).create(
            0, headers={"Upload-Metadata": metadata_header({"dock": "bench-dock"})}
        )
        assert reply.status == 201
        sidecar = rx.sidecar(upload_id_of(reply.headers["Location"]))
        assert sidecar["dock"] is None
        assert sidecar["metadata"]["dock"] == "bench-dock"
