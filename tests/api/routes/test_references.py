"""PUT/GET /v1/models/{model}/reference: uploads as CSV, Parquet and JSON columns reach the
references topic the workers follow; bad references get a clear 4xx and change nothing.

Through the real app and the session broker's control plane (keys) with the real references
topic; the worker end of it is test_api_reference_reaches_a_running_worker below."""

from __future__ import annotations

import io
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import auth
from driftline.api import ApiConfig, ControlPlane, ReferenceTopic, create_app, crud
from driftline.schemas import Codec, topics
from driftline.schemas.control_plane import CompactedTopicFollower
from driftline.streams.profiles import ReferenceBook
from fastapi.testclient import TestClient

pytestmark = pytest.mark.e2e


def unique(prefix: str) -> str:
    """A model id no other test on the shared broker uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def frame(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    g = np.random.default_rng(seed)
    return pd.DataFrame(
        {"age": g.normal(40, 10, n), "income": g.lognormal(10, 0.5, n),
         "plan": g.choice(["gold", "free"], n, p=[0.3, 0.7]), "score": g.random(n)}
    )  # fmt: skip


def parquet(df: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    df.to_parquet(buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def reference_topic(api_kafka) -> Iterator[ReferenceTopic]:  # noqa: ANN001
    topic = ReferenceTopic(api_kafka.bootstrap).start()
    assert topic.wait_ready(30)
    yield topic
    topic.close()


@pytest.fixture(scope="module")
def worker_book(api_kafka) -> Iterator[ReferenceBook]:  # noqa: ANN001
    """What a worker runs: its own follower of the topic into its ReferenceBook."""
    book = ReferenceBook(Codec())
    follower = CompactedTopicFollower(
        api_kafka.bootstrap, book.on_record, topics.REFERENCES, name="test-api-references"
    )
    follower.start(30.0)
    assert follower.wait_ready(30.0)
    yield book
    follower.close()


KNOWN = ("churn-a", "churn-b", "churn-c", "churn-d")


@pytest.fixture
def writer(control_plane: ControlPlane, reference_topic: ReferenceTopic, tokens) -> TestClient:  # noqa: ANN001
    config = ApiConfig(max_reference_bytes=2_000_000)
    app = create_app(config, control_plane=control_plane, references=reference_topic)
    return TestClient(app, headers=auth(tokens["write"]))


def wait_for(book: ReferenceBook, model: str, reference_id: str) -> None:
    """Until the worker-side reader has it (a generous bound on a loaded machine, not a
    measurement)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = book.get(model)
        if got is not None and got.reference_id == reference_id:
            return
        time.sleep(0.1)
    raise AssertionError(f"reference {reference_id} of {model} never reached the reader")


