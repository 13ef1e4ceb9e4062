-- Per-class precision and recall per model, version, segment and prediction minute.
--
-- confusion_minute counts (predicted label, actual label) pairs of classification outcomes,
-- fed on insert from joined_labels like model_metrics_minute (same segment convention: ''
-- for all traffic, else 'key=value'). Rows are partial sums until merged: read through
-- class_metrics_minute_v, which sums them.

CREATE TABLE IF NOT EXISTS {database}.confusion_minute
(
    model_id      LowCardinality(String),
    model_version LowCardinality(String),
    segment       String,
    minute        DateTime('UTC') CODEC(Delta, ZSTD(1)),
    predicted     String,
    actual        String,
    n             UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (model_id, model_version, segment, minute, predicted, actual)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.confusion_minute_mv
TO {database}.confusion_minute
AS SELECT
    j.model_id AS model_id,
    j.model_version AS model_version,
    arrayJoin(arrayConcat([''], arrayMap((k, v) -> concat(k, '=', v), mapKeys(j.segments), mapValues(j.segments)))) AS segment,
    toDateTime(toStartOfMinute(j.prediction_time), 'UTC') AS minute,
    assumeNotNull(j.prediction_label) AS predicted,
    assumeNotNull(j.label) AS actual,
    count() AS n
FROM {database}.joined_labels AS j
WHERE j.prediction_label IS NOT NULL AND j.label IS NOT NULL
GROUP BY model_id, model_version, segment, minute, predicted, actual;

-- One row per class seen (predicted or actual) in the minute. precision = TP / predicted as the
-- class, recall = TP / actually the class; NULL where the denominator is 0.
CREATE VIEW IF NOT EXISTS {database}.class_metrics_minute_v AS
SELECT
    model_id,
    model_version,
    segment,
    minute,
    class,
    sumIf(n, predicted = class AND actual = class) AS true_positives,
    sumIf(n, predicted = class) AS predicted_as_class,
    sumIf(n, actual = class) AS actually_class,
    if(predicted_as_class = 0, NULL, true_positives / predicted_as_class) AS precision,
    if(actually_class = 0, NULL, true_positives / actually_class) AS recall
FROM {database}.confusion_minute
ARRAY JOIN arrayDistinct([predicted, actual]) AS class
GROUP BY model_id, model_version, segment, minute, class;
