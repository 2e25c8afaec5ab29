"""Getting ciphertext to the ingest server: a tus 1.0.0 client (aiohttp) with bounded retries.

- `tus.py`: `TusClient` (OPTIONS, POST creation, HEAD, PATCH with a per-chunk checksum, DELETE),
  `send` (drive one upload to completion from whatever the server holds, return the final HEAD
  with its `Dockd-Receipt`), `encode_metadata`, and the errors callers act on: `UploadGone`
  (recreate), `OffsetConflict` (HEAD, continue), `ServerRejected` (a refusal retrying will not
  fix), `ServerUnavailable` (transient failures that outlasted the retries; try later).
- `retry.py`: `RetryPolicy` and the jittered exponential backoff (tenacity) that honours
  `Retry-After`.
"""
