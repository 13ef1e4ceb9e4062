-- Per-minute model metrics, maintained on insert by two materialized views into one
-- SummingMergeTree: predictions per minute (from predictions) and labelled outcomes, correct
-- count and error sums (from joined_labels, by *prediction* minute, so label coverage =
-- labeled / predictions for the same minute).
--
-- segment: '' is all traffic; otherwise one row per segment entry, 'key=value' (e.g.
-- 'region=eu'), so every segment dimension can be sliced without a combinatorial explosion.
--
-- Rows are partial sums until merged: always read with sum() ... GROUP BY, or the
-- model_metrics_minute_v view. Exact replays of a batch (same bytes, or the same
-- insert_deduplication_token) are dropped before they reach the views; re-batched replays are
-- counted again here. The replay-proof numbers come from model_metrics_minute_exact (the same
-- sums computed from the FINAL base tables; slower).

CREATE TABLE IF NOT EXISTS {database}.model_metrics_minute
(
    model_id          LowCardinality(String),
    model_version     LowCardinality(String),
    segment           String,
    minute            DateTime('UTC') CODEC(Delta, ZSTD(1)),
    predictions       UInt64,
    labeled           UInt64,
    classified        UInt64,
    correct           UInt64,
    scored            UInt64,
    error_sum         Float64,
    squared_error_sum Float64,
    label_delay_ms_sum Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (model_id, model_version, segment, minute)
-- Needed for a deduplicated source insert (same bytes or same token) to be skipped here too;
-- blocks are identified by their source insert, so equal sums from different inserts stay.
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.model_metrics_minute_predictions_mv
TO {database}.model_metrics_minute
AS SELECT
    model_id,
    model_version,
    arrayJoin(arrayConcat([''], arrayMap((k, v) -> concat(k, '=', v), mapKeys(segments), mapValues(segments)))) AS segment,
    toDateTime(toStartOfMinute(event_time), 'UTC') AS minute,
    count() AS predictions,
    toUInt64(0) AS labeled,
    toUInt64(0) AS classified,
    toUInt64(0) AS correct,
    toUInt64(0) AS scored,
    toFloat64(0) AS error_sum,
    toFloat64(0) AS squared_error_sum,
    toInt64(0) AS label_delay_ms_sum
FROM {database}.predictions
GROUP BY model_id, model_version, segment, minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.model_metrics_minute_labels_mv
TO {database}.model_metrics_minute
AS SELECT
    j.model_id AS model_id,
    j.model_version AS model_version,
    arrayJoin(arrayConcat([''], arrayMap((k, v) -> concat(k, '=', v), mapKeys(j.segments), mapValues(j.segments)))) AS segment,
    toDateTime(toStartOfMinute(j.prediction_time), 'UTC') AS minute,
    toUInt64(0) AS predictions,
    count() AS labeled,
    countIf(j.correct IS NOT NULL) AS classified,
    toUInt64(sum(ifNull(j.correct, 0))) AS correct,
    countIf(j.error IS NOT NULL) AS scored,
    toFloat64(sum(ifNull(j.error, 0))) AS error_sum,
    toFloat64(sum(ifNull(j.squared_error, 0))) AS squared_error_sum,
    toInt64(sum(j.label_delay_ms)) AS label_delay_ms_sum
FROM {database}.joined_labels AS j
GROUP BY model_id, model_version, segment, minute;

-- Ratios over the merged sums; filter on model_id / minute for speed.
CREATE VIEW IF NOT EXISTS {database}.model_metrics_minute_v AS
SELECT
    m.model_id AS model_id,
    m.model_version AS model_version,
    m.segment AS segment,
    m.minute AS minute,
    sum(m.predictions) AS predictions,
    sum(m.labeled) AS labeled,
    sum(m.correct) AS correct,
    if(sum(m.predictions) = 0, NULL, sum(m.labeled) / sum(m.predictions)) AS label_coverage,
    if(sum(m.classified) = 0, NULL, sum(m.correct) / sum(m.classified)) AS accuracy,
    if(sum(m.scored) = 0, NULL, sum(m.error_sum) / sum(m.scored)) AS mean_error,
    if(sum(m.scored) = 0, NULL, sqrt(sum(m.squared_error_sum) / sum(m.scored))) AS rmse,
    if(sum(m.labeled) = 0, NULL, sum(m.label_delay_ms_sum) / sum(m.labeled)) AS mean_label_delay_ms
FROM {database}.model_metrics_minute AS m
GROUP BY m.model_id, m.model_version, m.segment, m.minute;

-- The same sums computed from the deduplicated base tables: exact under any replay, slower.
CREATE VIEW IF NOT EXISTS {database}.model_metrics_minute_exact AS
SELECT
    u.model_id AS model_id,
    u.model_version AS model_version,
    u.segment AS segment,
    u.minute AS minute,
    sum(u.p) AS predictions,
    sum(u.l) AS labeled,
    sum(u.cl) AS classified,
    sum(u.c) AS correct,
    sum(u.s) AS scored,
    sum(u.e) AS error_sum,
    sum(u.se) AS squared_error_sum,
    sum(u.d) AS label_delay_ms_sum
FROM
(
    SELECT
        model_id,
        model_version,
        arrayJoin(arrayConcat([''], arrayMap((k, v) -> concat(k, '=', v), mapKeys(segments), mapValues(segments)))) AS segment,
        toDateTime(toStartOfMinute(event_time), 'UTC') AS minute,
        toUInt64(1) AS p,
        toUInt64(0) AS l,
        toUInt64(0) AS cl,
        toUInt64(0) AS c,
        toUInt64(0) AS s,
        toFloat64(0) AS e,
        toFloat64(0) AS se,
        toInt64(0) AS d
    FROM {database}.predictions FINAL
    UNION ALL
    SELECT
        model_id,
        model_version,
        arrayJoin(arrayConcat([''], arrayMap((k, v) -> concat(k, '=', v), mapKeys(segments), mapValues(segments)))) AS segment,
        toDateTime(toStartOfMinute(prediction_time), 'UTC') AS minute,
        toUInt64(0),
        toUInt64(1),
        toUInt64(correct IS NOT NULL),
        toUInt64(ifNull(correct, 0)),
        toUInt64(error IS NOT NULL),
        toFloat64(ifNull(error, 0)),
        toFloat64(ifNull(squared_error, 0)),
        label_delay_ms
    FROM {database}.joined_labels FINAL
) AS u
GROUP BY u.model_id, u.model_version, u.segment, u.minute;
