"""Where the S3 store is and how to talk to it: `S3Settings` (from `--store s3:URL/BUCKET` and the
S3 options) and `make_client`, the one place a boto3 client is configured.

Shared by the S3 store (`s3.py`) and `dockd store flag` (retention), so both speak to RGW the same
way. boto3 is imported only when a client is made: the file store needs no S3 package.

Client settings and why (docs/RECEIVER.md "S3 backend"):

* path-style addressing and a custom endpoint: RGW on a host name with no wildcard DNS;
* `request_checksum_calculation` / `response_checksum_validation` = "when_required": RGW 16.2
  neither checks nor returns `x-amz-checksum-*`, so they would cost CPU and prove nothing (the
  store sends Content-MD5 instead, which RGW does verify);
* a short connect timeout and a bounded read timeout: an unreachable gateway must become a 503
  to the dock within seconds, not a request hanging for a minute;
* botocore's "standard" retries with few attempts: a blip is retried, an outage is reported;
* a connection pool as large as the receiver's worker threads, so no thread waits for a socket.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dockd.crypto.keys import KeyFileError
from dockd.loopback import is_loopback

MiB = 1 << 20
MIN_PART_SIZE = 5 * MiB  # S3's floor for every part but the last
DEFAULT_PART_SIZE = 8 * MiB
MAX_PART_SIZE = 5 * 1024 * MiB  # S3's ceiling for one part
DEFAULT_REGION = "default"  # RGW's default zonegroup; any region name signs for it

# S3 bucket naming rules (lowercase DNS label-ish, 3-63 characters).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class S3ConfigError(ValueError):
    """The S3 store is misconfigured (`dockd serve` exits 78 with this message)."""


@dataclass(frozen=True)
class S3Settings:
    """Everything needed to reach the evidence bucket and the work bucket."""

    endpoint_url: str  # scheme://host[:port], no path
    bucket: str  # the evidence bucket (Object Lock, versioned)
    work_bucket: str  # per-upload state, staged tails, tombstones (plain)
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    region: str = DEFAULT_REGION
    part_size: int = DEFAULT_PART_SIZE
    connect_timeout: float = 2.0
    read_timeout: float = 30.0
    max_attempts: int = 3  # botocore "standard" mode counts the first try
    max_pool_connections: int = 64

    @classmethod
    def from_spec(
        cls,
        spec: str,
        *,
        credentials_file: Path | None = None,
        work_bucket: str | None = None,
        region: str = DEFAULT_REGION,
        part_size: int = DEFAULT_PART_SIZE,
        allow_plaintext: bool = False,
        environ: Mapping[str, str] | None = None,
        **tuning: Any,
    ) -> S3Settings:
        """Parse `s3:http(s)://HOST[:PORT]/BUCKET` (the `s3:` prefix optional) and load the
        credentials: from `credentials_file` (must be 0600) or AWS_ACCESS_KEY_ID /
        AWS_SECRET_ACCESS_KEY. Raises S3ConfigError (or KeyFileError for an unsafe file)."""
        endpoint_url, bucket = _parse_url(spec.removeprefix("s3:"), allow_plaintext)
        work = work_bucket if work_bucket is not None else f"{bucket}-work"
        _check_bucket(work, "--s3-work-bucket")
        if work == bucket:
            raise S3ConfigError("--s3-work-bucket must differ from the evidence bucket")
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise S3ConfigError(
                f"--s3-part-size must be between 5 MiB and 5 GiB, not {part_size} bytes"
            )
        if credentials_file is not None:
            access_key, secret_key = load_credentials_file(credentials_file)
        else:
            access_key, secret_key = _credentials_from_environment(
                os.environ if environ is None else environ
            )
        return cls(
            endpoint_url=endpoint_url,
            bucket=bucket,
            work_bucket=work,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            part_size=part_size,
            **tuning,
        )

    def describe(self) -> str:
        """For logs: where, never as whom."""
        return f"s3:{self.endpoint_url}/{self.bucket} (work bucket {self.work_bucket})"


def _parse_url(url: str, allow_plaintext: bool) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise S3ConfigError(f"--store s3:{url}: expected s3:http(s)://HOST[:PORT]/BUCKET")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise S3ConfigError(
            f"--store s3:{url}: no credentials, query or fragment in the URL "
            "(use --s3-credentials FILE or the environment)"
        )
    bucket = parts.path.strip("/")
    _check_bucket(bucket, "--store s3: bucket")
    if parts.scheme == "http" and not is_loopback(parts.hostname) and not allow_plaintext:
        raise S3ConfigError(
            f"--store s3:{url}: plain http to a non-loopback S3 endpoint would send evidence "
            "and signatures in clear; use https, or --allow-plaintext on a trusted network"
        )
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        raise S3ConfigError(f"--store s3:{url}: bad port") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{port}", bucket


def _check_bucket(name: str, what: str) -> None:
    if not _BUCKET.fullmatch(name) or ".." in name:
        raise S3ConfigError(
            f"{what} {name!r} is not a valid S3 bucket name "
            "(3-63 lowercase letters, digits, '.', '-')"
        )


def load_credentials_file(path: Path) -> tuple[str, str]:
    """Read `aws_access_key_id = ...` and `aws_secret_access_key = ...` lines (the AWS
    credentials-file keys; a `[section]` header and `#` comments are ignored). Refuses a file
    that group or others may access, as the signing key and journal.key are refused."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such S3 credentials file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read S3 credentials file: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path}: S3 credentials are accessible by group/others "
            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip().lower()] = value.strip()
    access_key = values.get("aws_access_key_id", "")
    secret_key = values.get("aws_secret_access_key", "")
    if not access_key or not secret_key:
        raise KeyFileError(
            f"{path}: needs aws_access_key_id = ... and aws_secret_access_key = ... lines"
        )
    return access_key, secret_key


def _credentials_from_environment(environ: Mapping[str, str]) -> tuple[str, str]:
    access_key = environ.get("AWS_ACCESS_KEY_ID", "")
    secret_key = environ.get("AWS_SECRET_ACCESS_KEY", "")
    if not access_key or not secret_key:
        raise S3ConfigError(
            "the S3 store needs credentials: --s3-credentials FILE (mode 0600), or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"
        )
    return access_key, secret_key


def make_client(settings: S3Settings) -> Any:
    """A boto3 S3 client for `settings` (thread-safe; share one per process)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise S3ConfigError("the S3 store needs boto3: pip install 'dockd[s3]'") from None
    config = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        retries={"mode": "standard", "max_attempts": settings.max_attempts},
        max_pool_connections=settings.max_pool_connections,
    )
    # A private session: boto3's default session is shared, lazily built and not thread-safe.
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        config=config,
    )
