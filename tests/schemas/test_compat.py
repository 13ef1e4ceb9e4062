"""Schema evolution: every shipped schema parses with the Apache Avro library and is backward
compatible with all its historical versions; the checker does catch breaking changes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from avro.errors import SchemaParseException
from driftline.schemas import load_schema
from driftline.schemas.compat import (
    check_all,
    check_compatibility,
    history,
    is_backward_compatible,
    main,
    parse,
)
from driftline.schemas.registry import SCHEMA_FILES

NAMES = sorted(SCHEMA_FILES)


def with_field(schema: dict[str, Any], field: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(schema)
    out["fields"].append({"doc": "test", **field})
    return out


def without_field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    out = copy.deepcopy(schema)
    out["fields"] = [f for f in out["fields"] if f["name"] != name]
    assert len(out["fields"]) == len(schema["fields"]) - 1
    return out


def field_type(schema: dict[str, Any], name: str, new_type: Any) -> dict[str, Any]:
    out = copy.deepcopy(schema)
    for f in out["fields"]:
        if f["name"] == name:
            f["type"] = new_type
            f.pop("default", None)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_current_and_historical_schemas_parse_with_the_avro_library(name: str) -> None:
    assert parse(load_schema(name)).fullname == f"dev.driftline.{name}"
    versions = history(name)
    assert versions and versions[0][0] == 1
    for _, old in versions:
        parse(old)


@pytest.mark.parametrize("name", NAMES)
def test_current_schema_is_backward_compatible_with_every_historical_version(name: str) -> None:
    current = load_schema(name)
    for version, old in history(name):
        assert check_compatibility(current, old) == [], f"{name} vs v{version}"
    assert history(name)[-1][1] == current, "save a changed schema as a new history version"


def test_check_all_is_clean_for_the_shipped_schemas() -> None:
    assert check_all() == {name: [] for name in SCHEMA_FILES}


def test_adding_a_field_without_default_is_incompatible() -> None:
    old = load_schema("PredictionEvent")
    new = with_field(old, {"name": "tenant", "type": "string"})
    problems = check_compatibility(new, old)
    assert len(problems) == 1 and "reader_field_missing_default_value" in problems[0]
    assert "tenant" in problems[0]
    assert not is_backward_compatible(new, old)


def test_adding_a_field_with_default_is_compatible_both_ways() -> None:
    old = load_schema("PredictionEvent")
    new = with_field(old, {"name": "tenant", "type": ["null", "string"], "default": None})
    assert check_compatibility(new, old, "FULL") == []


@pytest.mark.parametrize(
    ("name", "change", "kind"),
    [
        # A string cannot be read as a long.
        ("OutcomeEvent", lambda s: field_type(s, "prediction_id", "long"), "type_mismatch"),
        # Old data may carry METRIC; a reader without that symbol cannot decode it.
        (
            "DriftEvent",
            lambda s: field_type(
                s,
                "stream_kind",
                {
                    "type": "enum",
                    "name": "StreamKind",
                    "symbols": ["FEATURE", "PREDICTION", "ERROR"],
                },
            ),
            "missing_enum_symbols",
        ),
        # Renaming the record breaks name matching.
        ("OutcomeEvent", lambda s: {**s, "name": "Outcome"}, "name_mismatch"),
        # Narrowing a double to a float loses precision: not a legal promotion.
        (
            "OutcomeEvent",
            lambda s: field_type(s, "value", ["null", "float"]),
            "missing_union_branch",
        ),
    ],
)
def test_breaking_changes_are_detected(name: str, change: Any, kind: str) -> None:
    old = load_schema(name)
    problems = check_compatibility(change(old), old)
    assert problems and kind in problems[0], problems


def test_legal_promotions_and_removals_are_backward_compatible() -> None:
    old = load_schema("DriftEvent")
    assert is_backward_compatible(without_field(old, "evidence"), old)  # reader ignores it
    widened = field_type(old, "position", ["null", "long", "double"])
    assert is_backward_compatible(widened, old)
    # ... but removing a field without default breaks old *readers* (FORWARD).
    assert check_compatibility(without_field(old, "detector"), old, "FORWARD")


def test_check_all_reports_incompatible_and_stale_history(tmp_path: Path) -> None:
    current = load_schema("OutcomeEvent")
    folder = tmp_path / "OutcomeEvent"
    folder.mkdir()
    # v1 predates prediction_id, which the current schema requires without a default.
    (folder / "v1.avsc").write_text(json.dumps(without_field(current, "prediction_id")))
    (folder / "v2.avsc").write_text(json.dumps(current))
    (folder / "notes.txt").write_text("ignored")
    report = check_all(root=tmp_path)
    assert len(report["OutcomeEvent"]) == 1
    assert report["OutcomeEvent"][0].startswith("vs v1: backward: reader_field_missing_default")
    assert report["PredictionEvent"] == ["no history under history/PredictionEvent/ (add v1.avsc)"]
    (folder / "v2.avsc").unlink()
    (folder / "v10.avsc").write_text(json.dumps(with_field(current, {"name": "x", "type": "long"})))
    stale = check_all(root=tmp_path)["OutcomeEvent"]
    assert any("save it as v11.avsc" in p for p in stale), stale


def test_invalid_schema_does_not_parse() -> None:
    with pytest.raises(SchemaParseException):
        parse({"type": "record", "name": "R", "fields": [{"name": "a", "type": "nope"}]})


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = load_schema("OutcomeEvent")
    (tmp_path / "old.avsc").write_text(json.dumps(old))
    (tmp_path / "bad.avsc").write_text(json.dumps(with_field(old, {"name": "x", "type": "long"})))
    assert main([str(tmp_path / "old.avsc"), str(tmp_path / "old.avsc")]) == 0
    assert main([str(tmp_path / "bad.avsc"), str(tmp_path / "old.avsc")]) == 1
    assert "INCOMPATIBLE" in capsys.readouterr().out
    assert main([]) == 0
    assert "OutcomeEvent: ok" in capsys.readouterr().out
