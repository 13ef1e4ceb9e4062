-- Window tests of features and predictions against the model's reference, and data-quality
-- tests (streams/profiles.py): one row per (window, column, test), written when a window
-- closes. Every column comes from the event sequence (window index and positions count the
-- model's events; times are event times), so a replayed window has the same key and collapses
-- on merge; read with FINAL.
--
-- statistic: the test's statistic (for data quality: the rate in the window); null when the
-- window had too few values (insufficient_data = 1) or the statistic is infinite. threshold:
-- the per-test alpha from the model's false-alarm budget for p-value tests, the effect-size
-- floor for wasserstein / jensenshannon, 0.1 for psi (reported, never deciding).
CREATE TABLE IF NOT EXISTS {database}.feature_drift
(
    model_id          LowCardinality(String),
    model_version     LowCardinality(String),
    window_index      UInt64,
    window_start      DateTime64(3, 'UTC'),
    window_end        DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    first_position    UInt64,
    last_position     UInt64,
    stream_kind       LowCardinality(String),
    feature           LowCardinality(String),
    column_kind       LowCardinality(String),
    test              LowCardinality(String),
    statistic         Nullable(Float64),
    p_value           Nullable(Float64),
    threshold         Float64,
    n_reference       UInt64,
    n_current         UInt64,
    insufficient_data UInt8,
    drifted           UInt8,
    reference_id      LowCardinality(String),
    reference_version LowCardinality(String),
    reference_source  LowCardinality(String),
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_end)
ORDER BY (model_id, window_end, window_index, feature, test)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {database}.data_quality
(
    model_id          LowCardinality(String),
    model_version     LowCardinality(String),
    window_index      UInt64,
    window_start      DateTime64(3, 'UTC'),
    window_end        DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    first_position    UInt64,
    last_position     UInt64,
    stream_kind       LowCardinality(String),
    feature           LowCardinality(String),
    column_kind       LowCardinality(String),
    test              LowCardinality(String),
    statistic         Nullable(Float64),
    p_value           Nullable(Float64),
    threshold         Float64,
    n_reference       UInt64,
    n_current         UInt64,
    insufficient_data UInt8,
    drifted           UInt8,
    reference_id      LowCardinality(String),
    reference_version LowCardinality(String),
    reference_source  LowCardinality(String),
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_end)
ORDER BY (model_id, window_end, window_index, feature, test)
SETTINGS non_replicated_deduplication_window = 1000;
