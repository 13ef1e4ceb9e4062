-- Performance before labels arrive (streams/estimates.py, docs/cbpe.md): one row per model and
-- event-time window [window_start, window_end), written when the window closes (or, for windows
-- that closed before the model's calibration was fitted, when it is). Every column comes from
-- the event sequence, so a replayed window has the same event_id and collapses on merge; read
-- with FINAL. estimated_precision/recall/f1, the expected confusion cells and positive_label
-- are null unless the model is binary. accuracy_std_error: the standard deviation of the
-- realised accuracy around the estimate when P(y | score) has not changed since calibration.
-- calibration_versions: the model versions whose calibrations read the window's predictions
-- (each version has its own; a new version's first calibration_size predictions are read
-- through the version it replaced); n_borrowed: the predictions read through another version's
-- calibration than their own (docs/cbpe.md, "Per model version").
CREATE TABLE IF NOT EXISTS {database}.performance_estimates
(
    event_id            String,
    model_id            LowCardinality(String),
    model_version       LowCardinality(String),
    method              LowCardinality(String),
    window_start        DateTime64(3, 'UTC'),
    window_end          DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    window_ms           UInt64,
    n_predictions       UInt64,
    n_late              UInt64,
    estimated_accuracy  Float64,
    accuracy_std_error  Float64,
    estimated_precision Nullable(Float64),
    estimated_recall    Nullable(Float64),
    estimated_f1        Nullable(Float64),
    expected_tp         Nullable(Float64),
    expected_fp         Nullable(Float64),
    expected_fn         Nullable(Float64),
    expected_tn         Nullable(Float64),
    positive_label      Nullable(String),
    calibration_size    UInt64,
    calibration_versions Array(String),
    n_borrowed          UInt64,
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_end)
ORDER BY (model_id, window_end, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Each estimate beside the realised values of the same window, from the labelled predictions
-- in joined_labels (classifier predictions with a score, bucketed by prediction time into the
-- estimate's windows), as far as labels have arrived: n_labelled says how far. The *_error
-- columns are realised minus estimated; null until a label of the window is in.
CREATE VIEW IF NOT EXISTS {database}.performance_estimates_realised AS
SELECT
    e.model_id AS model_id,
    e.model_version AS model_version,
    e.method AS method,
    e.window_start AS window_start,
    e.window_end AS window_end,
    e.n_predictions AS n_predictions,
    e.estimated_accuracy AS estimated_accuracy,
    e.accuracy_std_error AS accuracy_std_error,
    e.estimated_precision AS estimated_precision,
    e.estimated_recall AS estimated_recall,
    e.estimated_f1 AS estimated_f1,
    e.positive_label AS positive_label,
    e.calibration_versions AS calibration_versions,
    e.n_borrowed AS n_borrowed,
    r.n_labelled AS n_labelled,
    if(r.n_labelled > 0, r.n_correct / r.n_labelled, NULL) AS realised_accuracy,
    if(r.tp + r.fp > 0 AND e.positive_label IS NOT NULL, r.tp / (r.tp + r.fp), NULL)
        AS realised_precision,
    if(r.tp + r.fn > 0 AND e.positive_label IS NOT NULL, r.tp / (r.tp + r.fn), NULL)
        AS realised_recall,
    if(2 * r.tp + r.fp + r.fn > 0 AND e.positive_label IS NOT NULL,
       2 * r.tp / (2 * r.tp + r.fp + r.fn), NULL) AS realised_f1,
    realised_accuracy - e.estimated_accuracy AS accuracy_error,
    realised_precision - e.estimated_precision AS precision_error,
    realised_recall - e.estimated_recall AS recall_error,
    realised_f1 - e.estimated_f1 AS f1_error
FROM (SELECT * FROM {database}.performance_estimates FINAL) AS e
LEFT JOIN
(
    SELECT
        j.model_id AS model_id,
        k.window_ms AS window_ms,
        intDiv(toUnixTimestamp64Milli(j.prediction_time), k.window_ms) * k.window_ms AS start_ms,
        count() AS n_labelled,
        sum(j.correct) AS n_correct,
        countIf(j.prediction_label = k.positive AND j.label = k.positive) AS tp,
        countIf(j.prediction_label = k.positive AND j.label != k.positive) AS fp,
        countIf(j.prediction_label != k.positive AND j.label = k.positive) AS fn
    FROM {database}.joined_labels AS j FINAL
    INNER JOIN
    (
        SELECT model_id, window_ms, any(positive_label) AS positive
        FROM {database}.performance_estimates
        GROUP BY model_id, window_ms
    ) AS k ON j.model_id = k.model_id
    WHERE j.correct IS NOT NULL AND j.prediction_score IS NOT NULL
    GROUP BY model_id, window_ms, start_ms
) AS r
ON e.model_id = r.model_id AND e.window_ms = r.window_ms
   AND toUnixTimestamp64Milli(e.window_start) = r.start_ms;
