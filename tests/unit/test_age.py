"""age v1: interoperability with the real `age` CLI, byte-identical resume, strict decryption."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from dockd.crypto import age
from dockd.crypto.age import (
    CHUNK_SIZE,
    AgeError,
    ClipChanged,
    EncryptionSecrets,
    ciphertext_length,
    decrypt,
    decrypt_file,
    encrypt,
    iter_ciphertext,
    new_encryption,
)
from dockd.crypto.keys import AgeIdentity, load_age_identities

HAVE_AGE_CLI = shutil.which("age") is not None and shutil.which("age-keygen") is not None
needs_age_cli = pytest.mark.skipif(
    not HAVE_AGE_CLI, reason="the `age`/`age-keygen` CLI is not installed (apt install age)"
)

ENC_CHUNK = CHUNK_SIZE + 16
SIZES = [0, 1, 65535, 65536, 65537, 131072, 5 * 1024 * 1024 + 123]
SIZE_IDS = [f"{size}B" for size in SIZES]


# --- helpers ------------------------------------------------------------------------------


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


def write_private(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def identity_file(tmp_path: Path, identity: AgeIdentity, name: str = "identity.txt") -> Path:
    return write_private(tmp_path / name, f"{identity.encode()}\n".encode())


def run_age(*args: str | Path, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["age", *map(str, args)], input=data, capture_output=True, timeout=60)


def cli_decrypt(tmp_path: Path, identity: AgeIdentity, ciphertext: bytes) -> bytes:
    result = run_age(
        "-d", "-i", identity_file(tmp_path, identity, f"id-{os.urandom(4).hex()}"), data=ciphertext
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def our_encrypt(plaintext: bytes, *identities: AgeIdentity) -> bytes:
    out = io.BytesIO()
    encrypt(io.BytesIO(plaintext), out, [identity.recipient for identity in identities])
    return out.getvalue()


def our_decrypt(ciphertext: bytes, *identities: AgeIdentity) -> bytes:
    out = io.BytesIO()
    decrypt(io.BytesIO(ciphertext), out, list(identities))
    return out.getvalue()


def whole(header: bytes, secrets: EncryptionSecrets, plaintext: bytes, **kwargs: int) -> bytes:
    return b"".join(
        iter_ciphertext(header, secrets, io.BytesIO(plaintext), len(plaintext), **kwargs)
    )


def reference_payload(secrets: EncryptionSecrets, chunks: list[tuple[bytes, bool]]) -> bytes:
    """An independent STREAM encoder written from the spec, able to build malformed payloads."""
    key = HKDF(hashes.SHA256(), 32, secrets.payload_nonce, b"payload").derive(secrets.file_key)
    aead = ChaCha20Poly1305(key)
    sealed = [
        aead.encrypt(counter.to_bytes(11, "big") + bytes([last]), chunk, None)
        for counter, (chunk, last) in enumerate(chunks)
    ]
    return secrets.payload_nonce + b"".join(sealed)


def spec_chunks(plaintext: bytes) -> list[tuple[bytes, bool]]:
    pieces = [plaintext[i : i + CHUNK_SIZE] for i in range(0, len(plaintext), CHUNK_SIZE)]
    pieces = pieces or [b""]
    return [(piece, index == len(pieces) - 1) for index, piece in enumerate(pieces)]


def remac(header_without_mac: bytes, file_key: bytes) -> bytes:
    """Finish a hand-built header (ending in '---') with the MAC the spec prescribes."""
    key = HKDF(hashes.SHA256(), 32, b"", b"header").derive(file_key)
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(header_without_mac)
    return header_without_mac + b" " + base64.b64encode(mac.finalize()).rstrip(b"=") + b"\n"


def other_b64_char(char: int) -> bytes:
    return b"B" if char == ord("A") else b"A"


def replace_byte(data: bytes, index: int, new: bytes) -> bytes:
    return data[:index] + new + data[index + 1 :]


class ReadTracker(io.FileIO):
    """A real file that remembers the lowest offset anything was read from."""

    lowest_read: int | None = None

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        position = self.tell()
        count = super().readinto(buffer)
        if count and (self.lowest_read is None or position < self.lowest_read):
            self.lowest_read = position
        return count

    def read(self, size: int = -1) -> bytes:
        position = self.tell()
        data = super().read(size)
        if data and (self.lowest_read is None or position < self.lowest_read):
            self.lowest_read = position
        return data


@pytest.fixture
def identity() -> AgeIdentity:
    return AgeIdentity.generate()


# --- interoperability with the age CLI ----------------------------------------------------


@needs_age_cli
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_age_cli_decrypts_our_encryption(tmp_path: Path, identity: AgeIdentity, size: int) -> None:
    plaintext = random_bytes(size)
    ciphertext = our_encrypt(plaintext, identity)
    assert cli_decrypt(tmp_path, identity, ciphertext) == plaintext


@needs_age_cli
def test_two_recipients_each_identity_decrypts_alone(tmp_path: Path) -> None:
    first, second = AgeIdentity.generate(), AgeIdentity.generate()
    plaintext = random_bytes(200_000)
    ciphertext = our_encrypt(plaintext, first, second)
    assert cli_decrypt(tmp_path, first, ciphertext) == plaintext
    assert cli_decrypt(tmp_path, second, ciphertext) == plaintext
    assert our_decrypt(ciphertext, first) == plaintext
    assert our_decrypt(ciphertext, second) == plaintext


@needs_age_cli
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_we_decrypt_age_cli_output(identity: AgeIdentity, size: int) -> None:
    plaintext = random_bytes(size)
    result = run_age("-e", "-r", identity.recipient.encode(), data=plaintext)
    assert result.returncode == 0, result.stderr.decode()
    assert our_decrypt(result.stdout, identity) == plaintext


@needs_age_cli
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_we_decrypt_age_cli_output_for_a_recipients_file(tmp_path: Path, size: int) -> None:
    first, second = AgeIdentity.generate(), AgeIdentity.generate()
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# evidence service\n{first.recipient}\n{second.recipient}\n")
    plaintext = random_bytes(size)
    result = run_age("-e", "-R", recipients, data=plaintext)
    assert result.returncode == 0, result.stderr.decode()
    assert our_decrypt(result.stdout, second) == plaintext
    assert b"".join(decrypt_file(write_private(tmp_path / "f.age", result.stdout), [first])) == (
        plaintext
    )


@needs_age_cli
def test_age_keygen_identity_file_loads_and_decrypts(tmp_path: Path) -> None:
    keyfile = tmp_path / "keys.txt"
    subprocess.run(["age-keygen", "-o", keyfile], check=True, capture_output=True, timeout=30)
    keyfile.chmod(0o600)
    identities = load_age_identities(keyfile)
    plaintext = random_bytes(70_000)

    from_cli = run_age("-e", "-i", keyfile, data=plaintext)  # -i: encrypt to its recipient
    assert from_cli.returncode == 0, from_cli.stderr.decode()
    assert our_decrypt(from_cli.stdout, *identities) == plaintext

    ours = our_encrypt(plaintext, *identities)
    result = run_age("-d", "-i", keyfile, data=ours)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == plaintext


@needs_age_cli
def test_other_stanza_types_are_skipped(tmp_path: Path, identity: AgeIdentity) -> None:
    ssh_key = Ed25519PrivateKey.generate().public_key()
    ssh_pub = tmp_path / "ssh.pub"
    ssh_pub.write_bytes(
        ssh_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    plaintext = random_bytes(1000)
    # ssh-ed25519 stanza first, so we must skip it to reach ours
    mixed = run_age("-e", "-R", ssh_pub, "-r", identity.recipient.encode(), data=plaintext)
    assert mixed.returncode == 0, mixed.stderr.decode()
    assert b"-> ssh-ed25519 " in mixed.stdout
    assert our_decrypt(mixed.stdout, identity) == plaintext

    ssh_only = run_age("-e", "-R", ssh_pub, data=plaintext)
    assert ssh_only.returncode == 0, ssh_only.stderr.decode()
    with pytest.raises(AgeError, match=r"no X25519 recipient.*ssh-ed25519"):
        our_decrypt(ssh_only.stdout, identity)


@needs_age_cli
def test_stanza_body_of_48_bytes_ends_with_an_empty_line(
    tmp_path: Path, identity: AgeIdentity
) -> None:
    """A body that fills whole 64-column lines must be followed by an empty final line."""
    header, secrets = new_encryption([identity.recipient])
    body_line = b"A" * 64  # 48 zero bytes, canonical base64
    extra = b"-> example.com/other arg\n" + body_line + b"\n"
    without_mac = header[: header.rindex(b"---")]
    plaintext = random_bytes(5000)

    good = remac(without_mac + extra + b"\n" + b"---", secrets.file_key)
    ciphertext = whole(good, secrets, plaintext)
    assert our_decrypt(ciphertext, identity) == plaintext
    assert cli_decrypt(tmp_path, identity, ciphertext) == plaintext

    missing_final_line = remac(without_mac + extra + b"---", secrets.file_key)
    with pytest.raises(AgeError, match="malformed age header"):
        our_decrypt(whole(missing_final_line, secrets, plaintext), identity)


# --- header shape and secrets -------------------------------------------------------------


def test_header_follows_the_v1_grammar() -> None:
    recipients = [AgeIdentity.generate().recipient for _ in range(3)]
    header, secrets = new_encryption(recipients)
    b64 = rb"[A-Za-z0-9+/]"
    stanza = rb"-> X25519 " + b64 + rb"{43}\n" + b64 + rb"{43}\n"
    assert re.fullmatch(
        rb"age-encryption\.org/v1\n(?:" + stanza + rb"){3}--- " + b64 + rb"{43}\n", header
    )
    assert len(secrets.file_key) == 16
    assert len(secrets.payload_nonce) == 16
    again, other = new_encryption(recipients)
    assert again != header
    assert other.to_bytes() != secrets.to_bytes()


@pytest.mark.parametrize("body_size", [0, 32, 47, 48, 96, 100])
def test_stanza_bodies_wrap_at_64_columns_with_a_short_final_line(body_size: int) -> None:
    body = os.urandom(body_size)
    lines = age._wrap_body(body).split(b"\n")
    assert lines.pop() == b""  # every line, the final one included, ends with LF
    assert all(len(line) == 64 for line in lines[:-1])
    assert len(lines[-1]) < 64
    text = b"".join(lines)
    assert base64.b64decode(text + b"=" * (-len(text) % 4)) == body
    if body_size % 48 == 0:
        assert lines[-1] == b""


def test_new_encryption_needs_a_recipient() -> None:
    with pytest.raises(AgeError):
        new_encryption([])


def test_secrets_round_trip_and_never_show_their_bytes() -> None:
    _, secrets = new_encryption([AgeIdentity.generate().recipient])
    sealed = secrets.to_bytes()
    assert len(sealed) == 32
    assert EncryptionSecrets.from_bytes(sealed) == secrets
    for shown in (repr(secrets), str(secrets)):
        assert secrets.file_key.hex() not in shown
        assert repr(secrets.file_key) not in shown
        assert repr(secrets.payload_nonce) not in shown
    with pytest.raises(AgeError):
        EncryptionSecrets.from_bytes(sealed[:31])


# --- deterministic, seekable encryption ---------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 131072, 3 * CHUNK_SIZE + 777])
def test_iter_ciphertext_matches_the_spec_encoder_and_length(
    identity: AgeIdentity, size: int
) -> None:
    plaintext = random_bytes(size)
    header, secrets = new_encryption([identity.recipient])
    expected = header + reference_payload(secrets, spec_chunks(plaintext))
    produced = whole(header, secrets, plaintext)
    assert produced == expected
    assert len(produced) == ciphertext_length(len(header), size)
    assert our_decrypt(produced, identity) == plaintext
    for piece_size in (1, CHUNK_SIZE, 100_000, 3 << 20):
        assert whole(header, secrets, plaintext, piece_size=piece_size) == expected


def test_exact_multiple_of_chunk_ends_with_a_full_final_chunk() -> None:
    header, secrets = new_encryption([AgeIdentity.generate().recipient])
    plaintext = random_bytes(2 * CHUNK_SIZE)
    produced = whole(header, secrets, plaintext)
    assert len(produced) == len(header) + 16 + 2 * ENC_CHUNK  # no empty trailing chunk
    assert ciphertext_length(len(header), 2 * CHUNK_SIZE) == len(produced)
    assert ciphertext_length(100, 0) == 100 + 16 + 16  # an empty payload is one empty chunk


def test_whole_encrypt_and_iter_ciphertext_agree_on_size() -> None:
    identity = AgeIdentity.generate()
    for size in (0, CHUNK_SIZE, CHUNK_SIZE + 1):
        ciphertext = our_encrypt(random_bytes(size), identity)
        header_length = ciphertext.index(b"\n", ciphertext.index(b"\n---") + 1) + 1
        assert len(ciphertext) == ciphertext_length(header_length, size)


@pytest.mark.parametrize("size", [3 * CHUNK_SIZE + 1234, 3 * CHUNK_SIZE])
def test_resume_from_any_offset_is_byte_identical(
    tmp_path: Path, identity: AgeIdentity, size: int
) -> None:
    plaintext = random_bytes(size)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(plaintext)
    header, secrets = new_encryption([identity.recipient])
    full = whole(header, secrets, plaintext)
    total = len(full)
    payload_start = len(header) + 16
    offsets = {0, 1, 30, len(header) - 1, len(header), payload_start - 1, payload_start}
    for boundary in range(payload_start, total + 1, ENC_CHUNK):
        offsets.update({boundary - 1, boundary, boundary + 1})
    offsets.update({total - 1, total})
    offsets = {offset for offset in offsets if 0 <= offset <= total}

    for start in sorted(offsets):
        with ReadTracker(clip, "r") as source:
            source.seek(size // 2)  # positioned anywhere: iter_ciphertext must seek
            tail = b"".join(
                iter_ciphertext(header, secrets, source, size, start=start, piece_size=100_000)
            )
            lowest_read = source.lowest_read
        assert full[:start] + tail == full, f"resume from {start} differs"
        if start >= payload_start and start < total:
            chunk_start = (start - payload_start) // ENC_CHUNK * CHUNK_SIZE
            assert lowest_read == chunk_start, f"resume from {start} re-read the prefix"
    assert list(iter_ciphertext(header, secrets, io.BytesIO(plaintext), size, start=total)) == []


def test_start_outside_the_file_is_refused() -> None:
    header, secrets = new_encryption([AgeIdentity.generate().recipient])
    total = ciphertext_length(len(header), 10)
    for start in (-1, total + 1):
        with pytest.raises(ValueError, match="outside"):
            iter_ciphertext(header, secrets, io.BytesIO(bytes(10)), 10, start=start)


def test_header_from_another_clip_is_refused() -> None:
    recipient = AgeIdentity.generate().recipient
    header, _ = new_encryption([recipient])
    _, other_secrets = new_encryption([recipient])
    with pytest.raises(AgeError, match="do not belong together"):
        iter_ciphertext(header, other_secrets, io.BytesIO(b"x"), 1)


@pytest.mark.parametrize("actual_size", [0, 99_999, 100_001, 3 * CHUNK_SIZE])
@pytest.mark.parametrize("start", [0, "last-chunk"])
def test_clip_changed_when_source_size_differs(actual_size: int, start: int | str) -> None:
    planned = 100_000
    header, secrets = new_encryption([AgeIdentity.generate().recipient])
    total = ciphertext_length(len(header), planned)
    begin = total - 10 if start == "last-chunk" else 0
    yielded = 0
    with pytest.raises(ClipChanged, match="shrank" if actual_size < planned else "grew"):
        for piece in iter_ciphertext(
            header,
            secrets,
            io.BytesIO(random_bytes(actual_size)),
            planned,
            start=begin,
            piece_size=CHUNK_SIZE,
        ):
            yielded += len(piece)
    # the final piece is never handed out, so an upload of a changed clip cannot complete
    assert begin + yielded < total


# --- strict decryption --------------------------------------------------------------------


@pytest.fixture
def sample(identity: AgeIdentity) -> tuple[bytes, bytes, bytes]:
    """(header, ciphertext, plaintext) of a 3-and-a-bit chunk file."""
    plaintext = random_bytes(3 * CHUNK_SIZE + 500)
    header, secrets = new_encryption([identity.recipient])
    return header, whole(header, secrets, plaintext), plaintext


def tampered_variants(header: bytes, ciphertext: bytes) -> Iterator[tuple[str, bytes, str]]:
    """(name, bad ciphertext, expected error) for one valid file."""
    mac_at = header.rindex(b"--- ") + 10
    share_at = header.index(b"-> X25519 ") + 20
    body_at = header.index(b"\n", share_at) + 5
    payload = len(header)
    yield "truncated-last-chunk", ciphertext[:-516], "truncated"
    yield "truncated-mid-chunk", ciphertext[:-200], "chunk 3 failed"
    yield "truncated-in-first-chunk", ciphertext[: payload + 16 + 1000], "chunk 0 failed"
    yield "truncated-nonce", ciphertext[: payload + 8], "nonce missing"
    yield "truncated-header", ciphertext[: payload - 10], "truncated age header"
    yield (
        "header-mac",
        replace_byte(ciphertext, mac_at, other_b64_char(ciphertext[mac_at])),
        "MAC mismatch",
    )
    yield (
        "stanza-share",
        replace_byte(ciphertext, share_at, other_b64_char(ciphertext[share_at])),
        "no identity matched",
    )
    yield (
        "stanza-body",
        replace_byte(ciphertext, body_at, other_b64_char(ciphertext[body_at])),
        "no identity matched",
    )
    yield "version-line", replace_byte(ciphertext, 4, b"X"), "not an age file"
    yield (
        "payload-nonce",
        replace_byte(ciphertext, payload + 3, bytes([ciphertext[payload + 3] ^ 1])),
        "chunk 0 failed",
    )
    middle = payload + 16 + ENC_CHUNK + 77
    yield (
        "payload-chunk",
        replace_byte(ciphertext, middle, bytes([ciphertext[middle] ^ 0x80])),
        "chunk 1 failed",
    )
    yield (
        "payload-tag",
        replace_byte(ciphertext, len(ciphertext) - 1, b"\x00" if ciphertext[-1] else b"\x01"),
        "chunk 3 failed",
    )
    yield "appended-garbage", ciphertext + b"garbage", "chunk 3 failed"


def test_decrypt_rejects_tampering_and_truncation(
    identity: AgeIdentity, sample: tuple[bytes, bytes, bytes]
) -> None:
    header, ciphertext, plaintext = sample
    assert our_decrypt(ciphertext, identity) == plaintext  # the untouched file is fine
    for name, bad, expected in tampered_variants(header, ciphertext):
        with pytest.raises(AgeError, match=expected):
            our_decrypt(bad, identity)
        assert bad != ciphertext, name


@needs_age_cli
def test_age_cli_also_rejects_our_tampered_files(
    tmp_path: Path, identity: AgeIdentity, sample: tuple[bytes, bytes, bytes]
) -> None:
    header, ciphertext, _ = sample
    keyfile = identity_file(tmp_path, identity)
    assert run_age("-d", "-i", keyfile, data=ciphertext).returncode == 0
    for name, bad, _ in tampered_variants(header, ciphertext):
        assert run_age("-d", "-i", keyfile, data=bad).returncode != 0, name


def test_decrypt_rejects_a_wrong_identity(sample: tuple[bytes, bytes, bytes]) -> None:
    _, ciphertext, _ = sample
    with pytest.raises(AgeError, match="no identity matched"):
        our_decrypt(ciphertext, AgeIdentity.generate())


def test_decrypt_with_several_identities_finds_the_right_one(
    identity: AgeIdentity, sample: tuple[bytes, bytes, bytes]
) -> None:
    _, ciphertext, plaintext = sample
    assert our_decrypt(ciphertext, AgeIdentity.generate(), identity) == plaintext


def test_decrypt_rejects_data_after_a_full_final_chunk(identity: AgeIdentity) -> None:
    plaintext = random_bytes(2 * CHUNK_SIZE)
    header, secrets = new_encryption([identity.recipient])
    ciphertext = whole(header, secrets, plaintext)
    assert our_decrypt(ciphertext, identity) == plaintext
    with pytest.raises(AgeError, match="trailing data"):
        our_decrypt(ciphertext + b"\x00", identity)
    with pytest.raises(AgeError, match="truncated age file: it ends after chunk 0"):
        our_decrypt(ciphertext[:-ENC_CHUNK], identity)


def test_decrypt_rejects_misplaced_empty_chunks(identity: AgeIdentity) -> None:
    header, secrets = new_encryption([identity.recipient])
    data = random_bytes(CHUNK_SIZE)

    # the old encoders' mistake: a full chunk, then an empty final chunk
    empty_final = header + reference_payload(secrets, [(data, False), (b"", True)])
    with pytest.raises(AgeError, match="empty final chunk"):
        our_decrypt(empty_final, identity)

    empty_not_final = header + reference_payload(secrets, [(b"", False), (b"xyz", True)])
    with pytest.raises(AgeError, match="chunk 0 failed"):
        our_decrypt(empty_not_final, identity)

    no_final_flag = header + reference_payload(secrets, [(b"xyz", False)])
    with pytest.raises(AgeError, match="chunk 0 failed"):
        our_decrypt(no_final_flag, identity)

    nothing_after_nonce = header + secrets.payload_nonce
    with pytest.raises(AgeError, match="truncated"):
        our_decrypt(nothing_after_nonce, identity)


HOSTILE_HEADERS = {
    "armored": (lambda h: b"-----BEGIN AGE ENCRYPTED FILE-----\n", "armored"),
    "v2": (lambda h: b"age-encryption.org/v2\n-> X\n\n--- x\n", "unsupported age format version"),
    "crlf": (lambda h: h.replace(b"v1\n", b"v1\r\n", 1), "bad version line"),
    "endless line": (lambda h: b"age-encryption.org/v1\n-> " + b"a" * 200_000, "too long"),
    "no stanza": (lambda h: b"age-encryption.org/v1\n--- " + b"A" * 43 + b"\n", "no recipient"),
    "padded body": (lambda h: h.replace(b"\n---", b"\n-> x\nAA==\n---", 1), "unpadded base64"),
    "non-canonical body": (lambda h: h.replace(b"\n---", b"\n-> x\nAB\n---", 1), "canonical"),
    "empty argument": (lambda h: h.replace(b"-> X25519 ", b"-> X25519  ", 1), "stanza line"),
    "stanza without body": (lambda h: h.replace(b"\n---", b"\n-> x\n---", 1), "stanza body"),
    "low-order share": (
        lambda h: re.sub(rb"-> X25519 \S+", b"-> X25519 " + b"A" * 43, h, count=1),
        "all-zero shared secret",
    ),
    "x25519 extra argument": (
        lambda h: h.replace(b"-> X25519 ", b"-> X25519 extra ", 1),
        "expected exactly one argument",
    ),
}


@pytest.mark.parametrize("name", HOSTILE_HEADERS)
def test_decrypt_rejects_hostile_headers(identity: AgeIdentity, name: str) -> None:
    make_header, expected = HOSTILE_HEADERS[name]
    header, secrets = new_encryption([identity.recipient])
    payload = reference_payload(secrets, spec_chunks(b"hello"))
    with pytest.raises(AgeError, match=expected):
        our_decrypt(make_header(header) + payload, identity)


def test_decrypt_file_yields_the_plaintext(tmp_path: Path, identity: AgeIdentity) -> None:
    plaintext = random_bytes(CHUNK_SIZE * 2 + 3)
    path = tmp_path / "clip.age"
    path.write_bytes(our_encrypt(plaintext, identity))
    pieces = list(decrypt_file(path, [identity]))
    assert b"".join(pieces) == plaintext
    assert max(len(piece) for piece in pieces) <= CHUNK_SIZE


def test_module_exports_the_agreed_api() -> None:
    assert age.CHUNK_SIZE == 65536
    assert issubclass(ClipChanged, AgeError)
    assert issubclass(AgeError, ValueError)
