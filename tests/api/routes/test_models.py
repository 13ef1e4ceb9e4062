"""/v1/models: publishing versions (ModelPublished on the real driftline.models.v1), the
versions and lineage the workers' rows give (a real embedded store), and bad input."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from conftest import auth
from driftline.api import ApiConfig, ControlPlane, create_app
from driftline.api.versions import ModelRegistry
from driftline.schemas import Codec, event_id, topics
from driftline.sinks import Store
from driftline.sinks.lineage import serving_row
from driftline.sinks.store import open_store
from e2e_support import decode_all, read_topic
from fastapi.testclient import TestClient

pytestmark = pytest.mark.e2e

T0 = 1_760_000_000_000


def unique(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = open_store(None, "api_models", tmp_path_factory.mktemp("chdb"), ttl_days=None)
    try:
        store.migrate()
        yield store
    finally:
        store.close()


@pytest.fixture(scope="module")
def registry(api_kafka) -> Iterator[ModelRegistry]:  # noqa: ANN001
    registry = ModelRegistry(api_kafka.bootstrap).start()
    assert registry.wait_ready(30)
    yield registry
    registry.close()


@pytest.fixture
def client(control_plane: ControlPlane, store: Store, registry: ModelRegistry,
           tokens: dict[str, str]) -> TestClient:  # fmt: skip
    app = create_app(ApiConfig(), control_plane=control_plane, store=store,
                     model_registry=registry)  # fmt: skip
    return TestClient(app, headers=auth(tokens["write"]))


def body(version: str = "2", **extra) -> dict:
    return {"version": version, "artifact_uri": f"s3://models/{version}",
            "metrics": {"accuracy": 0.91}, "tags": {"algorithm": "tree"}, **extra}  # fmt: skip


def test_publish_reaches_the_topic_as_avro_and_is_idempotent(client: TestClient, api_kafka) -> None:  # noqa: ANN001
    model = unique()
    created = client.post(f"/v1/models/{model}/versions", json=body(previous_version="1"))
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["publisher"].startswith("apikey:") and record["previous_version"] == "1"
    on_topic = [r for r in decode_all(read_topic(api_kafka.bootstrap, topics.MODELS))
                if r["model_id"] == model]  # fmt: skip
    assert on_topic == [record]
    again = client.post(f"/v1/models/{model}/versions", json=body(previous_version="1"))
    assert again.status_code == 200 and again.json()["event_id"] == record["event_id"]
    changed = client.post(f"/v1/models/{model}/versions", json=body(artifact_uri="s3://x"))
    assert changed.status_code == 409 and "immutable" in changed.json()["detail"]
    # nothing more reached the topic
    assert len([r for r in decode_all(read_topic(api_kafka.bootstrap, topics.MODELS))
                if r["model_id"] == model]) == 1  # fmt: skip


@pytest.mark.parametrize(
    "payload",
    [
        {"version": ""},
        {"version": "has space"},
        {"version": "2", "training_window_start": 10, "training_window_end": 5},
        {"version": "2", "training_window_start": -1},
        {"version": "2", "unknown": 1},
        {"version": "2", "metrics": {"a": "x"}},
        {"artifact_uri": "s3://no-version"},
    ],
)
def test_bad_versions_are_refused_with_422(client: TestClient, payload: dict) -> None:
    answer = client.post(f"/v1/models/{unique()}/versions", json=payload)
    assert answer.status_code == 422, answer.text


def test_model_ids_with_at_signs_are_refused(client: TestClient) -> None:
    assert client.post("/v1/models/a@b/versions", json=body()).status_code == 422


def test_publishing_needs_a_write_key(client: TestClient, tokens: dict[str, str]) -> None:
    answer = client.post(f"/v1/models/{unique()}/versions", json=body(),
                         headers=auth(tokens["read"]))  # fmt: skip
    assert answer.status_code == 403


def test_without_a_registry_publishing_answers_503(control_plane, store, tokens) -> None:  # noqa: ANN001
    app = create_app(ApiConfig(), control_plane=control_plane, store=store)
    answer = TestClient(app, headers=auth(tokens["write"])).post(
        f"/v1/models/{unique()}/versions", json=body()
    )
    assert answer.status_code == 503


def _prediction(model: str, version: str, i: int) -> dict:
    return {"event_id": f"{model}-{version}-{i}", "model_id": model, "model_version": version,
            "event_time": T0 + i * 1000, "numeric_features": {}, "categorical_features": {},
            "segments": {}, "prediction_label": "a", "prediction_score": None,
            "prediction_value": None, "probabilities": None}  # fmt: skip


def test_versions_show_serving_traffic_and_verdicts(client: TestClient, store: Store) -> None:
    model = unique()
    assert client.post(f"/v1/models/{model}/versions", json=body("2")).status_code == 201
    store.insert_rows("model_versions", [
        serving_row(model, "1", None, T0, T0 + 30_000),
        serving_row(model, "2", "1", T0 + 31_000, T0 + 40_000),
        serving_row(model, "2", "1", T0 + 30_500, T0 + 39_000),  # a replayed, older batch
    ])  # fmt: skip
    store.insert_rows("predictions", [_prediction(model, "1", i) for i in range(30)]
                      + [_prediction(model, "2", i) for i in range(30, 40)])  # fmt: skip
    verdict = _verdict(model, "2", "1", "WORSE")
    store.insert_rows("model_verdicts", [verdict])
    answer = client.get(f"/v1/models/{model}/versions")
    assert answer.status_code == 200, answer.text
    by_version = {v["version"]: v for v in answer.json()["data"]}
    assert list(by_version) == ["1", "2"]
    one, two = by_version["1"], by_version["2"]
    assert not one["published"] and one["first_seen"] == T0 and one["previous_version"] is None
    assert two["published"] and two["artifact_uri"] == "s3://models/2"
    assert two["metrics"] == {"accuracy": 0.91} and two["previous_version"] == "1"
    assert (two["first_seen"], two["last_seen"]) == (T0 + 30_500, T0 + 40_000)
    assert one["traffic_share"] == 0.75 and two["traffic_share"] == 0.25
    assert two["verdicts"] == [{"event_id": verdict["event_id"], "previous_version": "1",
                                "verdict": "WORSE", "p_value": 1e-6, "rollback_to": "1"}]  # fmt: skip
    models = {m["model_id"]: m for m in client.get("/v1/models").json()["data"]}
    assert models[model]["serving_version"] == "2" and models[model]["versions"] == 2
    assert client.get(f"/v1/models/{unique()}/versions").status_code == 404


def _verdict(model: str, version: str, previous: str, kind: str) -> dict:
    ident = event_id("verdict", model, version, previous, "500")
    return {"event_id": ident, "model_id": model, "version": version,
            "previous_version": previous, "verdict": kind, "metric": "accuracy",
            "test": "two_proportion_z", "value": 0.7, "previous_value": 0.9, "n_labels": 500,
            "n_previous": 500, "statistic": -5.0, "p_value": 1e-6, "alpha": 0.01,
            "decided_at": T0 + 50_000, "published_event_id": None, "evidence": {},
            "rollback_event_id": event_id("rollback", ident) if kind == "WORSE" else None,
            "rollback_to": previous if kind == "WORSE" else None}  # fmt: skip


def test_lineage_links_drift_request_version_serving_and_verdict(client, store) -> None:  # noqa: ANN001
    model = unique()
    drift = {"event_id": event_id("drift", model, "x"), "model_id": model, "model_version": "1",
             "stream_kind": "ERROR", "stream_name": "error", "detector": "ADWIN",
             "detected_at": T0 + 10_000, "position": 100, "statistic": None, "p_value": None,
             "threshold": 0.002, "evidence": {}, "source_event_id": "o-1"}  # fmt: skip
    request = {"event_id": event_id("retraining", model, drift["event_id"]), "model_id": model,
               "model_version": "1", "requested_at": T0 + 10_000, "reason": "drift",
               "trigger_event_ids": [drift["event_id"]], "window_start": T0,
               "window_end": T0 + 10_000, "priority": "NORMAL", "policy": "error-drift"}  # fmt: skip
    store.insert_rows("drift_events", [drift])
    store.insert_rows("retraining_requests", [request])
    published = client.post(f"/v1/models/{model}/versions",
                            json=body("2", retraining_request_id=request["event_id"])).json()  # fmt: skip
    partial = client.get(f"/v1/models/{model}/lineage").json()
    (chain,) = partial["versions"]
    assert chain["retraining_request"]["event_id"] == request["event_id"]
    assert [d["event_id"] for d in chain["drift_events"]] == [drift["event_id"]]
    assert not chain["serving"] and not chain["complete"]
    store.insert_rows("model_versions", [serving_row(model, "2", "1", T0 + 20_000, T0 + 60_000)])
    verdict = {**_verdict(model, "2", "1", "BETTER"), "published_event_id": published["event_id"]}
    store.insert_rows("model_verdicts", [verdict])
    (chain,) = client.get(f"/v1/models/{model}/lineage").json()["versions"]
    assert chain["complete"] and chain["version"]["published_event_id"] == published["event_id"]
    assert chain["verdicts"][0]["event_id"] == verdict["event_id"]
    assert client.get(f"/v1/models/{unique()}/lineage").status_code == 404


def test_codec_round_trips_what_the_api_publishes(client: TestClient) -> None:
    record = client.post(f"/v1/models/{unique()}/versions", json=body()).json()
    codec = Codec()
    assert codec.decode(codec.encode("ModelPublished", record))[1] == record
