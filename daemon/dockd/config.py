"""Configuration: a TOML file into typed, validated settings.

Every error names the file, the key and what is wrong (`ConfigError`), and the CLI exits 78
(EX_CONFIG) on it, so a typo in /etc/dockd/dockd.toml is one clear line in the journal, not a
traceback. Relative paths are resolved against the config file's directory.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from dockd.crypto.keys import AgeRecipient, KeyFileError
from dockd.loopback import is_loopback
from dockd.transport.bandwidth import Window, parse_rate, parse_window
from dockd.transport.buffers import stream_reservation

ConfirmPolicy = Literal["receipt", "offset"]
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*$")
_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


class ConfigError(ValueError):
    """A configuration problem, already phrased for the operator."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}")
        self.source, self.key, self.problem = source, key, problem


@dataclass(frozen=True)
class DockSettings:
    id: str
    state_dir: Path
    # The dock's Ed25519 key (PKCS#8 PEM, 0600) that signs per-clip manifests. None: no
    # manifests are made (existing configs keep working; docs/CUSTODY.md).
    signing_key: Path | None = None


@dataclass(frozen=True)
class ServerSettings:
    url: str
    confirm: ConfirmPolicy
    receipt_public_key: Path | None
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    token_file: Path | None = None
    # Plain http:// to a non-loopback server: token, metadata and upload URLs travel in clear.
    allow_insecure: bool = False


@dataclass(frozen=True)
class UploadSettings:
    chunk_size: int = 8 << 20
    max_parallel: int = 4
    # Chunk buffers of all uploads together (transport/buffers.py): each streaming upload takes
    # 3 x chunk_size of it; uploads beyond that wait. Must hold at least one upload's share.
    memory_budget: int = 64 << 20
    retry_attempts: int = 6
    retry_initial: float = 0.5
    retry_max: float = 30.0
    request_timeout: float = 120.0
    failure_backoff: float = 30.0
    failure_backoff_max: float = 600.0
    # Starvation guard: at most this many evidence clips start in a row while other clips wait;
    # then the best other clip (oldest recording first) takes the next slot.
    evidence_streak: int = 4


@dataclass(frozen=True)
class CameraModel:
    name: str
    clip_globs: tuple[str, ...]
    sidecar: str | None = None
    vendor_id: str | None = None
    product_id: str | None = None
    serial_pattern: str | None = None


@dataclass(frozen=True)
class DiscoverySettings:
    scan_interval: float = 5.0
    settle_time: float = 2.0


@dataclass(frozen=True)
class StatusSettings:
    socket: Path | None = None
    metrics: str | None = None


DEFAULT_MOUNT_ROOT = Path("/run/dockd/bays")


@dataclass(frozen=True)
class UdevSettings:
    """USB cameras found through udev ([udev]); off unless enabled."""

    enabled: bool = False
    mount_root: Path = DEFAULT_MOUNT_ROOT
    # Filesystem types dockd will mount (named to the kernel, never probed).
    filesystems: tuple[str, ...] = ("vfat", "exfat")
    # ID_PATH of a dock port → the bay name operators see ("bay 3").
    bays: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BandwidthSettings:
    """The dock's upload cap ([bandwidth]); see transport/bandwidth.py for the timetable format."""

    limit: float | None = None  # bytes per second; None = unlimited
    timetable: tuple[Window, ...] = ()


@dataclass(frozen=True)
class Settings:
    source: Path
    dock: DockSettings
    server: ServerSettings
    recipients: tuple[AgeRecipient, ...]
    upload: UploadSettings
    camera_models: tuple[CameraModel, ...]
    discovery: DiscoverySettings
    bay_folder: Path | None
    status: StatusSettings = field(default_factory=StatusSettings)
    # Camera serial → officer, maintained by the station ([officers]); it outranks the camera.
    officers: Mapping[str, str] = field(default_factory=dict)
    udev: UdevSettings = field(default_factory=UdevSettings)
    bandwidth: BandwidthSettings = field(default_factory=BandwidthSettings)

    def model(self, name: str) -> CameraModel | None:
        return next((m for m in self.camera_models if m.name == name), None)


