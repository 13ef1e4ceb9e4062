"""Helpers shared by every test folder: one set for Kafka, ClickHouse, webhook receivers and the
external binaries some tests need. ``tests/`` is on ``sys.path`` (pyproject's pytest
``pythonpath``), so test modules import them as ``support.<module>``."""
