"""The age v1 file format (https://age-encryption.org/v1), X25519 recipients only.

Built on `cryptography` primitives so any standard age tool can decrypt what a dock uploads.

Encryption is split in two because an interrupted upload must resume with *byte-identical*
ciphertext from the server's offset, after a crash, without re-reading the whole clip:

1. `new_encryption` makes the header and the secrets (file key, payload nonce) once per clip;
   the caller keeps them (sealed) in the journal.
2. `iter_ciphertext` re-derives the file's bytes from any ciphertext offset: the payload is
   STREAM-encrypted in independent 64 KiB chunks, so it seeks the clip to the chunk holding the
   offset instead of encrypting the prefix again.

`decrypt` is a strict streaming reader: it verifies the header MAC and every chunk, and rejects
truncation, trailing data and misplaced empty chunks.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dockd.crypto.keys import AgeIdentity, AgeRecipient

__all__ = [
    "CHUNK_SIZE",
    "AgeError",
    "ClipChanged",
    "EncryptionSecrets",
    "ciphertext_length",
    "decrypt",
    "decrypt_file",
    "encrypt",
    "iter_ciphertext",
    "new_encryption",
]

CHUNK_SIZE = 65536  # STREAM plaintext chunk
TAG_SIZE = 16  # Poly1305 tag appended to every chunk
ENCRYPTED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
FILE_KEY_SIZE = 16
PAYLOAD_NONCE_SIZE = 16

VERSION_LINE = b"age-encryption.org/v1\n"
X25519_STANZA_TYPE = b"X25519"
X25519_INFO = b"age-encryption.org/v1/X25519"
ZERO_NONCE = bytes(12)  # stanza bodies use a fixed nonce: every wrap key is used exactly once
COLUMNS_PER_LINE = 64
BYTES_PER_LINE = COLUMNS_PER_LINE // 4 * 3
MAC_SIZE = 32

# Bounds for reading a hostile header: generous for any real recipient type (post-quantum
# stanza arguments are ~1.5 KiB), small enough that memory stays bounded.
MAX_HEADER_LINE = 64 * 1024
MAX_HEADER_SIZE = 1024 * 1024

_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_NOT_LAST = b"\x00"
_LAST = b"\x01"


class AgeError(ValueError):
    """Malformed, tampered or truncated age input, a wrong identity, or an unusable key."""


class ClipChanged(AgeError):
    """The clip no longer has the size its ciphertext was planned for (it grew or shrank)."""


@dataclass(frozen=True)
class EncryptionSecrets:
    """What must be kept (sealed) to reproduce a clip's ciphertext byte for byte."""

    file_key: bytes = field(repr=False)
    payload_nonce: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.file_key) != FILE_KEY_SIZE or len(self.payload_nonce) != PAYLOAD_NONCE_SIZE:
            raise AgeError("age secrets need a 16-byte file key and a 16-byte payload nonce")

    def __repr__(self) -> str:  # never print key material, even in a traceback
        return "EncryptionSecrets(<redacted>)"

    def to_bytes(self) -> bytes:
        """The 32 bytes to seal: file key || payload nonce."""
        return self.file_key + self.payload_nonce

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptionSecrets:
        """Inverse of `to_bytes`."""
        if len(data) != FILE_KEY_SIZE + PAYLOAD_NONCE_SIZE:
            raise AgeError(f"age secrets must be 32 bytes, got {len(data)}")
        data = bytes(data)
        return cls(data[:FILE_KEY_SIZE], data[FILE_KEY_SIZE:])


# --- primitives ---------------------------------------------------------------------------


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _header_mac(file_key: bytes, mac_input: bytes) -> hmac.HMAC:
    mac = hmac.HMAC(_hkdf(file_key, b"", b"header"), hashes.SHA256())
    mac.update(mac_input)
    return mac


def _payload_aead(secrets: EncryptionSecrets) -> ChaCha20Poly1305:
    return ChaCha20Poly1305(_hkdf(secrets.file_key, secrets.payload_nonce, b"payload"))


def _chunk_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (_LAST if last else _NOT_LAST)


