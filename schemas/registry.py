"""Schema registries behind one small interface: the static manifest and a Confluent registry.

The codec only needs two things from a registry: the id under which a schema is registered for
a subject (to frame what it writes) and the schema behind an id (to read what others wrote).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from importlib import resources
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote

import httpx
from driftline.schemas.topics import NAMESPACE

__all__ = [
    "SCHEMA_FILES",
    "ConfluentRegistry",
    "RegistryError",
    "SchemaRegistry",
    "StaticRegistry",
    "UnknownSchemaId",
    "canonical",
    "full_name",
    "load_manifest",
    "load_schema",
]

SCHEMA_FILES: dict[str, str] = {
    "PredictionEvent": "PredictionEvent.avsc",
    "OutcomeEvent": "OutcomeEvent.avsc",
    "DriftEvent": "DriftEvent.avsc",
    "RetrainingRequested": "RetrainingRequested.avsc",
    "AlertEvent": "AlertEvent.avsc",
    "PredictionBatch": "PredictionBatch.avsc",
    "OutcomeBatch": "OutcomeBatch.avsc",
    "ReferenceProfile": "ReferenceProfile.avsc",
    "ModelPublished": "ModelPublished.avsc",
    "ModelVerdict": "ModelVerdict.avsc",
    "RollbackRecommended": "RollbackRecommended.avsc",
}


class RegistryError(Exception):
    """The registry could not answer (transport failure, bad response, refused schema).

    Deliberately *not* a DecodeError: a registry outage says nothing about the message, so a
    worker should retry rather than dead-letter it.
    """


class UnknownSchemaId(RegistryError):
    """The registry answered that no (Avro) schema has this id."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"no Avro schema with id {schema_id}")
        self.schema_id = schema_id


def load_schema(name: str) -> dict[str, Any]:
    """The shipped ``.avsc`` of a record (short name like ``"PredictionEvent"``), as JSON."""
    short = name.rsplit(".", 1)[-1]
    try:
        filename = SCHEMA_FILES[short]
    except KeyError:
        raise KeyError(f"no shipped schema named {name!r}; known: {sorted(SCHEMA_FILES)}") from None
    return json.loads(resources.files("driftline.schemas").joinpath(filename).read_text())


def load_manifest() -> dict[str, Any]:
    return json.loads(resources.files("driftline.schemas").joinpath("manifest.json").read_text())


def full_name(schema: Mapping[str, Any]) -> str:
    name = schema["name"]
    namespace = schema.get("namespace")
    return f"{namespace}.{name}" if namespace and "." not in name else name


def canonical(schema: Mapping[str, Any] | str) -> str:
    """A stable string for comparing and caching schemas (sorted keys, no whitespace)."""
    if isinstance(schema, str):
        schema = json.loads(schema)
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


@runtime_checkable
class SchemaRegistry(Protocol):
    def register(self, subject: str, schema: Mapping[str, Any]) -> int:
        """Id of ``schema`` under ``subject`` (registering it if the registry allows)."""
        ...

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        """The schema JSON behind an id; raises UnknownSchemaId if there is none."""
        ...


class StaticRegistry:
    """Ids from ``schemas/manifest.json``; nothing is ever registered at run time.

    >>> StaticRegistry().register("driftline.predictions.v1-value", load_schema("PredictionEvent"))
    1
    """

    def __init__(self, manifest: Mapping[str, Any] | None = None) -> None:
        manifest = load_manifest() if manifest is None else manifest
        self._subjects: dict[str, tuple[int, str]] = {}
        self._by_id: dict[int, dict[str, Any]] = {}
        self._canonical: dict[int, str] = {}
        for subject, entry in manifest["subjects"].items():
            schema_id = int(entry["id"])
            schema = load_schema(entry["schema"])
            if schema_id in self._by_id:
                raise ValueError(f"schema id {schema_id} used twice in the manifest")
            self._subjects[subject] = (schema_id, full_name(schema))
            self._by_id[schema_id] = schema
            self._canonical[schema_id] = canonical(schema)

    @property
    def subjects(self) -> dict[str, int]:
        return {subject: schema_id for subject, (schema_id, _) in self._subjects.items()}

    def register(self, subject: str, schema: Mapping[str, Any]) -> int:
        try:
            schema_id, _ = self._subjects[subject]
        except KeyError:
            raise RegistryError(f"subject {subject!r} is not in the static manifest") from None
        # A static id is only honest for the exact schema it was assigned to.
        if canonical(schema) != self._canonical[schema_id]:
            raise RegistryError(
                f"schema differs from the one the manifest assigns to {subject!r} (id "
                f"{schema_id}); add a new id to manifest.json or use a schema registry"
            )
        return schema_id

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise UnknownSchemaId(schema_id) from None


