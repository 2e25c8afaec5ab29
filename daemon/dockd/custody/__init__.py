"""Chain of custody: the dock-signed per-clip manifest, the hash-chained audit log, `dockd verify`.

| module | one job |
|---|---|
| `canonical.py` | canonical JSON bytes (sorted keys, no whitespace, UTF-8) and RFC 3339 times |
| `audit.py` | the append-only, hash-chained audit log (a table in the journal) and its verifier |
| `manifest.py` | build, sign and verify a clip's manifest with the dock's Ed25519 key |
| `verify.py` | `dockd verify`: offline check of a stored object against manifest and receipt |

The format descriptions live in docs/CUSTODY.md.
"""
