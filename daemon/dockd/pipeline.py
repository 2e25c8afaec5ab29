"""One clip through the state machine: hash → create upload → send → confirm → wipe.

With a server that offers tus concatenation the first three are one pass over the camera:
partial upload → stream (hash + encrypt + send) → final upload with the custody hash.

Each step ends in exactly one journal transition. Failures end in a state that says why:
QUARANTINED for unsafe or changed camera input (an operator must look), FAILED with a retry time
for anything transient (server, network), and no transition at all when the camera was pulled out
(the journal already says where to resume when it comes back).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import random
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dockd import camera_read
from dockd.config import Settings
from dockd.confirm import ConfirmationMismatch, NotConfirmed, confirm, recheck
from dockd.crypto import age
from dockd.custody.attest import Attestation
from dockd.devices.camera import (
    ClipReplaced,
    FileIdentity,
    UnsafeFile,
    display_path,
    stat_clip,
    wipe_clip,
)
from dockd.devices.source import DockedCamera
from dockd.devices.writers import WriterPresent
from dockd.dockhealth import StorageHealth, is_storage_error
from dockd.journal import ClipRecord, Journal, State
from dockd.metrics import DockMetrics
from dockd.progress import ProgressBoard
from dockd.reasons import reason_class
from dockd.transport import uploader

log = structlog.get_logger()

# How long to wait before asking a server again for a receipt it did not give.
CONFIRM_RECHECK_SECONDS = 300.0
# How long a wipe that cannot be done safely now waits before it is looked at again.
WIPE_RECHECK_SECONDS = 60.0
# I/O errors of a camera being pulled out (or failing): retried this many times, then quarantined.
CAMERA_IO_ERRORS = (errno.EIO, errno.ENODEV, errno.ENXIO, errno.ESTALE, errno.ENOTCONN)
CAMERA_IO_RETRIES = 5
# Steps one task may take: the longest honest way (one loss included) is ten; more is a bug.
MAX_STEPS = 12
# How far along each working state is: a step that lands further back is the server losing an
# upload (forget_partial, forget_upload), which sends the clip back to be read or sent again.
_PROGRESS = {
    State.DISCOVERED: 0,
    State.STREAMING: 1,
    State.HASHED: 2,
    State.UPLOADING: 3,
    State.UPLOADED: 4,
    State.CONFIRMED: 5,
}


class Superseded(ClipReplaced):
    """Re-hashed at the wipe: the file at the clip's path holds other bytes than were confirmed."""


class WipeDeferred(Exception):
    """The clip is confirmed, but removing it from the camera cannot be done safely now."""


class UploadLostAgain(uploader.UploadError):
    """The server lost the clip's upload again, right after it was made anew: a server that
    expires or loses uploads at once. The clip waits the failure back-off instead of being read
    and sent again in a loop."""


def _went_back(before: State, after: State) -> bool:
    """Whether a step sent the clip back to an earlier state (its upload was lost)."""
    return after in _PROGRESS and before in _PROGRESS and _PROGRESS[after] < _PROGRESS[before]


@dataclass
class PipelineContext:
    settings: Settings
    journal: Journal
    client: uploader.Uploader  # transport/tus.TusClient in production
    server_key: Ed25519PublicKey | None
    progress: ProgressBoard
    dock_key: Ed25519PrivateKey | None = None  # signs manifests at CONFIRMED (custody.attest)
    metrics: DockMetrics = field(default_factory=DockMetrics)
    health: StorageHealth = field(init=False)  # the dock's own disk (journal): full or failing
    # Ask for a scan of this camera now (the offloader sets it): a superseded clip's new content
    # must be found before the camera can read safe.
    rescan_camera: Callable[[str], object] = field(default=lambda _serial: None)
    # Signs, keeps and sends each CONFIRMED clip's manifest; built from the fields above if None.
    attestation: Attestation | None = None

    def __post_init__(self) -> None:
        self.health = StorageHealth(self.settings.dock.state_dir, self.metrics)
        if self.attestation is None:
            self.attestation = Attestation(self.settings, self.journal, self.client, self.dock_key)


