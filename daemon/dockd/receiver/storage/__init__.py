"""Where the receiver keeps uploads: the interface (`api`), its implementations, and `open_store`.

api.py     UploadStore, ChunkWriter, optional Locker / Concater; records; store errors
file.py    FileStore: a directory tree, fsync'd (the default, `dockd serve --store DIR`)
memory.py  MemoryStore: dicts, for tests; a restart is a new store on the same medium
"""

from __future__ import annotations

from pathlib import Path

from dockd.receiver.storage.api import UploadStore
from dockd.receiver.storage.file import FileStore


def open_store(spec: str | Path) -> UploadStore:
    """The store named by `--store`: `file:DIR` or a bare path (the file store).

    Other schemes (`s3:` is next) are refused by name rather than taken for a directory.
    """
    text = str(spec)
    scheme, colon, rest = text.partition(":")
    if colon and scheme == "file":
        return FileStore(Path(rest))
    if colon and scheme.isalpha() and len(scheme) > 1 and not rest.startswith("\\"):
        raise ValueError(f"unknown store scheme {scheme!r}: use file:DIR or a directory path")
    return FileStore(Path(text))
