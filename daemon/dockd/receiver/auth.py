"""Optional bearer-token authentication: which dock is asking.

Tokens file (`dockd serve --tokens FILE`, mode 0600 like a private key)::

    # dock-id   token
    station-07  3q2-7bVd0e6bS9dGmS3n0vJ6f2t1nYkP

Every request except OPTIONS must then carry `Authorization: Bearer <token>` (else 401), and an
upload belongs to the dock that created it: other docks get 404, as if it did not exist.
Tokens are compared in constant time and never logged. With `--client-ca` the subject commonName
of the verified client certificate names the dock instead (a token, if also sent, wins).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from collections.abc import Mapping
from pathlib import Path

from dockd.crypto.keys import KeyFileError, check_private_file

_DOCK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TOKEN = re.compile(r"[\x21-\x7e]{16,512}")  # visible ASCII, long enough not to be guessed
_BEARER = re.compile(r"Bearer +(\S+) *", re.IGNORECASE)


class TokenFileError(KeyFileError):
    """The tokens file is missing, unsafely stored or malformed."""


def load_tokens(path: Path) -> dict[str, str]:
    """Read `dock-id token` lines (`#` comments); return token -> dock id."""
    try:
        check_private_file(path)
        text = path.read_text(encoding="utf-8")
    except KeyFileError as exc:
        raise TokenFileError(str(exc).replace("private key", "tokens file")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"{path}: cannot read tokens file: {exc}") from None
    tokens: dict[str, str] = {}
    docks: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise TokenFileError(f"{path}:{number}: expected 'dock-id token'")
        dock, token = fields
        if not _DOCK_ID.fullmatch(dock):
            raise TokenFileError(f"{path}:{number}: dock id must be 1-64 of A-Z a-z 0-9 . _ -")
        if not _TOKEN.fullmatch(token):
            raise TokenFileError(f"{path}:{number}: token must be 16-512 visible ASCII characters")
        if token in tokens:
            raise TokenFileError(f"{path}:{number}: token is already used by another dock")
        if dock in docks:
            raise TokenFileError(f"{path}:{number}: dock {dock!r} appears twice")
        tokens[token] = dock
        docks.add(dock)
    if not tokens:
        raise TokenFileError(f"{path}: no tokens in file")
    return tokens


class BearerAuth:
    """Maps an `Authorization` header to a dock id."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        # Indexed by digest so a lookup costs one hash, then confirmed in constant time.
        self._by_digest = {
            hashlib.sha256(token.encode()).digest(): (token.encode(), dock)
            for token, dock in tokens.items()
        }

    def dock_for(self, authorization: str | None) -> str | None:
        """The dock presenting this header, or None if the token is missing or unknown."""
        if not authorization:
            return None
        match = _BEARER.fullmatch(authorization.strip())
        if match is None:
            return None
        presented = match.group(1).encode("utf-8", "surrogateescape")
        entry = self._by_digest.get(hashlib.sha256(presented).digest())
        if entry is None or not hmac.compare_digest(entry[0], presented):
            return None
        return entry[1]


def certificate_identity(transport: asyncio.BaseTransport | None) -> str | None:
    """The dock named by the verified client certificate: its subject's commonName.

    Only meaningful with `--client-ca`, where the TLS handshake has already refused clients
    without a certificate issued by that CA.
    """
    if transport is None:
        return None
    peer = transport.get_extra_info("peercert")
    if not peer:
        return None
    for rdn in peer.get("subject", ()):
        for name, value in rdn:
            if name == "commonName" and _DOCK_ID.fullmatch(value):
                return str(value)
    return None
