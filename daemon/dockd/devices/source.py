"""The one interface every camera source (bay folders now, udev later) feeds into the pipeline.

A source watches for cameras, and calls `CameraEvents.docked` once per docking and
`CameraEvents.undocked` when that docking ends. Every docking gets a fresh random `session`, so a
camera pulled out and put back is a new session even with the same serial.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

MAX_SERIAL_CHARS = 64


@dataclass(frozen=True)
class DockedCamera:
    """A camera sitting in a bay, with its storage reachable under `root`."""

    serial: str  # camera serial (sanitised: printable, <= 64 chars)
    model: str  # camera model name, matched against configured models
    bay: str  # bay name operators understand ("bay 3")
    root: Path  # directory where the camera's storage is (mounted)
    session: str  # random id, new for every docking (a re-dock gets a new one)
    officer: str | None = None
    # Paths under `root` that belong to the dock, not the camera (the bay folder's identity
    # file): never taken as clips, whatever the model's globs say.
    reserved: frozenset[bytes] = frozenset()


def new_session() -> str:
    """A fresh docking session id (64 random bits, hex)."""
    return secrets.token_hex(8)


class CameraEvents(Protocol):
    """What a source tells the pipeline. Called on the event loop thread; must not block."""

    def docked(self, camera: DockedCamera) -> None: ...

    def undocked(self, camera: DockedCamera) -> None: ...


class CameraSource(Protocol):
    """Something that discovers cameras."""

    async def run(self, events: CameraEvents) -> None:
        """Run until cancelled. Bad input (a broken identity, a vanished device) is logged, never
        raised: one hostile camera must not stop the dock from serving the other bays."""
        ...
