"""A Server-Sent Events feed of alerts, for the API to mount.

:func:`alert_stream` reads ``driftline.alerts.v1`` from its current end (a consumer of its
own: no group, no commits, so any number of browsers can watch) and yields ``text/event-stream``
frames::

    : connected            <- first frame, once the stream is positioned at the end
    retry: 3000

    id: <event_id>
    event: alert
    data: {"event_id": ..., "fingerprint": ..., "status": "FIRING", ...}   <- one JSON line

    : keepalive            <- after ``heartbeat`` seconds without an alert

Mounting it in FastAPI::

    from fastapi.responses import StreamingResponse
    from driftline.delivery import alert_stream

    @router.get("/alerts/stream")
    async def stream(model_id: str | None = None) -> StreamingResponse:
        frames = alert_stream(settings.kafka_bootstrap, models=[model_id] if model_id else None)
        return StreamingResponse(frames, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

Starlette closes the generator when the client disconnects, which closes the consumer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from fnmatch import fnmatchcase
from typing import Any

from driftline.delivery.alerts import AlertDecodeError, decode_alert
from driftline.schemas import topics

__all__ = ["alert_stream", "sse_frame"]

log = logging.getLogger(__name__)


def sse_frame(alert: Mapping[str, Any], event: str = "alert") -> str:
    """One ``text/event-stream`` frame for ``alert`` (compact JSON has no newlines).

    >>> sse_frame({"event_id": "e1", "status": "FIRING"})
    'id: e1\\nevent: alert\\ndata: {"event_id":"e1","status":"FIRING"}\\n\\n'
    """
    data = json.dumps(dict(alert), separators=(",", ":"), sort_keys=True, default=str)
    return f"id: {alert.get('event_id', '')}\nevent: {event}\ndata: {data}\n\n"


def _wanted(
    alert: Mapping[str, Any],
    models: Iterable[str] | None,
    severities: Iterable[str] | None,
    statuses: Iterable[str] | None,
) -> bool:
    if models and not any(fnmatchcase(str(alert.get("model_id", "")), g) for g in models):
        return False
    if severities and str(alert.get("severity", "")).lower() not in {s.lower() for s in
                                                                     severities}:  # fmt: skip
        return False
    return not statuses or alert.get("status") in set(statuses)


async def alert_stream(
    bootstrap: str,
    *,
    topic: str = topics.ALERTS,
    models: Iterable[str] | None = None,
    severities: Iterable[str] | None = None,
    statuses: Iterable[str] | None = None,
    heartbeat: float = 15.0,
    client_config: Mapping[str, Any] | None = None,
    poll_timeout: float = 0.25,
    codec: Any = None,
) -> AsyncIterator[str]:
    """Yield SSE frames for alerts published from now on (filters: model id globs,
    severities, statuses; None means all). ``codec``: a :class:`driftline.schemas.Codec` with
    the deployment's registry (default: the static manifest). Undecodable records are skipped
    (the delivery service dead-letters them)."""
    from confluent_kafka import Consumer, TopicPartition

    models, severities, statuses = (
        list(x) if x is not None else None for x in (models, severities, statuses)
    )
    loop = asyncio.get_running_loop()
    # One thread owns the consumer: every call, close included, runs there in order.
    kafka = ThreadPoolExecutor(1, thread_name_prefix="driftline-sse")
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            **dict(client_config or {}),
            "group.id": f"driftline-sse-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "latest",
        }
    )

    def position_at_end() -> None:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise RuntimeError(f"alerts topic {topic} is not available")
        ends = []
        for p in meta.partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends.append(TopicPartition(topic, p, high))
        consumer.assign(ends)

    try:
        await loop.run_in_executor(kafka, position_at_end)
        yield ": connected\nretry: 3000\n\n"
        last_frame = loop.time()
        while True:
            messages = await loop.run_in_executor(kafka, consumer.consume, 100, poll_timeout)
            for msg in messages:
                if msg.error() is not None:
                    continue
                try:
                    alert = decode_alert(msg.value(), codec)
                except AlertDecodeError as exc:
                    log.debug("SSE skips %s[%d]@%d: %s", topic, msg.partition(), msg.offset(), exc)
                    continue
                if _wanted(alert, models, severities, statuses):
                    last_frame = loop.time()
                    yield sse_frame(alert)
            if loop.time() - last_frame >= heartbeat:
                last_frame = loop.time()
                yield ": keepalive\n\n"
    finally:
        # Runs after any poll still in the executor; closing leaves no group behind.
        kafka.submit(consumer.close)
        kafka.shutdown(wait=False)
