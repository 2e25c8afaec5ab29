"""A SHA-256 whose state survives a restart: the S3 store's running whole-upload hash.

Why this library. The S3 store cannot rebuild the hash as the file store does, by re-reading the
committed prefix: until CompleteMultipartUpload, the parts of an S3 multipart upload cannot be
read back at all (GetObject, even with PartNumber, only reads a completed object). So the state
itself must be saved at every commit. Measured on the development VM (Python 3.11.7, OpenSSL
3.0.19, 64 MiB of random data in 1 MiB updates, see docs/RECEIVER.md):

* `rehash` 1.0.1 (picklable hashlib): raises NotImplementedError("OpenSSL 3 is not yet
  supported") when a hash is made; unusable on any current distribution;
* `resumablesha256` 1.0 (B-Con's portable C SHA-256, Unlicense): digests equal hashlib's on
  random data, also across a state round trip mid-stream; 190-280 MB/s against hashlib's
  1330-1730 MB/s (SHA-NI), and it holds the GIL while hashing. Slower, but above what one
  receiver moves into RGW here (~150 MB/s per upload).

The state is 112 bytes (B-Con's `SHA256_CTX`: 64 buffered bytes, the buffer fill, the message
length in bits, the 8 state words), exported with `__getstate__` and restored with
`__setstate__`, never with pickle: the bytes come from the work bucket, and unpickling them would
run whatever they say. `restore` checks the fill and the length against the committed offset
before handing the bytes to C code that trusts them.
"""

from __future__ import annotations

import struct

from resumablesha256 import sha256 as _ResumableSha256

from dockd.receiver.storage.api import RunningHash, StoreError

_STATE_SIZE = 112
_BLOCK = 64
_FILL_AND_BITS = struct.Struct("<I4xQ")  # uint32 datalen, padding, uint64 bitlen at offset 64


def new_hash() -> RunningHash:
    """A fresh SHA-256 whose state `export_state` can save."""
    hasher: RunningHash = _ResumableSha256()
    return hasher


def export_state(hasher: RunningHash) -> bytes:
    """The hash state as bytes (raises StoreError for a hash this module did not make)."""
    if not isinstance(hasher, _ResumableSha256):
        raise StoreError(
            f"the S3 store cannot persist a {type(hasher).__name__} hash state; "
            "use the store's new_hash()"
        )
    state = hasher.__getstate__()
    if not isinstance(state, bytes) or len(state) != _STATE_SIZE:
        raise StoreError("unexpected SHA-256 state layout from resumablesha256")
    return state


def restore(state: bytes, offset: int) -> RunningHash:
    """The hash of exactly `offset` bytes from a saved state; StoreError if it is not that."""
    if len(state) != _STATE_SIZE:
        raise StoreError(f"saved SHA-256 state has {len(state)} bytes, not {_STATE_SIZE}")
    fill, bits = _FILL_AND_BITS.unpack_from(state, _BLOCK)
    # bitlen counts the bytes already compressed (whole blocks); the fill holds the rest.
    if fill >= _BLOCK or bits % (8 * _BLOCK) != 0 or bits // 8 + fill != offset:
        raise StoreError(
            f"saved SHA-256 state covers {bits // 8 + fill} bytes, not the committed {offset}"
        )
    hasher = _ResumableSha256()
    hasher.__setstate__(state)
    return hasher
