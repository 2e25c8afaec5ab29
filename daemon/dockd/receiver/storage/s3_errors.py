"""S3 errors in the store's words: `s3_call` runs one client call and translates what goes wrong.

* the gateway unreachable, a timeout, a dropped connection, a 5xx or a throttle (SlowDown) ->
  `StoreUnavailable` (the handlers answer 503 + Retry-After; nothing acknowledged is lost);
* "not there" (404: NoSuchKey, NoSuchUpload; RGW answers NoSuchKey for an aborted multipart
  upload) -> None when the caller said `missing_ok`, else `StoreError` naming what was missing;
* a quota exceeded (RGW's 403 QuotaExceeded) -> `StoreFull` (507);
* anything else (403, 400 BadDigest, ...) -> `StoreError`.

botocore's own "standard" retries have already run when an error gets here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError

from dockd.receiver.storage.api import StoreError, StoreFull, StoreUnavailable

T = TypeVar("T")

RETRY_AFTER = 5.0  # seconds a dock waits before it tries again after a 503
_MISSING = frozenset({"NoSuchKey", "NoSuchUpload", "404", "NotFound"})
_BUSY = frozenset({"SlowDown", "ServiceUnavailable", "RequestTimeout", "InternalError"})


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def is_missing(exc: ClientError) -> bool:
    return error_code(exc) in _MISSING or http_status(exc) == 404


def s3_call(
    function: Callable[..., T], /, *args: Any, missing_ok: bool = False, **kwargs: Any
) -> T | None:
    """`function(*args, **kwargs)`, with S3 failures turned into store errors (see above)."""
    try:
        return function(*args, **kwargs)
    except ClientError as exc:
        operation = getattr(exc, "operation_name", "S3")
        if is_missing(exc) and error_code(exc) != "NoSuchBucket":
            if missing_ok:
                return None
            raise StoreError(f"{operation}: not found in S3 ({error_code(exc)})") from exc
        if error_code(exc) == "QuotaExceeded":
            raise StoreFull(f"{operation}: S3 quota exceeded") from exc
        if http_status(exc) >= 500 or error_code(exc) in _BUSY:
            raise StoreUnavailable(
                f"{operation}: S3 gateway answered {http_status(exc)} {error_code(exc)}",
                retry_after=RETRY_AFTER,
            ) from exc
        raise StoreError(f"{operation}: S3 refused: {error_code(exc)} ({exc})") from exc
    except (BotoConnectionError, HTTPClientError, IncompleteReadError) as exc:
        raise StoreUnavailable(f"S3 gateway unreachable: {exc}", retry_after=RETRY_AFTER) from exc
    except BotoCoreError as exc:
        raise StoreError(f"S3 client error: {exc}") from exc


def s3_required(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`s3_call` for calls whose result must be there (typed without the None)."""
    result = s3_call(function, *args, **kwargs)
    assert result is not None
    return result


def list_objects(client: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    """Every object under `prefix`, page by page (1,000 at a time, never the whole listing in
    memory), in key order; each page fetch fails as `s3_call` says."""
    pages = iter(client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix))
    while (page := s3_call(next, pages, None)) is not None:
        yield from page.get("Contents", [])
