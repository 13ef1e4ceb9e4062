"""An example downstream training service for driftline.

It consumes ``RetrainingRequested`` events from ``driftline.retraining.v1``, reads the labelled
data of the requested window from ClickHouse (``joined_labels FINAL`` for the labels,
``predictions FINAL`` for the features) through clickhouse-connect, trains a river
``HoeffdingTreeClassifier`` on those rows in event-time order, and publishes the result:

* ``<models-dir>/<model_id>/<version>.pkl``: the pickled river model;
* ``<models-dir>/<model_id>/<version>.json``: what it was trained on (the ModelPublished record);
* a ``ModelPublished`` Avro record (schemas/ModelPublished.avsc) on the compacted
  ``driftline.models.v1`` (key = ``model@version``, so the topic keeps every version); the
  workers put it in ClickHouse's ``model_versions`` and link it to its request (lineage).

Delivery is at least once: the consumer offset of a request is committed only after its model
is on disk and its ModelPublished record is acknowledged by the broker. A request seen again
(a replay, or a crash between publishing and committing) is recognised by its event id in
``<models-dir>/<model_id>/ledger.json`` and is not retrained: the stored record is published
again, byte for byte, with the same deterministic ``event_id`` for consumers to drop.

Run it next to a worker that serves its store over ClickHouse's HTTP interface::

    python examples/trainer/trainer.py --bootstrap 127.0.0.1:9092 \\
        --clickhouse-url http://reader:pw@127.0.0.1:8123 --models-dir ./models

See README.md beside this file for the whole loop.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import pickle
import re
import signal
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from driftline.schemas import Codec, event_id, topics
from driftline.schemas.model_versions import make_published

log = logging.getLogger("driftline.examples.trainer")

MODELS_TOPIC = topics.MODELS
MODEL_PUBLISHED = topics.MODEL_PUBLISHED

# The window's labelled rows with their features, oldest first. FINAL: the tables are
# ReplacingMergeTrees that may still hold replayed duplicates.
WINDOW_QUERY = """
SELECT j.prediction_time, p.numeric_features, p.categorical_features, j.label
FROM joined_labels AS j FINAL
INNER JOIN
(
    SELECT event_id, numeric_features, categorical_features
    FROM predictions FINAL
    WHERE model_id = {model:String}
      AND event_time >= fromUnixTimestamp64Milli({start:Int64}, 'UTC')
      AND event_time < fromUnixTimestamp64Milli({end:Int64}, 'UTC')
) AS p ON p.event_id = j.prediction_id
WHERE j.model_id = {model:String}
  AND j.prediction_time >= fromUnixTimestamp64Milli({start:Int64}, 'UTC')
  AND j.prediction_time < fromUnixTimestamp64Milli({end:Int64}, 'UTC')
  AND j.label IS NOT NULL
ORDER BY j.prediction_time, j.prediction_id
LIMIT {limit:UInt64}
"""


@dataclass
class TrainerConfig:
    bootstrap: str
    clickhouse_url: str
    models_dir: Path
    database: str = "driftline"
    group_id: str = "driftline-trainer"
    requests_topic: str = topics.RETRAINING
    models_topic: str = MODELS_TOPIC
    # fnmatch globs on the request's ``policy``: e.g. ``rule:*`` to train only on alert rules'
    # requests and leave the processor's built-in ``error-drift`` policy to someone else.
    policies: list[str] = field(default_factory=lambda: ["*"])
    min_rows: int = 100
    max_rows: int = 1_000_000
    grace_period: int = 50


# -- reading the window ------------------------------------------------------------------------


def clickhouse_client(url: str, database: str) -> Any:
    """A clickhouse-connect client from ``http://user:password@host:port[/database]``."""
    import clickhouse_connect

    parts = urlsplit(url)
    return clickhouse_connect.get_client(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 8123,
        username=unquote(parts.username or "default"),
        password=unquote(parts.password or ""),
        database=parts.path.strip("/") or database,
        secure=parts.scheme == "https",
    )


def fetch_window(
    client: Any, model_id: str, start_ms: int, end_ms: int, limit: int
) -> list[tuple[dict[str, Any], str]]:
    """(features, label) of the model's labelled predictions made in [start_ms, end_ms)."""
    result = client.query(
        WINDOW_QUERY,
        parameters={"model": model_id, "start": start_ms, "end": end_ms, "limit": limit},
    )
    rows = []
    for _time, numeric, categorical, label in result.result_rows:
        features: dict[str, Any] = dict(numeric or {})
        features.update(categorical or {})
        rows.append((features, label))
    return rows


