"""Where the receiver keeps uploads: the interface (`api`), its implementations, and `open_store`.

api.py     UploadStore, ChunkWriter, optional Locker / Concater; records; store errors
file.py    FileStore: a directory tree, fsync'd (the default, `dockd serve --store DIR`)
memory.py  MemoryStore: dicts, for tests; a restart is a new store on the same medium
s3*.py     S3Store: one multipart upload per upload on S3 / Ceph RGW (`--store s3:URL/BUCKET`)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dockd.receiver.storage.api import UploadStore
from dockd.receiver.storage.file import FileStore

# RFC 3986 scheme syntax, followed by the colon: "file:", "s3:", "postgres+s3:".
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def open_store(
    spec: str | Path,
    *,
    s3_options: Mapping[str, Any] | None = None,
    retention: Callable[[str], Any] | None = None,
) -> UploadStore:
    """The store named by `--store`: `file:DIR` or a bare path (the file store), or
    `s3:http(s)://HOST[:PORT]/BUCKET` (the S3 store; `s3_options` are `S3Settings.from_spec`'s
    keyword arguments: credentials file, work bucket, region, part size, allow_plaintext).

    `retention(work_bucket)` makes the S3 store's `ObjectRetention` hooks (`dockd serve`:
    retention.options.retention_from_args); without it, `NoRetention`.

    Other schemes are refused by name rather than taken for a directory. Raises ValueError
    (S3ConfigError, KeyFileError) for a store that cannot be configured.
    """
    if isinstance(spec, Path):
        return FileStore(spec)
    found = _SCHEME.match(spec)
    if found is None:
        return FileStore(Path(spec))
    scheme, rest = found.group(1).lower(), spec[found.end() :]
    if scheme == "file":
        return FileStore(Path(rest))
    if scheme == "s3":
        # Imported here: the file store must work without the `s3` extra installed.
        from dockd.receiver.storage.s3_config import S3ConfigError, S3Settings

        settings = S3Settings.from_spec(spec, **dict(s3_options or {}))
        try:
            from dockd.receiver.storage.s3 import S3Store
        except ImportError as exc:
            raise S3ConfigError(
                f"the S3 store needs the s3 extra (pip install 'dockd[s3]'): {exc}"
            ) from None
        hooks = retention(settings.work_bucket) if retention is not None else None
        return S3Store(settings, retention=hooks)
    # A directory named like "s3:bucket" is far likelier a mistyped store than a wish.
    raise ValueError(
        f"--store {spec!r}: no {scheme!r} store in this version; "
        "use file:DIR, a directory path or s3:http(s)://HOST[:PORT]/BUCKET"
    )
