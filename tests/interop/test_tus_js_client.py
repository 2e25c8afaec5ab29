"""tus-js-client 4.3.1 (the reference JavaScript tus client) against dockd's receiver.

Any tus 1.0 client must be able to upload to `dockd serve`, resume after an interruption, and
have what it stored receipted. The same uploads also go to the stock @tus/server 2.4.5, which
shows the peer harness (not our server) is what makes these tests pass or fail. dockd runs as it
would in real use, with a bearer token (tus-js-client's `headers` option carries it).
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dockd.crypto import receipt
from dockd.receiver.storage.file import FileStore
from support.node_peers import TusNodeServer, ensure_node_peers, run_tus_js_upload
from support.receiver import ReceiverProcess, read_sidecar, upload_id_of

MIB = 1 << 20
TOKEN = "tok-interop-dock-5e1d0c9b8a7f"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FILE_SIZE = 5 * MIB
CHUNK_SIZE = 1 * MIB
# Printable, non-ASCII, spaces and an empty value: tus-js-client base64-encodes all of them.
METADATA = {
    "filename": "clip 0001.MP4",
    "officer": "Zoë Ødegård",
    "recorded-at": "2026-11-21T08:15:00Z",
    "evidence": "true",
    "note": "",
}


@dataclass(frozen=True)
class SourceFile:
    path: Path
    sha256: str


@dataclass(frozen=True)
class TusTarget:
    """A running tus server and where it keeps a finished upload's bytes and metadata."""

    name: str
    endpoint: str
    stored_path: Callable[[str], Path]
    stored_metadata: Callable[[str], dict[str, Any]]
    headers: dict[str, str]  # sent on every request (credentials)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(MIB):
            digest.update(piece)
    return digest.hexdigest()


def head_offset(upload_url: str, headers: dict[str, str]) -> int:
    """The server's Upload-Offset for an upload (HEAD only: a GET can crash @tus/server)."""
    request = urllib.request.Request(
        upload_url, method="HEAD", headers={"Tus-Resumable": "1.0.0", **headers}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.headers["Upload-Offset"])


@pytest.fixture(scope="module")
def source_file(tmp_path_factory: pytest.TempPathFactory) -> SourceFile:
    path = tmp_path_factory.mktemp("source") / "clip.bin"
    path.write_bytes(os.urandom(FILE_SIZE))
    return SourceFile(path, sha256_file(path))


@pytest.fixture(scope="module")
def node_peers() -> Path:
    return ensure_node_peers()


@pytest.fixture
def dockd_server(tmp_path: Path, node_peers: Path) -> Iterator[ReceiverProcess]:
    with ReceiverProcess(tmp_path / "dockd", tokens={TOKEN: "interop-dock"}) as server:
        yield server


@pytest.fixture
def tus_node_server(node_peers: Path) -> Iterator[TusNodeServer]:
    with TusNodeServer() as server:
        yield server


def _dockd_target(server: ReceiverProcess) -> TusTarget:
    return TusTarget(
        name="dockd",
        endpoint=server.url,
        stored_path=lambda upload: FileStore(server.store).completed_data_path(upload),
        stored_metadata=lambda upload: read_sidecar(server.store, upload)["metadata"],
        headers=AUTH,
    )


def _tus_node_metadata(server: TusNodeServer, upload: str) -> dict[str, Any]:
    metadata = json.loads((server.dir / f"{upload}.json").read_text())["metadata"]
    # @tus/server records a key sent with an empty value as null; the client sent "".
    return {key: "" if value is None else value for key, value in metadata.items()}


def _tus_node_target(server: TusNodeServer) -> TusTarget:
    return TusTarget(
        name="tus-node-server",
        endpoint=server.url,
        stored_path=lambda upload: server.dir / upload,
        stored_metadata=lambda upload: _tus_node_metadata(server, upload),
        headers={},
    )


@pytest.fixture(params=["dockd", "tus-node-server"])
def target(request: pytest.FixtureRequest) -> TusTarget:
    if request.param == "dockd":
        return _dockd_target(request.getfixturevalue("dockd_server"))
    return _tus_node_target(request.getfixturevalue("tus_node_server"))


def test_multi_chunk_upload_to_dockd_is_stored_and_receipted(
    dockd_server: ReceiverProcess, source_file: SourceFile
) -> None:
    report = run_tus_js_upload(
        dockd_server.url, source_file.path, chunk_size=CHUNK_SIZE, headers=AUTH
    )

    assert report["completed"] is True
    assert report["bytes_sent"] == FILE_SIZE
    upload = upload_id_of(report["url"])
    sidecar = read_sidecar(dockd_server.store, upload)
    assert sidecar["length"] == FILE_SIZE
    assert sidecar["sha256"] == source_file.sha256
    stored = FileStore(dockd_server.store).completed_data_path(upload)
    assert sha256_file(stored) == source_file.sha256
    # tus-js-client never asks for the receipt, but the server signed one all the same.
    signed = receipt.verify(sidecar["receipt"], dockd_server.public_key)
    assert (signed.upload, signed.length, signed.sha256) == (upload, FILE_SIZE, source_file.sha256)
    assert sidecar["dock"] == "interop-dock"  # the token's dock, recorded by the server


def test_tus_node_server_stores_the_same_upload(
    tus_node_server: TusNodeServer, source_file: SourceFile
) -> None:
    report = run_tus_js_upload(tus_node_server.url, source_file.path, chunk_size=CHUNK_SIZE)

    assert report["completed"] is True
    assert report["bytes_sent"] == FILE_SIZE
    stored = tus_node_server.dir / upload_id_of(report["url"])
    assert sha256_file(stored) == source_file.sha256


def test_interrupted_upload_resumes_from_the_server_offset(
    target: TusTarget, source_file: SourceFile
) -> None:
    stop_after = 2 * MIB
    first = run_tus_js_upload(
        target.endpoint,
        source_file.path,
        chunk_size=CHUNK_SIZE,
        stop_after=stop_after,
        headers=target.headers,
    )
    assert first["completed"] is False
    offset = head_offset(first["url"], target.headers)
    assert offset == first["bytes_sent"]
    assert stop_after <= offset < FILE_SIZE

    resumed = run_tus_js_upload(
        None,
        source_file.path,
        chunk_size=CHUNK_SIZE,
        resume_url=first["url"],
        headers=target.headers,
    )

    assert resumed["completed"] is True
    assert resumed["url"] == first["url"]
    assert resumed["start_offset"] == offset  # continued, did not start from zero
    assert head_offset(first["url"], target.headers) == FILE_SIZE
    assert sha256_file(target.stored_path(upload_id_of(first["url"]))) == source_file.sha256


def test_metadata_set_by_tus_js_client_arrives_decoded(
    target: TusTarget, source_file: SourceFile
) -> None:
    report = run_tus_js_upload(
        target.endpoint,
        source_file.path,
        chunk_size=FILE_SIZE,
        metadata=METADATA,
        headers=target.headers,
    )

    assert report["completed"] is True
    assert target.stored_metadata(upload_id_of(report["url"])) == METADATA