# A hostile camera can make paths of several KiB (escaped non-UTF-8 names grow 4x); servers cap
# Upload-Metadata (ours at 4 KiB), so a refused creation would block the clip forever.
MAX_METADATA_PATH = 512


def _bounded(text: str, raw: bytes) -> str:
    """`text` if short enough, else a prefix plus a hash of the raw path (still unique)."""
    if len(text) <= MAX_METADATA_PATH:
        return text
    digest = hashlib.sha256(raw).hexdigest()[:16]
    return f"{text[: MAX_METADATA_PATH - 24]}…sha256:{digest}"


def wire_metadata(clip: ClipRecord, dock_id: str) -> dict[str, str]:
    """The tus Upload-Metadata for a clip (keys documented in the README)."""
    path = display_path(clip.rel_path)
    metadata = {
        "filename": _bounded(PurePosixPath(path).name, clip.rel_path),
        "path": _bounded(path, clip.rel_path),
        "camera": clip.camera,
        "model": clip.model,
        "bay": clip.bay,
        "dock": dock_id,
        "sha256": clip.plaintext_sha256 or "",
        "size": str(clip.size),
        "recorded_at": clip.recorded_at,
        "evidence": "true" if clip.evidence else "false",
        "encryption": "age-v1",
    }
    for key in ("officer", "category"):
        value = clip.metadata.get(key)
        if isinstance(value, str) and value:
            metadata[key] = value
    return metadata


def _identity(clip: ClipRecord) -> FileIdentity:
    return FileIdentity(
        dev=clip.dev, ino=clip.ino, size=clip.size, mtime_ns=clip.mtime_ns, ctime_ns=clip.ctime_ns
    )


def _backoff(ctx: PipelineContext, attempts: int, hint: float | None) -> float:
    up = ctx.settings.upload
    wait = min(up.failure_backoff_max, up.failure_backoff * (2 ** min(attempts, 16)))
    wait = wait * (0.75 + random.random() / 2)  # noqa: S311 - jitter, not security
    return max(wait, hint or 0.0)


async def process(ctx: PipelineContext, clip_id: int, camera: DockedCamera) -> None:
    """Take one clip as far as it can go now. Cancellation (undock, shutdown) is always safe.

    A failure to write the dock's own state (journal full or failing) is the dock's condition,
    not the clip's: it is reported once to `ctx.health`, which pauses new work, and the clip is
    left exactly where its last committed transition put it.
    """
    try:
        await _process(ctx, clip_id, camera)
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        ctx.health.failed(exc)


