"""USB cameras through udev (pyudev): match, mount, dock; undock on removal; release when safe.

At start the monitor is opened first, then existing block devices are enumerated (so a camera
plugged in between the two is seen at least once; duplicates are ignored by sys path). The
monitor's netlink socket is read from the asyncio loop (`loop.add_reader`), and each uevent is
queued and handled in order by one task, so an add and a quick remove of the same device can
never be handled out of order.

A device is a camera's storage when it is a block partition (or a whole disk) carrying a
filesystem (`ID_FS_USAGE=filesystem`) whose `ID_VENDOR_ID`/`ID_MODEL_ID` match a configured
camera model (and its `serial_pattern`, if any). Everything udev reports came from the USB
descriptors of a device we do not trust: the serial is reduced to printable text, the mountpoint
name to [A-Za-z0-9._-], and the bay comes from the physical port (`ID_PATH`) via the
configuration, never from the device.

Lifecycle of one camera (`CameraDocks`): add → mount → `events.docked`; every second, once the
offloader says it is safe to remove (every clip WIPED or HELD), `events.undocked` → unmount →
log `camera.safe_to_remove` (the mountpoint is gone; the camera stays "released" until it is
unplugged, so it is not mounted again). A remove while docked (surprise removal) →
`events.undocked` first (the offloader cancels the reads; nothing is wiped, the journal keeps
the upload for when the serial comes back) → lazy unmount and remove the stale mountpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from dockd.config import CameraModel, UdevSettings
from dockd.devices.mount import BlockDevice, Mounter, MountError, MountSyscall
from dockd.devices.source import MAX_SERIAL_CHARS, CameraEvents, DockedCamera, new_session

log = structlog.get_logger()

RELEASE_POLL_SECONDS = 1.0
MAX_LOGGED = 1024  # remember this many "ignored" devices, so a hostile hub cannot grow it forever
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Candidate:
    """A block device that is a configured camera's storage."""

    sys_path: str
    serial: str
    model: str
    bay: str
    device: BlockDevice


def _clean(value: str | None, limit: int) -> str:
    text = "".join(ch for ch in (value or "") if ch.isprintable()).strip()
    return text[:limit]


def mountpoint_name(serial: str) -> str:
    name = _SAFE_NAME.sub("_", serial)[:MAX_SERIAL_CHARS]
    return name if name.strip(".") else "_" + name


def classify(
    props: Mapping[str, str], models: tuple[CameraModel, ...], bays: Mapping[str, str]
) -> Candidate | str:
    """A camera's storage, or why this device is not one (a short reason for the log)."""
    if props.get("SUBSYSTEM") != "block" or props.get("DEVTYPE") not in ("partition", "disk"):
        return "not a block partition or disk"
    vendor = props.get("ID_VENDOR_ID", "").lower()
    product = props.get("ID_MODEL_ID", "").lower()
    serial = _clean(props.get("ID_SERIAL_SHORT"), MAX_SERIAL_CHARS)
    matching = [
        m
        for m in models
        if m.vendor_id
        and m.vendor_id.lower() == vendor
        and (m.product_id is None or m.product_id.lower() == product)
    ]
    model = next(
        (m for m in matching if not m.serial_pattern or re.fullmatch(m.serial_pattern, serial)),
        None,
    )
    if model is None:
        return f"no configured camera model for {vendor or '?'}:{product or '?'}" + (
            f" serial {serial!r}" if matching else ""
        )
    if props.get("ID_FS_USAGE") != "filesystem" or not props.get("ID_FS_TYPE"):
        return "no filesystem on it"
    if not serial:
        return "camera without a serial (ID_SERIAL_SHORT)"
    node = props.get("DEVNAME", "")
    if not node.startswith("/dev/"):
        return "no device node"
    port = _clean(props.get("ID_PATH"), 256)
    bay = bays.get(port) or f"port {port or '?'}"
    return Candidate(
        sys_path=props.get("DEVPATH", node),
        serial=serial,
        model=model.name,
        bay=bay,
        device=BlockDevice(node=node, fs_type=props["ID_FS_TYPE"], name=mountpoint_name(serial)),
    )


