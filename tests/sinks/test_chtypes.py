"""ClickHouse type strings -> Arrow, and the column conversions the stores rely on."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from driftline.sinks import Store
from driftline.sinks.chtypes import arrow_type, dense_map, split_type_args, to_arrow_array

from .conftest import now_ms


@pytest.mark.parametrize(
    ("ch_type", "expected"),
    [
        ("String", pa.string()),
        ("LowCardinality(String)", pa.string()),
        ("Nullable(Float64)", pa.float64()),
        ("LowCardinality(Nullable(String))", pa.string()),
        ("DateTime64(3, 'UTC')", pa.timestamp("ms", tz="UTC")),
        ("DateTime('UTC')", pa.timestamp("s", tz="UTC")),
        ("Map(String, Float64)", pa.map_(pa.string(), pa.float64())),
        ("Array(String)", pa.list_(pa.string())),
        ("Map(String, Array(Nullable(Int64)))", pa.map_(pa.string(), pa.list_(pa.int64()))),
    ],
)
def test_arrow_types(ch_type: str, expected: pa.DataType) -> None:
    assert arrow_type(ch_type) == expected


def test_unknown_type_is_an_error() -> None:
    with pytest.raises(ValueError, match="no Arrow mapping"):
        arrow_type("AggregateFunction(uniq, String)")


def test_split_type_args_keeps_nested_commas() -> None:
    assert split_type_args("String, Map(String, Float64), 'a,b'") == [
        "String",
        "Map(String, Float64)",
        "'a,b'",
    ]


def test_maps_with_nulls_and_mixed_sizes() -> None:
    arr = to_arrow_array([{"a": 1.0}, None, {}, {"b": 2.0, "c": 3.0}], "Map(String, Float64)")
    assert arr.to_pylist() == [[("a", 1.0)], [], [], [("b", 2.0), ("c", 3.0)]]


def test_times_from_ints_datetimes_and_numpy() -> None:
    t = 1_763_900_000_123
    want = [dt.datetime(2025, 11, 23, 12, 13, 20, 123000, tzinfo=dt.UTC)]
    typ = "DateTime64(3, 'UTC')"
    assert to_arrow_array([t], typ).to_pylist() == want
    assert to_arrow_array(np.array([t]), typ).to_pylist() == want
    assert to_arrow_array(np.array([t], dtype="datetime64[ms]"), typ).to_pylist() == want
    assert to_arrow_array([want[0].replace(tzinfo=None)], typ).to_pylist() == want
    assert to_arrow_array([None, t], typ).to_pylist() == [None, *want]


def test_dense_map_rejects_mismatched_keys() -> None:
    with pytest.raises(ValueError, match="does not match"):
        dense_map(["a"], np.zeros((3, 2)))


def test_dense_map_columns_insert_like_dicts(store: Store) -> None:
    n, names = 50, [f"f{j}" for j in range(20)]
    matrix = np.random.default_rng(0).normal(size=(n, 20))
    t = now_ms()
    base = {
        "event_id": [f"e{i}" for i in range(n)],
        "model_id": ["m"] * n,
        "model_version": ["1"] * n,
        "event_time": np.arange(t, t + n),
    }
    store.insert("predictions", {**base, "numeric_features": dense_map(names, matrix)})
    dicts = [dict(zip(names, row, strict=True)) for row in matrix.tolist()]
    got = store.query("SELECT numeric_features FROM predictions ORDER BY event_time")
    assert [row[0] for row in got] == dicts


def test_uniform_and_ragged_key_orders_convert_alike() -> None:
    # same keys in the same order on every row takes a shortcut; make sure it is exact
    uniform = [{"a": 1.0, "é": 2.0}, {"a": 3.0, "é": 4.0}]
    assert to_arrow_array(uniform, "Map(String, Float64)").to_pylist() == [
        [("a", 1.0), ("é", 2.0)],
        [("a", 3.0), ("é", 4.0)],
    ]
    reordered = [{"a": 1.0, "b": 2.0}, {"b": 3.0, "a": 4.0}]
    assert to_arrow_array(reordered, "Map(String, Float64)").to_pylist() == [
        [("a", 1.0), ("b", 2.0)],
        [("b", 3.0), ("a", 4.0)],
    ]
    same_count_other_keys = [{"a": 1.0}, {"b": 2.0}]
    assert to_arrow_array(same_count_other_keys, "Map(String, Float64)").to_pylist() == [
        [("a", 1.0)],
        [("b", 2.0)],
    ]
