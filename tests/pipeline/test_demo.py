"""`dockd demo`, the README's main command: exits 0 only when everything verified."""

import subprocess
import sys

from support.dock import decrypt_sha256, stored_objects


def test_demo_verifies_and_leaves_a_decryptable_store(tmp_path):
    workdir = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "dockd.cli", "demo", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "ALL VERIFIED" in proc.stdout
    stored = stored_objects(workdir / "store")
    manifests = [m for m in stored if "manifest_for" in m["metadata"]]
    clips = sorted((m for m in stored if m not in manifests), key=lambda m: m["upload"])
    assert len(clips) == 8
    # each clip's dock-signed manifest went to the server too, linked by upload id (CUSTODY.md)
    linked = sorted(m["metadata"]["manifest_for"] for m in manifests)
    assert linked == [m["upload"] for m in clips]
    # independently of the demo's own check: the stock age CLI decrypts to the custody hash
    for meta in clips[:3]:
        assert (
            decrypt_sha256(meta["data_path"], workdir / "identity.txt")
            == meta["metadata"]["sha256"]
        )
    clips = [p for p in (workdir / "bays").rglob("*.MP4")]
    assert clips == []  # every clip wiped from the simulated cameras


def test_demo_refuses_a_non_empty_workdir(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    proc = subprocess.run(
        [sys.executable, "-m", "dockd.cli", "demo", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert (tmp_path / "precious.txt").read_text() == "keep me"