class _Reader:
    """Typed access to one TOML table, remembering the dotted key for error messages."""

    def __init__(self, source: Path, table: Mapping[str, Any], prefix: str) -> None:
        self.source, self.table, self.prefix = source, table, prefix
        self.used: set[str] = set()

    def _key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(str(self.source), self._key(name), problem)

    def get(
        self, name: str, kind: type | tuple[type, ...], default: Any = ..., *, what: str = ""
    ) -> Any:
        self.used.add(name)
        if name not in self.table:
            if default is ...:
                raise self.error(name, "is required")
            return default
        value = self.table[name]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.error(name, f"must be {what or _kind_name(kind)}, not a boolean")
        if not isinstance(value, kind):
            raise self.error(
                name, f"must be {what or _kind_name(kind)}, got {type(value).__name__}"
            )
        return value

    def text(self, name: str, default: Any = ...) -> Any:
        value = self.get(name, str, default)
        if isinstance(value, str) and not value.strip() and default is ...:
            raise self.error(name, "must not be empty")
        return value

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        value = float(self.get(name, (int, float), default, what="a number"))
        if value < minimum:
            raise self.error(name, f"must be >= {minimum}, got {value}")
        return value

    def integer(self, name: str, default: int, *, minimum: int = 0) -> int:
        value = self.get(name, int, default, what="an integer")
        if value < minimum:
            raise self.error(name, f"must be >= {minimum}, got {value}")
        return int(value)

    def size(self, name: str, default: int, *, minimum: int = 1) -> int:
        value = self.get(name, (int, str), default, what='a byte count (e.g. 8388608 or "8MiB")')
        if isinstance(value, str):
            match = _SIZE.match(value)
            if not match:
                raise self.error(name, f'must be a byte count like "8MiB", got {value!r}')
            value = int(match.group(1)) * _UNITS[match.group(2)]
        if value < minimum:
            raise self.error(name, f"must be >= {minimum} bytes, got {value}")
        return int(value)

    def path(self, name: str, default: Any = ...) -> Path | None:
        value = self.text(name, default)
        if value in (None, ""):
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.source.parent / path)

    def table_of(self, name: str, *, required: bool = False) -> _Reader:
        raw = self.get(name, dict, ... if required else {}, what="a table")
        return _Reader(self.source, raw, f"{self._key(name)}.")

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key (typo?)")


def _is_host_port(text: str) -> bool:
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})", text)
    return match is not None and 0 < int(match.group(2)) < 65536


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "a table",
        bool: "true or false",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _read_dock(root: _Reader) -> DockSettings:
    dock = root.table_of("dock", required=True)
    ident = dock.text("id")
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", ident):
        raise dock.error("id", "must be 1-64 characters of letters, digits, '.', '_' or '-'")
    state_dir = dock.path("state_dir")
    assert state_dir is not None
    signing_key = dock.path("signing_key", None)
    dock.reject_unknown()
    return DockSettings(ident, state_dir, signing_key)


def _read_officers(root: _Reader) -> dict[str, str]:
    table = root.table_of("officers")
    officers = {}
    for serial in list(table.table):
        name = table.text(serial)
        if not name.isprintable() or len(name) > 128:
            raise table.error(serial, "must be printable text of at most 128 characters")
        officers[serial] = name
    return officers


