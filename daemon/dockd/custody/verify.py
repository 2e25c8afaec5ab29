"""`dockd verify`: check stored evidence offline, trusting neither the dock nor the server.

For each clip: the manifest is signed by the dock key; the server's receipt in it is signed by the
server key and names this upload, the ciphertext length and SHA-256; the stored object has exactly
that length and SHA-256; and it decrypts (streamed, bounded memory) with the age identity to
exactly the plaintext size and SHA-256 the dock took at offload. Exit 0 only if every check passes.

Modes:
- one object: `--object F.bin --manifest M.json --identity I --dock-key P --server-key P`
- a receiver store: `--store DIR` (+ the three keys): every clip whose manifest was uploaded
  (metadata `manifest_for`), plus manifests given with `--manifests DIR` (a dock's
  state_dir/manifests), each checked against the store's object for that upload (read through
  the receiver's store interface: `DIR` or `file:DIR`)
- a demo workdir: `--workdir DIR` = `--store DIR/store --manifests DIR/state/manifests
  --identity DIR/identity.txt --dock-key DIR/dock-signing.pub --server-key DIR/server-receipt.pub`,
  and the dock's audit log in DIR/state is checked against the heads the manifests carry.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dockd import exitcodes
from dockd.crypto import age, receipt
from dockd.crypto.keys import AgeIdentity, KeyFileError, load_age_identities, load_verify_key
from dockd.custody import audit
from dockd.custody import manifest as manifests
from dockd.receiver.storage import open_store
from dockd.receiver.storage.api import UploadStore

READ_BLOCK = 1 << 20


@dataclass
class Report:
    title: str
    checks: list[tuple[bool, str]] = field(default_factory=list)

    def check(self, ok: bool, text: str) -> bool:
        self.checks.append((ok, text))
        return ok

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for ok, _ in self.checks)

    def render(self) -> str:
        lines = [f"{'PASS' if self.ok else 'FAIL'}  {self.title}"]
        lines += [f"    {'pass' if ok else 'FAIL'}  {text}" for ok, text in self.checks]
        return "\n".join(lines)


class _Hasher:
    """A write-only sink that keeps the SHA-256 and the count of what is written."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return len(data)


def _read_manifest(path: Path) -> bytes:
    """At most MAX_BYTES + 1 bytes (more fails verification): a hostile file cannot fill memory."""
    with path.open("rb") as handle:
        return handle.read(manifests.MAX_BYTES + 1)


@dataclass(frozen=True)
class ObjectFile:
    """A stored object given as a file (`--object`)."""

    path: Path

    @property
    def name(self) -> str:
        return str(self.path)

    def exists(self) -> bool:
        return self.path.is_file()

    def open(self) -> BinaryIO:
        return self.path.open("rb")


@dataclass(frozen=True)
class StoredUpload:
    """A completed upload in a receiver store, read through the store interface only."""

    store: UploadStore
    upload: str

    @property
    def name(self) -> str:
        return f"upload {self.upload}"

    def exists(self) -> bool:
        return self.store.load_completed(self.upload) is not None

    def open(self) -> BinaryIO:
        return self.store.open_completed(self.upload)