async def _process(ctx: PipelineContext, clip_id: int, camera: DockedCamera) -> None:
    journal = ctx.journal
    clip = journal.get(clip_id)
    # Every event this clip's task logs (here and in the modules it calls) carries these keys.
    # The task runs in its own copy of the context (create_task), so nothing leaks to others.
    structlog.contextvars.bind_contextvars(clip=clip_id, camera=clip.camera, bay=camera.bay)
    metrics = ctx.metrics
    # No path: camera folders and file names can carry an officer's name (personal data stays
    # out of logs; `dockctl clips` shows paths to the station).
    bound = log.bind(clip=clip_id, camera=clip.camera, bay=camera.bay)
    stop = threading.Event()
    try:
        if clip.state is State.FAILED:
            clip = journal.resume_failed(clip_id)
            metrics.clip_retries.labels(metrics.failure_causes.pop(clip_id, "other")).inc()
        lost = 0  # steps that sent the clip back because the server lost its upload
        for _step in range(MAX_STEPS):
            before = clip.state
            if clip.state is State.DISCOVERED:
                if await ctx.client.supports_concatenation():
                    clip = await _open_partial(ctx, clip)
                else:  # two passes: hash first, then create the upload and send
                    clip = await _hash(ctx, clip, camera, stop)
            elif clip.state is State.STREAMING:
                clip = await _stream(ctx, clip, camera, stop)
            elif clip.state is State.HASHED and clip.partial_url is not None:
                clip = await _create_final(ctx, clip)
            elif clip.state is State.HASHED:
                clip = await _create(ctx, clip)
            elif clip.state is State.UPLOADING:
                clip = await _upload(ctx, clip, camera)
            elif clip.state is State.UPLOADED:
                clip = await _confirm(ctx, clip)
                if clip.state is State.UPLOADED:
                    return  # waiting for the server; the reason is noted
            elif clip.state is State.CONFIRMED:
                # Signs and keeps the manifest, then sends it; never blocks the wipe.
                assert ctx.attestation is not None  # set in __post_init__
                await ctx.attestation.attest(clip)
                clip = await _wipe(ctx, clip, camera, stop)
            else:
                return
            if _went_back(before, clip.state):
                lost += 1
                if lost > 1:  # the first loss is sent again at once (e.g. an expired partial)
                    raise UploadLostAgain(
                        f"the server lost this clip's upload again (back to {clip.state.value} "
                        f"from {before.value}); tried again after the back-off"
                    )
        # A bug: the offloader parks the clip with this reason (never a silent hot loop).
        raise RuntimeError(f"no progress after {MAX_STEPS} steps (state {clip.state.value})")
    except asyncio.CancelledError:
        stop.set()
        raise
    except (UnsafeFile, camera_read.ClipChangedError, ClipReplaced, ConfirmationMismatch) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        bound.warning("clip.quarantined", reason=reason)
        metrics.clips_quarantined.labels(reason_class(exc)).inc()
        if isinstance(exc, Superseded):
            journal.supersede(clip_id, reason)  # the new content is discovered as its own clip
            ctx.rescan_camera(clip.camera)
        else:
            await _quarantine(ctx, clip_id, reason)
    except NotConfirmed as exc:
        bound.warning("clip.not_confirmed", reason=str(exc))
        metrics.clips_failed.labels("no_receipt").inc()
        journal.note(clip_id, str(exc), time.time() + CONFIRM_RECHECK_SECONDS)
    except (WipeDeferred, WriterPresent) as exc:
        reason = str(exc)
        if isinstance(exc, WriterPresent):
            reason = f"confirmed, but not wiped: {exc}; the wipe is tried again"
        bound.warning("clip.wipe_deferred", reason=reason)
        journal.note(clip_id, reason, time.time() + WIPE_RECHECK_SECONDS)
    except uploader.UploadRefused as exc:
        # The server refuses this dock (credentials, a quota), so every clip gets the same
        # answer: retry at the slow back-off maximum, so a fixed token or a freed quota is still
        # picked up without an operator, and the reason says what to fix.
        wait = ctx.settings.upload.failure_backoff_max
        bound.warning("clip.refused", kind=exc.kind, reason=str(exc), retry_in=wait)
        metrics.clips_failed.labels(reason_class(exc)).inc()
        metrics.failure_causes[clip_id] = reason_class(exc)
        if len(metrics.failure_causes) > 10_000:  # clips parked for good: keep the map bounded
            metrics.failure_causes.pop(next(iter(metrics.failure_causes)))
        journal.mark_failed(clip_id, str(exc), time.time() + wait)
    except (uploader.UploadError, TimeoutError) as exc:
        hint = exc.retry_after if isinstance(exc, uploader.ServerUnavailable) else None
        current = journal.get(clip_id)
        wait = _backoff(ctx, current.attempts, hint)
        reason = (
            str(exc) if isinstance(exc, uploader.UploadError) else f"{type(exc).__name__}: {exc}"
        )
        bound.warning("clip.failed", reason=reason, retry_in=round(wait, 1))
        metrics.clips_failed.labels(reason_class(exc)).inc()
        metrics.failure_causes[clip_id] = reason_class(exc)
        if len(metrics.failure_causes) > 10_000:  # clips parked for good: keep the map bounded
            metrics.failure_causes.pop(next(iter(metrics.failure_causes)))
        journal.mark_failed(clip_id, reason, time.time() + wait)
    except OSError as exc:
        if is_storage_error(exc):
            raise  # the dock's own disk, not the camera: see process()
        if not camera.root.exists():
            bound.info("clip.interrupted", reason="camera storage went away")
            return
        current = journal.get(clip_id)
        if exc.errno in CAMERA_IO_ERRORS and current.attempts < CAMERA_IO_RETRIES:
            # A camera pulled out mid-read fails with EIO before udev reports the removal: that
            # is an interruption to retry (it resumes on re-dock), not unsafe input.
            reason = f"camera I/O error ({exc.strerror or exc}): unplugged or failing; retrying"
            bound.warning("clip.failed", reason=reason)
            journal.mark_failed(
                clip_id, reason, time.time() + _backoff(ctx, current.attempts, None)
            )
            return
        reason = f"unreadable on camera: {exc.strerror or exc}"
        bound.warning("clip.quarantined", reason=reason)
        metrics.clips_quarantined.labels("unreadable").inc()
        await _quarantine(ctx, clip_id, reason)
    finally:
        stop.set()
        ctx.progress.remove(clip_id)


