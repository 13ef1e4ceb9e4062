"""Registries: the static manifest, and ConfluentRegistry against a small real HTTP peer.

No Confluent registry can be installed here, so the test starts a local HTTP server that
implements the REST subset driftline uses, with the same paths, bodies and error codes.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from typing import Any
from urllib.parse import unquote

import pytest
from driftline.schemas import (
    Codec,
    ConfluentRegistry,
    DecodeError,
    RegistryError,
    SchemaRegistry,
    StaticRegistry,
    UnknownSchemaId,
    load_schema,
    topics,
)
from driftline.schemas.registry import canonical
from fastavro import parse_schema, schemaless_writer


class RegistryState:
    """What a Confluent registry keeps: global ids per distinct schema, versions per subject."""

    def __init__(self, first_id: int = 100) -> None:
        self.next_id = first_id
        self.ids: dict[str, int] = {}  # canonical schema -> id
        self.schemas: dict[int, tuple[str, str]] = {}  # id -> (schema text, schemaType)
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[str] = []
        self.lock = threading.Lock()

    def add(self, subject: str, schema: str, schema_type: str = "AVRO") -> int:
        with self.lock:
            key = canonical(schema) if schema_type == "AVRO" else schema
            if key not in self.ids:
                self.ids[key] = self.next_id
                self.schemas[self.next_id] = (schema, schema_type)
                self.next_id += 1
            schema_id = self.ids[key]
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id


def make_handler(state: RegistryState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            state.requests.append(f"GET {self.path}")
            parts = self.path.strip("/").split("/")
            if len(parts) == 3 and parts[:2] == ["schemas", "ids"] and parts[2].isdigit():
                found = state.schemas.get(int(parts[2]))
                if found is None:
                    return self.reply(404, {"error_code": 40403, "message": "Schema not found"})
                schema, schema_type = found
                body = {"schema": schema}
                if schema_type != "AVRO":
                    body["schemaType"] = schema_type
                return self.reply(200, body)
            self.reply(404, {"error_code": 404, "message": "HTTP 404 Not Found"})

        def do_POST(self) -> None:
            state.requests.append(f"POST {self.path}")
            length = int(self.headers.get("Content-Length", 0))
            try:
                schema = json.loads(self.rfile.read(length))["schema"]
                json.loads(schema)
            except (ValueError, KeyError):
                return self.reply(422, {"error_code": 42201, "message": "Invalid schema"})
            parts = self.path.strip("/").split("/")
            if parts[0] != "subjects" or len(parts) not in (2, 3):
                return self.reply(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
            subject = unquote(parts[1])
            if len(parts) == 3 and parts[2] == "versions":
                return self.reply(200, {"id": state.add(subject, schema)})
            versions = state.subjects.get(subject)
            if not versions:
                return self.reply(404, {"error_code": 40401, "message": "Subject not found"})
            schema_id = state.ids.get(canonical(schema))
            if schema_id not in versions:
                return self.reply(404, {"error_code": 40403, "message": "Schema not found"})
            version = versions.index(schema_id) + 1
            return self.reply(
                200, {"subject": subject, "id": schema_id, "version": version, "schema": schema}
            )

    return Handler


@pytest.fixture
def registry_server() -> Iterator[tuple[str, RegistryState]]:
    state = RegistryState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


SUBJECT = topics.value_subject(topics.OUTCOMES)
OUTCOME = {
    "event_id": "o-1",
    "prediction_id": "p-1",
    "model_id": "churn",
    "event_time": 1_700_000_000_000,
    "label": "yes",
    "value": None,
}


# -- static ------------------------------------------------------------------------------------


def test_static_registry_serves_the_manifest() -> None:
    registry = StaticRegistry()
    assert isinstance(registry, SchemaRegistry)
    assert registry.subjects == {
        "driftline.predictions.v1-value": 1,
        "driftline.outcomes.v1-value": 2,
        "driftline.drift.v1-value": 3,
        "driftline.retraining.v1-value": 4,
        "driftline.alerts.v1-value": 5,
        "driftline.predictions.v1-dev.driftline.PredictionBatch": 6,
        "driftline.outcomes.v1-dev.driftline.OutcomeBatch": 7,
        "driftline.references.v1-value": 8,
        "driftline.models.v1-value": 9,
        "driftline.verdicts.v1-value": 10,
        "driftline.verdicts.v1-dev.driftline.RollbackRecommended": 11,
    }
    assert registry.register(SUBJECT, load_schema("OutcomeEvent")) == 2
    assert registry.schema_by_id(2) == load_schema("OutcomeEvent")
    with pytest.raises(UnknownSchemaId):
        registry.schema_by_id(0)


def test_static_registry_refuses_what_the_manifest_does_not_say() -> None:
    registry = StaticRegistry()
    with pytest.raises(RegistryError, match="not in the static manifest"):
        registry.register("elsewhere-value", load_schema("OutcomeEvent"))
    changed = load_schema("OutcomeEvent")
    changed["fields"].append({"name": "extra", "type": "string", "default": "", "doc": "x"})
    with pytest.raises(RegistryError, match="differs"):
        registry.register(SUBJECT, changed)
    with pytest.raises(ValueError, match="twice"):
        StaticRegistry(
            {
                "subjects": {
                    "a-value": {"id": 1, "schema": "dev.driftline.OutcomeEvent"},
                    "b-value": {"id": 1, "schema": "dev.driftline.DriftEvent"},
                }
            }
        )


# -- confluent ---------------------------------------------------------------------------------


def test_register_and_fetch_are_cached(registry_server: tuple[str, RegistryState]) -> None:
    url, state = registry_server
    with ConfluentRegistry(url) as registry:
        schema_id = registry.register(SUBJECT, load_schema("OutcomeEvent"))
        assert schema_id == 100
        assert registry.register(SUBJECT, load_schema("OutcomeEvent")) == 100
        assert registry.schema_by_id(100) == load_schema("OutcomeEvent")
    assert state.requests == [f"POST /subjects/{SUBJECT}/versions"]
    # A second client (another process) learns the schema from the id alone, once.
    with ConfluentRegistry(url + "/") as other:
        assert other.schema_by_id(100) == load_schema("OutcomeEvent")
        assert other.schema_by_id(100) == load_schema("OutcomeEvent")
    assert state.requests[1:] == ["GET /schemas/ids/100"]


def test_unknown_ids_are_negatively_cached(registry_server: tuple[str, RegistryState]) -> None:
    url, state = registry_server
    with ConfluentRegistry(url, negative_ttl=60) as registry:
        for _ in range(3):
            with pytest.raises(UnknownSchemaId):
                registry.schema_by_id(7)
    assert state.requests == ["GET /schemas/ids/7"]
    with ConfluentRegistry(url, negative_ttl=0) as registry:
        for _ in range(2):
            with pytest.raises(UnknownSchemaId):
                registry.schema_by_id(7)
    assert state.requests.count("GET /schemas/ids/7") == 3


def test_lookup_only_mode(registry_server: tuple[str, RegistryState]) -> None:
    url, state = registry_server
    with ConfluentRegistry(url, auto_register=False) as registry:
        with pytest.raises(RegistryError, match="40401"):
            registry.register(SUBJECT, load_schema("OutcomeEvent"))
        state.add(SUBJECT, json.dumps(load_schema("OutcomeEvent")))
        assert registry.register(SUBJECT, load_schema("OutcomeEvent")) == 100
    assert all(not r.endswith("/versions") for r in state.requests)


def test_codec_over_confluent_registry(registry_server: tuple[str, RegistryState]) -> None:
    url, _ = registry_server
    with ConfluentRegistry(url) as registry:
        codec = Codec(registry)
        data = codec.encode("OutcomeEvent", OUTCOME)
        assert int.from_bytes(data[1:5], "big") == 100
    # A consumer with its own registry client decodes it.
    with ConfluentRegistry(url) as registry:
        assert Codec(registry).decode(data, expected="OutcomeEvent") == ("OutcomeEvent", OUTCOME)
        static_framed = Codec().encode("PredictionEvent", {
            "event_id": "p", "model_id": "m", "model_version": "1", "event_time": 0,
        })  # fmt: skip
        with pytest.raises(DecodeError) as info:
            Codec(registry).decode(static_framed)  # id 1 was never registered here
        assert info.value.reason == topics.UNKNOWN_SCHEMA_ID


def test_codec_resolves_an_older_writer_version(registry_server: tuple[str, RegistryState]) -> None:
    url, state = registry_server
    old = load_schema("OutcomeEvent")
    old["fields"] = [f for f in old["fields"] if f["name"] != "value"]
    old_id = state.add(SUBJECT, json.dumps(old))
    record = {k: v for k, v in OUTCOME.items() if k != "value"}
    buf = BytesIO(b"\x00" + old_id.to_bytes(4, "big"))
    buf.seek(5)
    schemaless_writer(buf, parse_schema(old), record)
    with ConfluentRegistry(url) as registry:
        assert Codec(registry).decode(buf.getvalue()) == ("OutcomeEvent", OUTCOME)


def test_non_avro_schema_ids_are_unknown(registry_server: tuple[str, RegistryState]) -> None:
    url, state = registry_server
    proto_id = state.add("x-value", 'syntax = "proto3";', schema_type="PROTOBUF")
    with ConfluentRegistry(url) as registry, pytest.raises(DecodeError) as info:
        Codec(registry).decode(b"\x00" + proto_id.to_bytes(4, "big") + b"\x02")
    assert info.value.reason == topics.UNKNOWN_SCHEMA_ID


def test_unreachable_registry_is_a_registry_error_not_a_decode_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    with ConfluentRegistry(f"http://127.0.0.1:{port}", timeout=2) as registry:
        codec = Codec(registry)
        with pytest.raises(RegistryError, match="unreachable"):
            codec.encode("OutcomeEvent", OUTCOME)
        # Says nothing about the message: the worker should retry, not dead-letter.
        with pytest.raises(RegistryError):
            codec.decode(b"\x00\x00\x00\x00\x01\x00")
