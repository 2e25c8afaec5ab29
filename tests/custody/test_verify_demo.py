"""`dockd verify` on what `dockd demo --workdir` leaves: passes as is, fails on any swap or forgery."""

import datetime as dt
import json
import shutil
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dockd import cli
from dockd.crypto import receipt
from dockd.crypto.keys import load_signing_key
from dockd.custody import manifest as manifests
from dockd.receiver.storage.file import FileStore


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("custody") / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "dockd.cli", "demo", "--workdir", str(workdir), "--clip-mib", "1"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return workdir


def _verify(capsys, *argv):
    code = cli.main(["verify", *map(str, argv)])
    return code, capsys.readouterr().out


def _keys(demo):
    return (
        "--identity",
        demo / "identity.txt",
        "--dock-key",
        demo / "dock-signing.pub",
        "--server-key",
        demo / "server-receipt.pub",
    )


def _clip(demo, index=0):
    """(object, manifest file) of one demo clip, found through the dock's kept manifest."""
    manifest_file = sorted((demo / "state" / "manifests").glob("*.json"))[index]
    upload = json.loads(manifest_file.read_bytes())["manifest"]["upload"]["id"]
    return FileStore(demo / "store").completed_data_path(upload), manifest_file


def test_whole_workdir_verifies(demo, capsys):
    code, out = _verify(capsys, "--workdir", demo)
    assert code == 0, out
    assert out.count("PASS  upload ") == 8  # every clip, each with its manifest from the server
    assert "byte-identical to the dock's copy" in out
    assert "FAIL" not in out
    assert "hash chain intact" in out and "8 manifest anchor(s)" in out
    assert out.rstrip().endswith("ALL 9 VERIFIED")


def test_single_object_verifies(demo, capsys):
    obj, manifest = _clip(demo, 1)
    code, out = _verify(capsys, "--object", obj, "--manifest", manifest, *_keys(demo))
    assert code == 0, out
    assert "decrypts to" in out and "FAIL" not in out


def test_swapped_object_fails(demo, capsys):
    _, manifest = _clip(demo, 0)
    other, _ = _clip(demo, 1)
    code, out = _verify(capsys, "--object", other, "--manifest", manifest, *_keys(demo))
    assert code == 1
    assert "FAIL  stored object" in out and "FAIL  decrypts to" in out


def test_tampered_object_fails(demo, capsys, tmp_path):
    obj, manifest = _clip(demo, 1)
    copy = tmp_path / obj.name
    shutil.copyfile(obj, copy)
    with copy.open("r+b") as handle:  # one bit, deep in the payload
        handle.seek(copy.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 1]))
    code, out = _verify(capsys, "--object", copy, "--manifest", manifest, *_keys(demo))
    assert code == 1
    assert "FAIL  stored object" in out and "FAIL  decrypts with the identity" in out


def test_edited_manifest_fails(demo, capsys, tmp_path):
    obj, manifest = _clip(demo, 0)
    envelope = json.loads(manifest.read_bytes())
    envelope["manifest"]["officer"] = {"name": "PC 9999", "source": "station"}
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(envelope))
    code, out = _verify(capsys, "--object", obj, "--manifest", edited, *_keys(demo))
    assert code == 1 and "FAIL  dock signature on the manifest" in out


def test_forged_receipt_fails_even_in_a_validly_signed_manifest(demo, capsys, tmp_path):
    """Whoever holds the dock key cannot make the server's receipt: it is checked on its own."""
    obj, manifest = _clip(demo, 0)
    body = json.loads(manifest.read_bytes())["manifest"]
    forger = Ed25519PrivateKey.generate()
    body["upload"]["receipt"] = receipt.sign(
        forger,
        upload=body["upload"]["id"],
        length=body["ciphertext"]["length"],
        sha256=body["ciphertext"]["sha256"],
        completed=dt.datetime.now(dt.UTC),
    )
    forged = tmp_path / "forged.json"
    forged.write_bytes(manifests.sign(body, load_signing_key(demo / "dock-signing.key")))
    code, out = _verify(capsys, "--object", obj, "--manifest", forged, *_keys(demo))
    assert code == 1
    assert "pass  dock signature" in out and "FAIL  server receipt" in out
