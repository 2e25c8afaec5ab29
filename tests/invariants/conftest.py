"""Keys for the invariant tests: a fresh server receipt key, age identity and recipient each."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dockd.crypto.keys import KeygenResult, keygen, load_signing_key


@pytest.fixture
def keys(tmp_path: Path) -> KeygenResult:
    return keygen(tmp_path / "keys")


@pytest.fixture
def server_key(keys: KeygenResult) -> Ed25519PrivateKey:
    return load_signing_key(keys.server_signing_key)