async def _quarantine(ctx: PipelineContext, clip_id: int, reason: str) -> None:
    """Quarantine the clip; a partial upload it was streaming is ended on the server.

    What the partial holds will never be finished as it was read (the camera's file is not the
    one being streamed, or cannot be read), and an unfinished upload counts against the dock's
    quota on the server until it expires (days): a camera whose clips all fail mid-stream would
    otherwise stop every bay's offload. A release starts the clip again (the partial is gone).
    """
    clip = ctx.journal.quarantine(clip_id, reason)
    if clip.partial_url is None or clip.resume_state is not State.STREAMING:
        return
    try:
        await ctx.client.terminate(clip.partial_url)
    except (uploader.UploadError, TimeoutError) as exc:  # it expires on the server instead
        log.warning(
            "clip.partial_not_ended", clip=clip_id, upload=clip.partial_url, reason=str(exc)
        )
    else:
        log.info("clip.partial_ended", clip=clip_id, upload=clip.partial_url)


async def _hash(
    ctx: PipelineContext, clip: ClipRecord, camera: DockedCamera, stop: threading.Event
) -> ClipRecord:
    entry = ctx.progress.stage(
        clip.id, clip.camera, camera.bay, display_path(clip.rel_path), "hashing", clip.size
    )

    def on_progress(done: int) -> None:  # runs in the hashing thread
        entry.done = done

    prepared = await asyncio.to_thread(
        camera_read.prepare,
        camera.root,
        clip.rel_path,
        _identity(clip),
        ctx.settings.recipients,
        stop,
        on_progress,
        ctx.metrics.read_bytes.inc,  # thread-safe
    )
    log.info(
        "clip.hashed",
        clip=clip.id,
        camera=clip.camera,
        sha256=prepared.plaintext_sha256,
        size=clip.size,
    )
    return ctx.journal.mark_hashed(
        clip.id,
        plaintext_sha256=prepared.plaintext_sha256,
        ciphertext_sha256=prepared.ciphertext_sha256,
        ciphertext_length=prepared.ciphertext_length,
        age_header=prepared.age_header,
        secrets=prepared.secrets,
    )


async def _open_partial(ctx: PipelineContext, clip: ClipRecord) -> ClipRecord:
    """The one pass starts: fix the clip's age header and key, make the partial upload, and
    journal all three before a byte is read or sent (a resume makes identical ciphertext)."""
    header, secrets = age.new_encryption(ctx.settings.recipients)
    length = age.ciphertext_length(len(header), clip.size)
    url = await ctx.client.create_partial(length)
    log.info("clip.partial_created", clip=clip.id, camera=clip.camera, upload=url)
    return ctx.journal.mark_streaming(
        clip.id,
        partial_url=url,
        ciphertext_length=length,
        age_header=header,
        secrets=secrets.to_bytes(),
    )


def _upload_progress(
    ctx: PipelineContext, clip: ClipRecord, camera: DockedCamera, length: int
) -> Callable[[int], None]:
    """The bay's "uploading" bar for this clip, and the callback the uploader calls with each
    offset the server acknowledged: it advances the bar, the dock's byte count and the metric.
    Shared by the one pass and the two-pass upload."""
    entry = ctx.progress.stage(
        clip.id, clip.camera, camera.bay, display_path(clip.rel_path), "uploading", length
    )
    last = 0

    def on_progress(offset: int) -> None:
        nonlocal last
        if offset > last:
            ctx.progress.bytes_uploaded += offset - last
            ctx.metrics.uploaded(clip.camera, offset - last)
        last = entry.done = offset

    return on_progress


