"""The control API: HTTP/JSON on a Unix socket, for `dockctl` and the station desk.

Access control is the socket file: mode 0660, group `dockd` when that group exists (root and the
group's members may connect). Each connection's peer is read with SO_PEERCRED and every action is
recorded in the journal's transitions and the audit log with the operator (`control/actor.py`: the
kernel's uid, and what dockctl says of the person behind sudo), so a hold or a release can always
be traced to the person who asked.

Read:  GET /status, /bays (= /cameras), /clips[?camera=S], /clips/{id}, /queue, /progress, /server
Act:   POST /clips/{id}/hold?reason=TEXT[&force=1], /clips/{id}/release|retry[|flag],
       POST /clips/{id}/dismiss?reason=TEXT, POST /bays/{bay}/rescan|release (bay or serial)
Limit: GET /bandwidth; POST /bandwidth?rate=2MiB|off|config (config: back to the file's limit)
"""

from __future__ import annotations

import contextlib
import grp
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from dockd.control import actor, views
from dockd.journal import ClipRecord, Journal, JournalError, State
from dockd.metrics import DockMetrics, ServerTracker
from dockd.offloader import Offloader
from dockd.progress import ProgressBoard
from dockd.transport.bandwidth import Bandwidth, parse_rate

log = structlog.get_logger()

SOCKET_GROUP = "dockd"


@dataclass
class ControlContext:
    offloader: Offloader
    progress: ProgressBoard
    metrics: DockMetrics
    tracker: ServerTracker
    dock: str
    server_url: str
    bandwidth: Bandwidth | None = None

    @property
    def journal(self) -> Journal:
        return self.offloader.ctx.journal


def peer_of(request: web.Request) -> actor.Peer:
    """The connecting process' pid and uid from the kernel (SO_PEERCRED), not from anything it
    sent."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None or sock.family != socket.AF_UNIX:
        return actor.Peer(None, None)
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    return actor.Peer(pid, uid)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def actor_of(request: web.Request) -> str:
    """How a request's caller is recorded: the kernel's facts, and the client's claim beside."""
    peer = peer_of(request)
    claim = actor.claim_from_headers(request.headers)
    return actor.describe(peer, claim, loginuid=actor.login_uid(peer.pid))


# An operator's free-text reason: one printable line, bounded (it goes into the audit log).
MAX_REASON = 500


def _reason(request: web.Request, action: str) -> str:
    text = " ".join(request.query.get("reason", "").split())
    if not text:
        raise web.HTTPBadRequest(text=f"{action} needs a reason (--reason TEXT)")
    if len(text) > MAX_REASON or not text.isprintable():
        raise web.HTTPBadRequest(text=f"reason: at most {MAX_REASON} printable characters")
    return text


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _clip_id(request: web.Request) -> int:
    try:
        return int(request.match_info["clip"])
    except ValueError:
        raise web.HTTPBadRequest(text="clip id must be a number") from None


