"""HTTP side of the tus endpoints: turn requests into `UploadCoordinator` calls and results into
responses. Handlers never touch storage: the coordinator does, through the store interface.

Routes (with the default base path)::

    /files/        OPTIONS (capabilities), POST (creation, creation-with-upload, and with a
                   store that implements `Concater`, concatenation: partial and final uploads)
    /files/<id>    HEAD (offset, receipt), PATCH (append a chunk), DELETE (termination), OPTIONS

`X-HTTP-Method-Override` replaces the request method everywhere (the spec says the actual
method MUST be ignored). Every response gets `Tus-Resumable` (see `app.py`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from dockd.crypto import receipt
from dockd.receiver.protocol import (
    CHECKSUM_ALGORITHMS,
    EXTENSIONS,
    OFFSET_CONTENT_TYPE,
    TUS_VERSION,
    ProtocolError,
    http_date,
    parse_checksum,
    parse_metadata,
    parse_size,
)
from dockd.receiver.quota import LIMIT_HEADER
from dockd.receiver.storage.api import (
    PARTIAL,
    CompletedUpload,
    Concater,
    CreationInfo,
    Tombstone,
    is_upload_id,
    new_upload_id,
    rfc3339,
)
from dockd.receiver.uploads import ChunkResult, Upload, UploadCoordinator

# Partial uploads one final upload may name (a dock sends one; a bound keeps the header sane).
MAX_PARTIALS = 256

# Request key for the authenticated dock id (None without token auth). Recent aiohttp warns on
# plain string keys; versions before RequestKey existed only have those.
DOCK_KEY: Any = web.RequestKey("dock", str) if hasattr(web, "RequestKey") else "dockd.dock"


def effective_method(request: web.BaseRequest) -> str:
    return request.headers.get("X-HTTP-Method-Override", request.method).strip().upper()


class TusHandlers:
    """The two tus resources; one instance per application."""

    def __init__(
        self,
        coordinator: UploadCoordinator,
        *,
        base_path: str,
        public_origin: str | None = None,
        max_size: int,
        max_metadata_bytes: int,
        owners_enforced: bool,
    ) -> None:
        self._coordinator = coordinator
        self._base_path = base_path
        # Behind a TLS-terminating proxy the request arrives as http://; Location must still
        # name the URL docks reach, or they would be sent to a clear-text upload URL.
        self._public_origin = public_origin
        self._max_size = max_size
        self._max_metadata_bytes = max_metadata_bytes
        self._owners_enforced = owners_enforced

    # -- routes --

    async def creation_endpoint(self, request: web.Request) -> web.StreamResponse:
        method = effective_method(request)
        if method == "OPTIONS":
            return self._options()
        if method == "POST":
            return await self._create(request)
        raise ProtocolError(405, f"{method} is not allowed here", {"Allow": "OPTIONS, POST"})

    async def upload_endpoint(self, request: web.Request) -> web.StreamResponse:
        method = effective_method(request)
        if method == "OPTIONS":
            return self._options()
        if method not in ("HEAD", "PATCH", "DELETE"):
            raise ProtocolError(
                405, f"{method} is not allowed here", {"Allow": "OPTIONS, HEAD, PATCH, DELETE"}
            )
        upload_id = request.match_info["upload_id"]
        if method == "PATCH":
            return await self._patch(request, upload_id)
        found = await self._find(request, upload_id)
        if method == "HEAD":
            return await self._head(found)
        return await self._delete(found)

    # -- OPTIONS --

    def _options(self) -> web.Response:
        # concatenation only where the store can make a final upload (storage.api.Concater).
        extensions = EXTENSIONS
        if isinstance(self._coordinator.store, Concater):
            extensions = (*EXTENSIONS, "concatenation")
        return web.Response(
            status=204,
            headers={
                "Tus-Version": TUS_VERSION,
                "Tus-Extension": ",".join(extensions),
                "Tus-Max-Size": str(self._max_size),
                "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
            },
        )

    # -- POST --

    async def _create(self, request: web.Request) -> web.Response:
        headers = request.headers
        if "Upload-Defer-Length" in headers:
            raise ProtocolError(400, "creation-defer-length is not supported: send Upload-Length")
        concat = headers.get("Upload-Concat")
        if concat is not None and not isinstance(self._coordinator.store, Concater):
            raise ProtocolError(400, "concatenation is not supported")
        if concat is not None and concat.strip() != PARTIAL:
            return await self._create_final(request, concat)
        length = parse_size("Upload-Length", headers.get("Upload-Length"))
        if length > self._max_size:
            raise ProtocolError(
                413,
                f"quota max-size: Upload-Length exceeds Tus-Max-Size {self._max_size}",
                {"Tus-Max-Size": str(self._max_size), LIMIT_HEADER: "max-size"},
            )
        metadata = parse_metadata(
            headers.get("Upload-Metadata"), max_bytes=self._max_metadata_bytes
        )
        dock = request.get(DOCK_KEY)
        if self._owners_enforced:
            _check_claimed_dock(metadata.as_text(), dock)
        with_body = request.content_type == OFFSET_CONTENT_TYPE
        if not with_body and _has_body(request):
            # An empty body with any type is fine (aiohttp's client sends octet-stream).
            raise ProtocolError(415, f"a creation body needs Content-Type: {OFFSET_CONTENT_TYPE}")
        checksum = parse_checksum(headers.get("Upload-Checksum")) if with_body else None
        if with_body and request.content_length is not None and request.content_length > length:
            raise ProtocolError(413, "body is longer than Upload-Length")
        info = CreationInfo(
            upload=new_upload_id(),
            length=length,
            metadata_header=metadata.header,
            metadata=metadata.as_text(),
            created=rfc3339(dt.datetime.now(dt.UTC)),
            dock=dock,
            concat=PARTIAL if concat is not None else "",
        )
        upload = await self._coordinator.create(info)
        result = ChunkResult(upload.offset, upload.expires, upload.completed)
        if with_body and upload.completed is None:
            try:
                result = await self._coordinator.apply_chunk(
                    upload,
                    request.content,
                    offset=0,
                    checksum=checksum,
                    content_length=request.content_length,
                )
            except ProtocolError:
                # The upload exists whatever happened to the body: report how far it got,
                # and the client continues with PATCH from there.
                result = ChunkResult(upload.offset, upload.expires, upload.completed)
        origin = self._public_origin or str(request.url.origin())
        location = origin + self._base_path + upload.id
        return web.Response(status=201, headers={"Location": location, **_progress_headers(result)})

    async def _create_final(self, request: web.Request, concat: str) -> web.Response:
        """`Upload-Concat: final;<url> <url>...`: the final upload, complete at once (its
        partials must be finished: concatenation-unfinished is not offered)."""
        headers = request.headers
        if "Upload-Length" in headers:
            raise ProtocolError(400, "a final upload must not carry Upload-Length")
        if _has_body(request):
            raise ProtocolError(400, "a final upload has no body")
        partials = self._partial_ids(concat)
        metadata = parse_metadata(
            headers.get("Upload-Metadata"), max_bytes=self._max_metadata_bytes
        )
        dock = request.get(DOCK_KEY)
        if self._owners_enforced:
            _check_claimed_dock(metadata.as_text(), dock)
        info = CreationInfo(
            upload=new_upload_id(),
            length=0,  # the sum of the partials' lengths: the coordinator's record holds it
            metadata_header=metadata.header,
            metadata=metadata.as_text(),
            created=rfc3339(dt.datetime.now(dt.UTC)),
            dock=dock,
            concat=concat.strip(),
        )
        record = await self._coordinator.concatenate(info, partials)
        origin = self._public_origin or str(request.url.origin())
        result = ChunkResult(record.length, 0.0, record)
        return web.Response(
            status=201,
            headers={
                "Location": origin + self._base_path + record.upload,
                **_progress_headers(result),
            },
        )

    def _partial_ids(self, concat: str) -> list[str]:
        """The upload ids named by `final;<url> <url>...` (absolute or relative URLs of this
        endpoint); 400 for anything else."""
        kind, _, urls = concat.partition(";")
        if kind.strip() != "final" or not urls.split():
            raise ProtocolError(400, 'Upload-Concat must be "partial" or "final;<url> <url>..."')
        ids = []
        for url in urls.split():
            path = urlsplit(url).path
            upload_id = path.removeprefix(self._base_path)
            if not path.startswith(self._base_path) or not is_upload_id(upload_id):
                raise ProtocolError(400, "Upload-Concat names a URL that is not an upload here")
            ids.append(upload_id)
        if len(ids) > MAX_PARTIALS:
            raise ProtocolError(400, f"at most {MAX_PARTIALS} partial uploads per final upload")
        return ids

    # -- HEAD --

    async def _head(self, found: Upload | CompletedUpload) -> web.Response:
        headers = {"Cache-Control": "no-store"}
        if isinstance(found, Upload):
            if found.offset == found.length:  # a completion that failed or was interrupted
                await self._coordinator.finish_pending_completion(found)
            if found.completed is not None:
                found_completed: CompletedUpload | None = found.completed
            else:
                found_completed = None
                self._coordinator.start_hash_rebuild(found)  # a PATCH will probably follow
                headers.update(
                    {
                        "Upload-Offset": str(found.offset),
                        "Upload-Length": str(found.length),
                        "Upload-Expires": http_date(found.expires),
                    }
                )
                if found.info.metadata_header:
                    headers["Upload-Metadata"] = found.info.metadata_header
                if found.info.concat:
                    headers["Upload-Concat"] = found.info.concat
        else:
            found_completed = found
        if found_completed is not None:
            headers.update(
                {
                    "Upload-Offset": str(found_completed.length),
                    "Upload-Length": str(found_completed.length),
                    receipt.HEADER: found_completed.receipt,
                }
            )
            if found_completed.metadata_header:
                headers["Upload-Metadata"] = found_completed.metadata_header
            if found_completed.concat:
                headers["Upload-Concat"] = found_completed.concat
        return web.Response(status=200, headers=headers)

    # -- PATCH --

    async def _patch(self, request: web.Request, upload_id: str) -> web.Response:
        if request.content_type != OFFSET_CONTENT_TYPE:
            raise ProtocolError(415, f"PATCH needs Content-Type: {OFFSET_CONTENT_TYPE}")
        offset = parse_size("Upload-Offset", request.headers.get("Upload-Offset"))
        checksum = parse_checksum(request.headers.get("Upload-Checksum"))
        found = await self._find(request, upload_id)
        if isinstance(found, CompletedUpload):
            if found.concat:
                raise ProtocolError(403, "a final upload cannot be patched")
            result = UploadCoordinator.chunk_on_completed(found, offset, request.content_length)
        else:
            result = await self._coordinator.apply_chunk(
                found,
                request.content,
                offset=offset,
                checksum=checksum,
                content_length=request.content_length,
            )
        return web.Response(status=204, headers=_progress_headers(result))

    # -- DELETE --

    async def _delete(self, found: Upload | CompletedUpload) -> web.Response:
        if isinstance(found, CompletedUpload):
            raise ProtocolError(
                403, "completed uploads are kept as evidence and cannot be terminated"
            )
        await self._coordinator.terminate(found)
        return web.Response(status=204)

    # -- lookup with ownership --

    async def _find(self, request: web.Request, upload_id: str) -> Upload | CompletedUpload:
        if not is_upload_id(upload_id):
            raise ProtocolError(404, "no such upload")
        found = await self._coordinator.find(upload_id)
        if found is None:
            raise ProtocolError(404, "no such upload")
        owner = found.info.dock if isinstance(found, Upload) else found.dock
        if self._owners_enforced and owner != request.get(DOCK_KEY):
            raise ProtocolError(404, "no such upload")  # do not reveal other docks' uploads
        if isinstance(found, Tombstone):
            raise ProtocolError(410, "upload expired")
        return found


def _check_claimed_dock(metadata: Mapping[str, str | None], dock: str | None) -> None:
    """Refuse metadata `dock` that names another dock than the authenticated one.

    The sidecar's `dock` is always the authenticated identity; a client claiming to be another
    dock is misconfigured or lying, and evidence must not carry a false origin (403).
    """
    if "dock" in metadata and metadata["dock"] != dock:
        claimed = metadata["dock"]
        shown = repr(claimed[:64]) if claimed is not None else "(not UTF-8)"
        raise ProtocolError(
            403,
            f"metadata dock {shown} is not the authenticated dock {dock!r}: "
            "[dock] id and the credentials must name the same dock",
        )


def _has_body(request: web.Request) -> bool:
    return bool(request.content_length) or (
        request.content_length is None and "chunked" in request.headers.get("Transfer-Encoding", "")
    )


def _progress_headers(result: ChunkResult) -> Mapping[str, str]:
    headers = {"Upload-Offset": str(result.offset)}
    if result.completed is not None:
        headers[receipt.HEADER] = result.completed.receipt
    else:
        headers["Upload-Expires"] = http_date(result.expires)
    return headers
