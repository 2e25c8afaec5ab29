"""The per-PATCH checksums both sides share (dockd.checksums)."""

from __future__ import annotations

import base64
import os

import crc32c
from dockd import checksums


def test_crc32c_digest_is_the_big_endian_castagnoli_crc():
    # The standard check value of CRC-32C (RFC 3720, B.4) for the nine digits.
    assert checksums.digest_of("crc32c", b"123456789") == bytes.fromhex("e3069283")
    assert base64.b64encode(checksums.digest_of("crc32c", b"123456789")) == b"4waSgw=="


def test_crc32c_fed_in_pieces_equals_the_crc_of_the_whole():
    data = os.urandom(3 << 20)
    hasher = checksums.new_hasher("crc32c")
    for start in range(0, len(data), 777_777):
        hasher.update(data[start : start + 777_777])
    assert hasher.digest() == crc32c.CRC32CHash(data).digest()  # an independent implementation


def test_crc32c_takes_any_bytes_like_object_as_hashlib_does():
    data = os.urandom(100_000)
    for view, covered in (
        (bytearray(data), data),
        (memoryview(data), data),
        (memoryview(data)[:50_000], data[:50_000]),
    ):
        hasher = checksums.new_hasher("crc32c")
        hasher.update(view)  # type: ignore[arg-type]
        assert hasher.digest() == crc32c.CRC32CHash(covered).digest()


def test_the_dock_prefers_crc32c_then_sha256_then_sha1():
    assert checksums.choose(frozenset({"sha1", "sha256", "crc32c"})) == "crc32c"
    assert checksums.choose(frozenset({"sha1", "sha256"})) == "sha256"
    assert checksums.choose(frozenset({"sha1", "md5"})) == "sha1"
    assert checksums.choose(frozenset({"md5"})) is None