@dataclass
class _Docking:
    candidate: Candidate
    camera: DockedCamera | None = None  # None once released (unmounted, "safe to remove")


@dataclass
class CameraDocks:
    """Docked USB cameras, by sys path: mount/dock, release when safe, undock/unmount on remove."""

    events: CameraEvents
    mounter: Mounter
    safe_to_remove: Callable[[str], bool] | None = None
    dockings: dict[str, _Docking] = field(default_factory=dict)

    async def add(self, candidate: Candidate) -> None:
        if candidate.sys_path in self.dockings:
            return  # seen by both the enumeration and the monitor
        for other in self.dockings.values():
            if other.candidate.serial == candidate.serial:  # a second partition, or a clone
                log.warning(
                    "udev.duplicate_serial",
                    serial=candidate.serial,
                    bay=candidate.bay,
                    docked_in=other.candidate.bay,
                )
                return
        try:
            root = await self.mounter.mount(candidate.device)
        except MountError as exc:
            log.error(
                "udev.mount_failed",
                serial=candidate.serial,
                bay=candidate.bay,
                device=candidate.device.node,
                error=str(exc),
            )
            return
        camera = DockedCamera(
            serial=candidate.serial,
            model=candidate.model,
            bay=candidate.bay,
            root=root,
            session=new_session(),
        )
        self.dockings[candidate.sys_path] = _Docking(candidate, camera)
        log.info(
            "udev.docked",
            serial=camera.serial,
            bay=camera.bay,
            model=camera.model,
            device=candidate.device.node,
            mountpoint=str(root),
            session=camera.session,
        )
        _notify(self.events.docked, camera)

    async def remove(self, sys_path: str) -> None:
        """The device at sys_path (or a parent of a docked partition) went away."""
        for path in [p for p in self.dockings if p == sys_path or p.startswith(sys_path + "/")]:
            docking = self.dockings.pop(path)
            candidate = docking.candidate
            if docking.camera is None:
                log.info("udev.removed", serial=candidate.serial, bay=candidate.bay)
                continue
            log.warning(
                "udev.surprise_removal",
                serial=candidate.serial,
                bay=candidate.bay,
                session=docking.camera.session,
            )
            _notify(self.events.undocked, docking.camera)
            await self._unmount(candidate, lazy=True)

    async def release_safe(self) -> None:
        """Unmount every camera whose clips are all WIPED or HELD, and say it is safe to remove."""
        if self.safe_to_remove is None:
            return
        for docking in list(self.dockings.values()):
            camera = docking.camera
            if camera is None:
                continue
            try:
                safe = self.safe_to_remove(camera.serial)
            except KeyError:  # the offloader has not seen it (yet)
                continue
            if not safe or docking.camera is not camera:
                continue
            docking.camera = None
            _notify(self.events.undocked, camera)
            if await self._unmount(docking.candidate, lazy=False):
                log.info("camera.safe_to_remove", serial=camera.serial, bay=camera.bay)

    def released(self) -> list[tuple[str, str]]:
        """(bay, serial) of cameras unmounted and safe to remove, still in their bays."""
        return sorted(
            (d.candidate.bay, d.candidate.serial)
            for d in self.dockings.values()
            if d.camera is None
        )

    async def close(self) -> None:
        """The daemon is stopping: detach the mounts (a restart mounts the cameras again)."""
        for path in list(self.dockings):
            docking = self.dockings.pop(path)
            if docking.camera is not None:
                await self._unmount(docking.candidate, lazy=True)

    async def _unmount(self, candidate: Candidate, *, lazy: bool) -> bool:
        try:
            await self.mounter.unmount(candidate.device, lazy=lazy)
        except MountError as exc:
            log.error(
                "udev.unmount_failed", serial=candidate.serial, bay=candidate.bay, error=str(exc)
            )
            return False
        return True


def _notify(callback: Callable[[DockedCamera], None], camera: DockedCamera) -> None:
    try:
        callback(camera)
    except Exception:  # the pipeline's problem, not a reason to stop following udev
        log.exception("udev.event_handler_failed", serial=camera.serial, bay=camera.bay)


