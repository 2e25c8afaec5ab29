"""Key files and the signed receipt: interoperable formats, unsafe files refused, forgery detected."""

import datetime as dt
import os
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dockd.crypto import bech32, receipt
from dockd.crypto.keys import (
    AgeRecipient,
    KeyFileError,
    keygen,
    load_age_identities,
    load_signing_key,
    load_verify_key,
)

# sign(key = bytes 0..31, upload "abc", 300 bytes, sha256 "a"*64, completed 2026-11-29T12:00Z):
# payload {"completed":"2026-11-29T12:00:00Z","kid":"56475aa75463474c","length":300,
# "sha256":"aa…a","upload":"abc","v":1}, signed after the context "dockd-receipt-v1\n".
GOLDEN_RECEIPT = (
    "v1."
    "eyJjb21wbGV0ZWQiOiIyMDI2LTExLTI5VDEyOjAwOjAwWiIsImtpZCI6IjU2NDc1YWE3NTQ2MzQ3NGMi"
    "LCJsZW5ndGgiOjMwMCwic2hhMjU2IjoiYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh"
    "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYSIsInVwbG9hZCI6ImFiYyIsInYiOjF9"
    "."
    "f0IrhRlPGfdfiGhMW0RYTO6GkoqD3VAevErdJb4DSIDtR1uNc20M7Yeee7cJldmjTXqtB_ugwLns5TTq8lQSDA"
)


def test_keygen_writes_private_files_0600_and_never_overwrites(tmp_path):
    result = keygen(tmp_path)
    assert os.stat(result.server_signing_key).st_mode & 0o777 == 0o600
    assert os.stat(result.age_identity).st_mode & 0o777 == 0o600
    key = load_signing_key(result.server_signing_key)
    assert (
        load_verify_key(result.server_public_key).public_bytes_raw()
        == key.public_key().public_bytes_raw()
    )
    [identity] = load_age_identities(result.age_identity)
    assert identity.recipient == AgeRecipient.parse(result.age_recipient.read_text())
    before = result.age_identity.read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        keygen(tmp_path)
    assert result.age_identity.read_bytes() == before


