"""Reference profiles: building from the usual containers, refusing bad data, round trips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from driftline.detectors.histogram import CategoricalWindow, NumericWindow
from driftline.detectors.reference import (
    PREDICTION_LABEL,
    PREDICTION_SCORE,
    ProfileTooLarge,
    ReferenceBook,
    ReferenceProfile,
    UnknownModel,
    build_profile,
    build_profile_within,
    prepare_reference,
    read_table,
)


def _data(n: int = 3000, seed: int = 0) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    age = g.normal(40, 10, n)
    age[:30] = np.nan
    return {
        "age": age,
        "income": age * 1000 + g.normal(0, 5000, n),
        "plan": g.choice(["gold", "silver", "free"], n, p=[0.2, 0.3, 0.5]),
        "score": g.random(n),
        "label": g.choice(["churn", "stay"], n),
    }


def test_profile_holds_what_the_tests_need() -> None:
    profile = build_profile(
        _data(), model_id="churn", version="v2", prediction_score="score", prediction_label="label"
    )
    assert profile.features == ["age", "income", "plan"]
    assert set(profile.numeric) == {"age", "income", PREDICTION_SCORE}
    assert set(profile.categorical) == {"plan", PREDICTION_LABEL}
    age = profile.numeric["age"]
    assert (age.n_present, age.n_missing) == (2970, 30)
    assert age.minimum == pytest.approx(np.nanmin(_data()["age"]))
    assert profile.categorical["plan"].categories == ["free", "gold", "silver"]
    assert profile.pca is not None and profile.pca.features == ("age", "income")
    # age and income are strongly correlated: one component carries most of the variance.
    assert profile.pca.components.shape == (1, 2)


def test_windows_from_a_profile_equal_windows_from_the_raw_reference() -> None:
    data = _data()
    profile = build_profile(data, model_id="m")
    g = np.random.default_rng(5)
    current = g.normal(43, 10, 1500)
    from_profile = profile.numeric["income"].window().update(current * 1000)
    raw = data["income"]
    direct = NumericWindow(raw[~np.isnan(raw)], ks_capacity=2000).update(current * 1000)
    for name in ("ks", "wasserstein", "psi", "jensenshannon"):
        assert from_profile.test(name) == direct.test(name)
    labels = g.choice(["gold", "free", "new"], 500)
    cat = profile.categorical["plan"].window().update(labels)
    assert cat.test("chisquare") == CategoricalWindow(data["plan"]).update(labels).test("chisquare")


def test_round_trip_through_bytes_is_exact() -> None:
    profile = build_profile(_data(), model_id="churn", version="v2", prediction_score="score")
    data = profile.to_bytes()
    again = ReferenceProfile.from_bytes(data)
    assert again.to_bytes() == data and again.reference_id == profile.reference_id
    assert again.summary() == profile.summary()
    for name, prof in profile.numeric.items():
        for key, array in prof.arrays.items():
            np.testing.assert_array_equal(again.numeric[name].arrays[key], array)
    with pytest.raises(ValueError, match="not a driftline reference profile"):
        ReferenceProfile.from_bytes(b"garbage")


def test_pandas_and_arrow_give_the_same_profile_as_a_dict() -> None:
    data = _data()
    frame = pd.DataFrame(data)
    table = pa.table({k: pa.array(v) for k, v in data.items()})
    ids = {
        build_profile(source, model_id="m").reference_id for source in (data, frame, table)
    }
    assert len(ids) == 1


def test_missing_values_of_every_spelling_are_counted() -> None:
    profile = build_profile(
        {"c": ["a", None, "b", float("nan"), pd.NA] * 20, "x": [1.0, None, 2.0, 3.0, 4.0] * 20},
        model_id="m",
    )
    assert profile.categorical["c"].n_missing == 60
    assert profile.numeric["x"].n_missing == 20


@pytest.mark.parametrize(
    ("data", "kwargs", "message"),
    [
        ({}, {}, "no columns"),
        ({"x": []}, {}, "no rows"),
        ({"x": [1.0, 2.0], "y": [1.0]}, {}, "different lengths"),
        ({"x": [1.0, "a", 2.0]}, {}, "mixes numbers and strings"),
        ({"x": [1.0, float("inf")]}, {}, "finite"),
        ({"x": [None, None]}, {}, "no values"),
        ({"@prediction_score": [1.0]}, {}, "reserved"),
        ({"x": [1.0]}, {"prediction_score": "s"}, "not in the data"),
        ({"x": [1.0]}, {"categorical": ["y"]}, "do not exist"),
        ({"s": ["a"]}, {"prediction_score": "s"}, "must hold numbers"),
        ({"x": [1.0]}, {"model_id": ""}, "model_id"),
    ],
)
def test_bad_reference_data_is_refused_with_a_reason(data, kwargs, message) -> None:  # noqa: ANN001
    kwargs = {"model_id": "m", **kwargs}
    with pytest.raises(ValueError, match=message):
        build_profile(data, **kwargs)


def test_forced_categorical_treats_numbers_as_labels() -> None:
    profile = build_profile({"zip": [10115, 10117, 10115]}, model_id="m", categorical=["zip"])
    assert profile.categorical["zip"].categories == ["10115", "10117"]


def test_equal_data_gives_equal_bytes_at_any_time(monkeypatch) -> None:  # noqa: ANN001
    import time as time_module

    first = build_profile(_data(), model_id="m").to_bytes()
    # np.savez would stamp the wall clock into the archive; ours must not
    monkeypatch.setattr(time_module, "time", lambda: 2_000_000_000.0)
    monkeypatch.setattr(time_module, "localtime", lambda *_: time_module.gmtime(2_000_000_000))
    assert build_profile(_data(), model_id="m").to_bytes() == first


def test_record_round_trip_and_mismatches_are_refused() -> None:
    profile = build_profile(_data(), model_id="churn", version="v2")
    record = profile.to_record(uploaded_at=1_790_000_000_000, uploaded_by="apikey:k1/ci")
    assert record["features"] == ["age", "income", "label", "plan", "score"]
    assert ReferenceProfile.from_record(record).reference_id == profile.reference_id
    with pytest.raises(ValueError, match="holds a profile of"):
        ReferenceProfile.from_record({**record, "model_id": "other"})
    with pytest.raises(ValueError, match="does not match"):
        ReferenceProfile.from_record({**record, "reference_id": "0" * 16})


def test_profiles_too_large_for_a_message_shrink_their_samples_or_are_refused() -> None:
    g = np.random.default_rng(2)
    wide = {f"f{i:02d}": g.normal(0, 1, 3000) for i in range(60)}
    full = build_profile(wide, model_id="m")
    assert len(full.to_bytes()) > 900_000  # 60 columns x 2,000 KS values x 8 bytes
    fitted = build_profile_within(wide, model_id="m")
    assert len(fitted.to_bytes()) <= 900_000
    assert 200 <= fitted.numeric["f00"].arrays["reference_sorted"].shape[0] < 2000
    with pytest.raises(ProfileTooLarge, match="over the 50,000-byte limit"):
        build_profile_within(wide, max_bytes=50_000, model_id="m")


def test_prepare_reference_is_the_one_check_of_every_uploader() -> None:
    data = {"x": [1.0, 2.0, 3.0]}
    with pytest.raises(UnknownModel, match="DRIFTLINE_KNOWN_MODELS"):
        prepare_reference(data, model_id="other", known_models=["churn"])
    assert issubclass(UnknownModel, ValueError) and issubclass(ProfileTooLarge, ValueError)
    for bad in ("", "   ", "m" * 256):
        with pytest.raises(ValueError, match="model_id"):
            prepare_reference(data, model_id=bad)
    profile = prepare_reference(data, model_id="churn", known_models=["churn"], version="v2")
    assert (profile.model_id, profile.version, profile.n_events) == ("churn", "v2", 3)
    assert prepare_reference(data, model_id="any").model_id == "any"  # no list: any model
    with pytest.raises(ProfileTooLarge):
        prepare_reference(_data(), model_id="m", max_bytes=10_000)


def test_read_table_takes_paths_and_bytes_of_csv_and_parquet(tmp_path) -> None:  # noqa: ANN001
    frame = pd.DataFrame({"x": [1.5, 2.5], "plan": ["a", "b"]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    for source, fmt in [
        (tmp_path / "t.csv", None),
        (tmp_path / "t.parquet", None),
        ((tmp_path / "t.csv").read_bytes(), "csv"),
        ((tmp_path / "t.parquet").read_bytes(), "parquet"),
    ]:
        table = read_table(source, fmt)
        assert table.column_names == ["x", "plan"] and table.num_rows == 2
    with pytest.raises(ValueError, match="unknown format '.json'"):
        (tmp_path / "t.json").write_text("{}")
        read_table(tmp_path / "t.json")
    with pytest.raises(ValueError, match="no such file"):
        read_table(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="parquet: cannot read it"):
        read_table(b"not parquet", "parquet")


def test_column_stats_describe_every_column() -> None:
    profile = build_profile(_data(), model_id="m", prediction_score="score", prediction_label="label")
    stats = {row["column"]: row for row in profile.column_stats()}
    assert set(stats) == {"age", "income", "plan", PREDICTION_SCORE, PREDICTION_LABEL}
    age = stats["age"]
    assert (age["n_present"], age["n_missing"]) == (2970, 30)
    assert age["missing_rate"] == pytest.approx(0.01)
    assert len(age["quantiles"]) == 9 and sum(age["bin_counts"]) == 2970
    assert age["min"] <= age["quantiles"][0] and age["quantiles"][-1] <= age["max"]
    plan = stats["plan"]
    assert sorted(plan["categories"]) == ["free", "gold", "silver"]
    assert sum(plan["categories"].values()) == 3000 and plan["min"] is None


def test_reference_book_keeps_the_latest_per_model_and_refuses_junk() -> None:
    import json

    def decode(value: bytes) -> dict:
        record = json.loads(value[: value.index(b"|")])
        return {**record, "profile": value[value.index(b"|") + 1 :]}

    def encode(profile: ReferenceProfile, by: str) -> bytes:
        record = {k: v for k, v in profile.to_record(1234, by).items() if k != "profile"}
        return json.dumps(record).encode() + b"|" + profile.to_bytes()

    first = build_profile({"x": [1.0, 2.0]}, model_id="m", version="1")
    second = build_profile({"x": [3.0, 4.0]}, model_id="m", version="2")
    quiet, book = ReferenceBook(decode), ReferenceBook(decode, keep_arrivals=True)
    for reader in (quiet, book):
        reader.on_record(b"m", encode(first, "a"), 0, 0)
        reader.on_record(b"m", b"junk", 0, 1)
        reader.on_record("m", encode(second, "b"), 0, 2)
    assert (book.applied, book.refused) == (2, 1)
    entry = book.entry("m")
    assert (entry.profile.version, entry.uploaded_by, entry.uploaded_at, entry.offset) == ("2", "b", 1234, 2)
    assert [e.profile.version for e in book.take_arrivals()] == ["1", "2"]
    assert book.take_arrivals() == [] and quiet.take_arrivals() == []  # quiet keeps none
    book.on_record(b"m", None, 0, 3)  # a tombstone
    assert book.get("m") is None and book.models() == []


def test_reference_book_keeps_each_versions_latest_until_a_tombstone() -> None:
    book = ReferenceBook(lambda value: {})
    one = build_profile({"x": [1.0, 2.0]}, model_id="m", version="1")
    two = build_profile({"x": [3.0, 4.0]}, model_id="m", version="2")
    again = build_profile({"x": [5.0, 6.0]}, model_id="m", version="1")
    for profile in (one, two, again):
        book.put(profile)
    # the latest upload per version, while the model's latest is the last upload of any
    assert book.for_version("m", "1") is again and book.for_version("m", "2") is two
    assert book.get("m") is again and book.for_version("m", "3") is None
    book.on_record(b"m", None, 0, 3)  # a tombstone forgets every version of the model
    assert book.for_version("m", "1") is None and book.for_version("m", "2") is None
