"""`dockd run` and `dockd demo`: registered on the `dockd` parser by `dockd.cli`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from dockd import exitcodes, logs


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    run = sub.add_parser("run", help="run the dock daemon (foreground; systemd runs this)")
    run.add_argument("--config", required=True, type=Path, metavar="PATH")
    run.add_argument("--log-format", choices=("json", "console", "auto"), default="auto")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="the whole chain on this machine, verified end to end")
    demo.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="keep everything here (DIR/identity.txt, DIR/store/, DIR/bays/ ...)",
    )
    demo.add_argument(
        "--clip-mib",
        type=int,
        default=8,
        metavar="N",
        help="size of the larger synthetic clips (default 8)",
    )
    demo.add_argument(
        "--store",
        metavar="SPEC",
        help="the receiver's store: default a file store in DIR/store/; "
        "s3:http(s)://HOST[:PORT]/BUCKET for an S3 gateway (scripts/demo-s3 starts a Ceph for it)",
    )
    from dockd.receiver.cli import add_s3_arguments

    add_s3_arguments(demo)
    # The demo's S3 endpoint may be plain http on loopback only (the rule dockd serve applies).
    demo.set_defaults(func=cmd_demo, allow_plaintext=False)


def cmd_run(args: argparse.Namespace) -> int:
    from dockd.app import Daemon, StartupError
    from dockd.config import ConfigError, load
    from dockd.journal import JournalError

    logs.configure(json={"json": True, "console": False, "auto": None}[args.log_format])
    try:
        settings = load(args.config)
        daemon = Daemon(settings)
    except (ConfigError, StartupError) as exc:
        print(f"dockd: configuration error: {exc}", file=sys.stderr)
        return exitcodes.CONFIG

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, daemon.reload)  # bandwidth limit and timetable
        await daemon.run(stop)

    try:
        asyncio.run(main())
    except JournalError as exc:
        print(f"dockd: journal error: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    except StartupError as exc:  # e.g. the metrics port or the control socket is taken
        print(f"dockd: configuration error: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    return exitcodes.OK


def cmd_demo(args: argparse.Namespace) -> int:
    from dockd.demo import run_demo

    store = None
    if args.store is not None:
        from dockd.receiver.cli import s3_options

        store = (args.store, s3_options(args))
    return run_demo(workdir=args.workdir, clip_mib=args.clip_mib, store=store)
