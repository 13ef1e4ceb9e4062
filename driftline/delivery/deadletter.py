"""Dead letters: a failed delivery's alert, as it was on the alerts topic, to ``driftline.dlq.v1``.

The value and key are the original record's bytes, untouched (as every driftline DLQ record);
the headers say why: ``driftline.reason`` (``webhook_failed``, ``alertmanager_failed``, or a
decode reason of ``schemas.topics``), ``driftline.detail`` (target, tries, last status or
error), ``driftline.source.{topic,partition,offset}``, and for webhooks
``driftline.subscription.id`` so a re-drive can target the one subscription that missed it.

These are the delivery service's own dead letters, on the topic the workers dead-letter their
refused input to; ``driftline dlq`` (:mod:`driftline.deadletters`) lists and replays both.
A delivery stopped because a newer state of its alert exists (:mod:`.ordering`) is not a
failure and is not dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from driftline.schemas import topics

__all__ = [
    "ALERTMANAGER_FAILED",
    "HEADER_SUBSCRIPTION",
    "WEBHOOK_FAILED",
    "DeadLetterProducer",
    "Source",
    "dead_letter_headers",
]

log = logging.getLogger(__name__)

# DLQ reason codes of this package (values of the ``driftline.reason`` header).
WEBHOOK_FAILED: Final = "webhook_failed"
ALERTMANAGER_FAILED: Final = "alertmanager_failed"
HEADER_SUBSCRIPTION: Final = "driftline.subscription.id"


@dataclass(frozen=True)
class Source:
    """Where an alert came from: the record to dead-letter and to commit past."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None


def dead_letter_headers(
    source: Source, reason: str, detail: str, extra: Iterable[tuple[str, str]] = ()
) -> list[tuple[str, bytes]]:
    headers = [
        (topics.HEADER_REASON, reason),
        (topics.HEADER_DETAIL, detail),
        (topics.HEADER_SOURCE_TOPIC, source.topic),
        (topics.HEADER_SOURCE_PARTITION, str(source.partition)),
        (topics.HEADER_SOURCE_OFFSET, str(source.offset)),
        *extra,
    ]
    return [(k, v.encode()) for k, v in headers]


class DeadLetterProducer:
    """An idempotent producer whose ``send`` returns once the broker has the record."""

    def __init__(
        self,
        bootstrap: str,
        topic: str = topics.DLQ,
        *,
        client_config: Mapping[str, Any] | None = None,
        retry_backoff: float = 1.0,
    ) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.retry_backoff = retry_backoff
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                **dict(client_config or {}),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
            }
        )
        self._stop = threading.Event()
        # Delivery reports are served by this thread, so no coroutine ever blocks in poll().
        self._thread = threading.Thread(target=self._poll, name="driftline-dlq", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    async def send(
        self, source: Source, reason: str, detail: str, extra: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Produce the dead letter and wait for the broker's ack, retrying until it lands
        (the alert's offset is not committed before, so giving up would lose it)."""
        loop = asyncio.get_running_loop()
        headers = dead_letter_headers(source, reason, detail, extra)
        while True:
            done: asyncio.Future[Any] = loop.create_future()

            def report(err: Any, _msg: Any, done: asyncio.Future[Any] = done) -> None:
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(err))

            try:
                self._producer.produce(
                    self.topic, value=source.value, key=source.key, headers=headers,
                    on_delivery=report,
                )  # fmt: skip
            except BufferError:
                await asyncio.sleep(0.05)
                continue
            err = await done
            if err is None:
                return
            log.warning("dead letter for %s[%d]@%d not written (%s); retrying", source.topic,
                        source.partition, source.offset, err)  # fmt: skip
            await asyncio.sleep(self.retry_backoff)

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=5)
