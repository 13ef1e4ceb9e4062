"""``driftline api`` and ``driftline api-key``: the glue from Settings to the API.

Module-level imports stay inside driftline.api (components never import core at import time);
``driftline.settings`` arrives as the ``settings`` argument from driftline/cli.py.

Wiring (driftline/cli.py ``build_parser``)::

    from driftline.api.cli import add_api_command, add_api_key_command
    add_api_command(sub)
    add_api_key_command(sub)
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any

from .catalog import SCOPES

__all__ = ["add_api_command", "add_api_key_command", "serve", "api_key_handler"]

log = logging.getLogger(__name__)


def _topic() -> str:
    from driftline.schemas import topics

    return topics.RULES


def add_api_command(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("api", help="serve the alert-rule API (uvicorn)")
    parser.add_argument("--host", help="bind address (DRIFTLINE_API_HOST)")
    parser.add_argument("--port", type=int, help="port (DRIFTLINE_API_PORT)")
    parser.add_argument("--loglevel", default="info")
    parser.set_defaults(handler=serve)
    return parser


def _open_store(settings: Any) -> Any:
    """A ClickHouse server store when ``clickhouse_url`` is set; else None: in embedded mode
    the worker process owns chdb's data path and no other process may open it."""
    if not getattr(settings, "clickhouse_url", None):
        log.warning(
            "no DRIFTLINE_CLICKHOUSE_URL: alerts, history and dry-runs will answer 503 "
            "(the embedded store belongs to the worker process)"
        )
        return None
    from driftline.sinks import ServerStore

    # Does not connect: the store may come up after the API (see _connect_in_background).
    # No DDL on connect: the API's migrate() creates the database when its user may, and a
    # read-only user can still read (GET /v1/models/{model}/lineage and the other reads).
    return ServerStore(settings.clickhouse_url, settings.clickhouse_database, create_database=False)


def _control_plane(settings: Any, timeout: float = 30.0) -> Any:
    from .control_plane import ControlPlane, Unavailable

    control_plane = ControlPlane(settings.kafka_bootstrap, _topic()).start(timeout)
    if not control_plane.wait_ready(timeout):
        control_plane.close()
        raise Unavailable(f"control plane on {settings.kafka_bootstrap} did not catch up")
    return control_plane


def _connect_in_background(
    app: Any, control_plane: Any, stop: threading.Event, references: Any = None
) -> list[Any]:
    """Wait for the broker (control plane) and the store (migrations) in two threads, each as
    long as it takes; ``/ready`` answers 503 naming what is missing until both are done."""
    from driftline.sinks.resilience import wait_until

    def start_control_plane() -> None:
        wait_until(
            # Short attempts: a SIGTERM during one waits for it to end.
            lambda: control_plane.start(timeout=3.0),
            what=f"Kafka at {control_plane.bootstrap} (control-plane topic {control_plane.topic})",
            log=log,
            max_interval_s=5.0,
            stop=stop,
        )

    threads = [threading.Thread(target=start_control_plane, name="driftline-api-kafka",
                                daemon=True)]  # fmt: skip
    if references is not None:
        threads.append(
            threading.Thread(
                target=wait_until,
                args=(lambda: references.start(timeout=3.0),),
                kwargs={"what": f"Kafka at {references.bootstrap} (references topic "
                        f"{references.topic})", "log": log, "max_interval_s": 5.0, "stop": stop},
                name="driftline-api-references",
                daemon=True,
            )
        )  # fmt: skip
    readiness = app.state.store_readiness
    if readiness is not None:
        threads.append(
            threading.Thread(
                target=wait_until,
                args=(readiness.migrate,),
                kwargs={"what": f"ClickHouse {readiness.store!r}", "log": log,
                        "max_interval_s": 5.0, "stop": stop},
                name="driftline-api-clickhouse",
                daemon=True,
            )
        )  # fmt: skip
    for thread in threads:
        thread.start()
    return threads


