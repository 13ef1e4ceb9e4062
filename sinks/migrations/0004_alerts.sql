-- Alerts raised by the workers' rule evaluator (streams/alerting.py) and the control plane's
-- audit trail (written by the API, which runs these migrations at startup too).
--
-- alerts: one row per state change (pending, firing, each repeat notification, resolved).
-- The current state of an alert is its row with the greatest updated_at. Every column comes
-- from the deterministic AlertEvent (times are event times, not wall-clock), so a replayed
-- state change has the same key and collapses on merge; read with FINAL. state is the lower-
-- case AlertEvent status and alertname its rule_name, the names the API reads.
CREATE TABLE IF NOT EXISTS {database}.alerts
(
    fingerprint       String,
    rule_id           String,
    rule_version      UInt64,
    alertname         String,
    model_id          LowCardinality(String),
    severity          LowCardinality(String),
    state             LowCardinality(String),
    labels            Map(String, String),
    annotations       Map(String, String),
    value             Nullable(Float64),
    starts_at         DateTime64(3, 'UTC'),
    ends_at           Nullable(DateTime64(3, 'UTC')),
    updated_at        DateTime64(3, 'UTC'),
    trigger_event_ids Array(String),
    event_id          String,
    silenced          UInt8,
    silence_ids       Array(String),
    acknowledged      UInt8,
    notify            Array(String),
    inhibited_by      Nullable(String),
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(updated_at)
ORDER BY (model_id, fingerprint, updated_at, state);


-- Every control-plane write (compaction keeps only the latest record per key on the topic).
-- Written by the API.
CREATE TABLE IF NOT EXISTS {database}.rule_versions
(
    kind        LowCardinality(String),
    id          String,
    version     UInt64,
    op          LowCardinality(String),
    updated_at  DateTime64(3, 'UTC'),
    updated_by  String,
    value       String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(updated_at)
ORDER BY (kind, id, version, op);
