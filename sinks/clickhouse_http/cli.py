"""``driftline clickhouse serve``: the embedded store over ClickHouse's HTTP interface, in a
process of its own."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from typing import Any

__all__ = ["add_clickhouse_command"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
# The interface's defaults, repeated so that registering the parser imports neither chdb nor
# uvicorn (`driftline --help` stays fast); tests/core/test_cli.py checks they agree.
DEFAULT_MAX_BODY_MB = 256
DEFAULT_MAX_EXECUTION_TIME = 60.0


def add_clickhouse_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``driftline clickhouse serve`` on the CLI's subparsers.

    The handler is ``handler(args, settings)`` like the other commands.
    """
    parser = subparsers.add_parser(
        "clickhouse", help="the embedded ClickHouse store: serve it over ClickHouse's HTTP protocol"
    )
    actions = parser.add_subparsers(dest="clickhouse_action", required=True)
    serve = actions.add_parser("serve", help="serve the embedded store until stopped")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8123)
    serve.add_argument(
        "--user", action="append", metavar="NAME[:PASSWORD]", help="a read-write user"
    )
    serve.add_argument(
        "--readonly-user", action="append", metavar="NAME[:PASSWORD]", help="a readonly user"
    )
    serve.add_argument(
        "--users-file",
        help='JSON {"name": {"password": "...", "readonly": true}} (keeps passwords out of ps)',
    )
    serve.add_argument("--max-body-mb", type=int, default=DEFAULT_MAX_BODY_MB)
    serve.add_argument(
        "--max-execution-time",
        type=float,
        default=DEFAULT_MAX_EXECUTION_TIME,
        help="seconds a query may run unless it says otherwise (0: unbounded)",
    )
    serve.set_defaults(handler=_serve_command)
    return parser


def _serve_command(args: argparse.Namespace, settings: Any) -> int:
    if getattr(settings, "clickhouse_url", None):
        print("a ClickHouse server is configured (DRIFTLINE_CLICKHOUSE_URL): query it directly")
        return 2
    users = _load_users(args)
    if users is None and args.host not in _LOOPBACK:
        print("refusing to serve the passwordless default user beyond loopback: pass --user")
        return 2
    from ..embedded import EmbeddedStore
    from .server import serve_store

    store = EmbeddedStore(settings.chdb_path, settings.clickhouse_database)
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        handle = serve_store(
            store,
            args.host,
            args.port,
            users,
            max_body_bytes=args.max_body_mb * 1024 * 1024,
            max_execution_time=args.max_execution_time or None,
        )
        print(f"ClickHouse HTTP interface for {store.data_path} at {handle.url} (Ctrl-C stops)")
        stop.wait()
        handle.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        store.close()
    return 0


def _load_users(args: argparse.Namespace) -> dict[str, tuple[str, bool]] | None:
    users: dict[str, tuple[str, bool]] = {}
    if args.users_file:
        with open(args.users_file, encoding="utf-8") as f:
            for name, entry in json.load(f).items():
                users[name] = (str(entry.get("password", "")), bool(entry.get("readonly", False)))
    for spec in args.user or []:
        name, entry = _parse_user(spec, False)
        users[name] = entry
    for spec in args.readonly_user or []:
        name, entry = _parse_user(spec, True)
        users[name] = entry
    return users or None


def _parse_user(spec: str, readonly: bool) -> tuple[str, tuple[str, bool]]:
    name, _, password = spec.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"expected NAME[:PASSWORD], got {spec!r}")
    return name, (password, readonly)