async def _stream(
    ctx: PipelineContext, clip: ClipRecord, camera: DockedCamera, stop: threading.Event
) -> ClipRecord:
    """Camera → plaintext SHA-256 → encrypt → ciphertext SHA-256 → PATCH to the partial upload,
    reading every byte once; a resume re-reads [0, server offset) to rebuild both hashes, and
    re-sends none of it. Ends with both hashes journaled (HASHED)."""
    assert clip.partial_url and clip.age_header is not None and clip.ciphertext_length is not None
    secrets = age.EncryptionSecrets.from_bytes(ctx.journal.secrets(clip.id))
    header, length, identity = clip.age_header, clip.ciphertext_length, _identity(clip)
    on_progress = _upload_progress(ctx, clip, camera, length)
    digests = camera_read.Digests()
    reread = 0

    def open_stream(start: int):
        nonlocal reread
        reread += camera_read.plaintext_before(len(header), start, clip.size)
        return camera_read.one_pass_stream(
            camera.root,
            clip.rel_path,
            identity,
            header,
            secrets,
            start,
            ctx.settings.upload.chunk_size,
            digests,
            ctx.metrics.read_bytes.inc,
            stop,
        )

    started = time.monotonic()
    try:
        await ctx.client.send(clip.partial_url, length, open_stream, on_progress)
    except uploader.UploadGone as exc:
        log.warning("clip.partial_gone", clip=clip.id, upload=clip.partial_url, reason=str(exc))
        return ctx.journal.forget_partial(clip.id, f"server lost the partial upload: {exc}")
    if digests.plaintext_sha256 is None:
        # The server held every byte already (stopped after the last PATCH was acknowledged,
        # before the hashes were journaled): read once more to hash, send nothing.
        reread += clip.size
        await asyncio.to_thread(
            camera_read.rebuild_digests,
            camera.root,
            clip.rel_path,
            identity,
            header,
            secrets,
            digests,
            ctx.metrics.read_bytes.inc,
            stop,
        )
    assert digests.plaintext_sha256 is not None and digests.ciphertext_sha256 is not None
    if reread:
        ctx.metrics.reread_bytes.inc(reread)
    log.info(
        "clip.streamed",
        clip=clip.id,
        camera=clip.camera,
        sha256=digests.plaintext_sha256,
        size=clip.size,
        reread=reread,
        seconds=round(time.monotonic() - started, 3),
    )
    return ctx.journal.mark_streamed(
        clip.id,
        plaintext_sha256=digests.plaintext_sha256,
        ciphertext_sha256=digests.ciphertext_sha256,
    )


async def _create_final(ctx: PipelineContext, clip: ClipRecord) -> ClipRecord:
    """The final upload of the clip's partial, with the full metadata (custody hash included):
    the server signs its receipt over the same bytes, so `_confirm` checks it as ever."""
    assert clip.partial_url is not None
    if not await ctx.client.supports_concatenation():
        # The server was replaced by one that makes no final uploads (the partial is of no use
        # to it): read and send the clip again, in two passes.
        log.warning("clip.partial_unusable", clip=clip.id, upload=clip.partial_url)
        return ctx.journal.forget_partial(clip.id, "the server no longer offers concatenation")
    metadata = wire_metadata(clip, ctx.settings.dock.id)
    try:
        url = await ctx.client.create_final([clip.partial_url], metadata)
    except uploader.UploadGone as exc:
        # Expired, or used by a final whose answer was lost: the bytes are read and sent again.
        log.warning("clip.partial_gone", clip=clip.id, upload=clip.partial_url, reason=str(exc))
        return ctx.journal.forget_partial(clip.id, f"server lost the partial upload: {exc}")
    if ctx.journal.get(clip.id).evidence != clip.evidence:
        # Flagged by an operator while the final was being made: the server was told otherwise
        # and the partial is used up, so the clip is sent again with the flag (rare; the final
        # without it stays on the server as a second copy).
        log.info("clip.flagged_during_create", clip=clip.id, abandoned=url)
        return ctx.journal.forget_partial(clip.id, "flagged as evidence while being created")
    log.info("clip.upload_created", clip=clip.id, camera=clip.camera, upload=url)
    return ctx.journal.mark_uploading(clip.id, url)


