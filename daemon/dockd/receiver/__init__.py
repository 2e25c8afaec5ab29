"""The reference ingest server (`dockd serve`): tus 1.0.0 with verified chunks and signed receipts.

A tus server (core, creation, creation-with-upload, checksum sha1/sha256, termination,
expiration) that, unlike tusd or @tus/server, verifies every chunk checksum, acknowledges bytes
only once they are on disk, and when an upload completes signs a `Dockd-Receipt`
(`dockd.crypto.receipt`) over the upload id, length and SHA-256 of exactly the stored bytes.
Docks wipe a camera clip only on such a receipt.

Modules, one job each:

    app.py         settings, the aiohttp application, `start` / `RunningReceiver`
    cli.py         `dockd serve` command line
    exposure.py    startup policy: no anonymous or clear-text network server by accident
    connections.py request-head deadline, connection caps, rate-limited accept errors
    handlers.py    HTTP ↔ coordinator: the tus endpoints and their status codes
    uploads.py     UploadCoordinator: unfinished uploads, locking, creation, completion, expiry
    upload_state.py one upload's committed state, request generations, its running hash
    chunks.py      ChunkStorer: one PATCH body through the store's writer, verified, committed
    refusals.py    store errors as tus refusals (507, 503 + Retry-After, 409, 500)
    quota.py       per-dock limits on unfinished uploads, and the store's free space
    body.py        streaming a request body into the store while hashing, with idle cut-off
    storage/       the store interface (api.py) and its implementations: file.py (on-disk layout,
                   durability order, crash recovery; the only fd/fsync code), memory.py (tests)
    threads.py     blocking disk work on worker threads, never abandoned mid-way
    protocol.py    tus server-side constants, strict header parsers, ProtocolError
    auth.py        who is asking: bearer tokens (`--tokens`), client-certificate CN

Operator and implementer documentation: docs/RECEIVER.md.
"""
