"""Store round trips on the real engine: every table, numpy columns, replays, errors."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from driftline.sinks import EmbeddedStore, Store, StoreError, columns_for, joined_label
from driftline.sinks.tables import TABLES

from .conftest import ALL_STORE_KINDS, make_predictions, make_store, now_ms


@pytest.fixture(params=ALL_STORE_KINDS)
def store(request: pytest.FixtureRequest, chdb_path) -> Iterator[Store]:
    yield from make_store(request, chdb_path, request.param)


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _sample_rows(n: int = 5) -> dict[str, list[dict]]:
    t = now_ms() - 600_000
    preds = make_predictions(n, start_ms=t)
    outcomes = [
        {
            "event_id": f"o{i}",
            "prediction_id": p["event_id"],
            "model_id": p["model_id"],
            "event_time": p["event_time"] + 5_000,
            "label": "yes" if i % 2 else "no",
            "value": None,
        }
        for i, p in enumerate(preds)
    ]
    return {
        "predictions": preds,
        "outcomes": outcomes,
        "joined_labels": [joined_label(p, o) for p, o in zip(preds, outcomes, strict=True)],
        "detector_stats": [
            {
                "model_id": "m1",
                "stream_kind": "FEATURE",
                "stream_name": f"f{i}",
                "detector": "adwin",
                "time": t + i,
                "n_values": 100 + i,
                "estimate": 0.5 + i,
                "statistic": None if i == 0 else 1.5,
                "p_value": 0.01,
                "drift": i % 2,
            }
            for i in range(n)
        ],
        "drift_events": [
            {
                "event_id": f"d{i}",
                "model_id": "m1",
                "model_version": "v1",
                "stream_kind": "ERROR",
                "stream_name": "error_rate",
                "detector": "ddm",
                "detected_at": t + i,
                "position": 10 * i,
                "statistic": 3.2,
                "p_value": None,
                "threshold": 3.0,
                "evidence": {"mean": "0.4", "n": str(i)},
                "source_event_id": f"p{i}",
            }
            for i in range(n)
        ],
        "retraining_requests": [
            {
                "event_id": f"r{i}",
                "model_id": "m1",
                "model_version": "v1",
                "requested_at": t + i,
                "reason": "drift",
                "trigger_event_ids": [f"d{i}", f"d{i + 1}"],
                "window_start": t - 3_600_000,
                "window_end": t,
                "priority": "HIGH",
                "policy": "on-drift",
            }
            for i in range(n)
        ],
        "alerts": [
            {
                "fingerprint": "fp1",
                "rule_id": "r1",
                "rule_version": 2,
                "alertname": "drift",
                "model_id": "m1",
                "severity": "warning",
                "state": "resolved" if i % 2 else "firing",
                "labels": {"model_id": "m1", "alertname": "drift"},
                "annotations": {"summary": f"n={i}"},
                "value": float(i) if i else None,
                "starts_at": t,
                "ends_at": t + i if i % 2 else None,
                "updated_at": t + i,
                "trigger_event_ids": [f"d{i}"],
                "event_id": f"a{i}",
                "silenced": i % 2,
                "silence_ids": ["s1"] if i % 2 else [],
                "acknowledged": 0,
                "notify": ["sub1"],
                "inhibited_by": None,
            }
            for i in range(n)
        ],
        **{
            table: [
                {
                    "model_id": "m1",
                    "model_version": "v1",
                    "window_index": i,
                    "window_start": t + 1000 * i,
                    "window_end": t + 1000 * i + 999,
                    "first_position": 2000 * i,
                    "last_position": 2000 * i + 1999,
                    "stream_kind": "FEATURE",
                    "feature": "age",
                    "column_kind": "numeric",
                    "test": test,
                    "statistic": None if i == 0 else 0.1 * i,
                    "p_value": None if i % 2 else 0.01 * i,
                    "threshold": 1e-6,
                    "n_reference": 10_000,
                    "n_current": 2000,
                    "insufficient_data": int(i == 0),
                    "drifted": i % 2,
                    "reference_id": "abc",
                    "reference_version": "train-1",
                    "reference_source": "uploaded",
                    "segment": "" if i % 3 else "region=eu",  # '' = all traffic
                }
                for i in range(n)
            ]
            for table, test in (("feature_drift", "ks"), ("data_quality", "missing_rate"))
        },
        **{
            table: _rows_from_spec(table, n, t)
            for table in ("reference_profiles", "performance_estimates")
        },
    }


def _value(ch_type: str, column: str, i: int, t: int) -> object:
    """A sample value of a column's type; strings differ per row, so keys are unique."""
    if ch_type.startswith("Nullable("):
        return None if i == 0 else _value(ch_type[len("Nullable(") : -1], column, i, t)
    if ch_type.startswith("DateTime64"):
        return t + i
    if ch_type in ("String", "LowCardinality(String)"):
        return f"{column}-{i}"
    if ch_type.startswith(("UInt", "Int")):
        return i % 2 if ch_type == "UInt8" else i
    if ch_type == "Float64":
        return 0.25 * i
    if ch_type.startswith("Array("):
        return [_value(ch_type[len("Array(") : -1], column, j, t) for j in range(i % 3)]
    if ch_type.startswith("Map(String, "):
        return {f"k{j}": _value(ch_type[len("Map(String, ") : -1], column, j + 1, t) for j in range(i % 3)}
    raise AssertionError(f"no sample value for {ch_type} ({column})")


