"""Live progress of clips in flight, for the demo's progress bars and the operator status.

Progress is not journalled (it changes every chunk and is re-derived from the server on resume);
this board is the in-memory view the UI and status read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class ClipProgress:
    clip_id: int
    camera: str
    bay: str
    name: str
    stage: str  # "hashing" | "uploading" | "confirming" | "wiping"
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)


class ProgressBoard:
    def __init__(self) -> None:
        self._clips: dict[int, ClipProgress] = {}
        self.bytes_uploaded = 0  # ciphertext bytes the server acknowledged, this process

    def stage(
        self, clip_id: int, camera: str, bay: str, name: str, stage: str, total: int
    ) -> ClipProgress:
        entry = ClipProgress(clip_id, camera, bay, name, stage, 0, total)
        self._clips[clip_id] = entry
        return entry

    def advance(self, clip_id: int, done: int) -> None:
        entry = self._clips.get(clip_id)
        if entry is not None:
            entry.done = done

    def remove(self, clip_id: int) -> None:
        self._clips.pop(clip_id, None)

    def snapshot(self) -> list[ClipProgress]:
        return list(self._clips.values())
