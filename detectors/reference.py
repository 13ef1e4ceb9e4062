"""Reference profiles: what a model's training data (or its first healthy events) looked like.

A :class:`ReferenceProfile` is compact and made of plain arrays, so it travels on a Kafka topic,
lands in ClickHouse and rides in a worker's checkpoint:

* per numeric column — decile bin edges and counts (PSI, χ²), 100 finer quantile bins (normed
  Wasserstein), a bounded uniform sample of at most ``ks_sample`` values (KS), observed
  minimum / maximum and standard deviation, the share of its most common value, missing count;
* per categorical column — each category's count, the number of categories seen once
  (Good–Turing's estimate of unseen ones), missing count;
* the model's outputs under reserved names — ``@prediction_score`` and ``@prediction_value``
  (numeric), ``@prediction_label`` (categorical) — tested like features;
* over all numeric input columns, a PCA fitted on the standardised reference and the
  distribution of its per-row reconstruction error (NannyML's multivariate drift method).

Build one with :func:`build_profile` from columns (a dict of arrays, a pandas DataFrame or a
pyarrow Table); serialise with :meth:`ReferenceProfile.to_bytes` (numpy ``.npz`` with a JSON
header, no pickle) and read back with :meth:`ReferenceProfile.from_bytes`.

Example
-------
>>> import numpy as np
>>> from driftline.detectors.reference import ReferenceProfile, build_profile
>>> rng = np.random.default_rng(0)
>>> profile = build_profile(
...     {"age": rng.normal(40, 10, 5000), "plan": rng.choice(["gold", "free"], 5000)},
...     model_id="churn", version="v3",
... )
>>> sorted(profile.numeric), sorted(profile.categorical), profile.source
(['age'], ['plan'], 'uploaded')
>>> again = ReferenceProfile.from_bytes(profile.to_bytes())
>>> again.reference_id == profile.reference_id, again.numeric["age"].n_present
(True, 5000)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import threading
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from .histogram import DEFAULT_FINE_BINS, CategoricalWindow, NumericWindow
from .window_tests import DEFAULT_BINS, DEFAULT_MIN_SAMPLES

__all__ = [
    "PREDICTION_LABEL",
    "PREDICTION_SCORE",
    "PREDICTION_VALUE",
    "CategoricalProfile",
    "NumericProfile",
    "PCAProfile",
    "ProfileTooLarge",
    "ReferenceBook",
    "ReferenceEntry",
    "ReferenceProfile",
    "UnknownModel",
    "build_profile",
    "build_profile_within",
    "check_model_id",
    "prepare_reference",
    "read_table",
    "split_kinds",
]

PREDICTION_SCORE = "@prediction_score"
PREDICTION_VALUE = "@prediction_value"
PREDICTION_LABEL = "@prediction_label"
PREDICTION_COLUMNS = (PREDICTION_SCORE, PREDICTION_VALUE, PREDICTION_LABEL)

DEFAULT_KS_SAMPLE = 2000
# Kafka's default message size is 1 MiB; a profile travels as one record.
MAX_PROFILE_BYTES = 900_000
MIN_KS_SAMPLE = 200
# NannyML keeps the components explaining 65% of the variance.
PCA_VARIANCE = 0.65
PCA_MAX_ROWS = 20_000
PCA_MIN_ROWS = 100
# A standardised column with (near) zero spread would divide by zero.
MIN_SCALE = 1e-12
_FORMAT = 1
log = logging.getLogger("driftline.references")
# Longest model id a reference may carry (it is the topic key and a ClickHouse column).
MAX_MODEL_ID = 255


class ProfileTooLarge(ValueError):
    """The profile would not fit in one Kafka message even with the smallest KS samples."""


class UnknownModel(ValueError):
    """A reference for a model the deployment does not accept (``DRIFTLINE_KNOWN_MODELS``)."""


# The reference side of a NumericWindow: what a profile stores so a window can be rebuilt
# without the raw values (the window's constructor needs them).
_WINDOW_ARRAYS = (
    "edges",
    "fine_edges",
    "reference_counts",
    "reference_fine_counts",
    "reference_sorted",
    "reference_tails",
)
_WINDOW_SCALARS = (
    "bins",
    "fine_bins",
    "ks_capacity",
    "discrete",
    "n_reference",
    "reference_min",
    "reference_max",
    "reference_std",
    "n_unique_reference",
)


def _window_reference(window: NumericWindow) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays = {name: np.array(getattr(window, name), dtype=np.float64) for name in _WINDOW_ARRAYS}
    scalars = {}
    for name in _WINDOW_SCALARS:
        value = getattr(window, name)
        scalars[name] = value.item() if hasattr(value, "item") else value
    return arrays, scalars


def _numeric_window(
    arrays: dict[str, np.ndarray], scalars: dict[str, Any], min_samples: int, seed: int
) -> NumericWindow:
    """A NumericWindow over a stored reference side, with an empty current window."""
    window = NumericWindow.__new__(NumericWindow)
    for name in _WINDOW_ARRAYS:
        setattr(window, name, np.ascontiguousarray(arrays[name], dtype=np.float64))
    for name in _WINDOW_SCALARS:
        setattr(window, name, scalars[name])
    window.discrete = bool(window.discrete)
    window.min_samples, window.seed = min_samples, int(seed)
    window.reset()
    return window


def _categorical_window(
    categories: list[str], counts: np.ndarray, min_samples: int
) -> CategoricalWindow:
    window = CategoricalWindow.__new__(CategoricalWindow)
    window.categories = list(categories)
    window._index = {key: i for i, key in enumerate(window.categories)}
    window.reference_counts = np.asarray(counts, dtype=np.float64)
    window.n_reference = int(window.reference_counts.sum())
    window.min_samples = min_samples
    window.reset()
    return window


@dataclass
class NumericProfile:
    """One numeric column of a reference (the reference side of a ``NumericWindow``)."""

    arrays: dict[str, np.ndarray]
    scalars: dict[str, Any]
    n_missing: int
    top_share: float

    @property
    def n_present(self) -> int:
        return int(self.scalars["n_reference"])

    @property
    def minimum(self) -> float:
        return float(self.scalars["reference_min"])

    @property
    def maximum(self) -> float:
        return float(self.scalars["reference_max"])

    def window(self, min_samples: int = DEFAULT_MIN_SAMPLES, seed: int = 0) -> NumericWindow:
        """A fresh current window against this reference."""
        return _numeric_window(self.arrays, self.scalars, min_samples, seed)


@dataclass
class CategoricalProfile:
    """One categorical column of a reference: category counts and missing count."""

    categories: list[str]
    counts: np.ndarray
    n_missing: int

    @property
    def n_present(self) -> int:
        return int(self.counts.sum())

    @property
    def singletons(self) -> int:
        return int((self.counts == 1).sum())

    @property
    def top_share(self) -> float:
        return float(self.counts.max() / self.counts.sum())

    def window(self, min_samples: int = DEFAULT_MIN_SAMPLES) -> CategoricalWindow:
        return _categorical_window(self.categories, self.counts, min_samples)


@dataclass
class PCAProfile:
    """A PCA of the standardised numeric inputs and its reconstruction error on the reference.

    ``error_mean`` / ``error_std`` are measured on half of the reference rows that the PCA was
    *not* fitted on, so new data from the same distribution has the same error on average.
    """

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray  # (n_components, n_features)
    error_mean: float
    error_std: float

    def errors(self, matrix: np.ndarray) -> np.ndarray:
        """Per-row reconstruction error; NaN (missing) becomes the reference mean (NannyML).

        A plain loop per row rather than a matrix product: BLAS may round a row differently
        depending on how many rows come with it, and a window's result must not depend on
        how its events were batched.
        """
        out = np.empty(matrix.shape[0])
        _reconstruction_errors(
            np.ascontiguousarray(matrix, dtype=np.float64),
            self.mean,
            self.scale,
            np.ascontiguousarray(self.components),
            out,
        )
        return out


@njit(cache=True)
def _reconstruction_errors(
    matrix: np.ndarray, mean: np.ndarray, scale: np.ndarray, components: np.ndarray, out: np.ndarray
) -> None:
    n, d = matrix.shape
    k = components.shape[0]
    z = np.empty(d)
    proj = np.empty(k)
    for i in range(n):
        for j in range(d):
            v = (matrix[i, j] - mean[j]) / scale[j]
            z[j] = 0.0 if np.isnan(v) else v
        for c in range(k):
            acc = 0.0
            for j in range(d):
                acc += z[j] * components[c, j]
            proj[c] = acc
        total = 0.0
        for j in range(d):
            recon = 0.0
            for c in range(k):
                recon += proj[c] * components[c, j]
            diff = z[j] - recon
            total += diff * diff
        out[i] = np.sqrt(total)


@dataclass
class ReferenceProfile:
    """A model's reference: per-column profiles plus where it came from."""

    model_id: str
    version: str
    source: str  # "uploaded" or "first_events"
    n_events: int
    numeric: dict[str, NumericProfile] = field(default_factory=dict)
    categorical: dict[str, CategoricalProfile] = field(default_factory=dict)
    pca: PCAProfile | None = None
    _bytes: bytes | None = field(default=None, repr=False, compare=False)
    _id: str | None = field(default=None, repr=False, compare=False)

    @property
    def features(self) -> list[str]:
        """Input columns (not the prediction columns), in name order."""
        names = set(self.numeric) | set(self.categorical)
        return sorted(n for n in names if n not in PREDICTION_COLUMNS)

    @property
    def reference_id(self) -> str:
        """Content hash: equal profiles have equal ids, so re-uploads are recognisable."""
        if self._id is None:
            self._id = hashlib.sha256(self.to_bytes()).hexdigest()[:16]
        return self._id

    def to_bytes(self) -> bytes:
        if self._bytes is not None:
            return self._bytes
        arrays: dict[str, np.ndarray] = {}
        header: dict[str, Any] = {
            "format": _FORMAT,
            "model_id": self.model_id,
            "version": self.version,
            "source": self.source,
            "n_events": self.n_events,
            "numeric": [],
            "categorical": [],
            "pca": None,
        }
        for i, (name, prof) in enumerate(sorted(self.numeric.items())):
            for key, value in prof.arrays.items():
                arrays[f"n{i}.{key}"] = np.asarray(value, dtype=np.float64)
            scalars = {k: (v.item() if hasattr(v, "item") else v) for k, v in prof.scalars.items()}
            header["numeric"].append(
                {"name": name, "scalars": scalars, "n_missing": prof.n_missing,
                 "top_share": prof.top_share}
            )
        for i, (name, cat) in enumerate(sorted(self.categorical.items())):
            arrays[f"c{i}.counts"] = np.asarray(cat.counts, dtype=np.float64)
            header["categorical"].append(
                {"name": name, "categories": cat.categories, "n_missing": cat.n_missing}
            )
        if self.pca is not None:
            header["pca"] = {
                "features": list(self.pca.features),
                "error_mean": self.pca.error_mean,
                "error_std": self.pca.error_std,
            }
            arrays["pca.mean"] = self.pca.mean
            arrays["pca.scale"] = self.pca.scale
            arrays["pca.components"] = self.pca.components
        arrays["header"] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), np.uint8)
        self._bytes = _npz_bytes(arrays)
        return self._bytes

    def __getstate__(self) -> dict[str, Any]:
        # The cached bytes would double a pickled monitor's checkpoint; they are rebuilt.
        return {**self.__dict__, "_bytes": None, "_id": None}

    @classmethod
    def from_bytes(cls, data: bytes) -> ReferenceProfile:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
            header = json.loads(arrays.pop("header").tobytes())
        except Exception as exc:  # noqa: BLE001 - any parse failure is the same user error
            raise ValueError(f"not a driftline reference profile: {exc}") from exc
        if header.get("format") != _FORMAT:
            raise ValueError(f"unsupported reference profile format {header.get('format')!r}")
        numeric = {}
        for i, entry in enumerate(header["numeric"]):
            prof_arrays = {
                key: arrays[f"n{i}.{key}"] for key in _WINDOW_ARRAYS
            }
            numeric[entry["name"]] = NumericProfile(
                prof_arrays, entry["scalars"], int(entry["n_missing"]), float(entry["top_share"])
            )
        categorical = {
            entry["name"]: CategoricalProfile(
                list(entry["categories"]), arrays[f"c{i}.counts"], int(entry["n_missing"])
            )
            for i, entry in enumerate(header["categorical"])
        }
        pca = None
        if header["pca"] is not None:
            pca = PCAProfile(
                tuple(header["pca"]["features"]),
                arrays["pca.mean"],
                arrays["pca.scale"],
                arrays["pca.components"],
                float(header["pca"]["error_mean"]),
                float(header["pca"]["error_std"]),
            )
        profile = cls(
            header["model_id"],
            header["version"],
            header["source"],
            int(header["n_events"]),
            numeric,
            categorical,
            pca,
        )
        profile._bytes = bytes(data)
        return profile

    def to_record(self, uploaded_at: int, uploaded_by: str = "") -> dict[str, Any]:
        """The ``ReferenceProfile`` Avro record (schemas/ReferenceProfile.avsc)."""
        return {
            "model_id": self.model_id,
            "version": self.version,
            "reference_id": self.reference_id,
            "source": self.source,
            "uploaded_at": int(uploaded_at),
            "uploaded_by": uploaded_by,
            "n_events": self.n_events,
            "features": self.features,
            "profile": self.to_bytes(),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ReferenceProfile:
        """The profile in a ``ReferenceProfile`` record; ``ValueError`` if it does not match
        the record's model or id (a record is refused whole rather than half-trusted)."""
        profile = cls.from_bytes(record["profile"])
        if profile.model_id != record["model_id"]:
            raise ValueError(
                f"record for model {record['model_id']!r} holds a profile of {profile.model_id!r}"
            )
        if profile.reference_id != record["reference_id"]:
            raise ValueError(
                f"reference_id {record['reference_id']!r} does not match the profile's "
                f"{profile.reference_id!r}"
            )
        return profile

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description (what the API returns and ClickHouse stores)."""
        return {
            "model_id": self.model_id,
            "version": self.version,
            "source": self.source,
            "reference_id": self.reference_id,
            "n_events": self.n_events,
            "numeric": {
                name: {
                    "n": p.n_present,
                    "missing": p.n_missing,
                    "min": p.minimum,
                    "max": p.maximum,
                    "std": float(p.scalars["reference_std"]),
                }
                for name, p in sorted(self.numeric.items())
            },
            "categorical": {
                name: {
                    "n": c.n_present,
                    "missing": c.n_missing,
                    "categories": dict(zip(c.categories, c.counts.astype(int).tolist(), strict=True)),
                }
                for name, c in sorted(self.categorical.items())
            },
            "multivariate": None if self.pca is None else list(self.pca.features),
        }

    def column_stats(self) -> list[dict[str, Any]]:
        """One JSON-friendly row per column, in name order: what the API returns and the
        ``reference_profiles`` table holds. ``quantiles`` are the inner bin edges the χ² and
        PSI tests use (deciles, or the distinct values of a discrete column) and
        ``bin_counts`` the reference's count per bin (one more than edges)."""
        out: list[dict[str, Any]] = []
        for name, p in sorted(self.numeric.items()):
            out.append({
                "column": name,
                "column_kind": "numeric",
                "n_present": p.n_present,
                "n_missing": p.n_missing,
                "missing_rate": p.n_missing / max(p.n_present + p.n_missing, 1),
                "min": p.minimum,
                "max": p.maximum,
                "std": float(p.scalars["reference_std"]),
                "top_share": float(p.top_share),
                "quantiles": [float(v) for v in p.arrays["edges"]],
                "bin_counts": [int(v) for v in p.arrays["reference_counts"]],
                "categories": {},
            })  # fmt: skip
        for name, c in sorted(self.categorical.items()):
            out.append({
                "column": name,
                "column_kind": "categorical",
                "n_present": c.n_present,
                "n_missing": c.n_missing,
                "missing_rate": c.n_missing / max(c.n_present + c.n_missing, 1),
                "min": None,
                "max": None,
                "std": None,
                "top_share": c.top_share,
                "quantiles": [],
                "bin_counts": [],
                "categories": dict(zip(c.categories, c.counts.astype(int).tolist(), strict=True)),
            })  # fmt: skip
        return sorted(out, key=lambda row: row["column"])


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """What ``np.savez`` writes, with a fixed timestamp on every member: ``np.savez`` stamps
    the current time, so equal profiles would get different bytes and ids."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
    return buffer.getvalue()


# -- building --------------------------------------------------------------------------------


def _columns_of(data: Any) -> dict[str, Any]:
    """A dict of columns from a mapping, a pandas DataFrame or a pyarrow Table."""
    if isinstance(data, Mapping):
        return dict(data)
    if hasattr(data, "column_names") and hasattr(data, "column"):  # pyarrow.Table
        return {name: data.column(name) for name in data.column_names}
    if hasattr(data, "columns") and hasattr(data, "__getitem__"):  # pandas.DataFrame
        return {str(name): data[name] for name in data.columns}
    raise TypeError(
        f"reference data must be a dict of columns, a pandas DataFrame or a pyarrow Table, "
        f"not {type(data).__name__}"
    )


def _as_array(column: Any) -> np.ndarray:
    if hasattr(column, "to_numpy"):
        try:
            return np.asarray(column.to_numpy(zero_copy_only=False))  # pyarrow
        except TypeError:
            return np.asarray(column.to_numpy())  # pandas
    if isinstance(column, np.ndarray):
        return column
    return np.asarray(list(column), dtype=object)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")


def split_kinds(
    name: str, column: Any, categorical: bool = False
) -> tuple[str, np.ndarray, np.ndarray]:
    """``(kind, values, missing mask)`` of one column; ``kind`` is numeric or categorical.

    Numbers are numeric and strings categorical unless ``categorical`` forces labels; a column
    mixing numbers and strings is refused, since which kind it is would be a guess.
    """
    values = _as_array(column).ravel()
    if values.dtype.kind in "biuf" and not categorical:
        floats = values.astype(np.float64)
        missing = np.isnan(floats)
        if np.isinf(floats).any():
            bad = int(np.flatnonzero(np.isinf(floats))[0])
            raise ValueError(f"column {name!r}: row {bad} is {floats[bad]}; values must be finite")
        return "numeric", floats[~missing], missing
    items = values.tolist()
    missing = np.fromiter((_is_missing(v) for v in items), dtype=bool, count=len(items))
    present = [v for v, m in zip(items, missing.tolist(), strict=True) if not m]
    if categorical:
        return "categorical", np.asarray([str(v) for v in present], dtype=str), missing
    is_text = [isinstance(v, (str, bytes)) for v in present]
    if all(is_text):
        return "categorical", np.asarray([str(v) for v in present], dtype=str), missing
    if not any(is_text):
        try:
            floats = np.asarray(present, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {name!r}: values are neither numbers nor strings") from exc
        if not np.isfinite(floats).all():
            raise ValueError(f"column {name!r}: values must be finite numbers")
        return "numeric", floats, missing
    first_text = is_text.index(True)
    first_number = is_text.index(False)
    raise ValueError(
        f"column {name!r} mixes numbers and strings (a string at present value {first_text}, "
        f"a number at {first_number}); convert it to one kind, or name it as categorical"
    )


def _numeric_profile(
    values: np.ndarray, n_missing: int, bins: int, fine_bins: int, ks_sample: int, seed: int
) -> NumericProfile:
    window = NumericWindow(values, bins=bins, fine_bins=fine_bins, ks_capacity=ks_sample, seed=seed)
    arrays, scalars = _window_reference(window)
    _, counts = np.unique(values, return_counts=True)
    return NumericProfile(
        arrays,
        scalars,
        n_missing,
        float(counts.max() / values.shape[0]),
    )


def _fit_pca(names: list[str], matrix: np.ndarray, seed: int) -> PCAProfile | None:
    rows = matrix.shape[0]
    if len(names) < 2 or rows < PCA_MIN_ROWS:
        return None
    if rows > PCA_MAX_ROWS:
        pick = np.sort(np.random.default_rng(seed).choice(rows, PCA_MAX_ROWS, replace=False))
        matrix = matrix[pick]
    mean = np.nanmean(matrix, axis=0)
    scale = np.maximum(np.nanstd(matrix, axis=0), MIN_SCALE)
    z = np.where(np.isnan(matrix), 0.0, (matrix - mean) / scale)
    fit, held_out = z[0::2], z[1::2]
    centred = fit - fit.mean(axis=0)
    # The components from the eigenvectors of the (features x features) scatter matrix, not an
    # SVD of the (rows x features) data: the same subspace, ~10x faster at 5,000 x 20 (170 ms
    # vs 15 ms here), and a worker builds one whenever a model's first events become its
    # reference. eigh sorts ascending; the largest variance comes first below.
    variance, vectors = np.linalg.eigh(centred.T @ centred)
    variance, vectors = np.clip(variance[::-1], 0.0, None), vectors[:, ::-1]
    share = np.cumsum(variance) / max(float(np.sum(variance)), MIN_SCALE)
    keep = int(np.searchsorted(share, PCA_VARIANCE) + 1)
    components = vectors[:, :keep].T
    pca = PCAProfile(tuple(names), mean, scale, components, 0.0, 0.0)
    errors = pca.errors(held_out * scale + mean)
    pca.error_mean, pca.error_std = float(errors.mean()), float(errors.std(ddof=1))
    return pca


def build_profile_within(data: Any, max_bytes: int = MAX_PROFILE_BYTES, **kwargs: Any) -> ReferenceProfile:
    """:func:`build_profile`, shrinking the KS samples if the profile would exceed
    ``max_bytes`` (a Kafka message must fit); ``ValueError`` if even ``MIN_KS_SAMPLE`` values
    per numeric column do not fit."""
    profile = build_profile(data, **kwargs)
    size = len(profile.to_bytes())
    if size <= max_bytes:
        return profile
    n_numeric = max(len(profile.numeric), 1)
    samples = kwargs.pop("ks_sample", DEFAULT_KS_SAMPLE)
    # The KS samples are most of a profile: 8 bytes a value; give each column its share.
    spare = max_bytes - (size - 8 * n_numeric * samples)
    smaller = spare // (8 * n_numeric) if spare > 0 else 0
    if smaller >= MIN_KS_SAMPLE:
        profile = build_profile(data, ks_sample=int(smaller) - 1, **kwargs)
        if len(profile.to_bytes()) <= max_bytes:
            return profile
    raise ProfileTooLarge(
        f"the reference profile is {size:,} bytes, over the {max_bytes:,}-byte limit even with "
        f"{MIN_KS_SAMPLE} KS values per column ({len(profile.numeric)} numeric, "
        f"{len(profile.categorical)} categorical columns); profile fewer columns, or columns "
        "with fewer categories"
    )


def build_profile(
    data: Any,
    *,
    model_id: str,
    version: str = "",
    categorical: Iterable[str] = (),
    prediction_score: str | None = None,
    prediction_value: str | None = None,
    prediction_label: str | None = None,
    source: str = "uploaded",
    bins: int = DEFAULT_BINS,
    fine_bins: int = DEFAULT_FINE_BINS,
    ks_sample: int = DEFAULT_KS_SAMPLE,
    seed: int = 0,
) -> ReferenceProfile:
    """Profile reference data: one row per event, one column per feature.

    ``prediction_score`` / ``prediction_value`` / ``prediction_label`` name the columns holding
    the model's outputs on that data (optional); ``categorical`` forces columns to be labels.
    Raises ``ValueError`` for empty data, columns of unequal length, non-finite numbers,
    columns mixing numbers and strings, and columns without a single present value.
    """
    if not model_id:
        raise ValueError("model_id must be a non-empty string")
    columns = _columns_of(data)
    if not columns:
        raise ValueError("reference data has no columns")
    lengths = {name: len(_as_array(col)) for name, col in columns.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"columns have different lengths: {lengths}")
    n_events = next(iter(lengths.values()))
    if n_events == 0:
        raise ValueError("reference data has no rows")
    forced = set(categorical)
    unknown = forced - set(columns)
    if unknown:
        raise ValueError(f"categorical names columns that do not exist: {sorted(unknown)}")
    roles = {
        prediction_score: PREDICTION_SCORE,
        prediction_value: PREDICTION_VALUE,
        prediction_label: PREDICTION_LABEL,
    }
    roles.pop(None, None)
    for column in roles:
        if column not in columns:
            raise ValueError(f"prediction column {column!r} is not in the data")
    profile = ReferenceProfile(model_id, version, source, n_events)
    pca_names: list[str] = []
    pca_columns: list[np.ndarray] = []
    for name in sorted(columns):
        target = roles.get(name, name)
        if target in PREDICTION_COLUMNS and name not in roles:
            raise ValueError(f"column name {name!r} is reserved for the model's outputs")
        as_label = name in forced or target == PREDICTION_LABEL
        kind, values, missing = split_kinds(name, columns[name], as_label)
        if target in (PREDICTION_SCORE, PREDICTION_VALUE) and kind != "numeric":
            raise ValueError(f"prediction column {name!r} must hold numbers")
        if values.shape[0] == 0:
            raise ValueError(
                f"column {name!r} has no values (all {n_events} missing); drop it or fill it"
            )
        n_missing = int(missing.sum())
        if kind == "numeric":
            profile.numeric[target] = _numeric_profile(
                values, n_missing, bins, fine_bins, ks_sample, seed
            )
            if target not in PREDICTION_COLUMNS:
                full = np.full(n_events, np.nan)
                full[~missing] = values
                pca_names.append(target)
                pca_columns.append(full)
        else:
            keys, counts = np.unique(values, return_counts=True)
            profile.categorical[target] = CategoricalProfile(
                keys.tolist(), counts.astype(np.float64), n_missing
            )
    if pca_columns:
        profile.pca = _fit_pca(pca_names, np.column_stack(pca_columns), seed)
    return profile


# -- what every uploader shares (SDK, CLI, API) and every reader (workers, API) ----------------


def read_table(source: Path | bytes, fmt: str | None = None) -> Any:
    """A pyarrow Table from CSV or Parquet: a path (format from its suffix) or bytes (``fmt``
    ``"csv"`` or ``"parquet"``); ``ValueError`` with the reason otherwise."""
    if isinstance(source, Path):
        fmt = fmt or {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}.get(
            source.suffix.lower()
        )
        if not source.is_file():
            raise ValueError(f"{source}: no such file")
        if fmt is None:
            raise ValueError(
                f"{source}: unknown format {source.suffix.lower()!r}; give a .csv or .parquet file"
            )
        what: Any = source
    else:
        what = io.BytesIO(source)
    try:
        if fmt == "csv":
            from pyarrow import csv

            return csv.read_csv(what)
        if fmt == "parquet":
            from pyarrow import parquet

            return parquet.read_table(what)
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors vary; the reason is in the text
        raise ValueError(f"{source if isinstance(source, Path) else fmt}: cannot read it: {exc}") from exc
    raise ValueError(f"unknown format {fmt!r}; give csv or parquet")


def prepare_reference(
    data: Any,
    *,
    model_id: str,
    known_models: Iterable[str] = (),
    max_bytes: int = MAX_PROFILE_BYTES,
    **options: Any,
) -> ReferenceProfile:
    """The one check-and-build every upload path runs (SDK, CLI, API) before anything is
    published: a model id the deployment accepts, then :func:`build_profile_within` with
    ``options`` (``version``, ``categorical``, ``prediction_score`` ...).

    Raises :class:`UnknownModel` when ``known_models`` is not empty and lacks ``model_id``,
    :class:`ProfileTooLarge` when the profile cannot fit one message, ``ValueError`` for bad
    data (the message names the column) and ``TypeError`` for data that is not columns.
    """
    check_model_id(model_id, known_models)
    return build_profile_within(data, max_bytes=max_bytes, model_id=model_id, **options)


def check_model_id(model_id: str, known_models: Iterable[str] = ()) -> None:
    """The model half of :func:`prepare_reference`, for callers that can refuse a model
    before reading its data (the API): ``ValueError`` for an empty or overlong id,
    :class:`UnknownModel` for one outside a non-empty ``known_models``."""
    if not isinstance(model_id, str) or not model_id.strip():
        raise ValueError("model_id must be a non-empty string")
    if len(model_id) > MAX_MODEL_ID:
        raise ValueError(f"model_id is {len(model_id)} characters, over {MAX_MODEL_ID}")
    known = frozenset(known_models)
    if known and model_id not in known:
        raise UnknownModel(
            f"model {model_id!r} is not one of the models this deployment accepts "
            f"(DRIFTLINE_KNOWN_MODELS: {sorted(known)})"
        )


@dataclass(frozen=True)
class ReferenceEntry:
    """A reference as it arrived on ``driftline.references.v1``: the profile and who sent it
    when (``uploaded_at`` in epoch ms), and where it was on the topic."""

    profile: ReferenceProfile
    uploaded_at: int = 0
    uploaded_by: str = ""
    partition: int = -1
    offset: int = -1


class ReferenceBook:
    """The latest reference per model on the compacted topic ``driftline.references.v1``,
    fed record by record (``on_record``, a ``schemas.control_plane.CompactedTopicFollower``
    callback, on its own thread) — what workers test against and what the API serves.

    ``decode`` turns a record's bytes into the ``ReferenceProfile`` Avro record (a dict); the
    caller passes its codec's, since this layer does not know the wire format. A record that
    cannot be decoded, or whose profile does not match it, is skipped with a warning and
    counted in :attr:`refused` (the uploaders validate before publishing; this guards against
    other writers). A tombstone removes the model's entry.

    With ``keep_arrivals`` every applied record is also kept for :meth:`take_arrivals` until
    taken (the worker writes them to ClickHouse); off, nothing accumulates.

    Besides the latest, the book keeps each model's latest reference per ``version``
    (:meth:`for_version`), so a model version can be tested against the reference uploaded
    for it after a later upload named another version. The topic is compacted by model, so
    only what this reader saw since it started is there; a worker checkpoints the reference
    it uses.
    """

    def __init__(
        self, decode: Callable[[bytes], Mapping[str, Any]], *, keep_arrivals: bool = False
    ) -> None:
        self.decode = decode
        self.keep_arrivals = keep_arrivals
        self._latest: dict[str, ReferenceEntry] = {}
        self._versions: dict[tuple[str, str], ReferenceEntry] = {}
        self._arrivals: list[ReferenceEntry] = []
        self._lock = threading.Lock()
        self.applied = 0
        self.refused = 0

    def on_record(self, key: Any, value: bytes | None, partition: int, offset: int) -> None:
        model_id = key.decode() if isinstance(key, bytes) else str(key)
        if value is None:
            with self._lock:
                self._latest.pop(model_id, None)
                for key in [k for k in self._versions if k[0] == model_id]:
                    del self._versions[key]
            return
        try:
            record = self.decode(value)
            profile = ReferenceProfile.from_record(record)
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the reader
            self.refused += 1
            log.warning(
                "skipping reference record at offset %d of %s: %s", offset, model_id, exc
            )
            return
        entry = ReferenceEntry(
            profile, int(record.get("uploaded_at") or 0), str(record.get("uploaded_by") or ""),
            partition, offset,
        )  # fmt: skip
        self._store(entry)

    def put(self, profile: ReferenceProfile, uploaded_at: int = 0, uploaded_by: str = "") -> None:
        """Use ``profile`` as if it had arrived on the topic (tests, tools)."""
        self._store(ReferenceEntry(profile, uploaded_at, uploaded_by))

    def _store(self, entry: ReferenceEntry) -> None:
        with self._lock:
            self._latest[entry.profile.model_id] = entry
            self._versions[(entry.profile.model_id, entry.profile.version)] = entry
            if self.keep_arrivals:
                self._arrivals.append(entry)
            self.applied += 1

    def get(self, model_id: str) -> ReferenceProfile | None:
        entry = self.entry(model_id)
        return None if entry is None else entry.profile

    def entry(self, model_id: str) -> ReferenceEntry | None:
        with self._lock:
            return self._latest.get(model_id)

    def for_version(self, model_id: str, version: str) -> ReferenceProfile | None:
        """The latest reference of ``model_id`` uploaded with ``version``, if any."""
        with self._lock:
            entry = self._versions.get((model_id, version))
        return None if entry is None else entry.profile

    def models(self) -> list[str]:
        with self._lock:
            return sorted(self._latest)

    def take_arrivals(self) -> list[ReferenceEntry]:
        """Every entry applied since the last call, in arrival order."""
        with self._lock:
            arrivals, self._arrivals = self._arrivals, []
        return arrivals
