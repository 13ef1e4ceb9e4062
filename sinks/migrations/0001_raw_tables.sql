-- Raw event tables. Every table is a ReplacingMergeTree whose ORDER BY ends with the row's
-- identity (event_id, outcome_id or the detector/time key), so a replayed event (at-least-once
-- delivery from the worker) collapses into one row on merge and counts once under FINAL.
-- Analysts: read with FINAL (or the *_dedup views of 0003) for exact counts.
-- Placeholders: {database}, {ttl_days} (raw-event retention, substituted by migrate(); with
-- retention disabled, every line holding {ttl_days} is dropped, so keep TTL on its own line).
-- Map keys are plain String, not LowCardinality(String): in chdb 26.9 LowCardinality map keys
-- made inserts ~3x slower (measured: 490k vs 150k rows/s for 20-feature predictions).

CREATE TABLE IF NOT EXISTS {database}.predictions
(
    event_id             String,
    model_id             LowCardinality(String),
    model_version        LowCardinality(String),
    event_time           DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    numeric_features     Map(String, Float64),
    categorical_features Map(String, String),
    segments             Map(String, String),
    prediction_label     Nullable(String),
    prediction_score     Nullable(Float64),
    prediction_value     Nullable(Float64),
    probabilities        Map(String, Float64),
    ingested_at          DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (model_id, event_time, event_id)
TTL toDateTime(event_time) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {database}.outcomes
(
    event_id      String,
    prediction_id String,
    model_id      LowCardinality(String),
    event_time    DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    label         Nullable(String),
    value         Nullable(Float64),
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (model_id, event_time, event_id)
TTL toDateTime(event_time) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per outcome joined to its prediction; keyed by prediction time because performance
-- is reported for the predictions made in a period, and outcome_id is the row's identity.
CREATE TABLE IF NOT EXISTS {database}.joined_labels
(
    prediction_id    String,
    outcome_id       String,
    model_id         LowCardinality(String),
    model_version    LowCardinality(String),
    segments         Map(String, String),
    prediction_time  DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    outcome_time     DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    label_delay_ms   Int64 CODEC(T64, ZSTD(1)),
    prediction_label Nullable(String),
    prediction_score Nullable(Float64),
    prediction_value Nullable(Float64),
    label            Nullable(String),
    value            Nullable(Float64),
    correct          Nullable(UInt8),
    error            Nullable(Float64),
    squared_error    Nullable(Float64),
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(prediction_time)
ORDER BY (model_id, prediction_time, outcome_id)
TTL toDateTime(prediction_time) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- Detector statistics over time: one row per detector per worker batch (time = batch end).
-- Slowly changing floats, so Gorilla pays off here.
CREATE TABLE IF NOT EXISTS {database}.detector_stats
(
    model_id    LowCardinality(String),
    stream_kind LowCardinality(String),
    stream_name LowCardinality(String),
    detector    LowCardinality(String),
    time        DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    n_values    UInt64 CODEC(T64, ZSTD(1)),
    estimate    Nullable(Float64) CODEC(Gorilla, ZSTD(1)),
    statistic   Nullable(Float64) CODEC(Gorilla, ZSTD(1)),
    p_value     Nullable(Float64) CODEC(Gorilla, ZSTD(1)),
    drift       UInt8,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (model_id, stream_kind, stream_name, detector, time)
TTL toDateTime(time) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- Drift and retraining events are few and are the audit trail: no TTL.
CREATE TABLE IF NOT EXISTS {database}.drift_events
(
    event_id        String,
    model_id        LowCardinality(String),
    model_version   LowCardinality(String),
    stream_kind     LowCardinality(String),
    stream_name     LowCardinality(String),
    detector        LowCardinality(String),
    detected_at     DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    position        Int64,
    statistic       Nullable(Float64),
    p_value         Nullable(Float64),
    threshold       Nullable(Float64),
    evidence        Map(String, String),
    source_event_id String,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(detected_at)
ORDER BY (model_id, detected_at, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {database}.retraining_requests
(
    event_id          String,
    model_id          LowCardinality(String),
    model_version     LowCardinality(String),
    requested_at      DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    reason            String,
    trigger_event_ids Array(String),
    window_start      DateTime64(3, 'UTC'),
    window_end        DateTime64(3, 'UTC'),
    priority          LowCardinality(String),
    policy            LowCardinality(String),
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(requested_at)
ORDER BY (model_id, requested_at, event_id)
SETTINGS non_replicated_deduplication_window = 1000;
