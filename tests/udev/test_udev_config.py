"""[udev] configuration, and what the source makes of hostile udev properties (no umockdev)."""

from __future__ import annotations

from pathlib import Path

import pytest
from dockd import config
from dockd.config import CameraModel
from dockd.devices.udev import Candidate, classify, mountpoint_name

from .conftest import PORT1, udev_config, write_config

MODELS = (
    CameraModel("bwv-x1", ("DCIM/**/*.MP4",), vendor_id="2e8a", product_id="0001"),
    CameraModel("folder-only", ("*.MP4",)),
)


def props(**extra: str) -> dict[str, str]:
    base = {
        "SUBSYSTEM": "block",
        "DEVTYPE": "partition",
        "DEVNAME": "/dev/sdb1",
        "DEVPATH": "/devices/x/block/sdb/sdb1",
        "ID_VENDOR_ID": "2e8a",
        "ID_MODEL_ID": "0001",
        "ID_SERIAL_SHORT": "BWV0001234",
        "ID_PATH": PORT1,
        "ID_FS_USAGE": "filesystem",
        "ID_FS_TYPE": "vfat",
    }
    return {**base, **extra}


def test_udev_section_defaults_and_values(tmp_path):
    data = udev_config(tmp_path)
    data["udev"] = {"enabled": True, "filesystems": ["vfat"], "mount_root": "bays-mnt"}
    settings = config.load(write_config(tmp_path / "dockd.toml", data))
    assert settings.udev.enabled
    assert settings.udev.filesystems == ("vfat",)
    assert settings.udev.mount_root == tmp_path / "bays-mnt"  # relative to the config file
    assert settings.udev.bays == {PORT1: "bay 1"}
    del data["udev"]
    plain = config.load(write_config(tmp_path / "plain.toml", data, bays={}))
    assert not plain.udev.enabled
    assert plain.udev.mount_root == Path("/run/dockd/bays")


@pytest.mark.parametrize(
    ("udev", "bays", "key"),
    [
        ({"enabled": "yes"}, {}, "udev.enabled"),
        ({"filesystems": ["vfat; rm"]}, {}, "udev.filesystems"),
        ({"mount_pount": "/x"}, {}, "udev.mount_pount"),
        ({}, {PORT1: "bay\n1"}, f"udev.bays.{PORT1}"),
    ],
)
def test_udev_errors_name_the_file_and_key(tmp_path, udev, bays, key):
    data = udev_config(tmp_path)
    data["udev"] = udev
    path = write_config(tmp_path / "dockd.toml", data, bays=bays)
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert err.value.key == key
    assert str(path) in str(err.value)


def test_classify_matches_the_configured_model_and_maps_the_bay():
    found = classify(props(), MODELS, {PORT1: "bay 1"})
    assert isinstance(found, Candidate)
    assert (found.serial, found.model, found.bay) == ("BWV0001234", "bwv-x1", "bay 1")
    assert found.device.node == "/dev/sdb1" and found.device.fs_type == "vfat"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"ID_VENDOR_ID": "0781"}, "no configured camera model for 0781:0001"),
        ({"ID_FS_USAGE": "raid"}, "no filesystem"),
        ({"DEVTYPE": "usb_device", "SUBSYSTEM": "usb"}, "not a block partition"),
        ({"ID_SERIAL_SHORT": "\x1b\x07 "}, "without a serial"),
    ],
)
def test_classify_ignores_what_is_not_a_camera(extra, reason):
    found = classify(props(**extra), MODELS, {})
    assert isinstance(found, str) and reason in found


def test_hostile_serials_cannot_escape_the_mount_root():
    found = classify(props(ID_SERIAL_SHORT="../../etc\x07"), MODELS, {})
    assert isinstance(found, Candidate)
    assert found.serial == "../../etc"  # printable, shown as is
    assert found.device.name == ".._.._etc"  # the mountpoint: a plain name under mount_root
    assert mountpoint_name("..") == "_.."
    assert "/" not in mountpoint_name("a/b") and mountpoint_name("x" * 200) == "x" * 64
