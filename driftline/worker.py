"""Settings -> a running stream worker (the glue the ``driftline worker`` command uses)."""

from __future__ import annotations

from driftline.admin import ensure_topics
from driftline.schemas import Codec, ConfluentRegistry
from driftline.settings import Settings
from driftline.sinks.embedded import EmbeddedStore
from driftline.sinks.http_interface import serve_store
from driftline.sinks.store import Store, open_store
from driftline.streams.app import Worker, WorkerConfig
from driftline.streams.processor import ProcessorConfig


def processor_config(settings: Settings) -> ProcessorConfig:
    return ProcessorConfig(
        join_ttl_ms=int(settings.join_ttl_seconds * 1000),
        orphan_ttl_ms=int(settings.orphan_outcome_ttl_seconds * 1000),
        retraining_cooldown_ms=int(settings.retraining_cooldown_seconds * 1000),
        retraining_lookback_ms=int(settings.retraining_lookback_seconds * 1000),
        known_models=frozenset(settings.known_models),
    )


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        bootstrap=settings.kafka_bootstrap,
        app_id=settings.worker_id,
        partitions=settings.topic_partitions,
        datadir=str(settings.data_dir / "faust"),
        batch_max_events=settings.batch_max_events,
        batch_max_seconds=settings.batch_max_seconds,
        web_port=settings.worker_web_port or None,
        processor=processor_config(settings),
    )


def open_migrated_store(settings: Settings) -> Store:
    store = open_store(settings.clickhouse_url, settings.clickhouse_database, settings.chdb_path)
    store.migrate()
    return store


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


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_topics(settings.kafka_bootstrap, settings.topic_partitions, settings.topic_replication)
    store = open_migrated_store(settings)
    endpoint = None
    if settings.clickhouse_http_port is not None and isinstance(store, EmbeddedStore):
        endpoint = serve_store(
            store,
            settings.clickhouse_http_host,
            settings.clickhouse_http_port,
            http_users(settings),
            default_database=settings.clickhouse_database,
        )
    try:
        Worker(worker_config(settings), store, codec_for(settings)).run(loglevel=loglevel)
    finally:
        if endpoint is not None:
            endpoint.stop()
        store.close()
