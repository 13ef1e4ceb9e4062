"""Settings -> a running stream worker (the glue the ``driftline worker`` command uses)."""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from driftline.admin import ensure_topics
from driftline.detectors.budget import FalseAlarmBudget
from driftline.detectors.monitor import MonitorConfig
from driftline.schemas import Codec, ConfluentRegistry
from driftline.settings import Settings
from driftline.sinks.base import StoreUnavailable
from driftline.sinks.clickhouse_http import serve_store
from driftline.sinks.embedded import EmbeddedStore
from driftline.sinks.resilience import wait_until
from driftline.sinks.store import Store, open_store
from driftline.store_endpoint import clear_endpoint, record_endpoint
from driftline.streams.app import Worker, WorkerConfig
from driftline.streams.estimates import EstimateConfig
from driftline.streams.processor import ProcessorConfig, sequential_specs
from driftline.streams.versions import VerdictConfig

log = logging.getLogger("driftline.worker")


def monitor_config(settings: Settings) -> MonitorConfig | None:
    """The data-drift stage's settings (``DRIFTLINE_MONITOR_*``); None when it is off."""
    if not settings.monitor_enabled:
        return None
    return MonitorConfig(
        window_size=settings.monitor_window_size,
        max_window_ms=int(settings.monitor_max_window_seconds * 1000),
        auto_reference_events=settings.monitor_auto_reference_events,
        budget=budget(settings),
        events_per_day=settings.monitor_events_per_day,
        max_segments=settings.monitor_max_segments,
    )


def budget(settings: Settings) -> FalseAlarmBudget:
    """One model's false-alarm budget (``DRIFTLINE_MONITOR_FALSE_ALARMS`` per
    ``_FALSE_ALARM_DAYS``), shared by its window tests and its sequential detectors."""
    return FalseAlarmBudget(settings.monitor_false_alarms, settings.monitor_false_alarm_days)


def processor_config(settings: Settings) -> ProcessorConfig:
    return ProcessorConfig(
        # the sequential detectors' share of the budget holds whether or not windows run
        specs=sequential_specs(budget(settings), settings.monitor_events_per_day),
        profiles=monitor_config(settings),
        join_ttl_ms=int(settings.join_ttl_seconds * 1000),
        orphan_ttl_ms=int(settings.orphan_outcome_ttl_seconds * 1000),
        retraining_cooldown_ms=int(settings.retraining_cooldown_seconds * 1000),
        retraining_lookback_ms=int(settings.retraining_lookback_seconds * 1000),
        known_models=frozenset(settings.known_models),
        estimates=EstimateConfig(
            window_ms=int(settings.cbpe_window_seconds * 1000),
            calibration_size=settings.cbpe_calibration_size,
        )
        if settings.cbpe_enabled
        else None,
        verdicts=VerdictConfig(
            min_labels=settings.verdict_min_labels, alpha=settings.verdict_alpha
        ),
    )


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        bootstrap=settings.kafka_bootstrap,
        app_id=settings.worker_id,
        partitions=settings.topic_partitions,
        replication=settings.topic_replication,
        datadir=str(settings.data_dir / "faust"),
        batch_max_events=settings.batch_max_events,
        batch_max_seconds=settings.batch_max_seconds,
        commit_interval_s=settings.commit_interval_seconds,
        session_timeout_ms=settings.worker_session_timeout_ms,
        alert_idle_timeout_s=settings.alert_idle_timeout_seconds,
        status_interval_s=settings.worker_status_interval_seconds,
        web_host=getattr(settings, "worker_web_host", "127.0.0.1"),
        web_port=settings.worker_web_port or None,
        processor=processor_config(settings),
    )


def open_migrated_store(settings: Settings, stop: threading.Event | None = None) -> Store:
    """The store with its migrations applied, waiting for a server that is not up yet (an
    embedded store opens at once; its errors, like a data dir another process holds, are not
    worth waiting for)."""
    store = open_store(settings.clickhouse_url, settings.clickhouse_database, settings.chdb_path)
    where = settings.clickhouse_url or "embedded"
    failure: list[BaseException] = []

    def migrated() -> bool:
        try:
            store.migrate()
            return True
        except StoreUnavailable:
            return False
        except BaseException as exc:  # noqa: BLE001 - not an outage: raised below
            failure.append(exc)
            return True

    if not wait_until(migrated, what=f"ClickHouse ({_redacted(where)})", log=log, stop=stop):
        raise SystemExit(0)  # stopped while waiting
    if failure:
        raise failure[0]
    return store


