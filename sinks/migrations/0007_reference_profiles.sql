-- Reference profiles, for analysts (streams/profiles.py ``reference_rows``): what each model's
-- windows are tested against, one row per (reference, column). Uploaded references (SDK, CLI,
-- API) are written when they reach a worker; a model's first-events reference when the worker
-- builds it (uploaded_at is then the event time of its last event, uploaded_by 'worker').
-- reference_id is a hash of the profile's bytes, so a reference written again (every worker
-- start re-reads the compacted topic, several workers read it) has the same key and collapses
-- on merge; read with FINAL. Join feature_drift / data_quality on (model_id, reference_id).
--
-- feature: the stream name feature_drift uses (score / value / label for the model's outputs,
-- stream_kind PREDICTION). quantiles: the inner bin edges the chisquare and psi tests use
-- (deciles, or the distinct values of a discrete column); bin_counts: the reference's count per
-- bin (one more than edges). categories: count per category (categorical columns).
-- in_multivariate: the column is an input of the PCA reconstruction test. Few rows: no TTL.
CREATE TABLE IF NOT EXISTS {database}.reference_profiles
(
    model_id          LowCardinality(String),
    reference_id      String,
    reference_version LowCardinality(String),
    reference_source  LowCardinality(String),
    uploaded_at       DateTime64(3, 'UTC'),
    uploaded_by       String,
    n_events          UInt64,
    stream_kind       LowCardinality(String),
    feature           LowCardinality(String),
    column_kind       LowCardinality(String),
    n_present         UInt64,
    n_missing         UInt64,
    missing_rate      Float64,
    min               Nullable(Float64),
    max               Nullable(Float64),
    std               Nullable(Float64),
    top_share         Float64,
    quantiles         Array(Float64),
    bin_counts        Array(UInt64),
    categories        Map(String, UInt64),
    in_multivariate   UInt8,
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
ORDER BY (model_id, reference_id, feature)
SETTINGS non_replicated_deduplication_window = 1000;
