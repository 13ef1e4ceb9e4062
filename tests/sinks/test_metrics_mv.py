"""model_metrics_minute: the materialized views agree with a pandas computation."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from driftline.sinks import Store, columns_for, joined_label

from .conftest import make_predictions, make_store, now_ms

COLUMNS = [
    "predictions",
    "labeled",
    "classified",
    "correct",
    "scored",
    "error_sum",
    "squared_error_sum",
    "label_delay_ms_sum",
]


@pytest.fixture
def store(embedded_store: Store) -> Store:
    # The code under test sits above the Store interface; the store tests cover both stores.
    return embedded_store


def _events(seed: int = 1) -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(seed)
    start = now_ms() - 2 * 3_600_000
    start -= start % 60_000
    # a classifier and a regressor, predictions every 7 s over ~12 minutes
    clf = make_predictions(100, start_ms=start, model_id="clf", seed=seed, step_ms=7_000)
    reg = make_predictions(60, start_ms=start + 3_000, model_id="reg", seed=seed, step_ms=11_000)
    for p in reg:
        p["prediction_label"], p["prediction_value"] = None, float(rng.normal(10, 2))
    joined = []
    for i, p in enumerate(clf):
        if rng.random() < 0.7:  # 70 % label coverage
            o = {
                "event_id": f"o-{p['event_id']}",
                "event_time": p["event_time"] + int(rng.integers(1, 90_000)),
                "label": "yes" if rng.random() < 0.5 else "no",
            }
            joined.append(joined_label(p, o))
        if i == 5:  # a second outcome for the same prediction counts as a second label
            joined.append(
                joined_label(
                    p, {"event_id": "o-extra", "event_time": p["event_time"] + 1, "label": "no"}
                )
            )
    for p in reg:
        if rng.random() < 0.5:
            o = {
                "event_id": f"o-{p['event_id']}",
                "event_time": p["event_time"] + 60_000,
                "value": float(rng.normal(10, 2)),
            }
            joined.append(joined_label(p, o))
    # one labelled outcome with neither label nor value: counts for coverage only
    joined.append(joined_label(reg[0], {"event_id": "o-empty", "event_time": reg[0]["event_time"]}))
    return clf + reg, joined


def _explode(df: pd.DataFrame) -> pd.DataFrame:
    df = df.assign(segment=df["segments"].map(lambda s: [""] + [f"{k}={v}" for k, v in s.items()]))
    return df.explode("segment")


def _expected(predictions: list[dict], joined: list[dict]) -> pd.DataFrame:
    p = _explode(pd.DataFrame(predictions))
    p["minute"] = p["event_time"] // 60_000 * 60
    p = p.groupby(["model_id", "model_version", "segment", "minute"]).size().rename("predictions")
    j = _explode(pd.DataFrame(joined))
    j["minute"] = j["prediction_time"] // 60_000 * 60
    j = (
        j.assign(
            labeled=1,
            classified=j["correct"].notna().astype(int),
            correct=j["correct"].fillna(0).astype(int),
            scored=j["error"].notna().astype(int),
            error_sum=j["error"].fillna(0.0).astype(float),
            squared_error_sum=j["squared_error"].fillna(0.0).astype(float),
            label_delay_ms_sum=j["label_delay_ms"],
        )
        .groupby(["model_id", "model_version", "segment", "minute"])[COLUMNS[1:]]
        .sum()
    )
    out = pd.concat([p, j], axis=1).fillna(0).reset_index()
    for c in COLUMNS:
        out[c] = out[c].astype(float)
    return out.sort_values(["model_id", "model_version", "segment", "minute"]).reset_index(
        drop=True
    )


def _actual(store: Store, source: str) -> pd.DataFrame:
    rows = store.query(
        f"SELECT model_id, model_version, segment, toUnixTimestamp(minute), "
        f"{', '.join(f'toFloat64(sum({c}))' for c in COLUMNS)} FROM {source} "
        "GROUP BY model_id, model_version, segment, minute "
        "ORDER BY model_id, model_version, segment, minute"
    )
    return pd.DataFrame(rows, columns=["model_id", "model_version", "segment", "minute", *COLUMNS])


def _insert_in_batches(store: Store, table: str, rows: list[dict], size: int) -> None:
    for i in range(0, len(rows), size):
        store.insert(table, columns_for(table, rows[i : i + size]))


def test_minute_metrics_match_pandas(store: Store) -> None:
    predictions, joined = _events()
    _insert_in_batches(store, "predictions", predictions, 37)
    _insert_in_batches(store, "joined_labels", joined, 29)
    expected = _expected(predictions, joined)
    assert len(expected) > 100  # many (model, version, segment, minute) groups
    for source in ("model_metrics_minute", "model_metrics_minute_exact"):
        pd.testing.assert_frame_equal(
            _actual(store, source), expected, check_exact=False, rtol=1e-9
        )
    # merged state is the same sums
    store.command("OPTIMIZE TABLE model_metrics_minute FINAL")
    pd.testing.assert_frame_equal(_actual(store, "model_metrics_minute"), expected, rtol=1e-9)


def test_ratio_view(store: Store) -> None:
    predictions, joined = _events(seed=2)
    store.insert("predictions", columns_for("predictions", predictions))
    store.insert("joined_labels", columns_for("joined_labels", joined))
    exp = _expected(predictions, joined)
    exp = exp[exp["segment"] == ""].groupby("model_id")[COLUMNS].sum()
    got = store.query_df(
        "SELECT model_id, sum(predictions) AS p, sum(labeled) AS l, sum(correct) AS c "
        "FROM model_metrics_minute_v WHERE segment = '' GROUP BY model_id ORDER BY model_id"
    ).set_index("model_id")
    assert list(got["p"]) == list(exp["predictions"].astype(int))
    assert list(got["l"]) == list(exp["labeled"].astype(int))
    assert list(got["c"]) == list(exp["correct"].astype(int))
    row = store.query(
        "SELECT label_coverage, accuracy, mean_error, rmse FROM model_metrics_minute_v "
        "WHERE model_id = 'reg' AND segment = '' AND labeled > 1 ORDER BY minute LIMIT 1"
    )[0]
    assert row[0] > 0 and row[1] is None and row[2] > 0 and row[3] >= row[2]


@pytest.fixture(params=["embedded", "server-chdb"])
def any_store(request: pytest.FixtureRequest, chdb_path) -> Iterator[Store]:
    yield from make_store(request, chdb_path, request.param)


def test_replays_overcount_the_mv_but_not_the_exact_view(any_store: Store) -> None:
    store = any_store
    predictions, joined = _events(seed=3)
    store.insert("predictions", columns_for("predictions", predictions))
    # a re-batched replay is not a duplicate block: the MV counts it again
    store.insert("predictions", columns_for("predictions", predictions[10:]))
    # an exact replay with its token is dropped before reaching the MV
    store.insert("joined_labels", columns_for("joined_labels", joined), dedup_token="j:1")
    store.insert("joined_labels", columns_for("joined_labels", joined), dedup_token="j:1")
    total = "SELECT sum(predictions), sum(labeled) FROM {} WHERE segment = ''"
    assert store.query(total.format("model_metrics_minute_exact")) == [
        (len(predictions), len(joined))
    ]
    assert store.query(total.format("model_metrics_minute")) == [
        (2 * len(predictions) - 10, len(joined))
    ]


@pytest.mark.parametrize("table", ["predictions", "outcomes", "joined_labels"])
def test_dedup_views_read_final(store: Store, table: str) -> None:
    predictions, joined = _events(seed=4)
    rows = {
        "predictions": predictions,
        "joined_labels": joined,
        "outcomes": [
            {"event_id": f"o{i}", "prediction_id": "p", "model_id": "m", "event_time": now_ms() - i}
            for i in range(10)
        ],
    }[table]
    store.insert(table, columns_for(table, rows))
    store.insert(table, columns_for(table, rows[1:]))
    assert store.query(f"SELECT count() FROM {table}_dedup") == [(len(rows),)]
