"""The ``driftline`` command: local broker, worker, API, demo and tools."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from driftline.api.cli import add_api_command, add_api_key_command
from driftline.deadletters import add_dlq_command
from driftline.delivery import add_delivery_command
from driftline.lineage import add_lineage_command
from driftline.reference import add_reference_command
from driftline.replay import add_replay_command
from driftline.report import add_report_command
from driftline.settings import Settings, load_settings
from driftline.sinks.clickhouse_http.cli import add_clickhouse_command


def _kafka(args: argparse.Namespace, settings: Settings) -> int:
    from driftline.local_kafka import LocalKafka, ensure_jars

    host, _, port = settings.kafka_bootstrap.rpartition(":")
    kafka = LocalKafka(
        data_dir=settings.kafka_data_dir,
        port=int(port),
        controller_port=settings.kafka_controller_port,
        cache_dir=settings.kafka_cache_dir,
        partitions=settings.topic_partitions,
    )
    if args.action == "fetch":
        print(ensure_jars(settings.kafka_cache_dir))
    elif args.action == "start":
        if kafka.running():
            print(f"broker already running at {kafka.bootstrap}")
            return 0
        kafka.start()
        # Detach: the broker keeps running after this command; `driftline kafka stop` ends it.
        kafka.process = None
        print(f"broker running at {kafka.bootstrap} (data in {settings.kafka_data_dir})")
    elif args.action == "stop":
        kafka.stop()
        print("broker stopped")
    elif args.action == "status":
        print("running" if kafka.running() else "stopped")
        return 0 if kafka.running() else 1
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from driftline.demo import DemoOptions, run_demo

    return run_demo(
        settings,
        DemoOptions(rate=args.rate, drift_after_seconds=args.drift_after, keep=args.keep),
    )


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from driftline.worker import run_worker

    return run_worker(settings, loglevel=args.loglevel, verbose=args.verbose)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftline", description=__doc__)
    parser.add_argument("--data-dir", help="local state dir (DRIFTLINE_DATA_DIR)")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (DRIFTLINE_KAFKA_BOOTSTRAP)")
    parser.add_argument(
        "--config", type=Path, help="settings file of DRIFTLINE_*=value lines (default: .env)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    kafka = sub.add_parser("kafka", help="the local single-node Kafka broker (KRaft)")
    kafka.add_argument("action", choices=["fetch", "start", "stop", "status"])
    kafka.set_defaults(handler=_kafka)

    demo = sub.add_parser(
        "demo", help="watch a drifting model: local Kafka, a worker, a producer, within a minute"
    )
    demo.add_argument("--rate", type=float, default=500.0, help="predictions per second")
    demo.add_argument("--drift-after", type=float, default=20.0, help="seconds before the change")
    demo.add_argument(
        "--keep", action="store_true", help="keep serving (dashboard included) until Ctrl-C"
    )
    demo.set_defaults(handler=_demo)

    add_replay_command(sub)
    add_clickhouse_command(sub)
    add_delivery_command(sub)
    add_api_command(sub)
    add_api_key_command(sub)
    add_report_command(sub)
    add_dlq_command(sub)
    add_reference_command(sub)
    add_lineage_command(sub)

    worker = sub.add_parser(
        "worker", help="run a stream worker in the foreground until SIGTERM/Ctrl-C"
    )
    worker.add_argument("--loglevel", default="info")
    worker.add_argument(
        "--verbose", action="store_true", help="also log faust's services starting and stopping"
    )
    worker.set_defaults(handler=_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = load_settings(args.config, data_dir=args.data_dir, kafka_bootstrap=args.bootstrap)
    return int(args.handler(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
