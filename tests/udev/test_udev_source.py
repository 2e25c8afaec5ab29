"""The udev source against umockdev-described USB devices: dock, undock, ignore, enumerate."""

from __future__ import annotations

from pathlib import Path

from .conftest import CAMERA, CAMERA_PORT3, STICK, pytestmark, udev_config, write_config

__all__ = ["pytestmark"]


def stand_in(tmp_path: Path, *serials: str) -> Path:
    base = tmp_path / "standin"
    for serial in serials:
        (base / serial / "DCIM").mkdir(parents=True)
    return base


async def test_camera_appears_and_disappears(tmp_path, start_bed):
    config = write_config(tmp_path / "dockd.toml", udev_config(tmp_path))
    base = stand_in(tmp_path, "BWV0001234")
    bed = await start_bed("source", base, config)
    await bed.send(start=True)
    await bed.send(add=CAMERA)
    docked = (await bed.wait_line(lambda d: "docked" in d, what="docked"))["docked"]
    assert docked["serial"] == "BWV0001234"
    assert docked["bay"] == "bay 1"  # ID_PATH of port 1, mapped in [udev] bays
    assert docked["model"] == "bwv-x1"
    assert docked["root"] == str(base / "BWV0001234")

    await bed.send(unplug=CAMERA)
    undocked = (await bed.wait_line(lambda d: "undocked" in d, what="undocked"))["undocked"]
    assert undocked["session"] == docked["session"]
    assert undocked["bay"] == "bay 1"
    removal = await bed.wait_event("udev.surprise_removal")
    assert [e["serial"] for e in removal] == ["BWV0001234"]
    # The stale mount goes: a lazy unmount, since the device is already gone.
    assert [e["lazy"] for e in await bed.wait_event("mount.unmounted")] == [True]


async def test_non_matching_stick_is_ignored_and_logged_once(tmp_path, start_bed):
    config = write_config(tmp_path / "dockd.toml", udev_config(tmp_path))
    base = stand_in(tmp_path, "BWV0001234", "4C530001230918")
    bed = await start_bed("source", base, config)
    await bed.send(start=True)
    await bed.send(add=STICK)
    await bed.send(trigger=STICK)  # seen again (udevadm trigger): still ignored, logged once
    await bed.send(add=CAMERA)
    docked = (await bed.wait_line(lambda d: "docked" in d, what="docked"))["docked"]
    assert docked["serial"] == "BWV0001234"  # the first (and only) docking is the camera
    assert not [line for line in bed.lines if "docked" in line]
    ignored = [e for e in await bed.wait_event("udev.ignored", 2) if e["vendor_id"] == "0781"]
    # One line per device (the disk, and its partition), however often it comes back.
    assert len(ignored) == 2, ignored
    assert all("no configured camera model for 0781:5581" in e["reason"] for e in ignored)


async def test_camera_docked_before_start_is_found(tmp_path, start_bed):
    config = write_config(tmp_path / "dockd.toml", udev_config(tmp_path))
    base = stand_in(tmp_path, "BWV0001234", "BWV0009999")
    bed = await start_bed("source", base, config)
    await bed.send(add=CAMERA)  # before the source runs: only the enumeration can find it
    await bed.send(add=CAMERA_PORT3)
    await bed.send(start=True)
    first = (await bed.wait_line(lambda d: "docked" in d, what="docked"))["docked"]
    second = (await bed.wait_line(lambda d: "docked" in d, what="docked"))["docked"]
    bays = {first["serial"]: first["bay"], second["serial"]: second["bay"]}
    assert bays == {
        "BWV0001234": "bay 1",
        # Port 3 is not in [udev] bays: a readable fallback, and one warning that says so.
        "BWV0009999": "port pci-0000:00:14.0-usb-0:3:1.0-scsi-0:0:0:0",
    }
    unmapped = await bed.wait_event("udev.unmapped_port")
    assert [e["port"] for e in unmapped] == ["pci-0000:00:14.0-usb-0:3:1.0-scsi-0:0:0:0"]