# -- training ------------------------------------------------------------------------------------


def train(rows: list[tuple[dict[str, Any], str]], grace_period: int = 50) -> tuple[Any, float]:
    """A fresh river Hoeffding tree learned on ``rows`` in order, and its prequential
    (test-then-train) accuracy over them."""
    from river import tree

    model = tree.HoeffdingTreeClassifier(grace_period=grace_period)
    right = seen = 0
    for features, label in rows:
        if seen:
            right += model.predict_one(features) == label
        model.learn_one(features, label)
        seen += 1
    return model, right / (seen - 1) if seen > 1 else 0.0


def accuracy(model: Any, rows: list[tuple[dict[str, Any], Any]]) -> float:
    """Share of ``rows`` the model predicts right (0.0 for no rows)."""
    if not rows:
        return 0.0
    return sum(model.predict_one(x) == y for x, y in rows) / len(rows)


# -- the model store ---------------------------------------------------------------------------


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ModelStore:
    """``<root>/<model_id>/<version>.pkl`` + ``.json``, and ``ledger.json``: request event id
    -> version, written last, so an entry means the version is complete on disk."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def model_dir(self, model_id: str) -> Path:
        safe = _UNSAFE.sub("_", model_id)
        if safe != model_id:  # keep distinct ids apart after escaping
            safe = f"{safe}-{event_id('model-dir', model_id)[:8]}"
        return self.root / safe

    def ledger(self, model_id: str) -> dict[str, int]:
        path = self.model_dir(model_id) / "ledger.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def published(self, model_id: str, request_id: str) -> dict[str, Any] | None:
        """The ModelPublished record already made for this request, if any."""
        version = self.ledger(model_id).get(request_id)
        if version is None:
            return None
        return json.loads((self.model_dir(model_id) / f"{version}.json").read_text())

    def next_version(self, model_id: str, serving_version: str) -> int:
        versions = list(self.ledger(model_id).values())
        if serving_version.isdigit():
            versions.append(int(serving_version))
        return max(versions, default=0) + 1

    def save(self, model: Any, record: dict[str, Any]) -> Path:
        directory = self.model_dir(record["model_id"])
        path = directory / f"{record['version']}.pkl"
        _atomic_write(path, pickle.dumps(model))
        _atomic_write(directory / f"{record['version']}.json", _json(record))
        ledger = self.ledger(record["model_id"])
        ledger[record["retraining_request_id"]] = int(record["version"])
        _atomic_write(directory / "ledger.json", _json(ledger))
        return path

    def load(self, model_id: str, version: int) -> Any:
        with open(self.model_dir(model_id) / f"{version}.pkl", "rb") as f:
            return pickle.load(f)  # noqa: S301 - our own files


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


# -- the service ---------------------------------------------------------------------------------


class Trainer:
    def __init__(self, config: TrainerConfig, client: Any = None) -> None:
        self.config = config
        self.store = ModelStore(config.models_dir)
        self._client = client
        self.handled = 0

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = clickhouse_client(self.config.clickhouse_url, self.config.database)
        return self._client

    def wants(self, request: dict[str, Any]) -> bool:
        return any(fnmatch.fnmatchcase(request["policy"], p) for p in self.config.policies)

    def handle(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """The ModelPublished record for one request (trained now, or found from an earlier
        try), or None if the request is not for us or its window has too few labelled rows."""
        model_id = request["model_id"]
        if not self.wants(request):
            log.info(
                "request %s: policy %s not handled here", request["event_id"], request["policy"]
            )
            return None
        done = self.store.published(model_id, request["event_id"])
        if done is not None:
            log.info("request %s already trained as %s v%s: re-publishing",
                     request["event_id"], model_id, done["version"])  # fmt: skip
            return done
        start, end = int(request["window_start"]), int(request["window_end"])
        rows = fetch_window(self.client, model_id, start, end, self.config.max_rows)
        if len(rows) < self.config.min_rows:
            log.warning("request %s: %d labelled rows in the window, fewer than %d; not trained",
                        request["event_id"], len(rows), self.config.min_rows)  # fmt: skip
            return None
        started = time.perf_counter()
        model, prequential = train(rows, self.config.grace_period)
        version = self.store.next_version(model_id, request["model_version"])
        path = (self.store.model_dir(model_id) / f"{version}.pkl").resolve()
        label_counts = Counter(str(label) for _, label in rows)
        record = make_published(
            model_id,
            str(version),
            published_at=int(time.time() * 1000),
            artifact_uri=path.as_uri(),
            training_window_start=start,
            training_window_end=end,
            retraining_request_id=request["event_id"],
            previous_version=request["model_version"],
            metrics={
                "training_rows": len(rows),
                "prequential_accuracy": round(prequential, 6),
                "train_seconds": round(time.perf_counter() - started, 3),
                **{f"label_count.{k}": n for k, n in sorted(label_counts.items())},
            },
            tags={
                "format": "pickle",
                "algorithm": "river.tree.HoeffdingTreeClassifier",
                "policy": request["policy"],
                "reason": request["reason"][:1000],
            },
            publisher="examples/trainer",
        )
        self.store.save(model, record)
        log.info("trained %s v%d on %d rows (prequential accuracy %.3f)",
                 model_id, version, len(rows), prequential)  # fmt: skip
        return record


def ensure_models_topic(bootstrap: str, name: str = MODELS_TOPIC, timeout: float = 30.0) -> None:
    """Create the compacted models topic if it does not exist (the latest version per model)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    if name in admin.list_topics(timeout=timeout).topics:
        return
    topic = NewTopic(name, 1, 1, config={"cleanup.policy": "compact"})
    for future in admin.create_topics([topic], request_timeout=timeout).values():
        try:
            future.result(timeout)
        except Exception as exc:  # someone else created it meanwhile
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def run(
    config: TrainerConfig,
    stop: threading.Event | None = None,
    max_requests: int | None = None,
    client: Any = None,
) -> int:
    """Consume requests until ``stop`` is set (or ``max_requests`` were handled); returns the
    number handled (trained, re-published, or skipped on purpose)."""
    from confluent_kafka import Consumer, Producer

    stop = stop or threading.Event()
    ensure_models_topic(config.bootstrap, config.models_topic)
    codec = Codec()
    trainer = Trainer(config, client)
    consumer = Consumer(
        {
            "bootstrap.servers": config.bootstrap,
            "group.id": config.group_id,
            "enable.auto.commit": False,
            # a new trainer group starts at the beginning: requests made before it was
            # deployed still deserve a model
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer(
        {"bootstrap.servers": config.bootstrap, "enable.idempotence": True, "acks": "all"}
    )
    consumer.subscribe([config.requests_topic])
    handled = 0
    try:
        while not stop.is_set() and (max_requests is None or handled < max_requests):
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                log.warning("consumer: %s", message.error())
                continue
            try:
                _, request = codec.decode(message.value(), expected="RetrainingRequested")
            except Exception as exc:  # not ours to fix; never block the partition on it
                log.error("skipping undecodable record at %s[%d]@%d: %s", message.topic(),
                          message.partition(), message.offset(), exc)  # fmt: skip
            else:
                record = trainer.handle(request)
                if record is not None:
                    producer.produce(
                        config.models_topic,
                        key=topics.model_key(record["model_id"], record["version"]),
                        value=codec.encode(MODEL_PUBLISHED, record),
                    )
                    if producer.flush(30) != 0:
                        raise RuntimeError("ModelPublished not acknowledged in 30 s")
            # only now: a crash before this line replays the request, and the ledger makes
            # the replay cheap and harmless
            consumer.commit(message=message, asynchronous=False)
            handled += 1
    finally:
        consumer.close()
        producer.flush(10)
    return handled


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default=env("DRIFTLINE_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument(
        "--clickhouse-url",
        default=env("DRIFTLINE_CLICKHOUSE_URL"),
        help="http://user:password@host:port of the worker's ClickHouse HTTP endpoint",
    )
    parser.add_argument("--database", default=env("DRIFTLINE_CLICKHOUSE_DATABASE", "driftline"))
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--group-id", default="driftline-trainer")
    parser.add_argument(
        "--policy",
        action="append",
        dest="policies",
        help="only requests whose policy matches this glob (repeatable; default: all)",
    )
    parser.add_argument("--min-rows", type=int, default=100)
    parser.add_argument("--max-requests", type=int, help="stop after this many requests")
    parser.add_argument("--loglevel", default="info")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if not args.clickhouse_url:
        raise SystemExit("--clickhouse-url (or DRIFTLINE_CLICKHOUSE_URL) is required")
    config = TrainerConfig(
        bootstrap=args.bootstrap,
        clickhouse_url=args.clickhouse_url,
        models_dir=args.models_dir,
        database=args.database,
        group_id=args.group_id,
        policies=args.policies or ["*"],
        min_rows=args.min_rows,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    handled = run(config, stop, max_requests=args.max_requests)
    log.info("stopped after %d requests", handled)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