async def _create(ctx: PipelineContext, clip: ClipRecord) -> ClipRecord:
    assert clip.ciphertext_length is not None
    url = await ctx.client.create(clip.ciphertext_length, wire_metadata(clip, ctx.settings.dock.id))
    if ctx.journal.get(clip.id).evidence != clip.evidence:
        # Flagged by an operator while the creation was in flight: the server was told otherwise,
        # so make the upload again with the flag (the abandoned empty one expires on the server).
        log.info("clip.flagged_during_create", clip=clip.id, abandoned=url)
        clip = ctx.journal.get(clip.id)
        url = await ctx.client.create(
            clip.ciphertext_length, wire_metadata(clip, ctx.settings.dock.id)
        )
    log.info("clip.upload_created", clip=clip.id, camera=clip.camera, upload=url)
    return ctx.journal.mark_uploading(clip.id, url)


async def _upload(ctx: PipelineContext, clip: ClipRecord, camera: DockedCamera) -> ClipRecord:
    assert clip.upload_url and clip.age_header is not None and clip.ciphertext_length is not None
    secrets = age.EncryptionSecrets.from_bytes(ctx.journal.secrets(clip.id))
    header, length = clip.age_header, clip.ciphertext_length
    on_progress = _upload_progress(ctx, clip, camera, length)

    def open_stream(start: int):
        return camera_read.ciphertext_stream(
            camera.root,
            clip.rel_path,
            _identity(clip),
            header,
            secrets,
            start,
            ctx.settings.upload.chunk_size,
            ctx.metrics.read_bytes.inc,
        )

    try:
        await ctx.client.send(clip.upload_url, length, open_stream, on_progress)
    except uploader.UploadGone as exc:
        log.warning("clip.upload_gone", clip=clip.id, upload=clip.upload_url, reason=str(exc))
        return _forget_upload(ctx, clip, f"server lost the upload: {exc}")
    log.info("clip.uploaded", clip=clip.id, camera=clip.camera, bytes=length)
    return ctx.journal.mark_uploaded(clip.id)


def _forget_upload(ctx: PipelineContext, clip: ClipRecord, why: str) -> ClipRecord:
    """The server lost the clip's upload. Two passes: the same ciphertext goes to a new one. One
    pass: the lost upload is the final, which used its partial up, so the clip starts again
    (asking for a final of that partial would only find it gone too)."""
    if clip.partial_url is not None:
        return ctx.journal.forget_partial(clip.id, why)
    return ctx.journal.forget_upload(clip.id, why)


async def _confirm(ctx: PipelineContext, clip: ClipRecord) -> ClipRecord:
    assert clip.upload_url
    ctx.progress.stage(clip.id, clip.camera, clip.bay, display_path(clip.rel_path), "confirming", 1)
    try:
        state = await ctx.client.status(clip.upload_url)
    except uploader.UploadGone as exc:
        return _forget_upload(ctx, clip, f"server lost the finished upload: {exc}")
    record = confirm(ctx.settings.server.confirm, state, clip, ctx.server_key)
    confirmed = ctx.journal.mark_confirmed(clip.id, record)
    ctx.metrics.clips_confirmed.labels(record["policy"]).inc()
    ctx.metrics.last_confirmation.set(time.time())
    log.info(
        "clip.confirmed",
        clip=clip.id,
        camera=clip.camera,
        policy=record["policy"],
        upload=clip.upload_url,
    )
    return confirmed