def _hash_object(stored: ObjectFile | StoredUpload) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with stored.open() as handle:
        while block := handle.read(READ_BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def verify_clip(
    stored: ObjectFile | StoredUpload,
    manifest_bytes: bytes,
    identities: Sequence[AgeIdentity],
    dock_key: Ed25519PublicKey,
    server_key: Ed25519PublicKey,
    *,
    title: str | None = None,
) -> tuple[Report, dict[str, Any] | None]:
    report = Report(title or stored.name)
    try:
        manifest = manifests.verify(manifest_bytes, dock_key)
    except manifests.ManifestError as exc:
        report.check(False, f"dock signature on the manifest: {exc}")
        return report, None
    report.check(True, f"dock signature on the manifest (dock key {receipt.key_id(dock_key)})")
    clip, cipher, upload = manifest["clip"], manifest["ciphertext"], manifest["upload"]
    camera = manifest.get("camera", {})
    report.title = (
        f"{title or stored.name}: {camera.get('serial')} {clip.get('path')} "
        f"(bay {camera.get('bay')}, dock {manifest.get('dock')})"
    )
    if upload.get("receipt") is None:
        report.check(
            False, f"server receipt: none in the manifest (confirm policy {upload.get('confirm')})"
        )
    else:
        try:
            signed = receipt.verify(upload["receipt"], server_key)
        except receipt.ReceiptError as exc:
            report.check(False, f"server receipt: {exc}")
        else:
            report.check(
                signed.matches(
                    upload=upload.get("id"), length=cipher["length"], sha256=cipher["sha256"]
                ),
                f"server receipt signed by server key {signed.kid} names upload "
                f"{signed.upload}, {signed.length} bytes, sha256 {signed.sha256[:16]}… "
                "(must equal the manifest's upload and ciphertext)",
            )
    if not stored.exists():
        report.check(False, f"stored object {stored.name}: missing")
        return report, manifest
    digest, size = _hash_object(stored)
    report.check(
        digest == cipher["sha256"] and size == cipher["length"],
        f"stored object: {size} bytes, sha256 {digest[:16]}… "
        f"(manifest: {cipher['length']} bytes, {str(cipher['sha256'])[:16]}…)",
    )
    fingerprints = {manifests.recipient_fingerprint(str(i.recipient)) for i in identities}
    report.check(
        bool(fingerprints & set(cipher.get("recipients", []))),
        "the identity's recipient is one the manifest says the clip was encrypted to",
    )
    sink = _Hasher()
    try:
        with stored.open() as source:
            age.decrypt(source, sink, identities)  # type: ignore[arg-type]
    except age.AgeError as exc:
        report.check(False, f"decrypts with the identity (age v1): {exc}")
        return report, manifest
    plain = sink.digest.hexdigest()
    report.check(
        plain == clip["sha256"] and sink.size == clip["size"],
        f"decrypts to {sink.size} bytes, sha256 {plain[:16]}… "
        f"(custody hash taken at offload: {clip['size']} bytes, {str(clip['sha256'])[:16]}…)",
    )
    return report, manifest


def _store_manifests(store: UploadStore) -> dict[str, tuple[str, bytes]]:
    """upload id → (where, manifest bytes) for every manifest upload in a receiver store."""
    found: dict[str, tuple[str, bytes]] = {}
    for record in store.completed():
        target = record.metadata.get("manifest_for")
        if isinstance(target, str) and target:
            with store.open_completed(record.upload) as stream:
                data = stream.read(manifests.MAX_BYTES + 1)  # bounded, as `_read_manifest`
            found[target] = (f"store upload {record.upload}", data)
    return found


def _clip_objects(store: UploadStore) -> list[str]:
    return [r.upload for r in store.completed() if not r.metadata.get("manifest_for")]


def _upload_id_of(data: bytes) -> str | None:
    try:
        value = json.loads(data)["manifest"]["upload"]["id"]
    except (ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", type=Path, metavar="DIR", help="a `dockd demo` workdir")
    parser.add_argument("--store", type=Path, metavar="DIR", help="a receiver store")
    parser.add_argument(
        "--manifests", type=Path, metavar="DIR", help="signed manifests kept by a dock"
    )
    parser.add_argument("--object", type=Path, metavar="FILE", help="one stored object (.bin)")
    parser.add_argument("--manifest", type=Path, metavar="FILE", help="its signed manifest")
    parser.add_argument("--identity", type=Path, metavar="FILE", help="age identity file")
    parser.add_argument("--dock-key", type=Path, metavar="PEM", help="the dock's public key")
    parser.add_argument("--server-key", type=Path, metavar="PEM", help="the server's receipt key")
    parser.add_argument(
        "--state-dir", type=Path, metavar="DIR", help="also check this dock's audit log"
    )


def run(args: argparse.Namespace) -> int:
    if args.workdir is not None:
        work = args.workdir
        args.store = args.store or work / "store"
        args.manifests = args.manifests or work / "state" / "manifests"
        args.identity = args.identity or work / "identity.txt"
        args.dock_key = args.dock_key or work / "dock-signing.pub"
        args.server_key = args.server_key or work / "server-receipt.pub"
        args.state_dir = args.state_dir or work / "state"
    single = args.object is not None or args.manifest is not None
    if single and (args.object is None or args.manifest is None):
        print("dockd verify: --object and --manifest go together", file=sys.stderr)
        return exitcodes.USAGE
    if not single and args.store is None:
        print("dockd verify: give --workdir, --store or --object/--manifest", file=sys.stderr)
        return exitcodes.USAGE
    missing = [n for n in ("identity", "dock_key", "server_key") if getattr(args, n) is None]
    if missing:
        flags = ", ".join("--" + n.replace("_", "-") for n in missing)
        print(f"dockd verify: {flags} required", file=sys.stderr)
        return exitcodes.USAGE
    try:
        identities = load_age_identities(args.identity)
        dock_key = load_verify_key(args.dock_key)
        server_key = load_verify_key(args.server_key)
    except KeyFileError as exc:
        print(f"dockd verify: {exc}", file=sys.stderr)
        return exitcodes.CONFIG

    reports: list[Report] = []
    anchors: list[tuple[str, int, str]] = []
    if single:
        report, _ = verify_clip(
            ObjectFile(args.object),
            _read_manifest(args.manifest),
            identities,
            dock_key,
            server_key,
        )
        reports.append(report)
    else:
        reports += _verify_store(args, identities, dock_key, server_key, anchors)
    if args.state_dir is not None:
        reports.append(_verify_audit(args.state_dir, anchors))
    for report in reports:
        print(report.render())
    failed = [r for r in reports if not r.ok]
    if not reports:
        print("FAIL  nothing to verify (no manifests found)")
        return exitcodes.FAILURE
    print(
        f"ALL {len(reports)} VERIFIED"
        if not failed
        else f"VERIFICATION FAILED: {len(failed)} of {len(reports)}"
    )
    return exitcodes.OK if not failed else exitcodes.FAILURE


def _verify_store(
    args: argparse.Namespace,
    identities: Sequence[AgeIdentity],
    dock_key: Ed25519PublicKey,
    server_key: Ed25519PublicKey,
    anchors: list[tuple[str, int, str]],
) -> list[Report]:
    store = open_store(args.store)
    on_server = _store_manifests(store)
    local: dict[str, tuple[str, bytes]] = {}
    if args.manifests is not None and args.manifests.is_dir():
        for path in sorted(args.manifests.glob("*.json")):
            data = _read_manifest(path)
            local[_upload_id_of(data) or f"?{path.name}"] = (f"dock manifest {path.name}", data)
    reports = []
    for upload_id in sorted(set(on_server) | set(local)):
        where, data = on_server.get(upload_id) or local[upload_id]
        report, manifest = verify_clip(
            StoredUpload(store, upload_id),
            data,
            identities,
            dock_key,
            server_key,
            title=f"upload {upload_id}",
        )
        report.checks.insert(0, (True, f"manifest from {where}"))
        if upload_id in on_server and upload_id in local:
            report.check(
                on_server[upload_id][1] == local[upload_id][1],
                "the manifest the server holds is byte-identical to the dock's copy",
            )
        if manifest is not None:
            head = manifest.get("audit") or {}
            if isinstance(head.get("seq"), int) and isinstance(head.get("hash"), str):
                anchors.append((f"manifest of upload {upload_id}", head["seq"], head["hash"]))
        reports.append(report)
    for upload_id in _clip_objects(store):
        if upload_id not in on_server and upload_id not in local:
            report = Report(f"upload {upload_id}")
            report.check(False, "no signed manifest for this stored object (server or dock)")
            reports.append(report)
    return reports


def _verify_audit(state_dir: Path, anchors: list[tuple[str, int, str]]) -> Report:
    report = Report(f"audit log in {state_dir}")
    try:
        head = audit.read_head(state_dir)
        conn = audit.open_readonly(state_dir)
    except (OSError, ValueError) as exc:
        report.check(False, str(exc))
        return report
    try:
        claims = list(anchors) + ([(audit.HEAD_FILE, *head)] if head else [])
        verdict = audit.verify_chain(audit.rows(conn), claims)
    except ValueError as exc:
        report.check(False, str(exc))
        return report
    finally:
        conn.close()
    report.check(
        verdict.ok,
        f"{verdict.records} records, hash chain intact up to seq {verdict.head[0]}, "
        f"{len(anchors)} manifest anchor(s) and the head file agree"
        if verdict.ok
        else "; ".join(verdict.problems),
    )
    for note in verdict.notes:
        report.check(True, note)
    return report
