"""Where the receiver keeps uploads: the interface (`api`), its implementations, and `open_store`.

api.py     UploadStore, ChunkWriter, optional Locker / Concater; records; store errors
file.py    FileStore: a directory tree, fsync'd (the default, `dockd serve --store DIR`)
memory.py  MemoryStore: dicts, for tests; a restart is a new store on the same medium
"""

from __future__ import annotations

import re
from pathlib import Path

from dockd.receiver.storage.api import UploadStore
from dockd.receiver.storage.file import FileStore

# RFC 3986 scheme syntax, followed by the colon: "file:", "s3:", "postgres+s3:".
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def open_store(spec: str | Path) -> UploadStore:
    """The store named by `--store`: `file:DIR` or a bare path (the file store).

    Other schemes (`s3:` is next) are refused by name rather than taken for a directory.
    """
    if isinstance(spec, Path):
        return FileStore(spec)
    found = _SCHEME.match(spec)
    if found is None:
        return FileStore(Path(spec))
    scheme, rest = found.group(1).lower(), spec[found.end() :]
    if scheme == "file":
        return FileStore(Path(rest))
    # A directory named like "s3:bucket" is far likelier a mistyped store than a wish.
    raise ValueError(
        f"--store {spec!r}: no {scheme!r} store in this version; use file:DIR or a directory path"
    )
