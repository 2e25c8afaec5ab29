"""`dockd serve`: run the reference ingest server until SIGTERM/SIGINT.

Prints one line on stdout once it listens (`dockd serve: listening on URL`), logs through
structlog on stderr, exits 0 after a graceful stop and 78 (EX_CONFIG) on a configuration or key
file error, with one message naming the culprit. Refuses to start anonymous or in clear text on a
network address unless told so explicitly (`exposure.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import resource
import signal
import socket
import ssl
import stat
import sys
from pathlib import Path
from typing import Any

import structlog

from dockd import exitcodes, logs
from dockd.crypto.keys import KeyFileError, load_signing_key
from dockd.receiver import exposure
from dockd.receiver.app import LISTEN_BACKLOG, ReceiverSettings, start
from dockd.receiver.auth import load_tokens
from dockd.receiver.connections import install_accept_error_limiter
from dockd.receiver.quota import Quotas
from dockd.receiver.retention import options as retention_options
from dockd.receiver.storage import open_store
from dockd.receiver.storage.api import StoreError, StoreUnavailable, UploadStore
from dockd.receiver.storage.s3_config import DEFAULT_PART_SIZE, DEFAULT_REGION

log = structlog.get_logger("dockd.receiver")

_SIZE = re.compile(r"([0-9]+)([KMGT]i?B?|B)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd]?)")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
DSN_ENVIRONMENT = "DOCKD_SHARED_STATE_DSN"


class ConfigError(ValueError):
    """A command-line value that cannot work (bad address, TLS files that do not load…)."""


def parse_size(text: str) -> int:
    """Bytes, with an optional binary suffix: 1099511627776, 1T, 256MiB, 512k."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1T, 256M, 4096)")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "")[:1].lower()]