def _read_udev(root: _Reader) -> UdevSettings:
    table = root.table_of("udev")
    enabled = table.get("enabled", bool, False)
    mount_root = table.path("mount_root", str(DEFAULT_MOUNT_ROOT))
    assert mount_root is not None
    filesystems = table.get("filesystems", list, list(UdevSettings.filesystems), what="a list")
    if not filesystems or not all(
        isinstance(f, str) and re.fullmatch(r"[a-z0-9]{1,16}", f) for f in filesystems
    ):
        raise table.error("filesystems", 'must be a non-empty list of names like "vfat"')
    bays = table.table_of("bays")
    names = {}
    for port in list(bays.table):
        name = bays.text(port)
        if not name.isprintable() or len(name) > 64:
            raise bays.error(port, "must be printable text of at most 64 characters")
        names[port] = name
    table.reject_unknown()
    return UdevSettings(enabled, mount_root, tuple(filesystems), names)


def _read_server(root: _Reader) -> ServerSettings:
    server = root.table_of("server", required=True)
    url = server.text("url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise server.error(
            "url", f"must be an http(s) URL of the tus creation endpoint, got {url!r}"
        )
    allow_insecure = server.get("allow_insecure", bool, False, what="true or false")
    host = parts.hostname or ""
    if parts.scheme == "http" and not is_loopback(host) and not allow_insecure:
        raise server.error(
            "url",
            f"is plain http:// to {host}: the token, clip metadata and upload URLs would travel "
            "in clear; use https:// (or set [server] allow_insecure = true on a closed network)",
        )
    confirm = server.text("confirm", "receipt")
    if confirm not in ("receipt", "offset"):
        raise server.error("confirm", f'must be "receipt" or "offset", got {confirm!r}')
    public_key = server.path("receipt_public_key", None)
    if confirm == "receipt" and public_key is None:
        raise server.error(
            "receipt_public_key",
            'is required with confirm = "receipt" (the server\'s Ed25519 public key, PEM)',
        )
    settings = ServerSettings(
        url=url,
        confirm=confirm,
        receipt_public_key=public_key,
        ca_file=server.path("ca_file", None),
        client_cert=server.path("client_cert", None),
        client_key=server.path("client_key", None),
        token_file=server.path("token_file", None),
        allow_insecure=allow_insecure,
    )
    if (settings.client_cert is None) != (settings.client_key is None):
        raise server.error("client_cert", "client_cert and client_key go together")
    server.reject_unknown()
    return settings


def _read_recipients(root: _Reader) -> tuple[AgeRecipient, ...]:
    enc = root.table_of("encryption", required=True)
    raw = enc.get("recipients", list, what="a list of age1… recipients")
    recipients = []
    for index, item in enumerate(raw):
        if not isinstance(item, str):
            raise enc.error(f"recipients[{index}]", "must be a string (age1…)")
        try:
            recipients.append(AgeRecipient.parse(item))
        except KeyFileError as exc:
            raise enc.error(f"recipients[{index}]", str(exc)) from None
    if not recipients:
        raise enc.error(
            "recipients", "needs at least one age1… recipient (who can decrypt evidence)"
        )
    enc.reject_unknown()
    return tuple(recipients)


def _read_upload(root: _Reader) -> UploadSettings:
    up = root.table_of("upload")
    defaults = UploadSettings()
    settings = UploadSettings(
        chunk_size=up.size("chunk_size", defaults.chunk_size, minimum=64 << 10),
        max_parallel=up.integer("max_parallel", defaults.max_parallel, minimum=1),
        retry_attempts=up.integer("retry_attempts", defaults.retry_attempts, minimum=1),
        retry_initial=up.number("retry_initial", defaults.retry_initial),
        retry_max=up.number("retry_max", defaults.retry_max),
        request_timeout=up.number("request_timeout", defaults.request_timeout, minimum=1.0),
        failure_backoff=up.number("failure_backoff", defaults.failure_backoff),
        failure_backoff_max=up.number("failure_backoff_max", defaults.failure_backoff_max),
        evidence_streak=up.integer("evidence_streak", defaults.evidence_streak, minimum=1),
        memory_budget=up.size("memory_budget", defaults.memory_budget, minimum=1),
    )
    share = stream_reservation(settings.chunk_size)
    if settings.memory_budget < share:
        raise up.error(
            "memory_budget",
            f"must hold at least one upload's buffers (3 x chunk_size = {share} bytes), "
            f"got {settings.memory_budget}",
        )
    up.reject_unknown()
    return settings