def _rows_from_spec(table: str, n: int, t: int) -> list[dict]:
    """Rows for tables whose columns carry no cross-column meaning for these tests."""
    spec = TABLES[table]
    return [{c: _value(ty, c, i, t) for c, ty in spec.columns.items()} for i in range(n)]


def _expected(value: object, ch_type: str) -> object:
    if "DateTime64" in ch_type and value is not None:  # Nullable(DateTime64(...)) too
        return _utc(value)  # type: ignore[arg-type]
    if ch_type.startswith("Map(") and value is None:
        return {}
    return value


@pytest.mark.parametrize("table", list(TABLES))
def test_round_trip_every_table(store: Store, table: str) -> None:
    rows = _sample_rows()[table]
    spec = TABLES[table]
    assert store.insert(table, columns_for(table, rows)) == len(rows)
    names = list(spec.columns)
    got = store.query(
        f"SELECT {', '.join(names)} FROM {table} FINAL ORDER BY {', '.join(spec.key)}"
    )
    want = [tuple(_expected(r.get(c), spec.columns[c]) for c in names) for r in rows]
    assert got == sorted(want, key=lambda row: tuple(row[names.index(k)] for k in spec.key))


def test_insert_rows_and_query_df(store: Store) -> None:
    rows = _sample_rows(4)["outcomes"]
    assert store.insert_rows("outcomes", rows) == 4
    df = store.query_df("SELECT event_id, event_time, label, value FROM outcomes ORDER BY event_id")
    assert list(df["event_id"]) == ["o0", "o1", "o2", "o3"]
    assert df["value"].isna().all()
    times = pd.to_datetime(df["event_time"], utc=True)
    assert [t.value // 1_000_000 for t in times] == [r["event_time"] for r in rows]


def test_numpy_columns_and_datetimes(store: Store) -> None:
    n = 1000
    t0 = now_ms()
    columns = {
        "model_id": np.array(["m"] * n, dtype=object),
        "stream_kind": ["FEATURE"] * n,
        "stream_name": ["f0"] * n,
        "detector": ["psi"] * n,
        "time": np.arange(t0, t0 + n, dtype=np.int64),
        "n_values": np.arange(n, dtype=np.uint64),
        "estimate": np.linspace(0, 1, n),
        "statistic": np.full(n, np.nan),
        "p_value": np.linspace(1, 0, n),
        "drift": np.arange(n) % 2 == 0,  # bools land in UInt8
    }
    assert store.insert("detector_stats", columns) == n
    got = store.query(
        "SELECT count(), sum(drift), min(time), max(n_values), round(sum(estimate), 6) "
        "FROM detector_stats"
    )
    assert got == [(n, n // 2, _utc(t0), n - 1, round(float(np.linspace(0, 1, n).sum()), 6))]
    # datetime objects and numpy datetime64 are accepted for time columns as well
    store.insert(
        "detector_stats",
        {
            **{k: v[:2] for k, v in columns.items()},
            "time": [_utc(t0 + 5000), _utc(t0 + 5001)],
            "stream_name": ["dt", "dt"],
        },
    )
    store.insert(
        "detector_stats",
        {
            **{k: v[:1] for k, v in columns.items()},
            "time": np.array([t0 + 7000], dtype="datetime64[ms]"),
            "stream_name": ["np"],
        },
    )
    got = store.query(
        "SELECT stream_name, time FROM detector_stats WHERE stream_name != 'f0' ORDER BY time"
    )
    assert got == [("dt", _utc(t0 + 5000)), ("dt", _utc(t0 + 5001)), ("np", _utc(t0 + 7000))]


def test_query_parameters(store: Store) -> None:
    store.insert_rows("outcomes", _sample_rows(3)["outcomes"])
    got = store.query(
        "SELECT event_id FROM outcomes WHERE label = {label:String} AND event_time > {t:DateTime64(3)}",
        {"label": "yes", "t": "2000-01-01 00:00:00.000"},
    )
    assert got == [("o1",)]


@pytest.mark.parametrize("table", list(TABLES))
def test_replayed_rows_count_once_with_final(store: Store, table: str) -> None:
    rows = _sample_rows(6)[table]
    store.insert_rows(table, rows)
    # at-least-once replays rarely line up with the original batches
    store.insert_rows(table, rows[2:])
    store.insert_rows(table, rows[:3])
    assert store.query(f"SELECT count() FROM {table}") == [(13,)]
    assert store.query(f"SELECT count() FROM {table} FINAL") == [(6,)]
    store.command(f"OPTIMIZE TABLE {table} FINAL")
    assert store.query(f"SELECT count() FROM {table}") == [(6,)]


def test_identical_batch_is_dropped_even_without_token(store: Store) -> None:
    # non_replicated_deduplication_window > 0 turns on ClickHouse's block-hash dedup for
    # plain MergeTree: a byte-identical batch is skipped (and does not reach the MVs).
    rows = _sample_rows(5)["outcomes"]
    store.insert_rows("outcomes", rows)
    store.insert_rows("outcomes", rows)
    assert store.query("SELECT count() FROM outcomes") == [(5,)]


def test_dedup_token_drops_an_exact_batch_replay(store: Store) -> None:
    rows = _sample_rows(5)["outcomes"]
    store.insert_rows("outcomes", rows, dedup_token="outcomes:0:100-104")
    # the same input batch re-processed: same token, even if the bytes differ (re-ordered)
    store.insert_rows("outcomes", rows[::-1], dedup_token="outcomes:0:100-104")
    assert store.query("SELECT count() FROM outcomes") == [(5,)]  # no FINAL needed
    store.insert_rows("outcomes", rows, dedup_token="outcomes:0:105-109")
    assert store.query("SELECT count() FROM outcomes") == [(10,)]
    assert store.query("SELECT count() FROM outcomes FINAL") == [(5,)]


def test_bad_input_is_rejected_before_sending(store: Store) -> None:
    with pytest.raises(ValueError, match="no column"):
        store.insert("outcomes", {"event_id": ["a"], "nope": [1]})
    with pytest.raises(ValueError, match="ragged"):
        store.insert("outcomes", {"event_id": ["a", "b"], "model_id": ["m"]})
    with pytest.raises(ValueError, match="required field 'event_time'"):
        columns_for("outcomes", [{"event_id": "a", "prediction_id": "p", "model_id": "m"}])
    with pytest.raises(StoreError):
        store.query("SELECT definitely_not_a_column FROM outcomes")
    with pytest.raises(StoreError):
        store.insert("no_such_table", {"a": [1]})
    assert store.query("SELECT count() FROM outcomes") == [(0,)]


def test_empty_inserts_are_noops(store: Store) -> None:
    assert store.insert("outcomes", {}) == 0
    assert store.insert("outcomes", {"event_id": []}) == 0
    assert store.insert_rows("outcomes", []) == 0


def test_closed_store_refuses_calls(chdb_path) -> None:
    s = EmbeddedStore(chdb_path, "closing")
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.query("SELECT 1")


def test_second_data_path_in_one_process_is_refused(chdb_path, tmp_path) -> None:
    with pytest.raises(StoreError, match="one engine per process"):
        EmbeddedStore(tmp_path / "other", "x")


def test_writer_and_readers_share_the_store_across_threads(store: Store) -> None:
    rows = _sample_rows(50)["outcomes"]
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            batch = [{**r, "event_id": f"{r['event_id']}-{k}"} for r in rows]
            store.insert_rows("outcomes", batch)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def read() -> None:
        try:
            for _ in range(5):
                store.query("SELECT count() FROM outcomes")
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.query("SELECT count() FROM outcomes FINAL") == [(200,)]


def test_locked_connection_serialises_with_store_calls(chdb_path) -> None:
    with EmbeddedStore(chdb_path, "locked") as store:
        store.migrate()
        entered = threading.Event()
        release = threading.Event()
        done: list[int] = []

        def hold() -> None:
            with store.locked_connection() as conn:
                assert conn.query("SELECT 1", "CSV").bytes().strip() == b"1"
                entered.set()
                release.wait(10)

        def insert() -> None:
            done.append(store.insert_rows("outcomes", _sample_rows(2)["outcomes"]))

        holder = threading.Thread(target=hold)
        holder.start()
        entered.wait(10)
        writer = threading.Thread(target=insert)
        writer.start()
        writer.join(0.2)
        assert done == []  # the insert waits for the lock holder
        release.set()
        holder.join()
        writer.join()
        assert done == [2]


def test_string_parameters_arrive_verbatim(store: Store) -> None:
    # ClickHouse parses parameter values in escaped form: a backslash must not start an escape
    for value in ["back\\slash", "tab\there", "new\nline", "quote'd", "plain"]:
        assert store.query("SELECT {v:String}", {"v": value}) == [(value,)]
