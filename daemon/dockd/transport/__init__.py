"""Getting ciphertext to the ingest server.

- `uploader.py`: the `Uploader` interface the pipeline holds (create, send from the server's
  offset, status with the receipt) and its errors, which name no protocol: `UploadGone`
  (recreate), `UploadRejected` / `UploadRefused` (a refusal retrying will not fix; of the dock
  itself: credentials or a quota), `ServerUnavailable` (transient failures that outlasted the
  retries; try later).
- `tus.py`: `TusClient`, the `Uploader` over tus 1.0.0 (OPTIONS, POST creation, HEAD, PATCH with a
  per-chunk checksum, DELETE), `send` (drive one upload to completion from whatever the server
  holds, return the final HEAD with its `Dockd-Receipt`), `encode_metadata`. Its errors subclass
  the interface's and add the HTTP status; `OffsetConflict` stays inside `send`.
- `retry.py`: `RetryPolicy` and the jittered exponential backoff (tenacity) that honours
  `Retry-After`.
- `bandwidth.py`: the dock's one token bucket, which paces request bodies.
"""