@pytest.mark.parametrize("kind", ["csv", "parquet", "json"])
def test_upload_reaches_a_worker_reader_and_reads_back(
    writer: TestClient, worker_book: ReferenceBook, tokens, kind: str  # noqa: ANN001
) -> None:
    model = unique(f"api-ref-{kind}")
    df = frame()
    body = {
        "csv": {"content": df.to_csv(index=False), "headers": {"content-type": "text/csv"}},
        "parquet": {
            "content": parquet(df),
            "headers": {"content-type": "application/vnd.apache.parquet"},
        },
        "json": {"json": {"columns": df.to_dict(orient="list")}},
    }[kind]
    response = writer.put(
        f"/v1/models/{model}/reference",
        params={"version": "train-4", "score": "score", "categorical": ["plan"]},
        **body,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert response.headers["etag"] == f'"{created["reference_id"]}"'
    assert created["uploaded_by"].startswith("apikey:")
    assert (created["version"], created["source"], created["n_events"]) == ("train-4", "uploaded", 3000)
    assert created["features"] == ["age", "income", "plan"]
    assert created["multivariate"] == ["age", "income"]
    columns = {c["column"]: c for c in created["columns"]}
    assert set(columns) == {"age", "income", "plan", "@prediction_score"}
    assert sum(columns["plan"]["categories"].values()) == 3000
    assert columns["age"]["min"] == pytest.approx(df["age"].min())
    wait_for(worker_book, model, created["reference_id"])

    # read-your-writes: the API's own reader has it already
    read = TestClient(writer.app, headers=auth(tokens["read"]))
    got = read.get(f"/v1/models/{model}/reference")
    assert got.status_code == 200 and got.json() == created

    # a new upload replaces it (200, not 201) for the workers too
    again = writer.put(f"/v1/models/{model}/reference", params={"version": "train-5"},
                       json={"columns": frame(500, 1)[["age", "plan"]].to_dict(orient="list")})  # fmt: skip
    assert again.status_code == 200, again.text
    wait_for(worker_book, model, again.json()["reference_id"])
    assert worker_book.get(model).version == "train-5"


BAD = [
    ({"json": {"columns": {"x": [1.0, "a", 2.0]}}}, 422, "mixes numbers and strings"),
    ({"json": {"columns": {"x": []}}}, 422, "no rows"),
    ({"json": {"columns": {}}}, 422, "no columns"),
    ({"json": {"columns": {"x": [None, None]}}}, 422, "no values"),
    ({"json": {"columns": {"x": [1.0, 2.0], "y": [1.0]}}}, 422, "different lengths"),
    ({"json": {"columns": {"x": [{"nested": 1}]}}}, 422, "columns"),
    ({"json": {"rows": [{"x": 1}]}}, 422, "columns"),
    ({"content": "x\n1\ninf\n", "headers": {"content-type": "text/csv"}}, 422, "finite"),
    ({"content": "x,y\n", "headers": {"content-type": "text/csv"}}, 422, "no rows"),
    ({"content": b"PAR1junk", "headers": {"content-type": "application/vnd.apache.parquet"}},
     422, "cannot read"),
    ({"content": "<x/>", "headers": {"content-type": "application/xml"}}, 415, "text/csv"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "code", "message"), BAD)
def test_bad_references_are_refused_and_change_nothing(
    writer: TestClient, reference_topic: ReferenceTopic, body: dict, code: int, message: str
) -> None:
    model = unique("api-ref-bad")
    good = writer.put(f"/v1/models/{model}/reference", json={"columns": {"x": [1.0, 2.0, 3.0]}})
    assert good.status_code == 201
    end = reference_topic.follower.lag(), reference_topic.book.applied
    response = writer.put(f"/v1/models/{model}/reference", **body)
    assert response.status_code == code, response.text
    assert message in str(response.json()["detail"])
    assert reference_topic.book.applied == end[1]  # nothing published
    assert writer.get(f"/v1/models/{model}/reference").json()["reference_id"] == good.json()["reference_id"]


def test_unknown_model_and_too_large(control_plane: ControlPlane, reference_topic: ReferenceTopic, tokens) -> None:  # noqa: ANN001
    config = ApiConfig(known_models=frozenset(KNOWN), max_reference_bytes=50_000)
    client = TestClient(
        create_app(config, control_plane=control_plane, references=reference_topic),
        headers=auth(tokens["write"]),
    )
    applied = reference_topic.book.applied
    small = {"columns": {"x": [1.0, 2.0, 3.0]}}
    unknown = client.put(f"/v1/models/{unique('nope')}/reference", json=small)
    assert unknown.status_code == 404 and "DRIFTLINE_KNOWN_MODELS" in unknown.json()["detail"]
    # refused before its body is read: a bad body does not turn it into a 422
    junk = client.put(f"/v1/models/{unique('nope')}/reference", content=b"junk",
                      headers={"content-type": "text/csv"})  # fmt: skip
    assert junk.status_code == 404
    big = client.put("/v1/models/churn-a/reference", content=frame(3000).to_csv(index=False),
                     headers={"content-type": "text/csv"})  # fmt: skip
    assert big.status_code == 413 and "50000" in big.json()["detail"]
    # a body within the limit whose profile cannot fit one Kafka message
    # (2,000 distinct 500-character categories: ~1 MB of category names)
    wide = {"id": [f"{i:0500d}" for i in range(2000)], "x": [1.0] * 2000}
    roomy = TestClient(
        create_app(ApiConfig(known_models=frozenset(KNOWN)), control_plane=control_plane,
                   references=reference_topic),
        headers=auth(tokens["write"]),
    )  # fmt: skip
    too_wide = roomy.put("/v1/models/churn-b/reference", json={"columns": wide})
    assert too_wide.status_code == 413 and "limit" in too_wide.json()["detail"]
    assert reference_topic.book.applied == applied


def test_scopes_and_missing_reference(writer: TestClient, tokens) -> None:  # noqa: ANN001
    model = unique("api-ref-scope")
    reader = TestClient(writer.app, headers=auth(tokens["read"]))
    refused = reader.put(f"/v1/models/{model}/reference", json={"columns": {"x": [1.0]}})
    assert refused.status_code == 403
    assert TestClient(writer.app).get(f"/v1/models/{model}/reference").status_code == 401
    missing = reader.get(f"/v1/models/{model}/reference")
    assert missing.status_code == 404 and "first events" in missing.json()["detail"]


def test_api_reference_reaches_a_running_worker(fresh_kafka, tmp_path: Path) -> None:  # noqa: ANN001
    """Real broker, real worker process, embedded ClickHouse: a reference uploaded through the
    API while the worker runs is used from the model's next window on (drift against it),
    and lands in reference_profiles."""
    from e2e_support import (
        decode_all,
        lag,
        query_store,
        read_topic,
        start_worker,
        stop_worker,
        worker_env,
    )
    from e2e_support import wait_for as wait_until

    from driftline.admin import ensure_topics
    from driftline.client import DriftlineProducer

    bootstrap = fresh_kafka.bootstrap
    ensure_topics(bootstrap, 2)
    control_plane = ControlPlane(bootstrap).start()
    references = ReferenceTopic(bootstrap).start()
    assert control_plane.wait_ready(30) and references.wait_ready(30)
    token, _ = crud.create_api_key(control_plane=control_plane, name="ci", scopes=["write"],
                                   actor="tests")  # fmt: skip
    client = TestClient(
        create_app(ApiConfig(), control_plane=control_plane, references=references),
        headers=auth(token),
    )
    app_id = f"worker-{uuid.uuid4().hex[:8]}"
    env = worker_env(bootstrap, tmp_path / "data", app_id,
                     DRIFTLINE_MONITOR_WINDOW_SIZE="1000",
                     DRIFTLINE_MONITOR_AUTO_REFERENCE_EVENTS="1000")  # fmt: skip
    log = tmp_path / "worker.log"
    model, start = "api-e2e", 1_790_000_000_000

    def live(n: int, seed: int) -> pd.DataFrame:
        # the live traffic: x ~ N(0, 1) throughout, plan mostly "free"
        g = np.random.default_rng(seed)
        return pd.DataFrame({"x": g.normal(0.0, 1.0, n),
                             "plan": g.choice(["gold", "free"], n, p=[0.3, 0.7])})  # fmt: skip

    def tested_against(reference_id: str) -> list[dict]:
        drifts = decode_all(read_topic(bootstrap, topics.DRIFT))
        return [d for d in drifts if d["evidence"].get("reference_id") == reference_id]

    worker = start_worker(env, log)
    try:
        with DriftlineProducer(bootstrap) as producer:
            sent = 0

            def send(n: int, seed: int) -> None:
                nonlocal sent
                times = start + 10 * (sent + np.arange(n))
                producer.log_predictions(model, live(n, seed), event_time=times)
                assert producer.flush(60) == 0
                sent += n
                wait_until(lambda: lag(bootstrap, app_id) == 0, 240, "the worker to catch up",
                           worker, log)  # fmt: skip

            # 3,000 events before the upload: windows against the model's first 1,000 events
            send(3000, 1)
            # the training data had x ~ N(1, 1): the live traffic has drifted from it
            g = np.random.default_rng(9)
            training = {"x": g.normal(1.0, 1.0, 5000).tolist(),
                        "plan": g.choice(["gold", "free"], 5000, p=[0.3, 0.7]).tolist()}  # fmt: skip
            uploaded = client.put(f"/v1/models/{model}/reference", params={"version": "train-2"},
                                  json={"columns": training})  # fmt: skip
            assert uploaded.status_code == 201, uploaded.text
            reference_id = uploaded.json()["reference_id"]
            # The worker's reader applies the record on its own thread, at a moment no event
            # fixes: keep the traffic coming, a window at a time, until a window is tested
            # against it (the next whole window after it arrives).
            for round_ in range(10):
                send(1000, 2 + round_)
                if tested_against(reference_id):
                    break
    finally:
        assert stop_worker(worker) in (0, -signal.SIGTERM), log.read_text()[-3000:]
        client.close()
        references.close()
        control_plane.close()

    against = tested_against(reference_id)
    assert against, "no window was tested against the API-uploaded reference"
    assert {d["evidence"]["reference_version"] for d in against} == {"train-2"}
    assert any(d["stream_name"] == "x" and d["detector"] in ("ks", "chisquare") for d in against)
    assert not any(d["stream_name"] == "plan" for d in against)  # unchanged mix: no drift
    rows = query_store(tmp_path / "data", {
        "sources": "SELECT reference_source, uploaded_by, reference_version, count() "
                   "FROM reference_profiles FINAL GROUP BY 1, 2, 3 ORDER BY 1",
        "windows": f"SELECT count() FROM feature_drift FINAL WHERE reference_id = '{reference_id}'",
    })  # fmt: skip
    (first, upload) = rows["sources"]
    assert (first[0], first[1], first[3]) == ("first_events", "worker", 2)  # x and plan
    assert (upload[0], upload[2], upload[3]) == ("uploaded", "train-2", 2)
    assert upload[1].startswith("apikey:") and upload[1].endswith("/ci")
    assert rows["windows"][0][0] > 0
