"""Sidecar metadata: read beside each clip, small and sane or ignored with a reason, never raising."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from camfs import put
from dockd.devices.camera import FoundClip, ScanLimits, scan_camera

DEFAULT_LIMITS = ScanLimits()


def scan_one(camera: Path, limits: ScanLimits = DEFAULT_LIMITS) -> FoundClip:
    (clip,) = scan_camera(camera, ["DCIM/**/*.MP4"], "{stem}.json", limits).clips
    return clip


def test_valid_sidecar_is_parsed(camera: Path) -> None:
    meta = {"recorded_at": "2026-11-21T08:00:00Z", "gps": [51.5, -0.1], "flags": {"evidence": True}}
    put(camera, b"DCIM/100/CLIP0001.MP4")
    put(camera, b"DCIM/100/CLIP0001.json", json.dumps(meta).encode())
    clip = scan_one(camera)
    assert (clip.sidecar, clip.sidecar_error) == (meta, None)


def test_missing_sidecar_is_no_error(camera: Path) -> None:
    put(camera, b"DCIM/CLIP.MP4")
    put(camera, b"DCIM/OTHER.json", b"{}")
    clip = scan_one(camera)
    assert (clip.sidecar, clip.sidecar_error) == (None, None)


def test_sidecar_of_a_hostile_name_is_found(camera: Path) -> None:
    put(camera, b"DCIM/\xff\nclip.MP4")
    put(camera, b"DCIM/\xff\nclip.json", b'{"ok": 1}')
    assert scan_one(camera).sidecar == {"ok": 1}


def test_sidecar_size_limit_is_exact(camera: Path) -> None:
    put(camera, b"DCIM/CLIP.MP4")
    body = b'{"pad": "' + b"x" * 80 + b'"}'
    put(camera, b"DCIM/CLIP.json", body)
    assert scan_one(camera, ScanLimits(max_sidecar_bytes=len(body))).sidecar is not None
    clip = scan_one(camera, ScanLimits(max_sidecar_bytes=len(body) - 1))
    assert clip.sidecar is None and "too big" in (clip.sidecar_error or "")


def test_huge_sidecar_is_refused(camera: Path) -> None:
    put(camera, b"DCIM/CLIP.MP4")
    put(camera, b"DCIM/CLIP.json", b'{"a": "' + b"x" * (10 * 1024 * 1024) + b'"}')
    clip = scan_one(camera)
    assert clip.sidecar is None and "too big" in (clip.sidecar_error or "")


def test_deeply_nested_sidecar_is_refused_without_recursion_error(camera: Path) -> None:
    put(camera, b"DCIM/CLIP.MP4")
    put(camera, b"DCIM/CLIP.json", b"[" * 100_000)
    clip = scan_one(camera, ScanLimits(max_sidecar_bytes=200_000))
    assert clip.sidecar is None and "nested deeper than 32" in (clip.sidecar_error or "")


def test_nesting_limit_counts_only_real_brackets(camera: Path) -> None:
    put(camera, b"DCIM/CLIP.MP4")
    put(camera, b"DCIM/CLIP.json", json.dumps({"note": "[[[[{{{{" * 100, "q": '"]['}).encode())
    clip = scan_one(camera, ScanLimits(max_sidecar_depth=1))
    assert clip.sidecar_error is None and clip.sidecar is not None
    put(camera, b"DCIM/CLIP.json", b'{"a": {"b": 1}}')
    assert "nested deeper than 1" in (
        scan_one(camera, ScanLimits(max_sidecar_depth=1)).sidecar_error or ""
    )


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"[1, 2, 3]", "not a JSON object"),
        (b'"just a string"', "not a JSON object"),
        (b"{not json", "not JSON"),
        (b"", "not JSON"),
        (b'{"a": NaN}', "not JSON"),
        (b'{"a": "\xff"}', "not UTF-8"),
    ],
)
def test_insane_sidecar_is_ignored_with_reason(camera: Path, content: bytes, error: str) -> None:
    put(camera, b"DCIM/CLIP.MP4")
    put(camera, b"DCIM/CLIP.json", content)
    clip = scan_one(camera)
    assert clip.sidecar is None and error in (clip.sidecar_error or "")


def test_sidecar_symlink_is_not_followed(camera: Path, tmp_path: Path) -> None:
    secret = put(tmp_path, b"secret.json", b'{"secret": true}')
    put(camera, b"DCIM/CLIP.MP4")
    os.symlink(os.path.join(os.fsencode(tmp_path), secret), camera / "DCIM/CLIP.json")
    clip = scan_one(camera)
    assert clip.sidecar is None and "symlink" in (clip.sidecar_error or "")


@pytest.mark.timeout(20)
def test_sidecar_fifo_is_not_read(camera: Path) -> None:
    put(camera, b"DCIM/CLIP.MP4")
    os.mkfifo(camera / "DCIM/CLIP.json")
    clip = scan_one(camera)
    assert clip.sidecar is None and "FIFO" in (clip.sidecar_error or "")
