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

    from driftline.sinks.clickhouse_http import add_clickhouse_command

    parser = argparse.ArgumentParser()
    add_clickhouse_command(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["clickhouse", "serve"]).host == "127.0.0.1"


# -- the README's configuration table is the list of settings ---------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def _table_rows() -> list[tuple[str, str]]:
    """``(variable, default)`` per setting in the README's configuration table; a row like
    `DRIFTLINE_API_HOST` / `_PORT` names two settings (the suffix replaces the last word)."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Configuration", 1)[1].split("\n### ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`DRIFTLINE_"):
            continue
        names = [n.strip().strip("`") for n in cells[0].split(" / ")]
        defaults = [d.strip() for d in cells[1].split(" / ")]
        assert len(defaults) == len(names), f"one default per variable: {line}"
        first = names[0]
        for name, default in zip(names, defaults, strict=True):
            full = name if name.startswith("DRIFTLINE_") else first.rsplit("_", 1)[0] + name
            rows.append((full, default))
    return rows


def _shown(value: object) -> str | None:
    """A default as the table shows it in backticks; None for "unset" (no value)."""
    if value is None:
        return None
    if isinstance(value, Path):
        home = str(Path.home())
        text = str(value)
        return "~" + text[len(home) :] if text.startswith(home) else text
    if isinstance(value, list | dict):
        import json

        return json.dumps(value)
    return str(value)


def test_the_readme_configuration_table_lists_every_setting_with_its_default(monkeypatch):
    from driftline.settings import Settings

    rows = _table_rows()
    documented = [name for name, _ in rows]
    assert len(documented) == len(set(documented)), "a variable is listed twice"
    fields = {f"DRIFTLINE_{name.upper()}": field for name, field in Settings.model_fields.items()}
    assert set(fields) - set(documented) == set(), "settings missing from the README table"
    assert set(documented) - set(fields) == set(), "README rows that are no setting"
    for name, cell in rows:
        default = fields[name].get_default(call_default_factory=True)
        shown = _shown(default)
        if shown is None:
            # unset, or derived from other settings (the README shows how: `<api port>`)
            assert cell.startswith("unset") or "<" in cell, f"{name}: unset, README {cell}"
        else:
            literal = cell.split("`")[1] if "`" in cell else cell
            if isinstance(default, int | float) and not isinstance(default, bool):
                assert float(literal) == default, f"{name}: default {default}, README {cell!r}"
            else:
                assert literal == shown, f"{name}: default {shown!r}, the README says {cell!r}"


def test_monitor_settings_reach_the_workers_data_drift_stage(monkeypatch):
    from driftline.worker import processor_config

    monkeypatch.setenv("DRIFTLINE_MONITOR_WINDOW_SIZE", "1000")
    monkeypatch.setenv("DRIFTLINE_MONITOR_MAX_WINDOW_SECONDS", "3600")
    monkeypatch.setenv("DRIFTLINE_MONITOR_AUTO_REFERENCE_EVENTS", "2000")
    monkeypatch.setenv("DRIFTLINE_MONITOR_FALSE_ALARMS", "2")
    monkeypatch.setenv("DRIFTLINE_MONITOR_FALSE_ALARM_DAYS", "7")
    monkeypatch.setenv("DRIFTLINE_MONITOR_EVENTS_PER_DAY", "50000")
    monkeypatch.setenv("DRIFTLINE_MONITOR_MAX_SEGMENTS", "3")
    monitor = processor_config(load_settings()).profiles
    assert monitor.max_segments == 3
    assert (monitor.window_size, monitor.max_window_ms, monitor.auto_reference_events) == (
        1000, 3_600_000, 2000
    )
    assert (monitor.budget.false_alarms, monitor.budget.days) == (2.0, 7.0)
    # 50 count-closed + 24 time-closed windows a day
    assert monitor.events_per_day == 50_000 and monitor.windows_per_day() == 74.0
    # the sequential detectors (score, error) get their half of the same budget: one ADWIN
    # check per 32 values of each stream
    delta = 0.5 * 2 / (2 * 50_000 * 7 / 32)
    deltas = {s.stream_kind: s.params["delta"] for s in processor_config(load_settings()).specs}
    assert deltas == {"PREDICTION": pytest.approx(delta), "ERROR": pytest.approx(delta)}
    monkeypatch.setenv("DRIFTLINE_MONITOR_ENABLED", "false")
    config = processor_config(load_settings())
    assert config.profiles is None
    assert [s.params["delta"] for s in config.specs] == [pytest.approx(delta)] * 2
    monkeypatch.setenv("DRIFTLINE_MONITOR_WINDOW_SIZE", "10")
    with pytest.raises(ValueError, match="monitor_window_size"):
        load_settings()