async def _wipe(
    ctx: PipelineContext, clip: ClipRecord, camera: DockedCamera, stop: threading.Event
) -> ClipRecord:
    # Read back what the journal durably holds: the wipe acts on the committed record only.
    # From here to the first await nothing else runs: once the stage says "wiping", an
    # operator's hold is refused (control/api.py) rather than racing the unlink.
    clip = ctx.journal.get(clip.id)
    if clip.state is not State.CONFIRMED:
        return clip
    ctx.progress.stage(clip.id, clip.camera, camera.bay, display_path(clip.rel_path), "wiping", 1)
    recheck(clip, ctx.server_key)
    policy = (clip.confirmation or {}).get("policy")
    if ctx.settings.server.confirm == "receipt" and policy != "receipt":
        raise WipeDeferred(
            f'confirmed under the "{policy}" policy, but confirm = "receipt" is configured now: '
            "not wiped (hold the clip, or knowingly configure the weaker policy again)"
        )
    expected = _identity(clip)
    if clip.session != camera.session or await _changed_in_place(camera, clip, expected):
        # Re-docked since the clip was read (inode numbers are not comparable across mounts), or
        # changed in place (ctime moved: a rewrite, a chmod, a new link): prove the file is the
        # one uploaded by its content before removing it, and remove only the version re-read.
        try:
            current, digest = await asyncio.to_thread(
                camera_read.rehash, camera.root, clip.rel_path, stop, ctx.metrics.read_bytes.inc
            )
        except FileNotFoundError:
            return _missing(ctx, clip, camera)
        if digest != clip.plaintext_sha256 or current.size != clip.size:
            raise Superseded(
                "file on the camera is not the one uploaded (its content differs from the "
                "confirmed copy): not wiped; the server copy is kept, and the file on the camera "
                "is offloaded as a new version"
            )
        expected = current
    try:
        await asyncio.to_thread(wipe_clip, camera.root, clip.rel_path, expected)
    except FileNotFoundError:
        return _missing(ctx, clip, camera)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        # Quarantined, not retried blindly: an operator fixes the switch or the mount, then
        # releases the bay's clips in one go (`dockctl release --bay`).
        raise UnsafeFile(
            f"camera read-only ({exc.strerror}): the clip is stored and confirmed on the server "
            "but cannot be removed from the camera"
        ) from None
    log.info("clip.wiped", clip=clip.id, camera=clip.camera)
    return _wiped(ctx, clip)


def _missing(ctx: PipelineContext, clip: ClipRecord, camera: DockedCamera) -> ClipRecord:
    """The clip's file is not where it was read. Record it as wiped only if its directory is there,
    on the same file system as when it was read (e.g. a crash after our unlink and before the
    journal said WIPED); a missing directory or another file system (bay folder moved, storage
    unmounted, another partition, a reformatted card) is not evidence of a wipe: wait instead."""
    root = os.fsencode(camera.root)
    parent = os.path.join(root, os.path.dirname(clip.rel_path))
    try:
        same_fs = clip.session != camera.session or os.stat(root).st_dev == clip.dev
        directory_there = stat.S_ISDIR(os.lstat(parent).st_mode)
    except OSError:
        same_fs = directory_there = False
    if not (same_fs and directory_there):
        raise WipeDeferred(
            "the clip's directory is not on the camera's storage (moved, unmounted, another "
            "partition or a reformatted card?): not recorded as wiped; the server holds the "
            "confirmed copy"
        )
    log.info("clip.wiped", clip=clip.id, camera=clip.camera, note="already gone from the camera")
    return _wiped(ctx, clip, detail="file already missing from the camera (not unlinked now)")


def _wiped(ctx: PipelineContext, clip: ClipRecord, detail: str | None = None) -> ClipRecord:
    wiped = ctx.journal.mark_wiped(clip.id, detail=detail)
    ctx.metrics.clips_wiped.inc()
    ctx.metrics.clip_seconds.observe(max(wiped.updated_at - clip.discovered_at, 0.0))
    return wiped


async def _changed_in_place(camera: DockedCamera, clip: ClipRecord, expected: FileIdentity) -> bool:
    """Whether the file at the clip's path is no longer the version that was read (same docking).

    A path that is gone or unsafe now is left to `wipe_clip`, which refuses or reports it.
    """
    try:
        current = await asyncio.to_thread(stat_clip, camera.root, clip.rel_path)
    except (OSError, UnsafeFile):
        return False
    return bool(expected.differs_from(current))