def _b64encode(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _b64decode(text: bytes, what: str) -> bytes:
    """Strict unpadded base64: the spec requires rejecting padding and non-canonical encodings
    (otherwise one header would have several spellings, i.e. be malleable)."""
    if not _B64_ALPHABET.issuperset(text) or len(text) % 4 == 1:
        raise AgeError(f"malformed age header: {what} is not unpadded base64")
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise AgeError(f"malformed age header: {what} is not unpadded base64") from None
    if _b64encode(data) != text:
        raise AgeError(f"malformed age header: {what} is not canonical base64")
    return data


def _read_into(source: BinaryIO, view: memoryview) -> int:
    """Fill `view` from `source` (short reads are not EOF); return how many bytes were read."""
    readinto = getattr(source, "readinto", None)
    filled = 0
    while filled < len(view):
        if readinto is not None:
            count = readinto(view[filled:])
        else:
            data = source.read(len(view) - filled)
            count = len(data)
            view[filled : filled + count] = data
        if not count:
            break
        filled += count
    return filled


def _chunk_count(plaintext_size: int) -> int:
    # An empty payload is still one (empty, final) chunk; an exact multiple of 64 KiB ends
    # with a full final chunk, never an empty one.
    return max(1, -(-plaintext_size // CHUNK_SIZE))


# --- header -------------------------------------------------------------------------------


def _x25519_stanza(recipient: AgeRecipient, file_key: bytes) -> bytes:
    if len(recipient.public) != 32:
        raise AgeError("an age X25519 recipient is 32 bytes")
    ephemeral = X25519PrivateKey.generate()
    share = ephemeral.public_key().public_bytes_raw()
    try:
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient.public))
    except ValueError:  # a low-order point gives an all-zero shared secret
        raise AgeError(f"unusable age recipient {recipient}: not a valid X25519 key") from None
    if shared == bytes(32):
        raise AgeError(f"unusable age recipient {recipient}: not a valid X25519 key")
    wrap_key = _hkdf(shared, share + recipient.public, X25519_INFO)
    body = ChaCha20Poly1305(wrap_key).encrypt(ZERO_NONCE, file_key, None)
    return b"-> X25519 " + _b64encode(share) + b"\n" + _wrap_body(body)


def _wrap_body(body: bytes) -> bytes:
    """Base64 wrapped at 64 columns; the last line is always shorter than 64, maybe empty."""
    text = _b64encode(body)
    lines = [text[i : i + COLUMNS_PER_LINE] for i in range(0, len(text), COLUMNS_PER_LINE)]
    if len(text) % COLUMNS_PER_LINE == 0:
        lines.append(b"")
    return b"".join(line + b"\n" for line in lines)


def new_encryption(recipients: Sequence[AgeRecipient]) -> tuple[bytes, EncryptionSecrets]:
    """Fresh file key, nonce and header (bytes, ending with the MAC line's '\\n') for these
    recipients (>= 1). Each call makes a new file: never reuse the result for another clip."""
    if not recipients:
        raise AgeError("age encryption needs at least one recipient")
    secrets = EncryptionSecrets(os.urandom(FILE_KEY_SIZE), os.urandom(PAYLOAD_NONCE_SIZE))
    mac_input = (
        VERSION_LINE
        + b"".join(_x25519_stanza(recipient, secrets.file_key) for recipient in recipients)
        + b"---"
    )
    mac = _header_mac(secrets.file_key, mac_input).finalize()
    return mac_input + b" " + _b64encode(mac) + b"\n", secrets


def _check_header_belongs_to(header: bytes, secrets: EncryptionSecrets) -> None:
    """Refuse a header whose MAC the file key does not produce: a journal mix-up would otherwise
    upload a clip nobody can ever decrypt, and the camera copy would then be wiped."""
    if not header.startswith(VERSION_LINE) or not header.endswith(b"\n"):
        raise AgeError("not an age v1 header")
    mac_line_start = header.rfind(b"\n", 0, len(header) - 1) + 1
    mac_line = header[mac_line_start:-1]
    if not mac_line.startswith(b"--- "):
        raise AgeError("age header does not end with a MAC line")
    mac = _b64decode(mac_line[4:], "header MAC")
    try:
        _header_mac(secrets.file_key, header[: mac_line_start + 3]).verify(mac)
    except InvalidSignature:
        raise AgeError("age header and secrets do not belong together (MAC mismatch)") from None


def ciphertext_length(header_length: int, plaintext_size: int) -> int:
    """Exact age file size: header + 16-byte nonce + plaintext + 16 bytes per STREAM chunk."""
    if header_length < 0 or plaintext_size < 0:
        raise ValueError("lengths must not be negative")
    return (
        header_length
        + PAYLOAD_NONCE_SIZE
        + plaintext_size
        + TAG_SIZE * _chunk_count(plaintext_size)
    )


# --- encryption ---------------------------------------------------------------------------


def iter_ciphertext(
    header: bytes,
    secrets: EncryptionSecrets,
    source: BinaryIO,
    plaintext_size: int,
    start: int = 0,
    piece_size: int = 1 << 20,
) -> Iterator[bytes]:
    """Yield the age file's bytes from ciphertext offset `start` to the end.

    Each piece encrypts `piece_size // 64 KiB` whole STREAM chunks (at least one), so pieces
    are about piece_size; the first piece also carries the rest of the header and nonce, and
    starts mid-chunk when `start` does. `source` is a seekable binary file positioned anywhere:
    it is seeked to the plaintext of the chunk holding `start`, so resuming does not read the
    prefix. Raises ClipChanged if the source ends before `plaintext_size` or has bytes beyond
    it (checked before the final piece is yielded, so a changed clip never completes an
    upload). Arguments are checked when called; the source is first touched on iteration.
    Memory: O(piece_size).
    """
    _check_header_belongs_to(header, secrets)
    total = ciphertext_length(len(header), plaintext_size)
    if not 0 <= start <= total:
        raise ValueError(f"start {start} is outside the ciphertext (0..{total})")
    if piece_size < 1:
        raise ValueError("piece_size must be positive")
    return _stream_pieces(header, secrets, source, plaintext_size, start, piece_size)


def _stream_pieces(
    header: bytes,
    secrets: EncryptionSecrets,
    source: BinaryIO,
    plaintext_size: int,
    start: int,
    piece_size: int,
) -> Iterator[bytes]:
    prefix = header + secrets.payload_nonce
    if start == ciphertext_length(len(header), plaintext_size):
        return
    if start < len(prefix):
        lead, index, skip = prefix[start:], 0, 0
    else:
        lead = b""
        index, skip = divmod(start - len(prefix), ENCRYPTED_CHUNK_SIZE)

    aead = _payload_aead(secrets)
    chunk_count = _chunk_count(plaintext_size)
    chunks_per_piece = max(1, piece_size // CHUNK_SIZE)
    # Reused for every piece: each yielded piece is a fresh bytes copy, so callers may keep it.
    plain = memoryview(bytearray(chunks_per_piece * CHUNK_SIZE))
    sealed = memoryview(bytearray(chunks_per_piece * ENCRYPTED_CHUNK_SIZE))
    source.seek(index * CHUNK_SIZE)

    while index < chunk_count:
        end = min(index + chunks_per_piece, chunk_count)
        final = end == chunk_count
        offset = index * CHUNK_SIZE
        wanted = (plaintext_size if final else end * CHUNK_SIZE) - offset
        got = _read_into(source, plain[:wanted])
        if got < wanted:
            raise ClipChanged(
                f"clip shrank: source ended at byte {offset + got}, expected {plaintext_size}"
            )
        if final and source.read(1):
            raise ClipChanged(f"clip grew: source has bytes beyond {plaintext_size}")

        in_pos = out_pos = 0
        for counter in range(index, end):
            size = min(CHUNK_SIZE, wanted - in_pos)
            aead.encrypt_into(
                _chunk_nonce(counter, counter == chunk_count - 1),
                plain[in_pos : in_pos + size],
                None,
                sealed[out_pos : out_pos + size + TAG_SIZE],
            )
            in_pos += size
            out_pos += size + TAG_SIZE
        piece = b"".join((lead, sealed[skip:out_pos])) if lead else bytes(sealed[skip:out_pos])
        lead, skip = b"", 0
        yield piece
        index = end


def encrypt(source: BinaryIO, destination: BinaryIO, recipients: Sequence[AgeRecipient]) -> None:
    """Encrypt a whole stream of unknown size to `recipients` (for tests and tools)."""
    header, secrets = new_encryption(recipients)
    destination.write(header)
    destination.write(secrets.payload_nonce)
    aead = _payload_aead(secrets)
    current, following = memoryview(bytearray(CHUNK_SIZE)), memoryview(bytearray(CHUNK_SIZE))
    size = _read_into(source, current)
    counter = 0
    while True:
        # A chunk is final unless more data follows it, hence the one-chunk look-ahead.
        next_size = _read_into(source, following) if size == CHUNK_SIZE else 0
        last = next_size == 0
        destination.write(aead.encrypt(_chunk_nonce(counter, last), current[:size], None))
        if last:
            return
        current, following, size = following, current, next_size
        counter += 1


# --- decryption ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stanza:
    args: list[bytes]
    body: bytes


@dataclass(frozen=True)
class _Header:
    stanzas: list[_Stanza]
    mac: bytes
    mac_input: bytes  # the header up to and including "---"


class _HeaderReader:
    """Reads header lines with bounded memory, keeping the raw bytes for the MAC."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.raw = bytearray()

    def line(self) -> bytes:
        """The next line without its LF."""
        line = self._source.readline(MAX_HEADER_LINE + 1)
        if not line.endswith(b"\n"):
            if len(line) > MAX_HEADER_LINE:
                raise AgeError("malformed age header: line too long")
            raise AgeError("truncated age header")
        self.raw += line
        if len(self.raw) > MAX_HEADER_SIZE:
            raise AgeError("malformed age header: too large")
        return line[:-1]


def _is_argument(arg: bytes) -> bool:
    return bool(arg) and all(33 <= byte <= 126 for byte in arg)


def _parse_header(source: BinaryIO) -> _Header:
    reader = _HeaderReader(source)
    first = source.readline(len(VERSION_LINE))
    if first != VERSION_LINE:
        if first.startswith(b"-----BEGIN"):
            raise AgeError("ASCII-armored age files are not supported; use the binary format")
        if first.startswith(VERSION_LINE[:-1]):
            raise AgeError("malformed age header: bad version line")
        if first.startswith(b"age-encryption.org/"):
            raise AgeError("unsupported age format version (only v1 is supported)")
        raise AgeError("not an age file (no age-encryption.org/v1 header)")
    reader.raw += first

    stanzas: list[_Stanza] = []
    while True:
        line = reader.line()
        if line.startswith(b"---"):
            parts = line.split(b" ")
            if parts[0] != b"---" or len(parts) != 2:
                raise AgeError("malformed age header: bad MAC line")
            if not stanzas:
                raise AgeError("malformed age header: no recipient stanza")
            mac = _b64decode(parts[1], "header MAC")
            if len(mac) != MAC_SIZE:
                raise AgeError("malformed age header: MAC is not 32 bytes")
            mac_input = bytes(reader.raw[: len(reader.raw) - len(line) - 1 + 3])
            return _Header(stanzas, mac, mac_input)
        if not line.startswith(b"->"):
            raise AgeError("malformed age header: unexpected line")
        parts = line.split(b" ")
        if parts[0] != b"->" or len(parts) < 2 or not all(map(_is_argument, parts[1:])):
            raise AgeError("malformed age header: bad recipient stanza line")
        body = bytearray()
        while True:  # body lines until the first one shorter than 64 columns
            body_line = reader.line()
            if len(body_line) > COLUMNS_PER_LINE:
                raise AgeError("malformed age header: stanza body line too long")
            body += _b64decode(body_line, "stanza body")
            if len(body_line) < COLUMNS_PER_LINE:
                break
        stanzas.append(_Stanza(parts[1:], bytes(body)))


def _unwrap_x25519(
    stanza: _Stanza, identities: list[tuple[X25519PrivateKey, bytes]]
) -> bytes | None:
    """The file key if one of `identities` opens this X25519 stanza, else None."""
    if len(stanza.args) != 2:
        raise AgeError("malformed X25519 stanza: expected exactly one argument")
    share = _b64decode(stanza.args[1], "X25519 ephemeral share")
    if len(share) != 32:
        raise AgeError("malformed X25519 stanza: ephemeral share is not 32 bytes")
    # Checked before any decryption attempt, as the spec requires (partitioning oracles).
    if len(stanza.body) != FILE_KEY_SIZE + TAG_SIZE:
        raise AgeError("malformed X25519 stanza: body is not 32 bytes")
    peer = X25519PublicKey.from_public_bytes(share)
    for private, public in identities:
        try:
            shared = private.exchange(peer)
        except ValueError:  # low-order point: all-zero shared secret
            raise AgeError("invalid X25519 stanza: all-zero shared secret") from None
        if shared == bytes(32):
            raise AgeError("invalid X25519 stanza: all-zero shared secret")
        wrap_key = _hkdf(shared, share + public, X25519_INFO)
        try:
            return ChaCha20Poly1305(wrap_key).decrypt(ZERO_NONCE, stanza.body, None)
        except InvalidTag:
            continue  # addressed to someone else
    return None


def _open_file_key(header: _Header, identities: Sequence[AgeIdentity]) -> bytes:
    if not identities:
        raise AgeError("no age identity given")
    keys = []
    for identity in identities:
        private = X25519PrivateKey.from_private_bytes(identity.secret)
        keys.append((private, private.public_key().public_bytes_raw()))
    x25519_stanzas = [s for s in header.stanzas if s.args[0] == X25519_STANZA_TYPE]
    if not x25519_stanzas:
        kinds = ", ".join(sorted({s.args[0].decode("ascii") for s in header.stanzas}))
        raise AgeError(f"no X25519 recipient in this age file (stanza types: {kinds})")
    for stanza in x25519_stanzas:
        file_key = _unwrap_x25519(stanza, keys)
        if file_key is not None:
            return file_key
    raise AgeError(
        f"no identity matched: none of the {len(identities)} identities opens any of the "
        f"{len(x25519_stanzas)} X25519 recipient stanzas (wrong key, or the header was altered)"
    )


def _open_chunk(aead: ChaCha20Poly1305, counter: int, chunk: memoryview, last: bool) -> bytes:
    try:
        return aead.decrypt(_chunk_nonce(counter, last), chunk, None)
    except InvalidTag:
        pass
    if len(chunk) == ENCRYPTED_CHUNK_SIZE:
        # A full chunk can be final or not; telling which one it really is turns
        # "authentication failed" into the actual problem.
        try:
            aead.decrypt(_chunk_nonce(counter, not last), chunk, None)
        except InvalidTag:
            pass
        else:
            if last:
                raise AgeError(f"truncated age file: it ends after chunk {counter}, not final")
            raise AgeError("trailing data after the final chunk of the age file")
    raise AgeError(f"age payload chunk {counter} failed authentication (corrupted or truncated)")


def _iter_plaintext(source: BinaryIO, identities: Sequence[AgeIdentity]) -> Iterator[bytes]:
    header = _parse_header(source)
    file_key = _open_file_key(header, identities)
    try:
        _header_mac(file_key, header.mac_input).verify(header.mac)
    except InvalidSignature:
        raise AgeError("age header MAC mismatch: the header was altered") from None
    nonce = source.read(PAYLOAD_NONCE_SIZE)
    if len(nonce) != PAYLOAD_NONCE_SIZE:
        raise AgeError("truncated age file: payload nonce missing")
    aead = _payload_aead(EncryptionSecrets(file_key, nonce))

    # One byte of look-ahead beyond a full chunk tells whether that chunk must be the final one.
    buffer = memoryview(bytearray(ENCRYPTED_CHUNK_SIZE + 1))
    have = _read_into(source, buffer)
    counter = 0
    while True:
        last = have <= ENCRYPTED_CHUNK_SIZE
        chunk = buffer[: min(have, ENCRYPTED_CHUNK_SIZE)]
        if len(chunk) < TAG_SIZE:
            raise AgeError("truncated age file: payload ends inside a chunk")
        plaintext = _open_chunk(aead, counter, chunk, last)
        if last:
            if not plaintext and counter > 0:
                raise AgeError("malformed age payload: empty final chunk after non-empty data")
            if plaintext:
                yield plaintext
            return
        yield plaintext
        buffer[0] = buffer[ENCRYPTED_CHUNK_SIZE]
        have = 1 + _read_into(source, buffer[1:])
        counter += 1


def decrypt(source: BinaryIO, destination: BinaryIO, identities: Sequence[AgeIdentity]) -> None:
    """Streaming decrypt of an age file with any of `identities`. Memory O(chunk).

    Verifies the header MAC and every chunk; rejects truncation, trailing data, misplaced empty
    chunks and tampering with AgeError. Plaintext is written as it is verified chunk by chunk:
    if this raises, discard what was written.
    """
    for piece in _iter_plaintext(source, identities):
        destination.write(piece)


def decrypt_file(path: Path, identities: Sequence[AgeIdentity]) -> Iterator[bytes]:
    """Yield the plaintext of the age file at `path`, chunk by chunk. The output is only
    verified complete when iteration ends without AgeError."""
    with path.open("rb") as source:
        yield from _iter_plaintext(source, identities)
