"""Parts of the S3 store that need no Ceph (they run in the default test run): the saved hash
state, the upload state's invariants, and how S3 errors become store errors."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from dockd.receiver.storage.api import (
    CreationInfo,
    StoreError,
    StoreFull,
    StoreUnavailable,
    new_upload_id,
)
from dockd.receiver.storage.s3_errors import s3_call
from dockd.receiver.storage.s3_hash import export_state, new_hash, restore
from dockd.receiver.storage.s3_state import PartRecord, S3UploadState


@pytest.mark.parametrize("cut", [0, 1, 63, 64, 65, 4096, 1_000_003])
def test_hash_state_round_trip_mid_stream_equals_hashlib(cut: int) -> None:
    data = os.urandom(1_500_000)
    hasher = new_hash()
    hasher.update(data[:cut])
    resumed = restore(export_state(hasher), cut)
    resumed.update(data[cut:])
    assert resumed.hexdigest() == hashlib.sha256(data).hexdigest()


def test_hash_state_for_another_offset_or_tampered_is_refused() -> None:
    hasher = new_hash()
    hasher.update(b"x" * 1000)
    state = export_state(hasher)
    with pytest.raises(StoreError, match="not the committed"):
        restore(state, 999)
    # OpenSSL's SHA256_CTX: num (bytes waiting in the block) at 104, md_len at 108.
    for at, value in ((104, 200), (108, 28), (32, 0x41)):
        tampered = bytearray(state)
        tampered[at] = value  # a fill past the block would overrun in C; md_len 28 is SHA-224
        with pytest.raises(StoreError):
            restore(bytes(tampered), 1000)
    with pytest.raises(StoreError):
        restore(state[:-1], 1000)
    with pytest.raises(StoreError, match="cannot persist"):
        export_state(hashlib.sha256())  # type: ignore[arg-type]


def _state(parts: tuple[PartRecord, ...], tail: int) -> S3UploadState:
    info = CreationInfo(new_upload_id(), 100 << 20, "", {}, "2026-11-30T00:00:00Z", None)
    return S3UploadState(
        info=info,
        key=f"clips/{info.upload}",
        multipart_id="mp",
        offset=sum(p.size for p in parts) + tail,
        parts=parts,
        tail_key="tail/x/y" if tail else None,
        tail_size=tail,
        hash_state=b"\x01\x02",
        expires=1.5,
    )


def test_upload_state_round_trips_through_json_and_keeps_parts_numbered_1_to_n() -> None:
    parts = (PartRecord(1, '"a"', 5 << 20), PartRecord(2, '"b"', 5 << 20))
    state = _state(parts, 123)
    assert S3UploadState.from_json(state.to_json()) == state
    with pytest.raises(StoreError, match=r"1\.\.N"):
        _state((PartRecord(2, '"b"', 5 << 20),), 0)
    with pytest.raises(StoreError, match="offset"):
        S3UploadState.from_json({**state.to_json(), "offset": 1})


def _client_error(status: int, code: str) -> ClientError:
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "UploadPart")


def _raising(exc: Exception) -> Any:
    def call(**_: Any) -> Any:
        raise exc

    return call


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_client_error(503, "SlowDown"), StoreUnavailable),
        (_client_error(500, "InternalError"), StoreUnavailable),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), StoreUnavailable),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), StoreUnavailable),
        (_client_error(403, "QuotaExceeded"), StoreFull),
        (_client_error(400, "BadDigest"), StoreError),
        (_client_error(404, "NoSuchUpload"), StoreError),
    ],
)
def test_s3_failures_become_store_errors(exc: Exception, expected: type[Exception]) -> None:
    with pytest.raises(expected) as raised:
        s3_call(_raising(exc))
    if expected is StoreUnavailable:
        assert isinstance(raised.value, StoreUnavailable) and raised.value.retry_after >= 1
    if expected is StoreError:
        assert not isinstance(raised.value, StoreUnavailable | StoreFull)


def test_missing_is_none_only_where_the_caller_allows_it() -> None:
    assert s3_call(_raising(_client_error(404, "NoSuchKey")), missing_ok=True) is None
    with pytest.raises(StoreError):  # a missing bucket is a configuration error, never "absent"
        s3_call(_raising(_client_error(404, "NoSuchBucket")), missing_ok=True)