class UdevSource:
    """CameraSource over udev block devices (see the module docstring)."""

    def __init__(
        self,
        settings: UdevSettings,
        models: tuple[CameraModel, ...],
        *,
        mounter: Mounter | None = None,
        safe_to_remove: Callable[[str], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.models = models
        self.mounter = mounter or MountSyscall(settings.mount_root, settings.filesystems)
        self.safe_to_remove = safe_to_remove
        self.docks: CameraDocks | None = None
        self._ignored: set[tuple[str, str]] = set()
        self._unmapped: set[str] = set()

    async def run(self, events: CameraEvents) -> None:
        import pyudev  # here, so hosts without libudev can still run bay folders

        loop = asyncio.get_running_loop()
        context = pyudev.Context()
        monitor = pyudev.Monitor.from_netlink(context)
        monitor.filter_by("block")
        monitor.start()
        queue: asyncio.Queue[tuple[str, dict[str, str]]] = asyncio.Queue()

        def readable() -> None:
            while True:
                try:
                    device = monitor.poll(timeout=0)
                except OSError as exc:  # e.g. ENOBUFS: events were lost; a rescan would help
                    log.warning("udev.monitor_error", error=str(exc))
                    return
                if device is None:
                    return
                queue.put_nowait((device.action or "", _props(device)))

        docks = CameraDocks(events, self.mounter, self.safe_to_remove)
        self.docks = docks
        loop.add_reader(monitor.fileno(), readable)
        releaser = asyncio.create_task(self._release_loop(docks), name="udev-release")
        try:
            for device in context.list_devices(subsystem="block"):
                await self._handle(docks, "add", _props(device))
            log.info("udev.watching", docked=len(docks.dockings))
            while True:
                action, props = await queue.get()
                await self._handle(docks, action, props)
        finally:
            loop.remove_reader(monitor.fileno())
            releaser.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await releaser
            await asyncio.shield(docks.close())

    async def _release_loop(self, docks: CameraDocks) -> None:
        while True:
            await asyncio.sleep(RELEASE_POLL_SECONDS)
            try:
                await docks.release_safe()
            except Exception:
                log.exception("udev.release_failed")

    async def _handle(self, docks: CameraDocks, action: str, props: dict[str, str]) -> None:
        try:
            if action == "remove":
                await docks.remove(props.get("DEVPATH", ""))
            elif action == "add":
                found = classify(props, self.models, self.settings.bays)
                if isinstance(found, Candidate):
                    self._log_unmapped(props, found)
                    await docks.add(found)
                else:
                    self._log_ignored(props, found)
        except Exception:  # one odd device must not stop the dock serving the other bays
            log.exception("udev.event_failed", action=action, device=props.get("DEVNAME"))

    def _log_ignored(self, props: Mapping[str, str], reason: str) -> None:
        key = (props.get("DEVPATH", ""), reason)
        if key in self._ignored or len(self._ignored) >= MAX_LOGGED:
            return
        self._ignored.add(key)
        log.info(
            "udev.ignored",
            device=props.get("DEVNAME"),
            vendor_id=_clean(props.get("ID_VENDOR_ID"), 8),
            product_id=_clean(props.get("ID_MODEL_ID"), 8),
            reason=reason,
        )

    def _log_unmapped(self, props: Mapping[str, str], found: Candidate) -> None:
        port = _clean(props.get("ID_PATH"), 256)
        if port in self.settings.bays or port in self._unmapped:
            return
        if len(self._unmapped) < MAX_LOGGED:
            self._unmapped.add(port)
            log.warning(
                "udev.unmapped_port",
                port=port,
                bay=found.bay,
                hint="add it to [udev] bays in the configuration to give it a bay name",
            )


def _props(device: Any) -> dict[str, str]:
    """All udev properties of a device, plus its DEVPATH (sys path without /sys), as text."""
    props = {str(k): str(v) for k, v in device.properties.items()}
    props.setdefault("DEVPATH", device.device_path)
    return props