_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class ConfluentRegistry:
    """A Confluent-compatible schema registry over HTTP (the REST subset the codec needs).

    Uses ``POST /subjects/{subject}/versions`` (register) or ``POST /subjects/{subject}``
    (lookup only, when ``auto_register=False``) and ``GET /schemas/ids/{id}``. Answers are
    cached for the life of the object (ids are immutable in a registry); "no such id" answers
    are cached for ``negative_ttl`` seconds so a stream of garbage ids cannot flood the registry.
    """

    def __init__(
        self,
        url: str,
        *,
        auto_register: bool = True,
        timeout: float = 5.0,
        negative_ttl: float = 30.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.auto_register = auto_register
        self.negative_ttl = negative_ttl
        self._client = client or httpx.Client(
            base_url=self.url, timeout=timeout, headers={"Accept": _CONTENT_TYPE}
        )
        self._owns_client = client is None
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, dict[str, Any]] = {}
        self._missing: dict[int, float] = {}
        self._lock = threading.Lock()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, f"{self.url}{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise RegistryError(f"schema registry {self.url} unreachable: {exc}") from exc

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as exc:
            raise RegistryError(f"registry answered non-JSON: {response.text[:200]!r}") from exc
        if not isinstance(body, dict):
            raise RegistryError(f"registry answered unexpected JSON: {body!r:.200}")
        return body

    def register(self, subject: str, schema: Mapping[str, Any]) -> int:
        text = canonical(schema)
        key = (subject, text)
        cached = self._ids.get(key)
        if cached is not None:
            return cached
        path = f"/subjects/{quote(subject, safe='')}"
        if self.auto_register:
            path += "/versions"
        response = self._request(
            "POST", path, json={"schema": text}, headers={"Content-Type": _CONTENT_TYPE}
        )
        body = self._json(response)
        if response.status_code != 200 or "id" not in body:
            raise RegistryError(
                f"registry refused schema for {subject!r}: HTTP {response.status_code} "
                f"{body.get('error_code')} {body.get('message')}"
            )
        schema_id = int(body["id"])
        with self._lock:
            self._ids[key] = schema_id
            self._schemas.setdefault(schema_id, json.loads(text))
        return schema_id

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        missing_since = self._missing.get(schema_id)
        if missing_since is not None and time.monotonic() - missing_since < self.negative_ttl:
            raise UnknownSchemaId(schema_id)
        response = self._request("GET", f"/schemas/ids/{schema_id}")
        if response.status_code == 404:
            with self._lock:
                if len(self._missing) > 10_000:
                    self._missing.clear()
                self._missing[schema_id] = time.monotonic()
            raise UnknownSchemaId(schema_id)
        body = self._json(response)
        if response.status_code != 200 or "schema" not in body:
            raise RegistryError(
                f"registry failed on schema id {schema_id}: HTTP {response.status_code} "
                f"{body.get('error_code')} {body.get('message')}"
            )
        # Protobuf / JSON-Schema ids can share the id space; for an Avro reader they do not exist.
        if body.get("schemaType", "AVRO") != "AVRO":
            raise UnknownSchemaId(schema_id)
        try:
            schema = json.loads(body["schema"])
        except ValueError as exc:
            raise RegistryError(f"registry schema {schema_id} is not JSON") from exc
        if isinstance(schema, str):  # a bare primitive like "string": wrap for uniform handling
            schema = {"type": schema}
        with self._lock:
            self._schemas[schema_id] = schema
        return schema

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> ConfluentRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def qualify(name: str) -> str:
    """``"PredictionEvent"`` -> ``"dev.driftline.PredictionEvent"``; full names pass through."""
    return name if "." in name else f"{NAMESPACE}.{name}"
