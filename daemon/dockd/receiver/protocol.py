"""The server side of tus 1.0.0: what the receiver advertises, and strict parsers for the headers
clients send. (The dock's client side is `dockd.transport.tus`, with its own `TusError`.)

Everything here is pure (no I/O). A malformed header raises `ProtocolError` carrying the status
the spec asks for, so handlers can stay a straight line.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from dockd import checksums

TUS_VERSION = "1.0.0"
EXTENSIONS = ("creation", "creation-with-upload", "checksum", "termination", "expiration")
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"

# Per-chunk checksums the server verifies, advertised in this order: crc32c (what docks send when
# offered), then sha1 (the spec requires it) and sha256 (what older docks send).
CHECKSUM_ALGORITHMS: Mapping[str, Callable[[], checksums.ChunkHasher]] = checksums.ALGORITHMS

# A non-negative decimal integer that fits in 63 bits, with no sign, space or leading "+".
_INTEGER = re.compile(r"[0-9]{1,18}")
# Metadata keys: printable ASCII without space or comma (the spec forbids those two; the rest keeps
# keys safe to put in JSON, logs and response headers).
_METADATA_KEY = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
MAX_METADATA_KEYS = 64


class ProtocolError(Exception):
    """A request the server refuses; becomes a response with `status`, a short text and `headers`."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        *,
        close_connection: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        # Close rather than keep alive: the request body may be only partly read.
        self.close_connection = close_connection


def parse_size(name: str, value: str | None) -> int:
    """Parse a non-negative integer header (`Upload-Length`, `Upload-Offset`); 400 if malformed."""
    if value is None:
        raise ProtocolError(400, f"missing {name} header")
    value = value.strip()
    if not _INTEGER.fullmatch(value):
        raise ProtocolError(400, f"{name} must be a non-negative integer")
    return int(value)


@dataclass(frozen=True)
class Metadata:
    """`Upload-Metadata` as sent (`header`, echoed on HEAD) and decoded (`values`)."""

    header: str = ""
    values: dict[str, bytes] = field(default_factory=dict)

    def as_text(self) -> dict[str, str | None]:
        """Decoded values as text for the sidecar; a value that is not UTF-8, or holds a NUL,
        becomes None (the exact bytes stay recoverable from `header`). NUL is not text, and
        PostgreSQL (the multi-node state) cannot store it in a string at all."""
        text: dict[str, str | None] = {}
        for key, value in self.values.items():
            try:
                text[key] = None if b"\x00" in value else value.decode("utf-8")
            except UnicodeDecodeError:
                text[key] = None
        return text


def parse_metadata(header: str | None, *, max_bytes: int) -> Metadata:
    """Parse `Upload-Metadata: key base64value,key2,key3 base64value3`.

    An absent or empty header means no metadata (aiohttp and some clients send an empty one);
    a key without a value means an empty value (the spec allows leaving out the space).
    """
    if header is None:
        return Metadata()
    if len(header) > max_bytes:
        raise ProtocolError(400, f"Upload-Metadata is larger than {max_bytes} bytes")
    header = header.strip()
    if not header:
        return Metadata()
    values: dict[str, bytes] = {}
    pairs = header.split(",")
    if len(pairs) > MAX_METADATA_KEYS:
        raise ProtocolError(400, f"Upload-Metadata has more than {MAX_METADATA_KEYS} keys")
    for pair in pairs:
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not parts[0]:
            raise ProtocolError(
                400, "Upload-Metadata must be comma-separated 'key base64value' pairs"
            )
        key = parts[0]
        if not _METADATA_KEY.fullmatch(key):
            raise ProtocolError(400, "Upload-Metadata key has characters outside printable ASCII")
        if key in values:
            raise ProtocolError(400, f"Upload-Metadata key {key!r} appears twice")
        values[key] = _decode_base64(parts[1]) if len(parts) == 2 else b""
    return Metadata(header, values)


def _decode_base64(text: str) -> bytes:
    if not _BASE64.fullmatch(text):
        raise ProtocolError(400, "Upload-Metadata value is not base64")
    try:
        # Pad here so a client that drops the padding is not turned away.
        return base64.b64decode(
            text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4), validate=True
        )
    except (binascii.Error, ValueError):
        raise ProtocolError(400, "Upload-Metadata value is not base64") from None


@dataclass(frozen=True)
class Checksum:
    """A parsed `Upload-Checksum: <algorithm> <base64 digest>`."""

    algorithm: str
    digest: bytes

    def new_hasher(self) -> checksums.ChunkHasher:
        return CHECKSUM_ALGORITHMS[self.algorithm]()


def parse_checksum(header: str | None) -> Checksum | None:
    """Parse `Upload-Checksum`; 400 for an unsupported algorithm or a digest of the wrong shape."""
    if header is None:
        return None
    parts = header.strip().split(" ")
    if len(parts) != 2:
        raise ProtocolError(400, "Upload-Checksum must be '<algorithm> <base64 digest>'")
    algorithm, encoded = parts
    factory = CHECKSUM_ALGORITHMS.get(algorithm)
    if factory is None:
        supported = ",".join(CHECKSUM_ALGORITHMS)
        raise ProtocolError(
            400, f"unsupported checksum algorithm {algorithm[:20]!r} (supported: {supported})"
        )
    try:
        digest = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(400, "Upload-Checksum digest is not base64") from None
    if len(digest) != factory().digest_size:
        raise ProtocolError(400, f"Upload-Checksum digest has the wrong length for {algorithm}")
    return Checksum(algorithm, digest)


def http_date(timestamp: float) -> str:
    """RFC 7231 IMF-fixdate, as `Upload-Expires` requires."""
    return email.utils.formatdate(timestamp, usegmt=True)