def serve(args: argparse.Namespace, settings: Any) -> int:
    """Serve the API; the broker and the store may start before or after it."""
    import uvicorn

    from .config import ApiConfig
    from .control_plane import ControlPlane
    from .main import create_app
    from .references import ReferenceTopic
    from .versions import ModelRegistry

    logging.basicConfig(level=args.loglevel.upper())
    control_plane = ControlPlane(settings.kafka_bootstrap, _topic())
    references = ReferenceTopic(settings.kafka_bootstrap)
    model_registry = ModelRegistry(settings.kafka_bootstrap)
    store = _open_store(settings)
    stop = threading.Event()
    threads: list[Any] = []
    # uvicorn (0.29+) shuts down on SIGTERM/SIGINT, restores the handlers it found and raises
    # the signal again: with the default handler the process dies right there (-15) and the
    # `finally` below never closes the control plane and the store. Ours ends run() instead.
    previous = {sig: signal.signal(sig, _exit_on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        api_config = ApiConfig(
            create_tables=False,
            known_models=frozenset(settings.known_models),
            # the workers' defaults, to check and show a model's own monitoring settings over
            monitor_defaults=settings.monitor_settings(),
        )
        app = create_app(
            api_config, control_plane=control_plane, store=store, references=references,
            model_registry=model_registry,
        )  # fmt: skip
        threads = _connect_in_background(app, control_plane, stop, references)
        threads.append(_start_model_registry(model_registry, stop))
        threads[-1].start()
        config = uvicorn.Config(
            app,
            host=args.host or settings.api_host,
            port=args.port or settings.api_port,
            log_level=args.loglevel,
            # Requests still open after SIGTERM (an SSE feed) do not hold the exit up.
            timeout_graceful_shutdown=3,
        )
        # After uvicorn configured its loggers (Config does): probes every few seconds would
        # bury everything else in the access log; /ready's changes are logged by the waits.
        logging.getLogger("uvicorn.access").addFilter(_skip_probes)
        uvicorn.Server(config).run()
    except SystemExit:
        pass  # a signal after uvicorn's own shutdown (or before it started): close below
    finally:
        for sig in previous:  # a second signal while closing does not cut the closing short
            signal.signal(sig, signal.SIG_IGN)
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        control_plane.close()
        references.close()
        model_registry.close()
        if store is not None:
            store.close()
        log.info("stopped: control plane and store closed")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _start_model_registry(registry: Any, stop: threading.Event) -> threading.Thread:
    """Follow driftline.models.v1 once the broker answers (POST .../versions answers 503
    until then)."""
    from driftline.sinks.resilience import wait_until

    return threading.Thread(
        target=wait_until,
        args=(lambda: registry.start(timeout=3.0),),
        kwargs={"what": f"Kafka at {registry.bootstrap} (model versions)", "log": log,
                "max_interval_s": 5.0, "stop": stop},
        name="driftline-api-model-versions",
        daemon=True,
    )  # fmt: skip


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(0)


_PROBES = ("/health", "/ready", "/metrics")


def _skip_probes(record: logging.LogRecord) -> bool:
    """False for uvicorn's access lines of probes (args: client, method, path, ...)."""
    args = record.args
    if isinstance(args, tuple) and len(args) >= 3:
        return str(args[2]).split("?", 1)[0] not in _PROBES
    return True


def add_api_key_command(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("api-key", help="create, list and revoke API keys")
    actions = parser.add_subparsers(dest="api_key_action", required=True)
    create = actions.add_parser("create", help="create a key; prints it once")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--scopes", default="read", help=f"comma-separated subset of {','.join(SCOPES)}"
    )
    actions.add_parser("list", help="list keys (ids, names, scopes; never secrets)")
    revoke = actions.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    parser.set_defaults(handler=api_key_handler)
    return parser


def api_key_handler(args: argparse.Namespace, settings: Any) -> int:
    from . import crud
    from .control_plane import NotFound

    control_plane = _control_plane(settings)
    actor = "cli"
    try:
        if args.api_key_action == "create":
            scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
            try:
                token, record = crud.create_api_key(
                    control_plane=control_plane, name=args.name, scopes=scopes, actor=actor
                )
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(f"id:     {record.id}\nscopes: {','.join(record.data['scopes'])}")
            print(f"key:    {token}\n(store it now: only its hash is kept)")
        elif args.api_key_action == "list":
            for record in control_plane.list("apikey"):
                print(json.dumps({"id": record.id, "name": record.data["name"],
                                  "scopes": record.data["scopes"],
                                  "created_at": record.created_at}))  # fmt: skip
        elif args.api_key_action == "revoke":
            try:
                crud.revoke_api_key(control_plane=control_plane, key_id=args.key_id, actor=actor)
            except NotFound:
                print(f"error: no API key {args.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
    finally:
        control_plane.close()
    return 0
