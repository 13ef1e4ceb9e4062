"""``GET /v1/feed``: alerts and drift events as they are published, as Server-Sent Events.

Each connection tails ``driftline.alerts.v1`` and ``driftline.drift.v1`` with a consumer of
its own (no group commits, so any number of browsers can watch) and sends::

    retry: 3000
    event: ready                     <- once the feed is positioned: nothing after this is missed
    data: {}

    id: a0-12.a1-7.d0-3.d1-9        <- the next offset of every partition read so far
    event: alert                     <- or: drift
    data: {"event_id": ..., "model_id": ..., ...}

    : keepalive                      <- after 15 s without an event

The ``id`` is a cursor, not an event id: a browser that reconnects sends it back as
``Last-Event-ID`` and the feed resumes exactly after the last event it delivered (the
partitions named in it; others from their end). Without it the feed starts at the end.

The same API keys as every other route (``read`` scope), or the dashboard's session cookie.

Why not ``driftline.delivery.sse``: the api may import only schemas and sinks (DESIGN.md),
and that generator neither resumes nor carries drift events.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from fnmatch import fnmatchcase
from typing import Annotated, Any

from driftline.schemas import Codec, topics
from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse

from ..deps import ControlPlaneDep, ReadKey

__all__ = ["router", "parse_cursor", "format_cursor", "event_stream"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["feed"])

# Topic -> (cursor letter, SSE event name).
FEED_TOPICS: dict[str, tuple[str, str]] = {topics.ALERTS: ("a", "alert"),
                                           topics.DRIFT: ("d", "drift")}  # fmt: skip
_LETTERS = {letter: topic for topic, (letter, _) in FEED_TOPICS.items()}
_CURSOR = re.compile(r"^([a-z])(\d{1,6})-(\d{1,19})$")
HEARTBEAT_S = 15.0


def parse_cursor(text: str) -> dict[tuple[str, int], int]:
    """``{(topic, partition): next_offset}`` from a cursor; ValueError if malformed.

    >>> parse_cursor("a0-12.d1-3") == {("driftline.alerts.v1", 0): 12, ("driftline.drift.v1", 1): 3}
    True
    """
    out: dict[tuple[str, int], int] = {}
    for part in text.strip().split("."):
        match = _CURSOR.match(part)
        if match is None or match[1] not in _LETTERS:
            raise ValueError(f"malformed feed cursor part {part!r} (expected like 'a0-12')")
        out[(_LETTERS[match[1]], int(match[2]))] = int(match[3])
    return out


def format_cursor(positions: Mapping[tuple[str, int], int]) -> str:
    """The inverse of :func:`parse_cursor` (sorted, so equal positions give equal ids)."""
    return ".".join(
        f"{FEED_TOPICS[topic][0]}{partition}-{offset}"
        for (topic, partition), offset in sorted(positions.items())
    )


@functools.cache
def _codec() -> Codec:
    return Codec()


def _decode(value: bytes | None) -> dict[str, Any] | None:
    """An Avro record (Confluent framing) or a JSON object (tools and tests publish alerts as
    JSON too); None for anything else."""
    if not value:
        return None
    try:
        if value[:1] == b"{":
            record = json.loads(value)
            return record if isinstance(record, dict) else None
        return _codec().decode(value)[1]
    except Exception:  # a record this feed cannot read: the delivery service dead-letters it
        return None


async def event_stream(
    bootstrap: str,
    *,
    start: Mapping[tuple[str, int], int] | None = None,
    models: list[str] | None = None,
    heartbeat: float = HEARTBEAT_S,
    poll_timeout: float = 0.25,
) -> AsyncIterator[str]:
    """SSE frames of the feed topics from ``start`` (a parsed cursor) or from their end."""
    from confluent_kafka import Consumer, TopicPartition

    loop = asyncio.get_running_loop()
    # One thread owns the consumer: every call, close included, runs there in order.
    kafka = ThreadPoolExecutor(1, thread_name_prefix="driftline-feed")
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"driftline-feed-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "latest",
        }
    )
    positions: dict[tuple[str, int], int] = {}

    def assign() -> None:
        assignment = []
        for topic in FEED_TOPICS:
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None:
                raise RuntimeError(f"topic {topic} is not available")
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                wanted = (start or {}).get((topic, p))
                # A cursor older than retention resumes at the oldest record still kept.
                offset = high if wanted is None else min(max(wanted, low), high)
                positions[(topic, p)] = offset
                assignment.append(TopicPartition(topic, p, offset))
        consumer.assign(assignment)

    try:
        await loop.run_in_executor(kafka, assign)
        yield "retry: 3000\nevent: ready\ndata: {}\n\n"
        last_frame = loop.time()
        while True:
            messages = await loop.run_in_executor(kafka, consumer.consume, 100, poll_timeout)
            for msg in messages:
                if msg.error() is not None:
                    continue
                positions[(msg.topic(), msg.partition())] = msg.offset() + 1
                record = _decode(msg.value())
                if record is None:
                    continue
                model = str(record.get("model_id", ""))
                if models and not any(fnmatchcase(model, glob) for glob in models):
                    continue
                data = json.dumps(record, separators=(",", ":"), sort_keys=True, default=str)
                last_frame = loop.time()
                yield (
                    f"id: {format_cursor(positions)}\nevent: {FEED_TOPICS[msg.topic()][1]}\n"
                    f"data: {data}\n\n"
                )
            if loop.time() - last_frame >= heartbeat:
                last_frame = loop.time()
                yield ": keepalive\n\n"
    finally:
        # Runs after any poll still in the executor; closing leaves no group behind.
        kafka.submit(consumer.close)
        kafka.shutdown(wait=False)


# Not in the OpenAPI document: a response that never ends is not an operation generic clients
# and the schema fuzzer can call (they would wait on it forever); docs/dashboard.md has it.
@router.get("/feed", response_class=StreamingResponse, include_in_schema=False)
async def feed(
    request: Request,
    _: ReadKey,
    control_plane: ControlPlaneDep,
    model: Annotated[list[str], Query(max_length=32, description="model id globs")] = [],  # noqa: B006 - FastAPI copies query defaults
    last_event_id: Annotated[str | None, Header(max_length=4096)] = None,
) -> StreamingResponse:
    """Alerts (``event: alert``) and drift events (``event: drift``) from now on, or after
    ``Last-Event-ID``. Filter by model id globs with ``model`` (repeatable)."""
    start = None
    if last_event_id:
        try:
            start = parse_cursor(last_event_id)
        except ValueError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"Last-Event-ID: {exc}") from exc
    bootstrap = getattr(control_plane, "bootstrap", None)
    if not bootstrap:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the feed needs the API's Kafka control plane"
        )
    frames = event_stream(bootstrap, start=start, models=model or None)
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
