"""The committed offset of an unfinished upload, updated in place with one write and one sync.

`partial/<id>.state` is a fixed 1 KiB file of two 512-byte slots. Each commit overwrites the
older slot with (sequence number, offset, expiry, CRC) and fdatasyncs the file. Because the
file never changes size and no name changes, the commit needs no temp file, no rename and no
directory fsync (the previous design's three syncs per PATCH become two: the data's fdatasync and
this one; bench/patch_profile.py measures both).

Why it is safe:

* The slots sit in different 512-byte sectors, so a write torn by a power cut can damage only
  the slot being written; its CRC then fails and the other slot, the previous commit, is read.
  The damaged commit was never acknowledged: the receiver answers only after the fdatasync.
* A reader takes the valid slot with the highest sequence number.
* The file itself is created durably once, with the upload (`FileStore.create`: temp file,
  fsync, rename, directory fsync).

Stores written before this format hold JSON (`{"offset", "expires"}`); `read` still accepts it and
`FileStore.recover` rewrites it in this format before any writer touches it.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass

SLOT_SIZE = 512  # one sector: a torn write cannot span both slots
FILE_SIZE = 2 * SLOT_SIZE
_MAGIC = b"DOCKDOFS"
# magic, sequence, offset, expires (unix time), then the CRC-32 of those bytes.
_BODY = struct.Struct(">8sQQd")
_CRC = struct.Struct(">I")


@dataclass(frozen=True)
class OffsetState:
    sequence: int  # grows with each commit; the next write goes to slot (sequence + 1) % 2
    offset: int
    expires: float
    legacy: bool = False  # read from the old JSON format (rewrite before writing in place)


def encode(sequence: int, offset: int, expires: float) -> bytes:
    """One slot: the record, its CRC, zero padding to the sector size."""
    body = _BODY.pack(_MAGIC, sequence, offset, expires)
    return (body + _CRC.pack(zlib.crc32(body))).ljust(SLOT_SIZE, b"\0")


def initial_file(offset: int, expires: float) -> bytes:
    """A whole new state file: slot 0 holds sequence 0, slot 1 is empty (invalid)."""
    return encode(0, offset, expires) + bytes(SLOT_SIZE)


def _decode(slot: bytes) -> OffsetState | None:
    if len(slot) < _BODY.size + _CRC.size:
        return None
    body = slot[: _BODY.size]
    (crc,) = _CRC.unpack_from(slot, _BODY.size)
    magic, sequence, offset, expires = _BODY.unpack(body)
    if magic != _MAGIC or crc != zlib.crc32(body):
        return None
    return OffsetState(sequence, offset, expires)


def parse(content: bytes) -> OffsetState | None:
    """The newest valid record in a state file's `content`, or None if there is none."""
    if content.startswith(b"{"):
        return _parse_legacy(content)
    slots = [_decode(content[i : i + SLOT_SIZE]) for i in (0, SLOT_SIZE)]
    valid = [slot for slot in slots if slot is not None]
    return max(valid, key=lambda slot: slot.sequence) if valid else None


def _parse_legacy(content: bytes) -> OffsetState | None:
    try:
        data = json.loads(content)
        return OffsetState(0, int(data["offset"]), float(data["expires"]), legacy=True)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None  # torn JSON cannot happen (it was renamed into place), but never guess


def read_fd(fd: int) -> OffsetState | None:
    return parse(os.pread(fd, FILE_SIZE, 0))


def commit(fd: int, previous: OffsetState, offset: int, expires: float) -> OffsetState:
    """Overwrite the older slot with the next record and fdatasync: durable when this returns."""
    if previous.legacy:
        raise ValueError("a legacy state file must be rewritten before it is updated in place")
    record = OffsetState(previous.sequence + 1, offset, expires)
    slot = encode(record.sequence, offset, expires)
    position = (record.sequence % 2) * SLOT_SIZE
    written = os.pwrite(fd, slot, position)
    if written != len(slot):  # a regular file on a local disk writes 512 bytes at once
        raise OSError(f"short write of the offset record ({written} of {len(slot)} bytes)")
    os.fdatasync(fd)
    return record
