"""Audit records for what is not a clip transition: startup (configuration, keys), docking."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dockd.crypto.receipt import key_id
from dockd.devices.source import CameraEvents, DockedCamera

if TYPE_CHECKING:
    from dockd.config import Settings
    from dockd.journal import Journal

log = structlog.get_logger()


def audit_startup(
    journal: Journal,
    settings: Settings,
    server_key: Ed25519PublicKey | None,
    dock_key: Ed25519PrivateKey | None,
) -> None:
    """config.loaded (with the file's SHA-256: which configuration was in force) and key.loaded."""
    try:
        config_sha256: str | None = hashlib.sha256(settings.source.read_bytes()).hexdigest()
    except OSError:
        config_sha256 = None  # built in memory (demo, tests): there is no file
    journal.audit(
        "config.loaded",
        str(settings.source),
        detail={
            "sha256": config_sha256,
            "dock": settings.dock.id,
            "server": settings.server.url,
            "confirm": settings.server.confirm,
        },
    )
    if server_key is not None:
        journal.audit(
            "key.loaded",
            str(settings.server.receipt_public_key),
            detail={"role": "server receipt verification", "kid": key_id(server_key)},
        )
    if dock_key is not None:
        journal.audit(
            "key.loaded",
            str(settings.dock.signing_key),
            detail={"role": "dock manifest signing", "kid": key_id(dock_key.public_key())},
        )
    else:
        journal.audit(
            "key.missing",
            "dock.signing_key",
            outcome="failure",
            detail={"effect": "no per-clip manifests are signed (not configured)"},
        )
        log.warning("custody.no_dock_key", effect="per-clip manifests are off")


class AuditedEvents:
    """Sits between a camera source and the offloader: records each docking, then passes it on."""

    def __init__(self, inner: CameraEvents, journal: Journal) -> None:
        self._inner, self._journal = inner, journal

    def _record(self, event: str, camera: DockedCamera) -> None:
        try:
            self._journal.audit(
                event,
                f"camera {camera.serial}",
                component="source",
                detail={"bay": camera.bay, "model": camera.model, "session": camera.session},
            )
        except Exception as exc:  # auditing must not stop a docking
            log.error("audit.failed", audit_event=event, camera=camera.serial, reason=str(exc))

    def docked(self, camera: DockedCamera) -> None:
        self._record("camera.docked", camera)
        self._inner.docked(camera)

    def undocked(self, camera: DockedCamera) -> None:
        self._record("camera.undocked", camera)
        self._inner.undocked(camera)