def test_group_readable_private_key_is_refused(tmp_path):
    result = keygen(tmp_path)
    os.chmod(result.server_signing_key, 0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_signing_key(result.server_signing_key)


def test_age_keygen_identity_file_is_read(tmp_path):
    path = tmp_path / "key.txt"
    proc = subprocess.run(["age-keygen", "-o", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("age-keygen not available")
    os.chmod(path, 0o600)
    [identity] = load_age_identities(path)
    public = next(line for line in path.read_text().splitlines() if "public key" in line).split(
        ": "
    )[1]
    assert identity.recipient.encode() == public


def test_bech32_rejects_corruption():
    text = bech32.encode("age", bytes(range(32)))
    assert bech32.decode(text, "age") == bytes(range(32))
    corrupted = text[:-1] + ("q" if text[-1] != "q" else "p")
    with pytest.raises(bech32.Bech32Error):
        bech32.decode(corrupted, "age")
    with pytest.raises(KeyFileError):
        AgeRecipient.parse(corrupted)


def _signed(key):
    return receipt.sign(
        key,
        upload="u1",
        length=1234,
        sha256="ab" * 32,
        completed=dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC),
    )


def test_receipt_round_trip_and_match():
    key = Ed25519PrivateKey.generate()
    signed = receipt.verify(_signed(key), key.public_key())
    assert signed.matches(upload="u1", length=1234, sha256="ab" * 32)
    assert not signed.matches(upload="u1", length=1235, sha256="ab" * 32)
    assert not signed.matches(upload="u2", length=1234, sha256="ab" * 32)
    assert signed.completed == "2026-11-21T10:00:00Z"


def test_tampered_or_foreign_receipt_fails():
    key = Ed25519PrivateKey.generate()
    header = _signed(key)
    version, payload, signature = header.split(".")
    forged_payload = receipt._b64e(
        receipt._b64d(payload).replace(b'"length":1234', b'"length":9999')
    )
    for bad in (
        f"{version}.{forged_payload}.{signature}",
        f"{version}.{payload}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}{signature[-1]}",
        f"v2.{payload}.{signature}",
        "garbage",
    ):
        with pytest.raises(receipt.ReceiptError):
            receipt.verify(bad, key.public_key())
    with pytest.raises(receipt.ReceiptError, match="does not verify"):
        receipt.verify(header, Ed25519PrivateKey.generate().public_key())


def _forged(key, **fields):
    """A receipt whose signature is genuine but whose fields are whatever the signer wrote."""
    import base64
    import json

    from dockd.crypto import receipt as receipt_module

    payload = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    signature = key.sign(receipt_module._CONTEXT + payload)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"v1.{b64(payload)}.{b64(signature)}"


@pytest.mark.parametrize(
    "change",
    [
        {"v": 2},
        {"upload": ""},
        {"upload": 7},
        {"length": -1},
        {"length": True},
        {"length": "300"},
        {"length": 1.5},
        {"sha256": "A" * 64},
        {"sha256": "a" * 63},
        {"sha256": "g" * 64},
        {"completed": None},
        {"kid": None},
    ],
    ids=repr,
)
def test_a_genuinely_signed_receipt_with_a_malformed_field_is_refused(change):
    """Every field is checked on its own: one bad field is enough (a signer bug or a hostile
    server must not get a receipt through by getting the others right)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from dockd.crypto import receipt as receipt_module

    key = Ed25519PrivateKey.generate()
    fields = {
        "v": 1,
        "upload": "abc",
        "length": 300,
        "sha256": "a" * 64,
        "completed": "2026-11-29T00:00:00Z",
        "kid": receipt_module.key_id(key.public_key()),
    }
    good = receipt_module.verify(_forged(key, **fields), key.public_key())
    assert good.matches(upload="abc", length=300, sha256="a" * 64)
    with pytest.raises(receipt_module.ReceiptError):
        receipt_module.verify(_forged(key, **{**fields, **change}), key.public_key())


def test_the_receipt_wire_format_is_fixed_byte_for_byte():
    """A golden vector: other implementations (the evidence service, a court's verifier) rebuild
    and check these exact bytes, so the version, the context string, the key id, the field order
    and the encoding may not drift (docs/RECEIVER.md documents them)."""
    import datetime as dt

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from dockd.crypto import receipt as receipt_module

    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    header = receipt_module.sign(
        key,
        upload="abc",
        length=300,
        sha256="a" * 64,
        completed=dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC),
    )
    assert header == GOLDEN_RECEIPT
    parsed = receipt_module.verify(GOLDEN_RECEIPT, key.public_key())
    assert (parsed.upload, parsed.length, parsed.kid) == ("abc", 300, "56475aa75463474c")


@pytest.mark.parametrize("length", [0, 1])
def test_a_receipt_for_a_short_upload_is_valid(length):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from dockd.crypto import receipt as receipt_module

    key = Ed25519PrivateKey.generate()
    fields = {
        "v": 1,
        "upload": "abc",
        "length": length,
        "sha256": "a" * 64,
        "completed": "2026-11-29T00:00:00Z",
        "kid": receipt_module.key_id(key.public_key()),
    }
    assert receipt_module.verify(_forged(key, **fields), key.public_key()).length == length


@pytest.mark.parametrize(
    "header", ["v1.é.é", "v1.!!!.???", "v1..", "v1." + "A" * 5000, "v2.e30.e30", "nonsense"]
)
def test_garbage_in_a_receipt_header_is_a_receipt_error_not_a_crash(header):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from dockd.crypto import receipt as receipt_module

    with pytest.raises(receipt_module.ReceiptError):
        receipt_module.verify(header, Ed25519PrivateKey.generate().public_key())


def test_a_signed_payload_that_is_not_json_is_refused():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from dockd.crypto import receipt as receipt_module

    key = Ed25519PrivateKey.generate()
    for payload in (b"not json", b"\xff\xfe", b"[1, 2]"):
        signature = key.sign(receipt_module._CONTEXT + payload)
        header = f"v1.{receipt_module._b64e(payload)}.{receipt_module._b64e(signature)}"
        with pytest.raises(receipt_module.ReceiptError):
            receipt_module.verify(header, key.public_key())
