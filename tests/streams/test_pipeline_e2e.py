"""The pipeline end to end: a real Kafka broker, a real worker process, embedded ClickHouse."""

from __future__ import annotations

import signal
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from driftline.detectors.monitor import MonitorConfig
from driftline.schemas import Codec, topics
from driftline.streams.processor import BatchProcessor, ProcessorConfig, SourceMessage
from e2e_support import (
    INPUTS,
    decode_all,
    lag,
    query_store,
    read_topic,
    start_worker,
    stop_worker,
    wait_for,
    worker_env,
)

from driftline.admin import ensure_topics
from driftline.synthetic import SyntheticStream, publish

pytestmark = pytest.mark.e2e

N = 6000
CHANGE = 3000
LAG = 50  # outcomes arrive 50 steps after their predictions
# Features are watched by window tests against each model's first events (ADWIN does not run
# on raw features): windows of 500 after a 2,000-event reference, so a change at 3,000 is
# found in the window [3000, 3500).
WINDOWS_ENV = {"DRIFTLINE_MONITOR_WINDOW_SIZE": "500", "DRIFTLINE_MONITOR_AUTO_REFERENCE_EVENTS": "2000"}


def _produce_raw(bootstrap: str, topic: str, key: bytes, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def test_events_in_drift_out_clickhouse_exactly_once(fresh_kafka, tmp_path):
    bootstrap = fresh_kafka.bootstrap
    ensure_topics(bootstrap, 4)
    drifting = SyntheticStream("churn", n_features=5, seed=1, change_at=CHANGE)
    control = SyntheticStream("control", n_features=5, seed=2)
    assert publish(bootstrap, drifting, N, outcome_lag=LAG) == 2 * N - LAG
    assert publish(bootstrap, control, N, outcome_lag=LAG) == 2 * N - LAG
    # bad input, mid-stream: garbage, an unknown schema id, a NaN feature
    codec = Codec()
    nan = dict(drifting.step(N + 1)[0], numeric_features={"f00": float("nan")})
    _produce_raw(
        bootstrap,
        topics.PREDICTIONS,
        b"churn",
        [b"garbage", b"\x00\x00\x00\x30\x39rest", codec.encode("PredictionEvent", nan)],
    )

    app_id = f"worker-{uuid.uuid4().hex[:8]}"
    env = worker_env(bootstrap, tmp_path / "data", app_id, **WINDOWS_ENV)
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:
        wait_for(lambda: lag(bootstrap, app_id) == 0, 240, "the worker to catch up", worker, log)

        drifts = decode_all(read_topic(bootstrap, topics.DRIFT))
        assert drifts, "no DriftEvent published"
        assert {d["model_id"] for d in drifts} == {"churn"}, "drift on the no-drift control"
        features = [d for d in drifts if d["stream_kind"] == "FEATURE"]
        assert {d["stream_name"] for d in features} == {"f00"}
        assert {d["detector"] for d in features} & {"ks", "chisquare"}  # window tests decided
        assert min(d["position"] for d in features) == CHANGE + 499  # the window [3000, 3500)
        errors = [d for d in drifts if d["stream_kind"] == "ERROR"]
        assert errors and CHANGE - LAG <= min(d["position"] for d in errors) < CHANGE + 500

        (retraining,) = decode_all(read_topic(bootstrap, topics.RETRAINING))
        assert retraining["model_id"] == "churn"
        assert retraining["trigger_event_ids"][0] in {d["event_id"] for d in errors}

        letters = read_topic(bootstrap, topics.DLQ)
        reasons = sorted(h[topics.HEADER_REASON].decode() for _, h in letters)
        assert reasons == ["non_finite_value", "not_confluent_framed", "unknown_schema_id"]
        assert b"garbage" in [value for value, _ in letters]

        # a producer replays the first 1000 steps: duplicates are caught, nothing doubles
        publish(bootstrap, drifting, 1000, outcome_lag=LAG)
        wait_for(lambda: lag(bootstrap, app_id) == 0, 120, "the replay", worker, log)
        letters = read_topic(bootstrap, topics.DLQ)
        duplicates = [h for _, h in letters if h[topics.HEADER_REASON] == b"duplicate"]
        assert len(duplicates) == 1000 + (1000 - LAG)
    finally:
        assert stop_worker(worker) in (0, -signal.SIGTERM), log.read_text()[-3000:]

    counts = query_store(
        tmp_path / "data",
        {
            "predictions": "SELECT count(), uniqExact(event_id) FROM predictions FINAL",
            "outcomes": "SELECT count() FROM outcomes FINAL",
            "joined": "SELECT count() FROM joined_labels FINAL",
            "drift": "SELECT count() FROM drift_events FINAL",
            "retraining": "SELECT count() FROM retraining_requests FINAL",
            "stats": "SELECT count() > 0 FROM detector_stats",
        },
    )
    assert counts["predictions"] == [[2 * N, 2 * N]]
    assert counts["outcomes"] == [[2 * (N - LAG)]]
    assert counts["joined"] == [[2 * (N - LAG)]]
    assert counts["drift"] == [[len({d["event_id"] for d in drifts})]]
    assert counts["retraining"] == [[1]]
    assert counts["stats"] == [[1]]


def _expected_feature_drifts(stream: SyntheticStream, n: int) -> list[str]:
    """Feature drift ids of an uninterrupted in-process run (features depend on predictions
    only, so their order, and so the detections, are fixed by the topic's order), with the
    worker's default windows."""
    codec = Codec()
    processor = BatchProcessor(codec, ProcessorConfig(profiles=MonitorConfig()))
    messages = [
        SourceMessage(topics.PREDICTIONS, 0, i, b"", codec.encode("PredictionEvent", p))
        for i, (p, _) in enumerate(stream.events(n))
    ]
    result = processor.process(messages)
    return sorted(d["event_id"] for d in result.drift_events if d["stream_kind"] == "FEATURE")


def test_sigkill_mid_stream_loses_nothing_and_detects_the_same(fresh_kafka, tmp_path):
    bootstrap = fresh_kafka.bootstrap
    ensure_topics(bootstrap, 4)
    # enough that the worker needs several commit intervals (faust commits every ~3 s) for
    # the first part, so the kill lands mid-stream
    first, total = 12000, 16000
    stream = SyntheticStream("fraud", n_features=8, seed=11, change_at=13000)
    publish(bootstrap, stream, first, outcome_lag=LAG)

    app_id = f"worker-{uuid.uuid4().hex[:8]}"
    env = worker_env(bootstrap, tmp_path / "data", app_id, DRIFTLINE_BATCH_MAX_EVENTS="500")
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    first_part = first + first - LAG
    wait_for(lambda: first_part - lag(bootstrap, app_id) > 0, 240, "some progress", worker, log)
    stop_worker(worker, signal.SIGKILL)
    assert lag(bootstrap, app_id) > 0, "the kill came too late to be mid-stream"

    publish(bootstrap, stream, total - first, start=first, outcome_lag=LAG)
    worker = start_worker(env, log)
    try:
        wait_for(lambda: lag(bootstrap, app_id) == 0, 240, "the restarted worker", worker, log)
    finally:
        assert stop_worker(worker) in (0, -signal.SIGTERM), log.read_text()[-3000:]

    drifts = decode_all(read_topic(bootstrap, topics.DRIFT))
    feature_ids = sorted({d["event_id"] for d in drifts if d["stream_kind"] == "FEATURE"})
    # default windows (5,000 after a 10,000-event reference): the change at 13,000 lands in
    # the window [10000, 15000), whose state the SIGKILL interrupted
    assert feature_ids, "the scenario must raise feature drift"
    assert feature_ids == _expected_feature_drifts(stream, total)
    assert any(d["stream_kind"] == "ERROR" for d in drifts)

    counts = query_store(
        tmp_path / "data",
        {
            "predictions": "SELECT count() FROM predictions FINAL",
            "outcomes": "SELECT count() FROM outcomes FINAL",
            "joined": "SELECT count() FROM joined_labels FINAL",
        },
    )
    assert counts == {
        "predictions": [[total]],
        "outcomes": [[total - LAG]],
        "joined": [[total - LAG]],
    }


def test_pipeline_on_a_clickhouse_server_through_the_http_interface(fresh_kafka, tmp_path):
    """The server store (clickhouse-connect over HTTP) end to end: the worker writes through
    ClickHouse's HTTP protocol, served by `driftline clickhouse serve` over an embedded store,
    and an analyst reads with clickhouse-connect as a read-only user."""
    import subprocess
    import sys

    import clickhouse_connect

    from driftline.local_kafka import free_port, port_open

    bootstrap = fresh_kafka.bootstrap
    ensure_topics(bootstrap, 4)
    stream = SyntheticStream("pricing", n_features=4, seed=21, change_at=1500)
    publish(bootstrap, stream, 3000, outcome_lag=LAG)

    port = free_port()
    server_env = worker_env(bootstrap, tmp_path / "server", "unused")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "driftline.cli",
            "clickhouse",
            "serve",
            "--port",
            str(port),
            "--user",
            "writer:w-secret",
            "--readonly-user",
            "analyst:a-secret",
        ],
        env=server_env,
        stdout=open(tmp_path / "server.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: port_open("127.0.0.1", port),
            60,
            "the HTTP endpoint",
            server,
            tmp_path / "server.log",
        )
        app_id = f"worker-{uuid.uuid4().hex[:8]}"
        env = worker_env(
            bootstrap,
            tmp_path / "data",
            app_id,
            DRIFTLINE_CLICKHOUSE_URL=f"http://writer:w-secret@127.0.0.1:{port}",
            **WINDOWS_ENV,
        )
        log = tmp_path / "worker.log"
        worker = start_worker(env, log)
        try:
            wait_for(lambda: lag(bootstrap, app_id) == 0, 240, "the worker", worker, log)
        finally:
            stop_worker(worker)
        client = clickhouse_connect.get_client(
            host="127.0.0.1",
            port=port,
            username="analyst",
            password="a-secret",
            database="driftline",
        )
        assert client.query("SELECT count() FROM predictions FINAL").result_rows == [(3000,)]
        assert client.query("SELECT count() FROM joined_labels FINAL").result_rows == [
            (3000 - LAG,)
        ]
        drift = client.query_df("SELECT stream_kind, stream_name, position FROM drift_events FINAL")
        assert "f00" in set(drift["stream_name"])
        # the model's first-events reference, through the server store's insert (maps, arrays)
        references = client.query_df(
            "SELECT feature, reference_source, n_present, quantiles FROM reference_profiles FINAL"
        )
        assert set(references["feature"]) >= {"f00", "f01", "f02", "f03"}
        assert set(references["reference_source"]) == {"first_events"}
        inputs = references[references["feature"].str.match(r"f\d\d$")]
        assert len(inputs) == 4 and (inputs["n_present"] == 2000).all()
        with pytest.raises(Exception, match="READONLY|readonly"):
            client.command("TRUNCATE TABLE predictions")
    finally:
        stop_worker(server)


