-- Model versions (streams/versions.py, api/routes/models.py): one row per (model, version),
-- merged from two kinds of rows that the workers and the API write as they see things:
--   * a published version (ModelPublished on driftline.models.v1, or POST .../versions):
--     the registry columns; published = 1;
--   * serving seen in predictions: first_seen / last_seen (event time of the first and latest
--     prediction made with that version), previous_version (what served before it).
-- SimpleAggregateFunction columns merge replay-safely: min/max of times are the same however
-- often a batch is replayed, and a published version is immutable (a changed re-publication
-- is refused), so any non-null registry value is the value. Read with GROUP BY (or FINAL).
CREATE TABLE IF NOT EXISTS {database}.model_versions
(
    model_id               LowCardinality(String),
    version                String,
    published              SimpleAggregateFunction(max, UInt8),
    published_event_id     SimpleAggregateFunction(anyLast, Nullable(String)),
    artifact_uri           SimpleAggregateFunction(anyLast, Nullable(String)),
    training_window_start  SimpleAggregateFunction(anyLast, Nullable(DateTime64(3, 'UTC'))),
    training_window_end    SimpleAggregateFunction(anyLast, Nullable(DateTime64(3, 'UTC'))),
    retraining_request_id  SimpleAggregateFunction(anyLast, Nullable(String)),
    declared_previous      SimpleAggregateFunction(anyLast, Nullable(String)),
    metrics_json           SimpleAggregateFunction(anyLast, Nullable(String)),
    tags_json              SimpleAggregateFunction(anyLast, Nullable(String)),
    reference_profile_id   SimpleAggregateFunction(anyLast, Nullable(String)),
    publisher              SimpleAggregateFunction(anyLast, Nullable(String)),
    published_at           SimpleAggregateFunction(min, Nullable(DateTime64(3, 'UTC'))),
    previous_version       SimpleAggregateFunction(anyLast, Nullable(String)),
    first_seen             SimpleAggregateFunction(min, Nullable(DateTime64(3, 'UTC'))),
    last_seen              SimpleAggregateFunction(max, Nullable(DateTime64(3, 'UTC')))
)
ENGINE = AggregatingMergeTree
ORDER BY (model_id, version);
