"""``driftline dlq``: look at the dead-letter topic and replay what a fix has made acceptable.

Every record on ``driftline.dlq.v1`` keeps the refused bytes untouched (key and value) and says
why in its headers (``schemas.topics``): ``driftline.reason``, ``driftline.detail``,
``driftline.source.{topic,partition,offset}``, and where it applies ``driftline.source.row``
(a row of a batch record, re-encoded as a single event) or ``driftline.subscription.id`` (a
delivery that failed: the delivery service dead-letters alerts to the same topic, see
:mod:`driftline.delivery.deadletter`).

``driftline dlq list`` prints each dead letter with a decoded view of its value: the Avro record
(through :class:`driftline.schemas.Codec`) when the bytes are a valid framed record, else a
UTF-8 or hex preview. ``driftline dlq replay`` produces the original key and value again to
their source topic. Replays are safe to repeat: every event has a deterministic id, so the
worker drops what it has already taken (dead-lettering it as ``duplicate``) and delivery
receivers dedup on the alert's event id. Dead letters with reason ``duplicate`` are already
processed, so replay skips them unless asked for that reason explicitly.

Both read the topic from the start (or from ``--since``) up to its end when the command starts.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TextIO

from driftline.schemas import topics

__all__ = [
    "HEADER_REPLAYED_FROM",
    "DeadLetter",
    "add_dlq_command",
    "describe_value",
    "parse_since",
    "read_dead_letters",
    "replay_dead_letters",
]

# Added to a replayed record: where on the DLQ it came from (for tracing; consumers ignore it).
HEADER_REPLAYED_FROM: Final = "driftline.replayed.from"
PREVIEW_BYTES: Final = 64
DECODED_CHARS: Final = 400


@dataclass(frozen=True)
class DeadLetter:
    """One record of the DLQ topic: where it is, why it is there, and the refused bytes."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return self.headers.get(topics.HEADER_REASON, "")

    @property
    def detail(self) -> str:
        return self.headers.get(topics.HEADER_DETAIL, "")

    @property
    def source_topic(self) -> str | None:
        return self.headers.get(topics.HEADER_SOURCE_TOPIC) or None

    @property
    def source(self) -> str:
        """``topic[partition]@offset`` (``+row n`` for a row of a batch record)."""
        h = self.headers
        where = (f"{h.get(topics.HEADER_SOURCE_TOPIC, '?')}[{h.get(topics.HEADER_SOURCE_PARTITION, '?')}]"
                 f"@{h.get(topics.HEADER_SOURCE_OFFSET, '?')}")  # fmt: skip
        row = h.get("driftline.source.row")
        return f"{where} row {row}" if row is not None else where


_SINCE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: datetime | None = None) -> int:
    """Epoch milliseconds of ``--since``: a duration back from now (``30m``, ``2h``, ``7d``)
    or an ISO-8601 time (UTC when no zone is given).

    >>> now = datetime(2026, 1, 2, tzinfo=UTC)
    >>> parse_since("1d", now) == int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
    True
    >>> parse_since("2026-01-01T12:00:00", now)
    1767268800000
    """
    now = now or datetime.now(UTC)
    match = _SINCE.match(text.strip())
    if match:
        moment = now - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    else:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(
                f"--since {text!r}: give a duration (30m, 2h, 7d) or an ISO time "
                "(2026-01-01T12:00:00Z)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def read_dead_letters(
    bootstrap: str,
    *,
    topic: str = topics.DLQ,
    since_ms: int | None = None,
    reasons: Iterable[str] | None = None,
    limit: int | None = None,
    client_config: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> list[DeadLetter]:
    """The dead letters on ``topic`` (from ``since_ms``, else the start, up to the end when
    called), oldest first per partition, optionally only those of ``reasons``; at most
    ``limit``. Raises RuntimeError when the topic does not exist or cannot be read to its end
    within ``timeout`` seconds."""
    from confluent_kafka import Consumer, TopicPartition

    wanted = set(reasons) if reasons else None
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            **dict(client_config or {}),
            "group.id": f"driftline-dlq-{uuid.uuid4().hex}",  # reads only: nothing committed
            "enable.auto.commit": False,
        }
    )
    out: list[DeadLetter] = []
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise RuntimeError(f"topic {topic} not found on {bootstrap}")
        parts = sorted(info.partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            for p in parts
        }
        starts = {p: low for p, (low, _) in ends.items()}
        if since_ms is not None:
            found = consumer.offsets_for_times(
                [TopicPartition(topic, p, since_ms) for p in parts], timeout=timeout
            )
            for tp in found:
                # -1: nothing published since then
                starts[tp.partition] = tp.offset if tp.offset >= 0 else ends[tp.partition][1]
        remaining = {p for p in parts if starts[p] < ends[p][1]}
        if not remaining:
            return []
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(remaining)])
        deadline = time.monotonic() + timeout
        while remaining and (limit is None or len(out) < limit):
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not read {topic} to its end in {timeout:.0f} s")
            for msg in consumer.consume(500, 0.2):
                if msg.error() is not None or msg.partition() not in remaining:
                    continue
                if msg.offset() >= ends[msg.partition()][1] - 1:
                    remaining.discard(msg.partition())
                if msg.offset() >= ends[msg.partition()][1]:
                    continue
                headers = {k: (v or b"").decode("utf-8", "replace") for k, v in msg.headers() or []}
                letter = DeadLetter(
                    msg.partition(), msg.offset(), msg.timestamp()[1], msg.key(), msg.value(),
                    headers,
                )  # fmt: skip
                if wanted is None or letter.reason in wanted:
                    out.append(letter)
    finally:
        consumer.close()
    return out[:limit] if limit is not None else out