def _read_bandwidth(root: _Reader) -> BandwidthSettings:
    table = root.table_of("bandwidth")
    raw_limit = table.get("limit", (str, int, float), "off", what='a rate (e.g. "2MiB" or "off")')
    try:
        limit = parse_rate(raw_limit)
    except ValueError as exc:
        raise table.error("limit", str(exc)) from None
    entries = table.get("timetable", list, [], what='a list of "DAYS HH:MM-HH:MM RATE" strings')
    windows = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise table.error(
                f"timetable[{index}]", 'must be a string like "Mon-Fri 07:00-09:00 2MiB"'
            )
        try:
            windows.append(parse_window(entry))
        except ValueError as exc:
            raise table.error(f"timetable[{index}]", str(exc)) from None
    table.reject_unknown()
    return BandwidthSettings(limit, tuple(windows))


def _read_models(root: _Reader) -> tuple[CameraModel, ...]:
    raw = root.get("camera_models", list, ..., what="an array of tables ([[camera_models]])")
    models = []
    for index, table in enumerate(raw):
        if not isinstance(table, dict):
            raise root.error(f"camera_models[{index}]", "must be a table")
        model = _Reader(root.source, table, f"camera_models[{index}].")
        globs = model.get("clip_globs", list, what="a list of glob strings")
        if not globs or not all(isinstance(g, str) and g and not g.startswith("/") for g in globs):
            raise model.error("clip_globs", "must be a non-empty list of relative glob strings")
        pattern = model.text("serial_pattern", None)
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise model.error("serial_pattern", f"is not a regular expression: {exc}") from None
        models.append(
            CameraModel(
                name=model.text("name"),
                clip_globs=tuple(globs),
                sidecar=model.text("sidecar", None) or None,
                vendor_id=model.text("vendor_id", None),
                product_id=model.text("product_id", None),
                serial_pattern=pattern,
            )
        )
        model.reject_unknown()
    if not models:
        raise root.error("camera_models", "needs at least one [[camera_models]] entry")
    return tuple(models)


def parse(source: Path, data: Mapping[str, Any]) -> Settings:
    root = _Reader(source, data, "")
    dock = _read_dock(root)
    server = _read_server(root)
    recipients = _read_recipients(root)
    upload = _read_upload(root)
    models = _read_models(root)
    disc = root.table_of("discovery")
    discovery = DiscoverySettings(
        scan_interval=disc.number("scan_interval", DiscoverySettings.scan_interval, minimum=0.05),
        settle_time=disc.number("settle_time", DiscoverySettings.settle_time),
    )
    disc.reject_unknown()
    bays = root.table_of("bays")
    bay_folder = bays.path("folder", None)
    bays.reject_unknown()
    status_table = root.table_of("status")
    status = StatusSettings(
        socket=status_table.path("socket", None),
        metrics=status_table.text("metrics", None) or None,
    )
    if status.metrics is not None and not _is_host_port(status.metrics):
        raise status_table.error(
            "metrics", f'must be "host:port" (e.g. "127.0.0.1:9464"), got {status.metrics!r}'
        )
    status_table.reject_unknown()
    officers = _read_officers(root)
    udev = _read_udev(root)
    bandwidth = _read_bandwidth(root)
    root.reject_unknown()
    return Settings(
        source,
        dock,
        server,
        recipients,
        upload,
        models,
        discovery,
        bay_folder,
        status,
        officers,
        udev=udev,
        bandwidth=bandwidth,
    )


def load(path: Path) -> Settings:
    """Read and validate a config file; raise ConfigError (exit 78) on any problem."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), "(file)", f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "(syntax)", str(exc)) from None
    return parse(path.resolve(), data)