def create_app(ctx: ControlContext) -> web.Application:
    app = web.Application()

    async def status(_r: web.Request) -> web.Response:
        return _json(
            views.status_view(
                ctx.offloader,
                ctx.progress,
                ctx.metrics,
                ctx.tracker,
                dock=ctx.dock,
                server_url=ctx.server_url,
            )
        )

    async def bays(_r: web.Request) -> web.Response:
        return _json(views.bays_view(ctx.offloader, ctx.progress, ctx.metrics))

    async def clips(request: web.Request) -> web.Response:
        camera = request.query.get("camera")
        if camera:
            records = ctx.journal.clips_for_camera(camera, include_wiped=True)
        else:
            records = ctx.journal.all_clips()
        return _json([views.clip_view(c) for c in records])

    async def clip(request: web.Request) -> web.Response:
        clip_id = _clip_id(request)
        try:
            record = ctx.journal.get(clip_id)
        except JournalError:
            raise web.HTTPNotFound(text=f"no clip {clip_id}") from None
        history = [
            {"at": at, "from": before, "to": after, "actor": who, "detail": detail}
            for at, before, after, who, detail in ctx.journal.history(clip_id)
        ]
        return _json({**views.clip_view(record), "history": history})

    async def queue(_r: web.Request) -> web.Response:
        return _json(views.queue_view(ctx.offloader))

    async def progress(_r: web.Request) -> web.Response:
        return _json([views.progress_view(p) for p in ctx.progress.snapshot()])

    async def server(_r: web.Request) -> web.Response:
        return _json({"url": ctx.server_url, **ctx.tracker.as_dict()})

    def action(name: str, do: Callable[[int, str, web.Request], ClipRecord]) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            clip_id, who = _clip_id(request), actor_of(request)
            try:
                record = do(clip_id, who, request)
            except JournalError as exc:
                log.warning(f"operator.{name}_refused", clip=clip_id, actor=who, reason=str(exc))
                status = 404 if "no clip" in str(exc) or "nowhere" in str(exc) else 409
                return _json({"error": str(exc)}, status)
            ctx.metrics.operator_actions.labels(name).inc()
            log.info(f"operator.{name}", clip=clip_id, actor=who, state=record.state.value)
            ctx.offloader.wake()
            return _json(views.clip_view(record))

        return handle

    def hold(clip_id: int, who: str, request: web.Request) -> ClipRecord:
        reason = _reason(request, "hold")
        force = request.query.get("force") == "1"
        if any(p.clip_id == clip_id and p.stage == "wiping" for p in ctx.progress.snapshot()):
            # Its receipt is on disk and the unlink may be under way in a thread that a cancel
            # cannot stop: a hold now could claim a clip is kept that is already gone.
            raise JournalError(f"clip {clip_id} is being wiped from the camera: too late to hold")
        record = ctx.journal.hold(clip_id, actor=who, reason=reason, force=force)
        # The clip stops where it is, like an undock: the journal keeps every fact gathered.
        ctx.offloader.interrupt(clip_id)
        return record

    def release(clip_id: int, who: str, _request: web.Request) -> ClipRecord:
        return ctx.journal.release(clip_id, actor=who)

    def retry(clip_id: int, who: str, _request: web.Request) -> ClipRecord:
        record = ctx.journal.retry_now(clip_id, actor=who)
        ctx.metrics.clip_retries.labels("operator").inc()
        return record

    def dismiss(clip_id: int, who: str, request: web.Request) -> ClipRecord:
        reason = _reason(request, "dismiss")
        record = ctx.journal.get(clip_id)
        present = ctx.offloader.version_present(record)
        # Only a camera scan that shows this exact version gone counts. Even a confirmed clip:
        # a quarantine can mean the bytes at that version changed after confirmation (an
        # in-place rewrite), and closing the row would leave unstored bytes on the camera.
        if present is not False:
            why = (
                "that file version is still on the camera"
                if present
                else "its camera is not docked (or not fully scanned), so dockd cannot tell "
                "whether that file version is still on it"
            )
            state = "not confirmed by the server" if record.confirmation is None else "quarantined"
            raise JournalError(
                f"clip {clip_id} is {state} and {why}: not dismissed (fix the cause and "
                "`dockctl release` it, or `dockctl hold` it)"
            )
        return ctx.journal.dismiss(clip_id, actor=who, reason=reason)

    async def release_bay(request: web.Request) -> web.Response:
        """Release every QUARANTINED clip of a bay's camera, each with its own audit record.
        Rows whose file version left the camera are skipped: they are for `dismiss`."""
        target, who = request.match_info["bay"], actor_of(request)
        serial = next(
            (s for s, v in ctx.offloader.views.items() if target in (s, v.camera.bay)), None
        )
        if serial is None:
            return _json({"error": f"no camera docked in bay {target!r}"}, 404)
        released, skipped = [], []
        for clip in ctx.journal.clips_for_camera(serial):
            if clip.state is not State.QUARANTINED:
                continue
            if ctx.offloader.version_present(clip) is False:
                skipped.append({**views.clip_view(clip), "why": "file version no longer on camera"})
                continue
            record = ctx.journal.release(clip.id, actor=who)
            ctx.metrics.operator_actions.labels("release").inc()
            log.info("operator.release", clip=clip.id, actor=who, state=record.state.value)
            released.append(views.clip_view(record))
        ctx.offloader.wake()
        return _json({"camera": serial, "released": released, "skipped": skipped})

    async def rescan(request: web.Request) -> web.Response:
        target, who = request.match_info["bay"], actor_of(request)
        serial = next(
            (s for s, v in ctx.offloader.views.items() if target in (s, v.camera.bay)), None
        )
        if serial is None or not ctx.offloader.rescan(serial):
            return _json({"error": f"no camera docked in bay {target!r}"}, 404)
        ctx.metrics.operator_actions.labels("rescan").inc()
        log.info("operator.rescan", camera=serial, bay=target, actor=who)
        return _json({"camera": serial, "rescan": True})

    async def get_bandwidth(_r: web.Request) -> web.Response:
        if ctx.bandwidth is None:
            return _json({"error": "no bandwidth limiter in this daemon"}, 404)
        return _json(ctx.bandwidth.as_dict())

    async def set_bandwidth(request: web.Request) -> web.Response:
        if ctx.bandwidth is None:
            return _json({"error": "no bandwidth limiter in this daemon"}, 404)
        value, who = request.query.get("rate", "").strip(), actor_of(request)
        if value.lower() in ("config", "auto", "schedule"):
            ctx.bandwidth.clear_override()
        else:
            try:
                ctx.bandwidth.set_override(parse_rate(value))
            except ValueError as exc:
                return _json({"error": str(exc)}, 400)
        ctx.metrics.operator_actions.labels("bandwidth").inc()
        log.info("operator.bandwidth", rate=ctx.bandwidth.bucket.rate, value=value, actor=who)
        return _json(ctx.bandwidth.as_dict())

    app.router.add_get("/bandwidth", get_bandwidth)
    app.router.add_post("/bandwidth", set_bandwidth)
    app.router.add_get("/status", status)
    app.router.add_get("/bays", bays)
    app.router.add_get("/cameras", bays)  # a row per docked camera, keyed by bay and serial
    app.router.add_get("/clips", clips)
    app.router.add_get("/clips/{clip}", clip)
    app.router.add_get("/queue", queue)
    app.router.add_get("/progress", progress)
    app.router.add_get("/server", server)
    app.router.add_post("/clips/{clip}/hold", action("hold", hold))
    app.router.add_post("/clips/{clip}/release", action("release", release))
    app.router.add_post("/clips/{clip}/retry", action("retry", retry))
    flag = getattr(ctx.journal, "flag", None)
    if flag is not None:  # chain-of-custody flag (journal.flag), when the journal has it
        app.router.add_post(
            "/clips/{clip}/flag", action("flag", lambda cid, who, _r: flag(cid, actor=who))
        )
    app.router.add_post("/clips/{clip}/dismiss", action("dismiss", dismiss))
    app.router.add_post("/bays/{bay}/rescan", rescan)
    app.router.add_post("/bays/{bay}/release", release_bay)
    return app


