"""A SHA-256 whose state survives a restart: the S3 store's running whole-upload hash.

Why ours. The S3 store cannot rebuild the hash as the file store does, by re-reading the
committed prefix: until CompleteMultipartUpload, the parts of an S3 multipart upload cannot be
read back at all (GetObject, even with PartNumber, only reads a completed object). So the state
itself must be saved at every commit, and with several receiver nodes the next PATCH may be
hashed on another machine. hashlib cannot export its state. What was tried (Python 3.11.7,
OpenSSL 3.0.19, 2-core VM, 1 MiB updates; numbers in docs/RECEIVER.md):

* `rehash` 1.0.1 (picklable hashlib): "OpenSSL 3 is not yet supported" at its first use;
* `resumablesha256` 1.0 (portable C, one author): right digests, but 190-280 MB/s against
  hashlib's 1,300-2,000 MB/s (SHA-NI), and it holds the GIL while hashing;
* this module: the same OpenSSL libcrypto that hashlib uses, through its `SHA256_Init/Update/
  Final` calls (deprecated in OpenSSL 3 but exported and maintained; OpenSSL's own `apps/` still
  use them), with the `SHA256_CTX` kept in a ctypes buffer. Its 112 bytes are the state to save.
  ~1,700 MB/s with SHA-NI, and ctypes drops the GIL for the call, so hashing runs beside the
  event loop. It is the only hand-written piece: ~40 lines over a stable C ABI.

`SHA256_CTX` (OpenSSL 1.1 and 3.x, `include/openssl/sha.h`): `h[8]`, `Nl`, `Nh`, `data[16]`,
`num`, `md_len`, all 32-bit: 112 bytes. `Nh:Nl` counts every bit given to Update, `num` the bytes
waiting in `data`, `md_len` is 32 for SHA-256. `restore` checks those three against the committed
offset before OpenSSL sees the bytes: they come from a bucket or a database, never trusted.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
from typing import Final

from dockd.receiver.storage.api import RunningHash, StoreError

_STATE_SIZE: Final = 112
_BLOCK: Final = 64
# Nl, Nh at byte 32; num, md_len at byte 104 (after data[16]).
_BITS = struct.Struct("<II")
_TAIL = struct.Struct("<II")
_DIGEST_SIZE: Final = 32


class _Ctx(ctypes.Structure):
    _fields_ = [("raw", ctypes.c_ubyte * _STATE_SIZE)]


def _load_libcrypto() -> ctypes.CDLL | None:
    import _hashlib  # noqa: F401 - loads the libcrypto hashlib itself uses

    name = ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.SHA256_Init.argtypes = [ctypes.POINTER(_Ctx)]
        lib.SHA256_Update.argtypes = [ctypes.POINTER(_Ctx), ctypes.c_void_p, ctypes.c_size_t]
        lib.SHA256_Final.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Ctx)]
        for function in (lib.SHA256_Init, lib.SHA256_Update, lib.SHA256_Final):
            function.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return lib


_LIB = _load_libcrypto()


def _lib() -> ctypes.CDLL:
    if _LIB is None:
        raise StoreError(
            "the S3 store needs OpenSSL's libcrypto (SHA256_Init/Update/Final) to save the "
            "running SHA-256 at each commit; none was found"
        )
    return _LIB


class ResumableSha256:
    """hashlib.sha256's interface (as `RunningHash` uses it), on a state that can be saved."""

    name = "sha256"
    digest_size = _DIGEST_SIZE

    def __init__(self, ctx: _Ctx | None = None) -> None:
        if ctx is None:
            ctx = _Ctx()
            if _lib().SHA256_Init(ctypes.byref(ctx)) != 1:
                raise StoreError("SHA256_Init failed")
        self._ctx = ctx

    def update(self, data: bytes, /) -> None:
        buffer: bytes | ctypes.Array[ctypes.c_char]
        if isinstance(data, bytes):
            buffer, size = data, len(data)  # passed by address, not copied
        else:
            view = memoryview(data).cast("B")
            size = view.nbytes
            buffer = view.tobytes() if view.readonly else (ctypes.c_char * size).from_buffer(view)
        if size and _lib().SHA256_Update(ctypes.byref(self._ctx), buffer, size) != 1:
            raise StoreError("SHA256_Update failed")

    def copy(self) -> ResumableSha256:
        return ResumableSha256(_Ctx.from_buffer_copy(self._ctx))

    def digest(self) -> bytes:
        out = ctypes.create_string_buffer(_DIGEST_SIZE)
        ctx = _Ctx.from_buffer_copy(self._ctx)  # Final wipes the context: finish a copy
        if _lib().SHA256_Final(out, ctypes.byref(ctx)) != 1:
            raise StoreError("SHA256_Final failed")
        return out.raw

    def hexdigest(self) -> str:
        return self.digest().hex()

    def state(self) -> bytes:
        return bytes(self._ctx.raw)


def new_hash() -> RunningHash:
    """A fresh SHA-256 whose state `export_state` can save."""
    return ResumableSha256()


def export_state(hasher: RunningHash) -> bytes:
    """The hash state as bytes (raises StoreError for a hash this module did not make)."""
    if not isinstance(hasher, ResumableSha256):
        raise StoreError(
            f"the S3 store cannot persist a {type(hasher).__name__} hash state; "
            "use the store's new_hash()"
        )
    return hasher.state()


def restore(state: bytes, offset: int) -> RunningHash:
    """The hash of exactly `offset` bytes from a saved state; StoreError if it is not that."""
    if len(state) != _STATE_SIZE:
        raise StoreError(f"saved SHA-256 state has {len(state)} bytes, not {_STATE_SIZE}")
    low, high = _BITS.unpack_from(state, 32)
    num, md_len = _TAIL.unpack_from(state, 104)
    bits = (high << 32) | low
    if md_len != _DIGEST_SIZE or num >= _BLOCK or bits % 8 or num != (bits // 8) % _BLOCK:
        raise StoreError("saved SHA-256 state is not a SHA-256 state")
    if bits // 8 != offset:
        raise StoreError(
            f"saved SHA-256 state covers {bits // 8} bytes, not the committed {offset}"
        )
    return ResumableSha256(_Ctx.from_buffer_copy(state))