def describe_value(value: bytes | None, codec: Any = None) -> str:
    """A person's view of refused bytes: the Avro record as JSON when they are a valid framed
    record, else why not plus a UTF-8 (printable text) or hex preview.

    >>> describe_value(b"garbage")
    "utf-8: 'garbage'"
    >>> describe_value(b"\\x00\\x00\\x00\\x30\\x39rest")
    'not decodable (unknown_schema_id): hex 000000303972657374'
    """
    if not value:
        return "(empty)"
    framed_error = None
    if value[0] == 0 and len(value) >= 5:
        from driftline.schemas import DecodeError

        try:
            name, record = (codec or _default_codec()).decode(bytes(value))
        except DecodeError as exc:
            framed_error = exc.reason
        else:
            text = json.dumps(record, default=str, sort_keys=True, separators=(",", ":"))
            if len(text) > DECODED_CHARS:
                text = text[:DECODED_CHARS] + "…"
            return f"{name} {text}"
    head = value[:PREVIEW_BYTES]
    more = f" (+{len(value) - PREVIEW_BYTES} bytes)" if len(value) > PREVIEW_BYTES else ""
    if framed_error is not None:
        return f"not decodable ({framed_error}): hex {head.hex()}{more}"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.isprintable():
        return f"utf-8: {text!r}{more}"
    return f"hex {head.hex()}{more}"


@functools.cache
def _default_codec() -> Any:
    """One static-manifest codec per process (building one parses every schema)."""
    from driftline.schemas import Codec

    return Codec()


def _settings_codec(settings: Any) -> Any:
    url = getattr(settings, "schema_registry_url", None)
    if not url:
        return None
    from driftline.schemas import Codec
    from driftline.schemas.registry import ConfluentRegistry

    return Codec(ConfluentRegistry(url, auto_register=False))


