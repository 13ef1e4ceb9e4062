"""Migrations: ordered, recorded, idempotent, matching the Python table specs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from driftline.sinks import TABLES, EmbeddedStore, Store, load_migrations
from driftline.sinks.base import Migration, split_statements


def test_migrations_are_numbered_and_ordered() -> None:
    migrations = load_migrations()
    assert migrations, "no packaged migrations found"
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})
    assert migrations[0].name == "0001_raw_tables"


def test_migrate_is_recorded_and_idempotent(store: Store) -> None:
    # The fixture already migrated: everything is recorded once and nothing is pending.
    names = [m.name for m in load_migrations()]
    assert store.applied_migrations() == names
    assert store.migrate() == []
    assert store.migrate() == []
    rows = store.query(f"SELECT count() FROM {store.database}.schema_migrations")
    assert rows == [(len(names),)]


def test_fresh_database_applies_everything_in_order(chdb_path: Path) -> None:
    with EmbeddedStore(chdb_path, "fresh_migrations") as store:
        applied = store.migrate()
        assert applied == [m.name for m in load_migrations()]
        tables = {name for (name,) in store.query("SHOW TABLES")}
        assert set(TABLES) | {"schema_migrations"} <= tables
        store.command("DROP DATABASE fresh_migrations")


def test_migrations_rerun_over_an_applied_schema(chdb_path: Path) -> None:
    """What a second worker migrating the same store at the same moment (or a run interrupted
    before it recorded its migrations) does: every statement again over a schema that already
    has it. ADD COLUMN with MODIFY ORDER BY cannot say IF NOT EXISTS; it must still pass."""
    with EmbeddedStore(chdb_path, "rerun_migrations") as store:
        names = store.migrate()
        store.command("TRUNCATE TABLE rerun_migrations.schema_migrations")
        assert store.migrate() == names
        assert store.applied_migrations() == names
        store.command("DROP DATABASE rerun_migrations")


def test_table_specs_match_the_migrated_schema(store: Store) -> None:
    for name, spec in TABLES.items():
        actual = store.column_types(name)
        assert actual == spec.all_columns, name


def test_sorting_keys_end_with_the_row_identity(store: Store) -> None:
    rows = store.query(
        "SELECT name, sorting_key, engine FROM system.tables WHERE database = {db:String}",
        {"db": store.database},
    )
    keys = {name: (key, engine) for name, key, engine in rows}
    for name, spec in TABLES.items():
        key, engine = keys[name]
        assert engine == "ReplacingMergeTree", name
        assert [k.strip() for k in key.split(",")] == list(spec.key), name


def test_raw_tables_get_the_configured_ttl(chdb_path: Path) -> None:
    with EmbeddedStore(chdb_path, "ttl_30", ttl_days=30) as store:
        store.migrate()
        ddl = store.query("SHOW CREATE TABLE predictions")[0][0]
        assert "toIntervalDay(30)" in ddl
        ddl = store.query("SHOW CREATE TABLE drift_events")[0][0]
        assert "TTL" not in ddl  # the audit trail is kept
        store.command("DROP DATABASE ttl_30")
    with EmbeddedStore(chdb_path, "ttl_none", ttl_days=None) as store:
        store.migrate()
        assert "TTL" not in store.query("SHOW CREATE TABLE predictions")[0][0]
        store.command("DROP DATABASE ttl_none")


def test_split_statements_respects_quotes_and_comments() -> None:
    sql = "-- a; comment\nSELECT 'a;b' ; SELECT `x;y` FROM t -- tail;\n;\n SELECT 'it\\'s;'"
    assert split_statements(sql) == ["SELECT 'a;b'", "SELECT `x;y` FROM t", "SELECT 'it\\'s;'"]


def test_placeholder_substitution_and_line_dropping() -> None:
    m = Migration(
        9, "0009_x", "CREATE TABLE {database}.t (a UInt8)\nTTL a + {ttl_days}\n;\nSELECT 1"
    )
    assert m.statements(database="d", ttl_days=7) == [
        "CREATE TABLE d.t (a UInt8)\nTTL a + 7",
        "SELECT 1",
    ]
    assert m.statements(database="d", ttl_days=None) == ["CREATE TABLE d.t (a UInt8)", "SELECT 1"]


_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from driftline.sinks import EmbeddedStore
    path, mode = Path(sys.argv[1]), sys.argv[2]
    store = EmbeddedStore(path, "persisted")
    applied = store.migrate()
    if mode == "write":
        now = int(time.time() * 1000)
        store.insert_rows("outcomes", [
            {"event_id": f"o{i}", "prediction_id": f"p{i}", "model_id": "m",
             "event_time": now - i, "label": "yes", "value": None} for i in range(10)])
    count = store.query("SELECT count() FROM outcomes FINAL")[0][0]
    store.close()
    print(json.dumps({"applied": applied, "count": count}))
    """
)


def _run_child(path: Path, mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), mode],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_embedded_store_survives_a_process_restart(tmp_path: Path) -> None:
    first = _run_child(tmp_path, "write")
    assert first == {"applied": [m.name for m in load_migrations()], "count": 10}
    second = _run_child(tmp_path, "read")
    assert second == {"applied": [], "count": 10}
