"""Key files: age X25519 identities and recipients, and the Ed25519 keys that sign receipts.

File formats are the standard ones so other tools can use them: `age-keygen`'s identity file
(`AGE-SECRET-KEY-…` lines, comments with `#`), PKCS#8 / SubjectPublicKeyInfo PEM for Ed25519.
Private key files must not be readable by group or others: a leaked identity decrypts evidence,
a leaked signing key forges receipts.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from dockd.crypto import bech32
from dockd.utc import now_utc

RECIPIENT_HRP = "age"
IDENTITY_HRP = "AGE-SECRET-KEY-"
IDENTITY_PREFIX = (
    IDENTITY_HRP + "1"
)  # bech32 separator (spelled out nowhere: key scanners match it)


class KeyFileError(ValueError):
    """A key file or key string is missing, malformed or unsafely stored."""


@dataclass(frozen=True)
class AgeRecipient:
    """An age X25519 recipient: who can decrypt what the dock encrypts."""

    public: bytes

    @classmethod
    def parse(cls, text: str) -> AgeRecipient:
        text = text.strip()
        if not text.startswith("age1") or text.lower() != text:
            raise KeyFileError(f"not an age X25519 recipient (age1…, lowercase): {text[:12]!r}")
        try:
            public = bech32.decode(text, RECIPIENT_HRP)
        except bech32.Bech32Error as exc:
            raise KeyFileError(f"malformed age recipient {text[:12]!r}…: {exc}") from None
        if len(public) != 32:
            raise KeyFileError("age recipient must encode 32 bytes")
        return cls(public)

    def encode(self) -> str:
        return bech32.encode(RECIPIENT_HRP, self.public)

    def __str__(self) -> str:
        return self.encode()


@dataclass(frozen=True)
class AgeIdentity:
    """An age X25519 identity (private key). Held by the evidence service, never by a dock."""

    secret: bytes

    @classmethod
    def generate(cls) -> AgeIdentity:
        return cls(X25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def parse(cls, text: str) -> AgeIdentity:
        text = text.strip()
        if not text.startswith(IDENTITY_PREFIX):
            raise KeyFileError(f"not an age identity ({IDENTITY_PREFIX}…)")
        try:
            secret = bech32.decode(text, IDENTITY_HRP)
        except bech32.Bech32Error as exc:
            raise KeyFileError(f"malformed age identity: {exc}") from None
        if len(secret) != 32:
            raise KeyFileError("age identity must encode 32 bytes")
        return cls(secret)

    @property
    def recipient(self) -> AgeRecipient:
        private = X25519PrivateKey.from_private_bytes(self.secret)
        return AgeRecipient(private.public_key().public_bytes_raw())

    def encode(self) -> str:
        return bech32.encode(IDENTITY_HRP.lower(), self.secret).upper()

    def __repr__(self) -> str:  # never print the secret, even in a traceback
        return f"AgeIdentity(recipient={self.recipient.encode()})"


def check_private_file(path: Path) -> None:
    """Refuse a private key file that group or others may read (like ssh does)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path}: private key is accessible by group/others (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {path}"
        )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc}") from None


def load_age_identities(path: Path) -> list[AgeIdentity]:
    """Read an age identity file (as written by age-keygen or `dockd keygen`)."""
    check_private_file(path)
    identities = []
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(AgeIdentity.parse(line))
        except KeyFileError as exc:
            raise KeyFileError(f"{path}:{number}: {exc}") from None
    if not identities:
        raise KeyFileError(f"{path}: no age identity in file")
    return identities


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key (PKCS#8 PEM, unencrypted) from a 0600 file."""
    check_private_file(path)
    try:
        key = serialization.load_pem_private_key(_read_text(path).encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key")
    return key


def load_verify_key(path: Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key (SubjectPublicKeyInfo PEM)."""
    try:
        key = serialization.load_pem_public_key(_read_text(path).encode())
    except ValueError as exc:
        raise KeyFileError(f"{path}: not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 public key")
    return key


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_private(path: Path, data: bytes) -> None:
    """Create a new private file with mode 0600 from the first byte on; never overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_public(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@dataclass(frozen=True)
class KeygenResult:
    """Paths `keygen` wrote, and where each one belongs."""

    server_signing_key: Path  # dockd serve --signing-key (stays on the ingest server)
    server_public_key: Path  # dock config: server.receipt_public_key
    age_identity: Path  # decrypts evidence: the evidence service / investigators, never a dock
    age_recipient: Path  # dock config: encryption.recipients
    dock_signing_key: Path | None = None  # dock config: dock.signing_key (signs manifests)
    dock_public_key: Path | None = None  # what the server / a verifier registers for this dock

    def files(self) -> list[Path]:
        optional = [p for p in (self.dock_signing_key, self.dock_public_key) if p is not None]
        return [
            self.server_signing_key,
            self.server_public_key,
            self.age_identity,
            self.age_recipient,
            *optional,
        ]


def _write_ed25519_pair(private_path: Path, public_path: Path) -> None:
    signing = Ed25519PrivateKey.generate()
    write_private(
        private_path,
        signing.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_public(public_path, public_key_pem(signing.public_key()))


def keygen(out_dir: Path) -> KeygenResult:
    """Write a server receipt-signing key pair, an age identity + recipient and the dock's
    manifest-signing key pair into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = KeygenResult(
        server_signing_key=out_dir / "server-receipt.key",
        server_public_key=out_dir / "server-receipt.pub",
        age_identity=out_dir / "identity.txt",
        age_recipient=out_dir / "recipient.txt",
        dock_signing_key=out_dir / "dock-signing.key",
        dock_public_key=out_dir / "dock-signing.pub",
    )
    existing = [p for p in result.files() if p.exists()]
    if existing:
        raise KeyFileError(
            f"refusing to overwrite existing key file(s): {', '.join(map(str, existing))}"
        )
    _write_ed25519_pair(result.server_signing_key, result.server_public_key)
    assert result.dock_signing_key is not None and result.dock_public_key is not None
    _write_ed25519_pair(result.dock_signing_key, result.dock_public_key)
    identity = AgeIdentity.generate()
    created = now_utc()
    write_private(
        result.age_identity,
        (
            f"# created: {created}\n"
            f"# public key: {identity.recipient.encode()}\n"
            f"{identity.encode()}\n"
        ).encode(),
    )
    write_public(result.age_recipient, (identity.recipient.encode() + "\n").encode())
    return result
