"""A small synchronous client for the control socket (HTTP/JSON over a Unix socket).

Standard library only (http.client on an AF_UNIX socket): `dockctl` starts fast and needs no
event loop. Failures map to what the operator must do: the daemon is not running (exit 69), or
this account may not use the socket (exit 77).
"""

from __future__ import annotations

import getpass
import http.client
import json
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode


class DaemonUnavailable(Exception):
    """No daemon answers on the control socket."""


class AccessDenied(Exception):
    """The socket exists but this account may not connect (not root, not in group dockd)."""


class ApiError(Exception):
    """The daemon refused a request (e.g. a transition not allowed from the clip's state)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def operator_headers(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Who is behind this dockctl, as far as the client knows: sudo's SUDO_USER / SUDO_UID, and
    the login name. The daemon records them beside the uid the kernel reports, never instead."""
    from dockd.control import actor

    env = os.environ if environ is None else environ
    headers = {}
    if env.get("SUDO_USER"):
        headers[actor.SUDO_USER_HEADER] = env["SUDO_USER"]
    if env.get("SUDO_UID"):
        headers[actor.SUDO_UID_HEADER] = env["SUDO_UID"]
    try:
        login = os.getlogin()  # the terminal's login, unchanged by su or sudo
    except OSError:
        try:
            login = getpass.getuser()
        except (OSError, KeyError):
            login = ""
    if login:
        headers[actor.LOGIN_HEADER] = login
    return {k: v for k, v in headers.items() if v.isprintable() and len(v) <= 64}


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("dockd", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class ControlClient:
    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout

    def _request(self, method: str, target: str) -> Any:
        conn = _UnixConnection(self.path, self.timeout)
        try:
            try:
                conn.request(method, target, headers=operator_headers())
                response = conn.getresponse()
                body = response.read()
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise DaemonUnavailable(
                    f"dockd is not running (nothing listens on {self.path}: {exc.strerror})"
                ) from None
            except PermissionError:
                raise AccessDenied(
                    f"permission denied on {self.path}: run as root or as a member of group dockd"
                ) from None
            except (ConnectionError, TimeoutError, http.client.HTTPException) as exc:
                raise DaemonUnavailable(f"dockd did not answer on {self.path}: {exc}") from None
        finally:
            conn.close()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        if response.status >= 400:
            message = data.get("error") if isinstance(data, dict) else body.decode(errors="replace")
            raise ApiError(response.status, str(message).strip())
        return data

    def get(self, path: str, **query: str) -> Any:
        params = {k: v for k, v in query.items() if v is not None}
        return self._request("GET", path + (f"?{urlencode(params)}" if params else ""))

    def post(self, path: str, **query: str | None) -> Any:
        params = {k: v for k, v in query.items() if v is not None}
        return self._request("POST", path + (f"?{urlencode(params)}" if params else ""))

    # ---- the API ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return self.get("/status")

    def clips(self, camera: str | None = None) -> list[dict[str, Any]]:
        return self.get("/clips", camera=camera) if camera else self.get("/clips")

    def progress(self) -> list[dict[str, Any]]:
        return self.get("/progress")

    def action(self, clip_id: int, action: str, **query: str | None) -> dict[str, Any]:
        """hold (reason=, force="1"), release, retry, dismiss (reason=), flag."""
        return self.post(f"/clips/{int(clip_id)}/{quote(action, safe='')}", **query)

    def release_bay(self, bay: str) -> dict[str, Any]:
        return self.post(f"/bays/{quote(bay, safe='')}/release")

    def rescan(self, bay: str) -> dict[str, Any]:
        return self.post(f"/bays/{quote(bay, safe='')}/rescan")

    def bandwidth(self, rate: str | None = None) -> dict[str, Any]:
        """The limit in force; with `rate` ("2MiB", "off", "config") set it first."""
        if rate is None:
            return self.get("/bandwidth")
        return self.post(f"/bandwidth?{urlencode({'rate': rate})}")