def test_worker_health_readiness_and_metrics_while_it_processes(fresh_kafka, tmp_path):
    """/health, /ready and /metrics of a worker scraped while it consumes a real broker's
    traffic (Prometheus text, parsed with prometheus_client's own parser)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from driftline.local_kafka import free_port

    bootstrap = fresh_kafka.bootstrap
    ensure_topics(bootstrap, 4)
    stream = SyntheticStream("observed", n_features=3, seed=31, change_at=2000)
    publish(bootstrap, stream, 4000, outcome_lag=LAG)
    _produce_raw(bootstrap, topics.PREDICTIONS, b"observed", [b"garbage"])
    port = free_port()
    app_id = f"worker-{uuid.uuid4().hex[:8]}"
    env = worker_env(
        bootstrap, tmp_path / "data", app_id, DRIFTLINE_WORKER_WEB_PORT=str(port), **WINDOWS_ENV
    )
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    base = f"http://127.0.0.1:{port}"

    def scrape() -> dict[str, dict[tuple, float]]:
        text = httpx.get(f"{base}/metrics", timeout=5).text
        out: dict[str, dict[tuple, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = tuple(sorted(sample.labels.items()))
                out.setdefault(sample.name, {})[key] = sample.value
        return out

    def served() -> bool:
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(served, 120, "the worker's web server", worker, log)
        wait_for(lambda: lag(bootstrap, app_id) == 0, 240, "the worker to catch up", worker, log)
        ready = httpx.get(f"{base}/ready", timeout=5)
        assert ready.status_code == 200, ready.text
        assert ready.json()["assigned_partitions"] == [0, 1, 2, 3]
        metrics = scrape()
        assert metrics["driftline_worker_ready"][()] == 1.0
        assert metrics["driftline_worker_messages_total"][()] >= 2 * 4000 - LAG + 1
        assert metrics["driftline_worker_events_total"][(("kind", "predictions"),)] == 4000
        assert metrics["driftline_worker_events_total"][(("kind", "joined"),)] == 4000 - LAG
        reasons = metrics["driftline_worker_dead_letters_total"]
        assert reasons == {(("reason", "not_confluent_framed"),): 1.0}
        assert metrics["driftline_worker_drift_events_total"][(("stream_kind", "FEATURE"),)] >= 1
        assert metrics["driftline_worker_last_drift_timestamp_seconds"][()] > 0
        lags = metrics["driftline_worker_consumer_lag"]
        assert len(lags) == 8 and set(lags.values()) == {0.0}
        assert metrics["driftline_worker_epochs_committed_total"][()] >= 1
    finally:
        assert stop_worker(worker) in (0, -signal.SIGTERM), log.read_text()[-3000:]


def test_a_restart_commits_a_checkpoint_that_is_ahead_of_the_committed_offsets(
    fresh_kafka, tmp_path
):
    """A worker killed after its checkpoint landed but before its offset commit: the restarted
    worker resumes from the checkpoint and must also commit it, or with no new input the group
    shows lag for good (seen in the fault suite under load). Here the group's offsets are
    rewound by hand while no member runs: the same state of the world, made on purpose."""
    bootstrap = fresh_kafka.bootstrap
    ensure_topics(bootstrap, 4)
    n = 2000
    publish(bootstrap, SyntheticStream("rewind", n_features=4, seed=5), n, outcome_lag=LAG)
    app_id = f"worker-{uuid.uuid4().hex[:8]}"
    env = worker_env(bootstrap, tmp_path / "data", app_id)
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:
        wait_for(lambda: lag(bootstrap, app_id) == 0, 240, "the worker", worker, log)
    finally:
        assert stop_worker(worker) == 0, log.read_text()[-3000:]

    rewind = Consumer({"bootstrap.servers": bootstrap, "group.id": app_id})
    try:
        metadata = rewind.list_topics(timeout=30)
        rewind.commit(
            offsets=[
                TopicPartition(name, p, 0) for name in INPUTS for p in metadata.topics[name].partitions
            ],
            asynchronous=False,
        )
    finally:
        rewind.close()
    assert lag(bootstrap, app_id) == 2 * n - LAG

    worker = start_worker(env, log)
    try:
        wait_for(lambda: lag(bootstrap, app_id) == 0, 120, "the restarted worker", worker, log)
    finally:
        assert stop_worker(worker) == 0, log.read_text()[-3000:]
    # resumed from the checkpoint, not from the rewound offsets: nothing was read twice
    counts = query_store(
        tmp_path / "data",
        {"predictions": "SELECT count() FROM predictions", "outcomes": "SELECT count() FROM outcomes"},
    )
    assert counts == {"predictions": [[n]], "outcomes": [[n - LAG]]}