def _restrict(path: Path) -> str | None:
    """Mode 0660 and group dockd (if it exists). Returns a note when the group is missing."""
    os.chmod(path, 0o660)
    try:
        gid = grp.getgrnam(SOCKET_GROUP).gr_gid
    except KeyError:
        return f"group {SOCKET_GROUP!r} does not exist: socket left in group {os.stat(path).st_gid}"
    try:
        os.chown(path, -1, gid)
    except PermissionError:
        return f"cannot give the socket to group {SOCKET_GROUP!r} (not root, not a member)"
    return None


def _prepare_path(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_socket():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a daemon that died
        return
    finally:
        probe.close()
    raise OSError(f"{path}: another dockd is already listening on this control socket")


async def serve_control(ctx: ControlContext, path: Path) -> web.AppRunner:
    """Listen on the Unix socket `path` (a stale socket file is replaced). cleanup() stops it."""
    _prepare_path(path)
    app = create_app(ctx)

    async def remove_socket(_app: web.Application) -> None:
        with contextlib.suppress(OSError):
            os.unlink(path)  # a stopped daemon leaves no socket behind: dockctl says "not running"

    app.on_cleanup.append(remove_socket)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # Created under a tight umask so there is no moment where others can connect.
    old = os.umask(0o117)
    try:
        await web.UnixSite(runner, str(path)).start()
    finally:
        os.umask(old)
    note = _restrict(path)
    log.info("control.listening", socket=str(path), note=note)
    return runner
