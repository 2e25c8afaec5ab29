"""`dockd` command line: run | serve | store | demo | keygen. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dockd import __version__, exitcodes


def _cmd_keygen(args: argparse.Namespace) -> int:
    from dockd.crypto.keys import KeyFileError, keygen

    try:
        result = keygen(Path(args.out))
    except KeyFileError as exc:
        print(f"dockd keygen: {exc}", file=sys.stderr)
        return exitcodes.FAILURE
    print(f"server receipt signing key (dockd serve --signing-key): {result.server_signing_key}")
    print(
        f"server receipt public key  (dock: server.receipt_public_key): {result.server_public_key}"
    )
    print(f"age identity, decrypts evidence (evidence service only): {result.age_identity}")
    print(f"age recipient (dock: encryption.recipients): {result.age_recipient}")
    print(f"dock manifest signing key (dock: dock.signing_key): {result.dock_signing_key}")
    print(f"dock public key (register with the server / verifiers): {result.dock_public_key}")
    return exitcodes.OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dockd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dockd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    keygen = sub.add_parser(
        "keygen", help="write the server's and the evidence service's key pairs"
    )
    keygen.add_argument("--out", required=True, metavar="DIR", help="directory for the key files")
    keygen.set_defaults(func=_cmd_keygen)

    from dockd.receiver import cli as receiver_cli

    serve = sub.add_parser("serve", help="run the reference tus ingest server")
    receiver_cli.add_arguments(serve)
    serve.set_defaults(func=receiver_cli.run)

    from dockd.receiver.retention import cli as store_cli

    store_cli.register(sub)

    try:  # the offload pipeline (run, demo) is optional until it lands
        from dockd import app_cli
    except ImportError:
        app_cli = None
    if app_cli is not None:
        app_cli.register(sub)

    from dockd.custody import verify as custody_verify

    verify = sub.add_parser(
        "verify", help="check stored evidence offline against its manifest and receipt"
    )
    custody_verify.add_arguments(verify)
    verify.set_defaults(func=custody_verify.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
