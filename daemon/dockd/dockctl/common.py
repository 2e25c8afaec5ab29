"""What every `dockctl` command shares: where the config, socket and journal are, and a clip action.

Its own module so the command modules (cli.py, audit_cli.py) both import it and never each other
the wrong way round.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dockd import exitcodes
from dockd.control.client import ApiError, ControlClient

DEFAULT_CONFIG = Path("/etc/dockd/dockd.toml")
# The socket's name beside the journal, for `dockctl --state-dir DIR` without a config.
SOCKET_NAME = "control.sock"


class NoSocket(Exception):
    """The configuration names no control socket."""


# ---- where things are ------------------------------------------------------------------------
def config_path(args: argparse.Namespace) -> Path:
    return args.config if args.config is not None else DEFAULT_CONFIG


def settings_of(args: argparse.Namespace) -> Any:
    from dockd.config import load

    if getattr(args, "_settings", None) is None:
        args._settings = load(config_path(args))
    return args._settings


def socket_path(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return args.socket
    if args.state_dir is not None and args.config is None:
        # `dockctl --state-dir DIR`: the socket beside the journal (as `dockd demo` puts it).
        return args.state_dir / SOCKET_NAME
    path = settings_of(args).status.socket
    if path is None:
        raise NoSocket(f"{config_path(args)}: no [status] socket configured (or give --socket)")
    return path


def control_client(args: argparse.Namespace) -> ControlClient:
    return ControlClient(socket_path(args))


def state_dir_of(args: argparse.Namespace) -> Path:
    if args.state_dir is not None:
        return args.state_dir
    return settings_of(args).dock.state_dir


def cmd_action(args: argparse.Namespace) -> int:
    query: dict[str, str | None] = {"reason": getattr(args, "reason", None)}
    if getattr(args, "force", False):
        query["force"] = "1"
    try:
        clip = control_client(args).action(args.clip, args.action, **query)
    except ApiError as exc:
        print(f"dockctl {args.action} {args.clip}: refused: {exc}", file=sys.stderr)
        return exitcodes.FAILURE
    print(f"clip {clip['id']} {clip['path']} ({clip['camera']}): now {clip['state']}")
    return exitcodes.OK
