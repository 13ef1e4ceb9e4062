-- Window tests per segment (streams/profiles.py, docs/drift.md "Segments"): besides a model's
-- all-traffic windows, one set of windows per segment value. segment: '' is all traffic,
-- otherwise 'key=value' as in model_metrics_minute. A segment's windows count its own events
-- (window_index, first_position, last_position), so they may share a window_end and index with
-- an all-traffic window: the segment joins the ReplacingMergeTree key, or such rows would
-- collapse into one. ClickHouse appends a column to the sorting key only in the ALTER that adds
-- it, and only without a default expression: the type's default, '', is what rows written
-- before this migration read (all traffic: what they were).
ALTER TABLE {database}.feature_drift
    ADD COLUMN segment LowCardinality(String) AFTER reference_source,
    MODIFY ORDER BY (model_id, window_end, window_index, feature, test, segment);

ALTER TABLE {database}.data_quality
    ADD COLUMN segment LowCardinality(String) AFTER reference_source,
    MODIFY ORDER BY (model_id, window_end, window_index, feature, test, segment);

-- The first-events reference a segment's windows are tested against (reference_id, a content
-- hash, already keeps it apart); '' for the model's own references.
ALTER TABLE {database}.reference_profiles
    ADD COLUMN segment LowCardinality(String) DEFAULT '' AFTER in_multivariate;

-- DriftEvents carry the segment in evidence['segment'] (the Avro record is unchanged); the
-- column reads it back for queries and the dry-run, for old rows too ('' when absent).
ALTER TABLE {database}.drift_events
    ADD COLUMN segment LowCardinality(String) MATERIALIZED evidence['segment'] AFTER evidence;