def parse_duration(text: str) -> float:
    """Seconds, with an optional unit: 90, 90s, 15m, 12h, 7d."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a positive duration: {text!r} (e.g. 7d, 12h, 90)")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or :PORT (all interfaces)."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})|([^:\[\]]*):([0-9]{1,5})", text)
    if match is None:
        raise ConfigError(f"--listen must be HOST:PORT or [IPv6]:PORT, not {text!r}")
    host = match.group(1) if match.group(1) is not None else match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise ConfigError(f"--listen port out of range: {port}")
    return host, port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `dockd serve` options."""
    parser.add_argument(
        "--listen",
        required=True,
        metavar="HOST:PORT",
        help="address to serve on, e.g. 0.0.0.0:8443 (port 0: any free port)",
    )
    parser.add_argument(
        "--store",
        required=True,
        metavar="STORE",
        help="where uploads live: a directory, or file:DIR (created if missing), or "
        "s3:http(s)://HOST[:PORT]/BUCKET (an S3 / Ceph RGW bucket; see the --s3-* options)",
    )
    add_s3_arguments(parser)
    add_shared_arguments(parser)
    parser.add_argument(
        "--signing-key",
        required=True,
        type=Path,
        metavar="PATH",
        help="Ed25519 PEM key that signs receipts (mode 0600; `dockd keygen`)",
    )
    parser.add_argument(
        "--tokens",
        type=Path,
        metavar="FILE",
        help="'dock-id token' lines (mode 0600): require a bearer token",
    )
    parser.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="serve HTTPS with this certificate chain"
    )
    parser.add_argument(
        "--tls-key",
        type=Path,
        metavar="PEM",
        help="private key for --tls-cert (if not in the same file)",
    )
    parser.add_argument(
        "--client-ca",
        type=Path,
        metavar="PEM",
        help="require client certificates issued by this CA (needs --tls-cert)",
    )
    parser.add_argument(
        "--max-size",
        type=parse_size,
        default=1 << 40,
        metavar="BYTES",
        help="largest upload accepted, Tus-Max-Size (default 1T)",
    )
    parser.add_argument(
        "--expire-after",
        type=parse_duration,
        default=7 * 86400.0,
        metavar="DURATION",
        help="inactivity after which an unfinished upload expires (default 7d)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=parse_duration,
        default=60.0,
        metavar="DURATION",
        help="cut off a request body that stalls this long (default 60s)",
    )
    parser.add_argument(
        "--base-path",
        default="/files/",
        metavar="PATH",
        help="URL path of the creation endpoint (default /files/)",
    )
    parser.add_argument(
        "--public-origin",
        metavar="URL",
        help="scheme://host[:port] docks use, for Location behind a TLS-terminating proxy",
    )
    parser.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="serve without --tokens/--client-ca (refused unless --listen is loopback)",
    )
    parser.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="serve plain HTTP on a non-loopback address (behind a TLS-terminating proxy)",
    )
    parser.add_argument(
        "--max-uploads-per-dock",
        type=_positive_int,
        default=Quotas.max_uploads_per_dock,
        metavar="N",
        help=f"unfinished uploads one dock may hold (default {Quotas.max_uploads_per_dock})",
    )
    parser.add_argument(
        "--max-reserved-per-dock",
        type=parse_size,
        default=Quotas.max_reserved_per_dock,
        metavar="BYTES",
        help="sum of Upload-Length of one dock's unfinished uploads (default 2T)",
    )
    parser.add_argument(
        "--header-timeout",
        type=parse_duration,
        default=10.0,
        metavar="DURATION",
        help="close a connection whose request head is not complete after this (default 10s)",
    )
    parser.add_argument(
        "--keepalive-timeout",
        type=parse_duration,
        default=15.0,
        metavar="DURATION",
        help="close a kept-alive connection idle this long (default 15s)",
    )
    parser.add_argument(
        "--max-connections",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="concurrent connections, all clients together (default 1000)",
    )
    parser.add_argument(
        "--max-connections-per-address",
        type=_positive_int,
        default=64,
        metavar="N",
        help="concurrent connections from one client address (default 64)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    retention_options.add_arguments(parser)  # --retention-days, --audit-dir (S3 store)


def add_s3_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `--store s3:...` (ignored by the file store)."""
    parser.add_argument(
        "--s3-credentials",
        type=Path,
        metavar="FILE",
        help="S3 keys: 'aws_access_key_id = ...' and 'aws_secret_access_key = ...' lines "
        "(mode 0600); default: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment",
    )
    parser.add_argument(
        "--s3-work-bucket",
        metavar="BUCKET",
        help="plain bucket for upload state, staged tails and tombstones (default BUCKET-work)",
    )
    parser.add_argument(
        "--s3-region",
        default=DEFAULT_REGION,
        metavar="NAME",
        help=f"region to sign requests for (default {DEFAULT_REGION!r}, RGW's zonegroup)",
    )
    parser.add_argument(
        "--s3-part-size",
        type=parse_size,
        default=DEFAULT_PART_SIZE,
        metavar="BYTES",
        help="multipart part size, at least 5M (default 8M); bytes short of a part are staged "
        "in the work bucket at each commit",
    )


def add_shared_arguments(parser: argparse.ArgumentParser) -> None:
    """Multi-node mode: several `dockd serve` over one S3 store, state in PostgreSQL."""
    parser.add_argument(
        "--shared-state",
        type=Path,
        metavar="FILE",
        help="run as one of several nodes: FILE (mode 0600) holds the PostgreSQL DSN of the "
        f"shared upload state (or set {DSN_ENVIRONMENT}); needs --store s3:...",
    )
    parser.add_argument(
        "--node-id",
        metavar="NAME",
        help="this node's name in the shared locks, [A-Za-z0-9_.-]{1,40} (default: host name)",
    )
    parser.add_argument(
        "--lease-seconds",
        type=parse_duration,
        metavar="DURATION",
        help="how long an upload's lock outlives a node that stopped renewing it: the takeover "
        "delay after a node dies (default 10s)",
    )


def shared_state_dsn(args: argparse.Namespace, environ: Any = os.environ) -> str | None:
    """The PostgreSQL DSN of multi-node mode, or None for the single-node default.

    Refuses (ConfigError) the multi-node options without multi-node mode, multi-node mode on
    anything but the S3 store, and a DSN file group or others may read (it holds a password).
    """
    dsn: str | None = None
    if args.shared_state is not None:
        path: Path = args.shared_state
        try:
            mode = path.stat().st_mode
            dsn = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the shared-state DSN file: {exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{path}: the DSN file is accessible by group/others "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
            )
        if not dsn:
            raise ConfigError(f"{path}: the shared-state DSN file is empty")
    elif environ.get(DSN_ENVIRONMENT):
        dsn = environ[DSN_ENVIRONMENT].strip()
    if dsn is None:
        if args.node_id is not None or args.lease_seconds is not None:
            raise ConfigError(
                f"--node-id and --lease-seconds need --shared-state (or {DSN_ENVIRONMENT})"
            )
        return None
    if not str(args.store).lower().startswith("s3:"):
        raise ConfigError("--shared-state (multi-node mode) needs --store s3:...")
    return dsn


def open_configured_store(args: argparse.Namespace) -> UploadStore:
    """The store `--store` names, wrapped for multi-node mode when a DSN is configured (which
    connects to PostgreSQL and migrates its schema: StoreUnavailable if it cannot)."""
    dsn = shared_state_dsn(args)
    store = open_store(
        args.store,
        s3_options=s3_options(args),
        retention=lambda work: retention_options.retention_from_args(args, work),
    )
    if dsn is None:
        return store
    from dockd.receiver.shared.store import open_shared_store  # needs the multinode extra
    from dockd.receiver.storage.s3 import S3Store

    assert isinstance(store, S3Store)
    return open_shared_store(
        store,
        dsn,
        node=args.node_id if args.node_id is not None else socket.gethostname().split(".")[0],
        lease_seconds=args.lease_seconds if args.lease_seconds is not None else 10.0,
    )


def s3_options(args: argparse.Namespace) -> dict[str, Any]:
    """`open_store`'s S3 keyword arguments from the command line."""
    return {
        "credentials_file": args.s3_credentials,
        "work_bucket": args.s3_work_bucket,
        "region": args.s3_region,
        "part_size": args.s3_part_size,
        # The S3 endpoint follows the listener's rule: plain HTTP off loopback only on request.
        "allow_plaintext": args.allow_plaintext,
    }


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.tls_cert is None:
        if args.tls_key is not None or args.client_ca is not None:
            raise ConfigError("--tls-key and --client-ca need --tls-cert")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{args.tls_cert}: cannot load TLS certificate/key: {exc}") from None
    if args.client_ca is not None:
        try:
            context.load_verify_locations(cafile=args.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{args.client_ca}: cannot load client CA: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def settings_from_args(args: argparse.Namespace) -> ReceiverSettings:
    """Load key files and build the settings; KeyFileError/ConfigError name the culprit."""
    try:
        return ReceiverSettings(
            store=open_configured_store(args),
            signing_key=load_signing_key(args.signing_key),
            base_path=args.base_path,
            max_size=args.max_size,
            expire_after=args.expire_after,
            idle_timeout=args.idle_timeout,
            tokens=load_tokens(args.tokens) if args.tokens is not None else None,
            client_cert_identity=args.client_ca is not None,
            public_origin=args.public_origin.rstrip("/") if args.public_origin else None,
            quotas=Quotas(
                max_uploads_per_dock=args.max_uploads_per_dock,
                max_reserved_per_dock=args.max_reserved_per_dock,
            ),
            header_timeout=args.header_timeout,
            keepalive_timeout=args.keepalive_timeout,
            max_connections=args.max_connections,
            max_connections_per_address=args.max_connections_per_address,
        )
    except ValueError as exc:
        if isinstance(exc, KeyFileError):
            raise
        raise ConfigError(str(exc)) from None


def check_exposure(args: argparse.Namespace, host: str) -> list[str]:
    """The startup policy (`exposure.py`), before any file is read or socket bound."""
    try:
        return exposure.check(
            exposure.Exposure(
                host=host,
                tls=args.tls_cert is not None,
                tokens=args.tokens is not None,
                client_certs=args.client_ca is not None,
                allow_anonymous=args.allow_anonymous,
                allow_plaintext=args.allow_plaintext,
            )
        )
    except exposure.ExposureError as exc:
        raise ConfigError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    """Entry point of `dockd serve` (wired in `dockd.cli`)."""
    logs.configure(level=args.log_level)
    try:
        host, port = parse_listen(args.listen)
        warnings = check_exposure(args, host)
        settings = settings_from_args(args)
        ssl_context = _ssl_context(args)
    except (KeyFileError, ConfigError) as exc:
        print(f"dockd serve: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    except StoreUnavailable as exc:  # PostgreSQL away at start: systemd restarts on 69
        print(f"dockd serve: shared state unavailable: {exc}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    for warning in warnings:
        log.warning("receiver.exposure", warning=warning)
    settings = _fit_descriptor_limit(settings)
    return asyncio.run(_serve(settings, host, port, ssl_context))


def _fit_descriptor_limit(settings: ReceiverSettings) -> ReceiverSettings:
    """Raise the soft RLIMIT_NOFILE to the hard one, and keep the connection cap below it.

    Running out of descriptors makes accept() fail and starves the store's own files; a cap
    that fits leaves the excess connections a clean 503 instead.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError):
            pass
    # Kept back: a quarter (at least 64) for the store's files, threads and logs, plus one
    # accept burst (asyncio accepts up to the listen backlog per loop pass, and a connection
    # refused by the cap holds its descriptor until the 503 is written).
    room = soft - max(64, soft // 4) - LISTEN_BACKLOG
    if room > 0 and settings.max_connections > room:
        log.warning(
            "receiver.connection_cap_lowered",
            requested=settings.max_connections,
            used=room,
            nofile=soft,
        )
        return dataclasses.replace(settings, max_connections=room)
    return settings


async def _serve(
    settings: ReceiverSettings, host: str, port: int, ssl_context: ssl.SSLContext | None
) -> int:
    install_accept_error_limiter(asyncio.get_running_loop())
    try:
        running = await start(settings, host, port, ssl_context)
    except StoreUnavailable as exc:
        # The store's backend (S3) is away: a temporary state, so not exit 78, which the
        # systemd unit never restarts.
        print(f"dockd serve: store unavailable: {exc}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    except StoreError as exc:
        print(f"dockd serve: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    except OSError as exc:
        where = f"{host}:{port}" if exc.filename is None else exc.filename
        print(f"dockd serve: cannot start on {where}: {exc.strerror or exc}", file=sys.stderr)
        return exitcodes.CONFIG
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"dockd serve: listening on {running.url}", flush=True)
    await stop.wait()
    log.info("receiver.stopping")
    await running.stop()
    close = getattr(running.store, "close", None)
    if callable(close):  # the multi-node store: stop renewing leases, close the pool
        await asyncio.to_thread(close)
    log.info("receiver.stopped")
    return exitcodes.OK
