"""Configuration flows in once: file, then environment, then explicit overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.settings import load_settings


def test_file_then_env_then_overrides(tmp_path, monkeypatch):
    config = tmp_path / "driftline.env"
    config.write_text("DRIFTLINE_TOPIC_PARTITIONS=8\nDRIFTLINE_WORKER_ID=from-file\n")
    monkeypatch.setenv("DRIFTLINE_WORKER_ID", "from-env")
    settings = load_settings(config, data_dir=Path("/tmp/x"))
    assert settings.topic_partitions == 8
    assert settings.worker_id == "from-env"
    assert settings.data_dir == Path("/tmp/x")
    assert settings.chdb_path == Path("/tmp/x/clickhouse")


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_settings(tmp_path / "nope.env")


def test_invalid_values_are_refused(monkeypatch):
    monkeypatch.setenv("DRIFTLINE_BATCH_MAX_SECONDS", "-1")
    with pytest.raises(ValueError, match="batch_max_seconds"):
        load_settings()


def test_every_listening_socket_defaults_to_loopback(monkeypatch):
    for name in ("API_HOST", "CLICKHOUSE_HTTP_HOST", "WORKER_WEB_HOST"):
        monkeypatch.delenv(f"DRIFTLINE_{name}", raising=False)
    settings = load_settings()
    hosts = {name: value for name, value in settings.model_dump().items() if name.endswith("_host")}
    assert hosts == {
        "api_host": "127.0.0.1",
        "clickhouse_http_host": "127.0.0.1",
        "worker_web_host": "127.0.0.1",
    }
    monkeypatch.setenv("DRIFTLINE_WORKER_WEB_HOST", "0.0.0.0")
    assert load_settings().worker_web_host == "0.0.0.0"


def test_clickhouse_serve_binds_loopback_by_default():
    import argparse

    from driftline.sinks.http_interface import add_clickhouse_command

    parser = argparse.ArgumentParser()
    add_clickhouse_command(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["clickhouse", "serve"]).host == "127.0.0.1"
