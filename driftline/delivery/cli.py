"""``driftline deliver``: run the delivery service until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
from typing import Any

__all__ = ["add_delivery_command", "run_delivery"]


def add_delivery_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``deliver`` on the CLI's subparsers; its handler is ``handler(args, settings)``."""
    parser = subparsers.add_parser(
        "deliver",
        help="deliver alerts to webhook subscriptions (and Alertmanager) until stopped",
    )
    parser.add_argument("--alertmanager-url", help="Alertmanager base URL, e.g. http://am:9093")
    parser.add_argument("--max-tries", type=int, default=5, help="tries per delivery (default 5)")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per try, connect to response (10)"
    )
    parser.add_argument(
        "--resend-interval",
        type=float,
        default=60.0,
        help="seconds between re-sends of firing alerts to Alertmanager (60)",
    )
    parser.add_argument("--group-id", default="driftline-delivery", help="Kafka consumer group")
    parser.add_argument("--loglevel", default="info")
    parser.set_defaults(handler=_handler)
    return parser


def _handler(args: argparse.Namespace, settings: Any) -> int:
    from driftline.delivery.dispatch import RetryPolicy
    from driftline.delivery.service import DeliveryConfig

    logging.basicConfig(
        level=str(args.loglevel).upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    config = DeliveryConfig(
        bootstrap=settings.kafka_bootstrap,
        group_id=args.group_id,
        policy=RetryPolicy(max_tries=args.max_tries, timeout=args.timeout),
        alertmanager_url=args.alertmanager_url,
        alertmanager_resend_interval=args.resend_interval,
        schema_registry_url=getattr(settings, "schema_registry_url", None),
        public_url=getattr(settings, "public_base_url", None),
    )
    # Like the worker: a fresh cluster gets its topics (alerts, rules, DLQ) from whoever
    # starts first, once the broker is there.
    asyncio.run(
        run_delivery(
            config,
            topic_partitions=settings.topic_partitions,
            topic_replication=getattr(settings, "topic_replication", 1),
        )
    )
    return 0


async def run_delivery(
    config: Any, *, topic_partitions: int | None = None, topic_replication: int = 1
) -> None:
    """Run the service with SIGINT/SIGTERM as the stop signal (drains, then commits).

    With ``topic_partitions`` it first waits for the broker, however long that takes, and
    creates driftline's topics; a signal during the wait ends it at once.
    """
    from driftline.delivery.service import DeliveryService, mirror_stop

    log = logging.getLogger(__name__)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if topic_partitions is not None:
        from driftline.admin import ensure_topics
        from driftline.sinks.resilience import wait_until

        waiting = threading.Event()  # the blocking wait's view of ``stop``
        watcher = asyncio.create_task(mirror_stop(stop, waiting))
        try:
            ready = await loop.run_in_executor(
                None,
                lambda: wait_until(
                    lambda: ensure_topics(
                        config.bootstrap, topic_partitions, topic_replication, timeout=3.0
                    ) is not None,
                    what=f"Kafka at {config.bootstrap}",
                    log=log,
                    max_interval_s=5.0,
                    stop=waiting,
                ),
            )  # fmt: skip
        finally:
            watcher.cancel()
        if not ready:
            return
    service = DeliveryService(config)
    log.info(
        "delivering %s (group %s)%s", config.alerts_topic, config.group_id,
        f", Alertmanager {config.alertmanager_url}" if config.alertmanager_url else "",
    )  # fmt: skip
    await service.run(stop)

