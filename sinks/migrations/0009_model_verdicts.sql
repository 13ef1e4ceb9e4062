-- Post-deploy verdicts (ModelVerdict, streams/versions.py) and the rollbacks they recommend;
-- replays carry the same event_id and collapse on merge: read with FINAL.
CREATE TABLE IF NOT EXISTS {database}.model_verdicts
(
    event_id            String,
    model_id            LowCardinality(String),
    version             String,
    previous_version    String,
    verdict             LowCardinality(String),
    metric              LowCardinality(String),
    test                LowCardinality(String),
    value               Float64,
    previous_value      Float64,
    n_labels            UInt64,
    n_previous          UInt64,
    statistic           Float64,
    p_value             Float64,
    alpha               Float64,
    decided_at          DateTime64(3, 'UTC'),
    published_event_id  Nullable(String),
    evidence            Map(String, String),
    rollback_event_id   Nullable(String),
    rollback_to         Nullable(String),
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (model_id, decided_at, event_id);