def replay_dead_letters(
    bootstrap: str,
    letters: Iterable[DeadLetter],
    *,
    dry_run: bool = False,
    dlq_topic: str = topics.DLQ,
    client_config: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Produce each letter's original key and value to its source topic (headers: only
    :data:`HEADER_REPLAYED_FROM`); returns how many per topic. Letters without a source
    topic are left out (counted under ``""``). With ``dry_run`` nothing is produced.
    Raises RuntimeError when the broker does not acknowledge every record."""
    counts: dict[str, int] = {}
    chosen = []
    for letter in letters:
        target = letter.source_topic or ""
        counts[target] = counts.get(target, 0) + 1
        if target:
            chosen.append(letter)
    if dry_run or not chosen:
        return counts
    from confluent_kafka import Producer

    failures: list[str] = []
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            **dict(client_config or {}),
            "enable.idempotence": True,
            "acks": "all",
        }
    )

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    for letter in chosen:
        origin = f"{dlq_topic}[{letter.partition}]@{letter.offset}"
        while True:
            try:
                producer.produce(
                    letter.source_topic, key=letter.key, value=letter.value,
                    headers=[(HEADER_REPLAYED_FROM, origin.encode())], on_delivery=report,
                )  # fmt: skip
                break
            except BufferError:
                producer.poll(0.1)
    left = producer.flush(60)
    if left or failures:
        raise RuntimeError(
            f"{left + len(failures)} of {len(chosen)} replayed records not acknowledged"
            + (f": {failures[0]}" if failures else "")
        )
    return counts


# -- the command ------------------------------------------------------------------------------


def add_dlq_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``dlq list`` and ``dlq replay`` on the CLI's subparsers; the handler is
    ``handler(args, settings)``."""
    parser = subparsers.add_parser(
        "dlq", help="look at the dead-letter topic (driftline.dlq.v1) and replay from it"
    )
    actions = parser.add_subparsers(dest="dlq_action", required=True)

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--since", help="only letters written since: 30m, 2h, 7d or an ISO time")
        p.add_argument(
            "--reason",
            action="append",
            help="only letters of this reason (repeatable), e.g. unknown_model",
        )
        p.add_argument("--topic", default=topics.DLQ, help=f"dead-letter topic ({topics.DLQ})")

    listing = actions.add_parser("list", help="print dead letters: reason, source, time, value")
    filters(listing)
    listing.add_argument("--limit", type=_positive, default=100, help="at most N letters (100)")
    listing.set_defaults(handler=_list)
    replay = actions.add_parser(
        "replay", help="produce the dead letters' original bytes again to their source topics"
    )
    filters(replay)
    replay.add_argument("--dry-run", action="store_true", help="count, produce nothing")
    replay.set_defaults(handler=_replay)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _read(args: argparse.Namespace, settings: Any, limit: int | None) -> list[DeadLetter]:
    since = parse_since(args.since) if args.since else None
    return read_dead_letters(
        settings.kafka_bootstrap, topic=args.topic, since_ms=since, reasons=args.reason,
        limit=limit,
    )  # fmt: skip


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _guarded(run: Callable[[], int], err: TextIO) -> int:
    try:
        return run()
    except (RuntimeError, ValueError) as exc:
        print(f"driftline dlq: {exc}", file=err)
        return 2


def _list(args: argparse.Namespace, settings: Any, out: TextIO | None = None) -> int:
    out = out or sys.stdout  # looked up per call: tests and callers may redirect it

    def run() -> int:
        letters = _read(args, settings, args.limit)
        codec = _settings_codec(settings)
        for letter in letters:
            print(f"{_time(letter.timestamp_ms)}  {letter.reason or '?'}  {letter.source}  "
                  f"(dlq {letter.partition}@{letter.offset})", file=out)  # fmt: skip
            if letter.detail:
                print(f"    detail: {letter.detail}", file=out)
            subscription = letter.headers.get("driftline.subscription.id")
            if subscription:
                print(f"    subscription: {subscription}", file=out)
            print(f"    value: {describe_value(letter.value, codec)}", file=out)
        print(f"{len(letters)} dead letter(s)", file=out)
        return 0

    return _guarded(run, sys.stderr)


def _replay(args: argparse.Namespace, settings: Any, out: TextIO | None = None) -> int:
    out = out or sys.stdout  # looked up per call: tests and callers may redirect it

    def run() -> int:
        letters = _read(args, settings, None)
        if not args.reason:  # duplicates were processed once already: never by default
            letters = [x for x in letters if x.reason != topics.DUPLICATE]
        counts = replay_dead_letters(
            settings.kafka_bootstrap, letters, dry_run=args.dry_run, dlq_topic=args.topic
        )
        verb = "would replay" if args.dry_run else "replayed"
        total = sum(n for t, n in counts.items() if t)
        where = ", ".join(f"{n} to {t}" for t, n in sorted(counts.items()) if t)
        print(f"{verb} {total} dead letter(s)" + (f": {where}" if where else ""), file=out)
        if counts.get(""):
            print(f"skipped {counts['']} without a source topic header", file=out)
        return 0

    return _guarded(run, sys.stderr)