def _redacted(url: str) -> str:
    """A URL without its password, for logs."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def codec_for(settings: Settings) -> Codec:
    """The static schema manifest, or a Confluent-compatible registry when one is configured."""
    if settings.schema_registry_url:
        return Codec(ConfluentRegistry(settings.schema_registry_url))
    return Codec()


def http_users(settings: Settings) -> dict[str, tuple[str, bool]] | None:
    users = {name: (password, False) for name, password in settings.clickhouse_http_users.items()}
    users.update(
        (name, (password, True))
        for name, password in settings.clickhouse_http_readonly_users.items()
    )
    return users or None


def run_worker(settings: Settings, loglevel: str = "info", verbose: bool = False) -> int:
    """Run a worker until stopped; started before the broker or the store, it waits for them
    (logging once per interval) instead of exiting. Returns the exit code."""
    # Until faust sets logging up (once broker and store are there), the same format: the
    # waits and the store's endpoint are logged before that.
    logging.basicConfig(
        level=loglevel.upper(), format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    status = _StartupStatus.serve(settings)
    try:
        status.waiting_for = f"the Kafka broker at {settings.kafka_bootstrap}"
        if not wait_until(
            lambda: ensure_topics(
                settings.kafka_bootstrap,
                settings.topic_partitions,
                settings.topic_replication,
                timeout=5.0,
            )
            is not None,
            what=f"the Kafka broker at {settings.kafka_bootstrap}",
            log=log,
            stop=stop,
        ):
            return 0
        status.waiting_for = f"ClickHouse ({_redacted(settings.clickhouse_url or 'embedded')})"
        store = open_migrated_store(settings, stop)
    except SystemExit:
        return 0
    finally:
        status.close()  # faust's web server takes the port over
        # Until faust takes the signals over, a SIGTERM/SIGINT ends the worker cleanly (exit 0,
        # store closed) instead of killing it (-15): a stop can come at any moment of startup.
        for sig in previous:
            signal.signal(sig, _exit_now)
    endpoint = None
    if settings.clickhouse_http_port is not None and isinstance(store, EmbeddedStore):
        users = http_users(settings)
        endpoint = serve_store(
            store,
            settings.clickhouse_http_host,
            settings.clickhouse_http_port,
            users,
            default_database=settings.clickhouse_database,
        )
        # `driftline report` and other readers of this data dir find the endpoint here.
        record_endpoint(
            settings.data_dir, endpoint.url, settings.clickhouse_database, list(users or {})
        )
    elif isinstance(store, EmbeddedStore):
        log.info(
            "ClickHouse: embedded store in %s (DRIFTLINE_CLICKHOUSE_HTTP_PORT serves it to "
            "other processes)",
            settings.chdb_path,
        )
    else:
        log.info("ClickHouse: %s", _redacted(settings.clickhouse_url or ""))
    if settings.worker_web_port:
        log.info("health, readiness and metrics at http://%s:%d/ready (and /health, /metrics)",
                 settings.worker_web_host, settings.worker_web_port)  # fmt: skip
    code = 1
    try:
        worker = Worker(worker_config(settings), store, codec_for(settings))
        code = worker.run(loglevel=loglevel, verbose=verbose)
    except SystemExit as exc:  # stopped before faust ran (see _exit_now)
        code = int(exc.code or 0)
    finally:
        if endpoint is not None:
            clear_endpoint(settings.data_dir)
            endpoint.stop()
        store.close()
        log.info("stopped (exit code %d)", code)
    return code


def _exit_now(signum: int, frame: object) -> None:
    raise SystemExit(0)


class _StartupStatus:
    """``/health``, ``/ready`` and ``/metrics`` while the worker waits for its broker and store
    at start: faust's web server only runs once both are there, and until then an orchestrator
    should see a live worker that is not ready and what it waits for (``/ready``: 503 with
    ``waiting_for``), not a refused connection."""

    def __init__(self, server: ThreadingHTTPServer | None = None) -> None:
        self.server = server
        self.waiting_for: str | None = None

    @classmethod
    def serve(cls, settings: Settings) -> _StartupStatus:
        if not settings.worker_web_port:
            return cls()
        status = cls()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                body = json.dumps(
                    {"alive": True, "ready": False, "waiting_for": status.waiting_for,
                     "assigned_partitions": []}
                ).encode()  # fmt: skip
                kind = "application/json"
                if path == "/health":
                    code = 200
                elif path == "/ready":
                    code = 503
                elif path == "/metrics":
                    code, kind = 200, "text/plain; version=0.0.4"
                    body = b"driftline_worker_ready 0.0\n"
                else:
                    code, body = 404, b"{}"
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # probes every second would flood the worker's log

        try:
            status.server = ThreadingHTTPServer(
                (settings.worker_web_host, settings.worker_web_port), Handler
            )
        except OSError as exc:  # faust reports the port itself when it binds
            log.warning("no status page while starting: %s", exc)
            return status
        threading.Thread(
            target=status.server.serve_forever, name="driftline-startup-web", daemon=True
        ).start()
        return status

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
