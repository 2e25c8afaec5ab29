"""The dock-signed manifest: canonical bytes, signature, and what breaks it."""

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dockd import canonical
from dockd.custody import manifest as manifests


def _facts(**overrides):
    fields = dict(
        dock="station-07",
        camera="CAM-0001",
        model="bwv-x1",
        bay="bay-1",
        rel_path=b"DCIM/\xff\x01clip.MP4",  # not UTF-8, with a control byte: camera names are hostile
        size=16,
        plaintext_sha256="90b6fe9977fd1f068572beb279b9440572104f327c0b3568e5edbf17f8630c2e",
        recorded_at="2026-11-21T10:00:00Z",
        recorded_at_source="sidecar",
        evidence=True,
        category="incident",
        incident=None,
        officer="PC 4711 Ünal",
        officer_source="station",
        ciphertext_sha256="a" * 64,
        ciphertext_length=216,
        recipients=("age1ad4k0fu659u8d5jec9egqlkplq7gdre274yqtqt8aa4ns7k2e5jqr0de97",),
        upload_url="https://ingest/files/abc",
        upload_id="abc",
        confirm_policy="receipt",
        receipt="v1.x.y",
        discovered_at=1_800_000_000.5,
        confirmed_at=1_800_000_100.0,
        audit_seq=7,
        audit_hash="b" * 64,
    )
    fields.update(overrides)
    return manifests.ClipFacts(**fields)


def test_signed_manifest_is_canonical_and_verifies():
    key = Ed25519PrivateKey.generate()
    signed = manifests.sign(manifests.build(_facts(), 1_800_000_101.0), key)
    # canonical: re-serialising the parsed file gives the same bytes (no whitespace, sorted keys)
    assert canonical.dumps(json.loads(signed)) + b"\n" == signed
    manifest = manifests.verify(signed, key.public_key())
    assert manifest["clip"]["path_b64"] == "RENJTS//AWNsaXAuTVA0"  # exact raw bytes survive
    assert manifest["clip"]["path"] == "DCIM/\\xff\x01clip.MP4"
    assert manifest["officer"] == {"name": "PC 4711 Ünal", "source": "station"}
    assert manifest["times"]["discovered"] == "2027-01-15T08:00:00.500000Z"
    assert manifest["ciphertext"]["recipients"] == [
        manifests.recipient_fingerprint(_facts().recipients[0])
    ]


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("clip", "sha256", "0" * 64),
        ("clip", "size", 17),
        ("officer", "name", "PC 1"),
        ("camera", "serial", "CAM-0002"),
        ("upload", "receipt", "v1.other.sig"),
    ],
)
def test_any_edited_field_breaks_the_signature(section, field, value):
    key = Ed25519PrivateKey.generate()
    envelope = json.loads(manifests.sign(manifests.build(_facts(), 0.0), key))
    envelope["manifest"][section][field] = value
    with pytest.raises(manifests.ManifestError, match="changed"):
        manifests.verify(canonical.dumps(envelope), key.public_key())


def test_a_manifest_signed_by_another_key_is_refused():
    signed = manifests.sign(manifests.build(_facts(), 0.0), Ed25519PrivateKey.generate())
    with pytest.raises(manifests.ManifestError, match="signed by dock key"):
        manifests.verify(signed, Ed25519PrivateKey.generate().public_key())
    # a forged kid does not help: the signature itself is checked
    other = Ed25519PrivateKey.generate()
    envelope = json.loads(signed)
    envelope["signature"]["kid"] = manifests.key_id(other.public_key())
    with pytest.raises(manifests.ManifestError, match="changed"):
        manifests.verify(canonical.dumps(envelope), other.public_key())


def test_signature_has_a_context_prefix():
    """A receipt-style signature over the bare manifest bytes is not a manifest signature."""
    key = Ed25519PrivateKey.generate()
    manifest = manifests.build(_facts(), 0.0)
    envelope = json.loads(manifests.sign(manifest, key))
    bare = key.sign(canonical.dumps(manifest))
    envelope["signature"]["value"] = manifests._b64e(bare)
    with pytest.raises(manifests.ManifestError):
        manifests.verify(canonical.dumps(envelope), key.public_key())
