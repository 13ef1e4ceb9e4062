-- One view per event table that reads it with FINAL, so analysts who forget FINAL still count
-- every event once (ReplacingMergeTree merges duplicates only eventually).

CREATE VIEW IF NOT EXISTS {database}.predictions_dedup AS SELECT * FROM {database}.predictions FINAL;
CREATE VIEW IF NOT EXISTS {database}.outcomes_dedup AS SELECT * FROM {database}.outcomes FINAL;
CREATE VIEW IF NOT EXISTS {database}.joined_labels_dedup AS SELECT * FROM {database}.joined_labels FINAL;
CREATE VIEW IF NOT EXISTS {database}.detector_stats_dedup AS SELECT * FROM {database}.detector_stats FINAL;
CREATE VIEW IF NOT EXISTS {database}.drift_events_dedup AS SELECT * FROM {database}.drift_events FINAL;
CREATE VIEW IF NOT EXISTS {database}.retraining_requests_dedup AS SELECT * FROM {database}.retraining_requests FINAL;
