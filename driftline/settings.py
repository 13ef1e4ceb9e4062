"""One settings object for the whole service.

Configuration flows in here once (env vars with the ``DRIFTLINE_`` prefix, or a ``.env``/config
file) and is passed down; no other module reads environment variables itself.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_", env_file=".env", extra="ignore")

    # Where everything local lives: embedded ClickHouse, the local broker's logs, worker state.
    data_dir: Path = Path(".driftline")
    # Jars of the local Kafka broker, resolved from Maven Central once and reused between runs.
    kafka_cache_dir: Path = Path.home() / ".cache" / "driftline" / "kafka"

    kafka_bootstrap: str = "127.0.0.1:9092"
    # The local broker's KRaft controller listener (`driftline kafka start`); not 9093, which
    # is Alertmanager's default port.
    kafka_controller_port: int = 19093
    topic_partitions: int = 4

    # Confluent-compatible schema registry; None means the static id manifest in schemas/.
    schema_registry_url: str | None = None

    # ClickHouse server (http[s]://user:password@host:port/database); None means embedded chdb.
    clickhouse_url: str | None = None
    clickhouse_database: str = "driftline"

    # ClickHouse's HTTP interface served by the worker over its embedded store, so analysts,
    # the API and clickhouse-connect can read it from other processes (None: off).
    clickhouse_http_port: int | None = None
    clickhouse_http_host: str = "127.0.0.1"
    # user -> password; readonly users get ClickHouse's readonly=1. Both empty: user
    # "default" without a password and full rights (loopback only).
    clickhouse_http_users: dict[str, str] = Field(default_factory=dict)
    clickhouse_http_readonly_users: dict[str, str] = Field(default_factory=dict)

    # Worker
    worker_id: str = "driftline-worker"
    worker_web_port: int = 6066
    # faust's web server (its /health and stats): loopback unless an operator opens it up.
    worker_web_host: str = "127.0.0.1"
    batch_max_events: int = 5000
    batch_max_seconds: float = Field(0.1, gt=0)
    # How often a worker lands what it processed and commits its input offsets (an epoch):
    # larger means bigger ClickHouse inserts and fewer checkpoints, and more to replay after
    # a crash.
    commit_interval_seconds: float = Field(1.0, gt=0)
    # A killed worker's partitions move after this long (Kafka's group session timeout; the
    # broker's group.min.session.timeout.ms, 6 s by default, is the floor).
    worker_session_timeout_ms: int = Field(6000, ge=1000)
    # The alerts' idle watermark: a caught-up partition without input this long moves its
    # models' alert clocks by this much event time, once per timeout (docs/alerting.md,
    # "The idle watermark"); 0 turns it off.
    alert_idle_timeout_seconds: float = Field(10.0, ge=0)
    # How often a busy worker logs its status line (counts, rates, processing and writing time).
    worker_status_interval_seconds: float = Field(10.0, gt=0)
    join_ttl_seconds: float = Field(3600.0, gt=0)
    orphan_outcome_ttl_seconds: float = Field(300.0, gt=0)
    retraining_cooldown_seconds: float = Field(3600.0, ge=0)
    # How far back from a detected change a trainer should take its data.
    retraining_lookback_seconds: float = Field(3600.0, gt=0)
    # Post-deploy verdicts (docs/versions.md): a new model version is compared with the one it
    # replaced once it has this many labelled predictions, at this significance level.
    verdict_min_labels: int = Field(500, ge=2)
    verdict_alpha: float = Field(0.01, gt=0, lt=1)
    # Data drift against a reference (docs/drift.md): each model's events in windows of this
    # many (or fewer, once this much event time has passed), tested against its reference; a
    # model without an uploaded reference uses its first N events. The false-alarm budget: at
    # most this many false alarms, expected, per this many days of one model's traffic, spread
    # over the windows of an upper estimate of its events per day. Off: no window tests.
    monitor_enabled: bool = True
    monitor_window_size: int = Field(5000, ge=100)
    monitor_max_window_seconds: float = Field(86400.0, gt=0)
    monitor_auto_reference_events: int = Field(10000, ge=100)
    monitor_false_alarms: float = Field(1.0, gt=0)
    monitor_false_alarm_days: float = Field(30.0, gt=0)
    monitor_events_per_day: float = Field(1_000_000.0, gt=0)
    # Segment windows: one set per segment value ('key=value') for at most this many values
    # per model, the first in event order (docs/drift.md, "Segments"); 0: none.
    monitor_max_segments: int = Field(0, ge=0)
    # Performance before labels arrive (docs/cbpe.md): CBPE estimates per model over event-time
    # windows of this width, calibrated on the model's first N labelled predictions. Off: none.
    cbpe_enabled: bool = True
    cbpe_window_seconds: float = Field(3600.0, gt=0)
    cbpe_calibration_size: int = Field(5000, ge=100)
    # Models the worker accepts; empty accepts any (others go to the DLQ as unknown_model).
    known_models: list[str] = Field(default_factory=list)
    topic_replication: int = Field(1, ge=1)

    # API
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Public base URL of the API and dashboard, for links in alert deliveries (webhook
    # payloads, Alertmanager's generatorURL); None: http://localhost:<api_port>.
    public_url: str | None = None

    @property
    def public_base_url(self) -> str:
        return (self.public_url or f"http://localhost:{self.api_port}").rstrip("/")

    def monitor_settings(self) -> dict[str, float | int]:
        """The ``DRIFTLINE_MONITOR_*`` defaults by the names a model's own settings use
        (``MonitorConfig.with_settings``, ``PUT /v1/models/{model}/monitoring``)."""
        return {
            "false_alarms": self.monitor_false_alarms,
            "days": self.monitor_false_alarm_days,
            "events_per_day": self.monitor_events_per_day,
            "window_size": self.monitor_window_size,
            "max_window_seconds": self.monitor_max_window_seconds,
            "auto_reference_events": self.monitor_auto_reference_events,
        }

    @property
    def chdb_path(self) -> Path:
        return self.data_dir / "clickhouse"

    @property
    def kafka_data_dir(self) -> Path:
        return self.data_dir / "kafka"


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Settings from a config file (``KEY=value`` lines, as a ``.env`` file), then the
    environment (which wins over the file), then explicit overrides (CLI flags, tests)."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if config_file is not None:
        if not Path(config_file).is_file():
            raise FileNotFoundError(f"config file {config_file} does not exist")
        return Settings(_env_file=config_file, **values)
    return Settings(**values)
