"""``driftline report``: one model's drift timeline and metrics as a self-contained HTML page.

Reads ClickHouse (the per-minute metrics, ``drift_events FINAL``, ``retraining_requests FINAL``)
and draws them as inline SVG written here, without a plotting library:

* top panel: accuracy, error rate and label coverage per minute (lines, 0-100 %);
* bottom panel: predictions per minute (bars);
* both panels: drift events as vertical markers labelled with their stream, retraining requests
  as dashed markers with a triangle;
* per-feature drift over time (``feature_drift FINAL``, the worker's windows against the
  model's reference): one row per feature, model output and the multivariate test, one cell
  per window on the same time axis, shaded by how close its smallest p-value came to the
  budgeted alpha (``log p / log alpha``) and red where the window drifted; hovering a cell
  shows the p-value, alpha, effect size, sample size and reference. A table beside it gives
  each feature's windows, drifted windows and latest figures.

The page also lists the drift events and retraining requests of the window, so nothing hides
behind overlapping markers. ``--out x.svg`` writes the bare SVG instead.

>>> from datetime import UTC, datetime, timedelta
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> data = ReportData("m", t0, t0 + timedelta(minutes=3),
...     [MinuteRow(t0, 10, 10, 0.9, 0.1, 1.0)], [], [])
>>> "<svg" in render_svg(data)
True
"""

from __future__ import annotations

import argparse
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = [
    "DriftMarker",
    "FeatureWindow",
    "MinuteRow",
    "ReportData",
    "RetrainMarker",
    "add_report_command",
    "handler",
    "load_report_data",
    "render_feature_svg",
    "render_html",
    "render_svg",
    "write_report",
]

# -- data --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MinuteRow:
    minute: datetime
    predictions: int
    labeled: int
    accuracy: float | None
    error_rate: float | None
    label_coverage: float | None


@dataclass(frozen=True)
class DriftMarker:
    at: datetime
    stream_kind: str
    stream_name: str
    detector: str
    model_version: str

    @property
    def label(self) -> str:
        return f"{self.stream_kind.lower()}:{self.stream_name}"


@dataclass(frozen=True)
class RetrainMarker:
    at: datetime
    policy: str
    reason: str


@dataclass(frozen=True)
class FeatureWindow:
    """One window of one feature (or model output, or the multivariate test) against the
    reference: the row of the per-feature drift chart."""

    start: datetime
    end: datetime
    window_index: int
    stream_kind: str
    feature: str
    p_value: float | None  # the smallest p-value of the deciding tests
    alpha: float | None
    effect: float | None  # normed Wasserstein (numbers) or Jensen-Shannon (categories)
    n_current: int
    drifted: bool
    reference: str  # source and version

    @property
    def closeness(self) -> float:
        """0 (nowhere near) .. 1 (at or past alpha): ``log p / log alpha``, clipped."""
        if self.p_value is None or self.alpha is None or not 0 < self.alpha < 1:
            return 0.0
        if self.p_value <= 0:
            return 1.0
        return max(0.0, min(1.0, math.log(min(self.p_value, 1.0)) / math.log(self.alpha)))

    @property
    def label(self) -> str:
        return self.feature if self.stream_kind == "FEATURE" else f"{self.stream_kind.lower()}:{self.feature}"


@dataclass(frozen=True)
class ReportData:
    model_id: str
    start: datetime
    end: datetime
    minutes: list[MinuteRow]
    drifts: list[DriftMarker]
    retraining: list[RetrainMarker]
    note: str = ""
    # width of one point/bar: a minute, or seconds when the model's traffic spans minutes only
    bucket: timedelta = timedelta(minutes=1)
    # the windows tested against the reference (empty: the data-drift stage wrote none)
    feature_windows: list[FeatureWindow] = field(default_factory=list)

    @property
    def bucket_label(self) -> str:
        seconds = int(self.bucket.total_seconds())
        return "minute" if seconds == 60 else f"{seconds} s"


_METRICS_SQL = """
SELECT
    m.minute AS minute,
    sum(m.predictions) AS predictions,
    sum(m.labeled) AS labeled,
    if(sum(m.classified) = 0, NULL, sum(m.correct) / sum(m.classified)) AS accuracy,
    if(sum(m.classified) = 0, NULL, 1 - sum(m.correct) / sum(m.classified)) AS error_rate,
    if(sum(m.predictions) = 0, NULL, sum(m.labeled) / sum(m.predictions)) AS label_coverage
FROM model_metrics_minute AS m
WHERE m.model_id = {model_id:String} AND m.segment = ''
  AND m.minute >= {start:DateTime('UTC')} AND m.minute < {end:DateTime('UTC')}
GROUP BY m.minute
ORDER BY m.minute
"""
# A segment's window drift shows its segment beside the stream: "x [region=eu]".
_DRIFT_SQL = """
SELECT detected_at, stream_kind,
       if(segment = '', stream_name, concat(stream_name, ' [', segment, ']')) AS stream_name,
       detector, model_version
FROM drift_events FINAL
WHERE model_id = {model_id:String}
  AND detected_at >= {start:DateTime('UTC')} AND detected_at < {end:DateTime('UTC')}
ORDER BY detected_at, stream_kind, stream_name
"""
# One row per (window, column): the deciding tests' smallest p-value and alpha, the effect size,
# and the column's verdict (a p-value below alpha and the effect size at its floor; the
# multivariate test alone). PSI is evidence only and stays out.
_FEATURE_DRIFT_SQL = """
SELECT
    window_start,
    window_end,
    window_index,
    stream_kind,
    feature,
    minIf(p_value, test IN ('ks', 'chisquare', 'pca_reconstruction')) AS p_value,
    minIf(threshold, test IN ('ks', 'chisquare', 'pca_reconstruction')) AS alpha,
    maxIf(statistic, test IN ('wasserstein', 'jensenshannon')) AS effect,
    max(n_current) AS n_current,
    (maxIf(drifted, test IN ('ks', 'chisquare'))
        AND maxIf(drifted, test IN ('wasserstein', 'jensenshannon')))
        OR maxIf(drifted, test = 'pca_reconstruction') AS drifted,
    concat(any(reference_source), ' ', any(reference_version)) AS reference
FROM feature_drift FINAL
WHERE model_id = {model_id:String} AND segment = ''
  AND window_end >= {start:DateTime('UTC')} AND window_end < {end:DateTime('UTC')}
GROUP BY window_start, window_end, window_index, stream_kind, feature
ORDER BY stream_kind, feature, window_index
"""
_RETRAIN_SQL = """
SELECT requested_at, policy, reason
FROM retraining_requests FINAL
WHERE model_id = {model_id:String}
  AND requested_at >= {start:DateTime('UTC')} AND requested_at < {end:DateTime('UTC')}
ORDER BY requested_at
"""
# Short spans (a demo, a fresh model) read the raw tables in buckets of seconds instead.
_FINE_PREDICTIONS_SQL = """
SELECT toStartOfInterval(event_time, INTERVAL {bucket:UInt32} SECOND) AS t, count()
FROM predictions FINAL
WHERE model_id = {model_id:String}
  AND event_time >= {start:DateTime('UTC')} AND event_time < {end:DateTime('UTC')}
GROUP BY t
"""
_FINE_LABELS_SQL = """
SELECT toStartOfInterval(prediction_time, INTERVAL {bucket:UInt32} SECOND) AS t,
       count(), countIf(correct IS NOT NULL), sum(ifNull(correct, 0))
FROM joined_labels FINAL
WHERE model_id = {model_id:String}
  AND prediction_time >= {start:DateTime('UTC')} AND prediction_time < {end:DateTime('UTC')}
GROUP BY t
"""
FINE_SPAN = timedelta(minutes=30)

_LATEST_SQL = """
SELECT max(minute), count()
FROM model_metrics_minute
WHERE model_id = {model_id:String} AND segment = ''
"""


def _utc(value: Any) -> datetime:
    if isinstance(value, int | float):  # DateTime through chdb's Arrow: epoch seconds
        return datetime.fromtimestamp(value, UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _opt(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _params(model_id: str, start: datetime, end: datetime) -> dict[str, str]:
    return {
        "model_id": model_id,
        "start": f"{start:%Y-%m-%d %H:%M:%S}",
        "end": f"{end:%Y-%m-%d %H:%M:%S}",
    }


def load_report_data(
    store: Any, model_id: str, hours: float, *, end: datetime | None = None
) -> ReportData:
    """The last ``hours`` up to ``end`` (default: now, rounded up to the minute). When the model
    has no traffic in that window but has some earlier, the window ends at its last minute
    instead (and ``note`` says so): a report of an idle model shows its last activity."""
    note = ""
    end = end or datetime.now(UTC)
    end = end.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(hours=hours)
    params = _params(model_id, start, end)
    minutes = store.query(_METRICS_SQL, params)
    if not minutes:
        ((latest, n),) = store.query(_LATEST_SQL, {"model_id": model_id})
        if n:
            latest = _utc(latest)
            note = (
                f"no predictions in the {hours:g} h before {end:%Y-%m-%d %H:%M} UTC; "
                f"showing the {hours:g} h up to the model's last minute"
            )
            end = latest + timedelta(minutes=1)
            start = end - timedelta(hours=hours)
            params = _params(model_id, start, end)
            minutes = store.query(_METRICS_SQL, params)
        else:
            note = f"no data for model {model_id!r}"
    rows = [
        MinuteRow(_utc(m), int(p), int(lab), _opt(a), _opt(e), _opt(c))
        for m, p, lab, a, e, c in minutes
    ]
    bucket = timedelta(minutes=1)
    if rows and rows[-1].minute - rows[0].minute < FINE_SPAN:
        # a few minutes of traffic would be one or two points: zoom in on it
        start, end = rows[0].minute, rows[-1].minute + bucket
        bucket = timedelta(seconds=5 if end - start <= timedelta(minutes=10) else 15)
        rows = _fine_rows(store, _params(model_id, start, end), bucket)
        if rows:
            start, end = rows[0].minute, rows[-1].minute + bucket
        params = _params(model_id, start, end)
    return ReportData(
        model_id,
        start,
        end,
        rows,
        [DriftMarker(_utc(t), k, n, d, v) for t, k, n, d, v in store.query(_DRIFT_SQL, params)],
        [RetrainMarker(_utc(t), p, r) for t, p, r in store.query(_RETRAIN_SQL, params)],
        note,
        bucket,
        [
            FeatureWindow(_utc(ws), _utc(we), int(i), k, f, _opt(p), _opt(a), _opt(e), int(n),
                          bool(d), str(ref).strip())
            for ws, we, i, k, f, p, a, e, n, d, ref in store.query(_FEATURE_DRIFT_SQL, params)
        ],
    )


def _fine_rows(store: Any, params: dict[str, str], bucket: timedelta) -> list[MinuteRow]:
    query = {**params, "bucket": str(int(bucket.total_seconds()))}
    predictions = {_utc(t): int(n) for t, n in store.query(_FINE_PREDICTIONS_SQL, query)}
    labels = {_utc(t): rest for t, *rest in store.query(_FINE_LABELS_SQL, query)}
    rows = []
    for t in sorted(predictions.keys() | labels.keys()):
        n = predictions.get(t, 0)
        labeled, classified, correct = (int(v) for v in labels.get(t, (0, 0, 0)))
        accuracy = correct / classified if classified else None
        rows.append(
            MinuteRow(
                t,
                n,
                labeled,
                accuracy,
                None if accuracy is None else 1 - accuracy,
                labeled / n if n else None,
            )
        )
    return rows


# -- SVG ---------------------------------------------------------------------------------------

WIDTH = 1000
LEFT, RIGHT = 64, 24
TOP_Y, TOP_H = 84, 250  # rates panel
BOT_Y, BOT_H = TOP_Y + TOP_H + 60, 130  # volume panel
HEIGHT = BOT_Y + BOT_H + 50

SERIES = (  # key, label, colour, dash
    ("accuracy", "accuracy", "#1a9850", ""),
    ("error_rate", "error rate", "#d73027", ""),
    ("label_coverage", "label coverage", "#4575b4", "6 3"),
)
DRIFT_COLOUR = "#f08c00"
RETRAIN_COLOUR = "#7b3294"
BAR_COLOUR = "#9e9e9e"
_TICK_STEPS = [timedelta(seconds=s) for s in (5, 10, 15, 30)] + [
    timedelta(minutes=m) for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880)
]


def _time_ticks(start: datetime, end: datetime, target: int = 8) -> list[datetime]:
    span = end - start
    step = next((s for s in _TICK_STEPS if span / s <= target), _TICK_STEPS[-1])
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    first = epoch + math.ceil((start - epoch) / step) * step
    ticks = []
    while first <= end:
        ticks.append(first)
        first += step
    return ticks


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exponent = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if value <= m * exponent:
            return m * exponent
    return 10 * exponent


def _fmt_count(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


class _Canvas:
    def __init__(self, data: ReportData, left: float = LEFT) -> None:
        self.data = data
        self.left = left
        self.parts: list[str] = []
        self.span = (data.end - data.start).total_seconds() or 60.0

    def x(self, t: datetime) -> float:
        frac = (t - self.data.start).total_seconds() / self.span
        return self.left + frac * (WIDTH - self.left - RIGHT)

    def add(self, element: str) -> None:
        self.parts.append(element)


def _text(x: float, y: float, content: str, **attrs: Any) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{html.escape(content)}</text>'


def _axes(c: _Canvas, y0: float, h: float, ticks: list[tuple[float, str]], title: str) -> None:
    plot_w = WIDTH - LEFT - RIGHT
    for frac, label in ticks:
        y = y0 + h - frac * h
        c.add(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}"/>')
        c.add(_text(LEFT - 6, y + 4, label, text_anchor="end", class_="tick"))
    c.add(f'<rect class="frame" x="{LEFT}" y="{y0}" width="{plot_w}" height="{h}"/>')
    c.add(_text(LEFT, y0 - 8, title, class_="panel-title"))


def _time_axis(c: _Canvas, y0: float, h: float) -> None:
    ticks = _time_ticks(c.data.start, c.data.end)
    multi_day = c.data.start.date() != c.data.end.date()
    for i, t in enumerate(ticks):
        x = c.x(t)
        c.add(
            f'<line class="tick-line" x1="{x:.1f}" y1="{y0 + h}" x2="{x:.1f}" y2="{y0 + h + 5}"/>'
        )
        if multi_day and (i == 0 or t.hour == t.minute == 0):
            label = t.strftime("%m-%d %H:%M")
        else:
            label = t.strftime("%H:%M:%S" if c.data.bucket < timedelta(minutes=1) else "%H:%M")
        c.add(_text(x, y0 + h + 18, label, text_anchor="middle", class_="tick"))
    c.add(_text(WIDTH - RIGHT, y0 + h + 36, "time (UTC)", text_anchor="end", class_="tick"))


def _series_path(c: _Canvas, key: str) -> str:
    """One path per series; a minute without a value breaks the line."""
    d, pen_down = [], False
    for row in c.data.minutes:
        value = getattr(row, key)
        if value is None:
            pen_down = False
            continue
        x = c.x(row.minute + c.data.bucket / 2)
        y = TOP_Y + TOP_H - max(0.0, min(1.0, value)) * TOP_H
        d.append(f"{'L' if pen_down else 'M'}{x:.1f},{y:.1f}")
        pen_down = True
    return " ".join(d)


def _markers(c: _Canvas) -> None:
    bottom = BOT_Y + BOT_H
    for r in c.data.retraining:
        x = c.x(r.at)
        c.add(
            f'<g class="retrain" data-policy="{html.escape(r.policy)}">'
            f"<title>{html.escape(f'{r.at:%H:%M:%S} retraining ({r.policy}): {r.reason}')}</title>"
            f'<line x1="{x:.1f}" y1="{TOP_Y}" x2="{x:.1f}" y2="{bottom}" '
            f'stroke="{RETRAIN_COLOUR}" stroke-width="1.5" stroke-dasharray="5 4"/>'
            f'<path d="M{x - 6:.1f},{TOP_Y - 12} L{x + 6:.1f},{TOP_Y - 12} L{x:.1f},{TOP_Y - 2} Z" '
            f'fill="{RETRAIN_COLOUR}"/></g>'
        )
    # stagger labels over four rows so close markers do not print over each other
    last_x: list[float] = [-1e9] * 4
    for d in c.data.drifts:
        x = c.x(d.at)
        row = min(range(4), key=lambda k: (last_x[k] > x - 70, last_x[k]))
        last_x[row] = x
        y = TOP_Y + 14 + row * 14
        c.add(
            f'<g class="drift" data-stream-kind="{html.escape(d.stream_kind)}" '
            f'data-stream="{html.escape(d.stream_name)}">'
            f"<title>{html.escape(f'{d.at:%H:%M:%S} {d.detector} drift on {d.label} (v{d.model_version})')}</title>"
            f'<line x1="{x:.1f}" y1="{TOP_Y}" x2="{x:.1f}" y2="{bottom}" '
            f'stroke="{DRIFT_COLOUR}" stroke-width="2"/>'
            + _text(x + 4, y, d.label, class_="drift-label", fill=DRIFT_COLOUR)
            + "</g>"
        )


def _legend(c: _Canvas) -> None:
    items = [(label, colour, dash, "line") for _, label, colour, dash in SERIES]
    items += [
        (f"predictions / {c.data.bucket_label}", BAR_COLOUR, "", "bar"),
        ("drift event (stream)", DRIFT_COLOUR, "", "line"),
        ("retraining request", RETRAIN_COLOUR, "5 4", "line"),
    ]
    x, y = LEFT, 44
    for label, colour, dash, kind in items:
        if kind == "bar":
            c.add(f'<rect x="{x}" y="{y - 9}" width="18" height="10" fill="{colour}"/>')
        else:
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            c.add(f'<line x1="{x}" y1="{y - 4}" x2="{x + 18}" y2="{y - 4}" stroke="{colour}" '
                  f'stroke-width="2.5"{dash_attr}/>')  # fmt: skip
        c.add(_text(x + 24, y, label, class_="legend"))
        x += 24 + 7.2 * len(label) + 22


def render_svg(data: ReportData) -> str:
    """The chart as a standalone SVG document."""
    c = _Canvas(data)
    c.add(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif" '
        f'font-size="12" role="img" aria-label="drift report for {html.escape(data.model_id)}">'
    )
    c.add(
        "<style>.grid{stroke:#e6e6e6;stroke-width:1}.frame{fill:none;stroke:#888}"
        ".tick{fill:#444;font-size:11px}.tick-line{stroke:#888}"
        ".panel-title{font-weight:bold;fill:#222}.legend{fill:#222}"
        ".drift-label{font-size:11px;font-weight:bold}.title{font-size:16px;font-weight:bold}"
        ".note{fill:#a00;font-size:12px}</style>"
    )
    c.add(f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>')
    title = (
        f"{data.model_id}: {data.start:%Y-%m-%d %H:%M} - {data.end:%Y-%m-%d %H:%M} UTC, "
        f"{sum(r.predictions for r in data.minutes):,} predictions, "
        f"{len(data.drifts)} drift events, {len(data.retraining)} retraining requests"
    )
    c.add(_text(LEFT, 22, title, class_="title"))
    _legend(c)
    if data.note:
        c.add(_text(LEFT, TOP_Y - 30, data.note, class_="note"))

    # rates panel
    _axes(c, TOP_Y, TOP_H, [(f / 4, f"{f * 25}%") for f in range(5)],
          f"accuracy, error rate, label coverage per {data.bucket_label}")  # fmt: skip
    for key, label, colour, dash in SERIES:
        d = _series_path(c, key)
        if d:
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            c.add(f'<path class="series {key}" data-series="{key}" d="{d}" fill="none" '
                  f'stroke="{colour}" stroke-width="1.8"{dash_attr}><title>{label}</title></path>')  # fmt: skip
    _time_axis(c, TOP_Y, TOP_H)

    # volume panel
    top = _nice_max(max((r.predictions for r in data.minutes), default=0))
    _axes(c, BOT_Y, BOT_H, [(f / 2, _fmt_count(top * f / 2)) for f in range(3)],
          f"predictions per {data.bucket_label}")  # fmt: skip
    bar_w = max(1.0, (c.x(data.start + data.bucket) - c.x(data.start)) * 0.8)
    c.add('<g class="series predictions" data-series="predictions">')
    for r in data.minutes:
        h = r.predictions / top * BOT_H
        x = c.x(r.minute) + bar_w * 0.125
        c.add(f'<rect x="{x:.1f}" y="{BOT_Y + BOT_H - h:.1f}" width="{bar_w:.1f}" '
              f'height="{h:.1f}" fill="{BAR_COLOUR}"/>')  # fmt: skip
    c.add("</g>")
    _time_axis(c, BOT_Y, BOT_H)
    _markers(c)
    c.add("</svg>")
    return "\n".join(c.parts)


# -- per-feature drift over time ---------------------------------------------------------------

HEAT_ROW, HEAT_TOP, HEAT_LEFT = 18, 40, 170  # feature names need a wider margin
HEAT_LABEL_CHARS = 26
CALM_COLOUR, DRIFTED_COLOUR, NO_DATA_COLOUR = (241, 243, 245), "#d62728", "#ffffff"
NEAR_COLOUR = (245, 159, 0)  # a window whose p-value came close to alpha


def _shade(closeness: float) -> str:
    r, g, b = (round(c + (n - c) * closeness) for c, n in zip(CALM_COLOUR, NEAR_COLOUR, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def _feature_order(windows: Sequence[FeatureWindow]) -> list[tuple[str, str]]:
    """Inputs first (by name), then the model's outputs, then the multivariate test."""
    rank = {"FEATURE": 0, "PREDICTION": 1}
    keys = {(w.stream_kind, w.feature) for w in windows}
    return sorted(keys, key=lambda k: (rank.get(k[0], 2), k[1]))


def render_feature_svg(data: ReportData) -> str:
    """Per-feature drift over time: a row per column, a cell per window on the report's time
    axis. Empty when there are no windows."""
    windows = data.feature_windows
    if not windows:
        return ""
    rows = _feature_order(windows)
    height = HEAT_TOP + HEAT_ROW * len(rows) + 50
    c = _Canvas(data, HEAT_LEFT)
    c.add(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" '
        f'font-size="12" role="img" class="feature-drift" '
        f'aria-label="per-feature drift of {html.escape(data.model_id)}">'
    )
    c.add(
        "<style>.tick{fill:#444;font-size:11px}.tick-line{stroke:#888}.frame{fill:none;"
        "stroke:#888}.panel-title{font-weight:bold;fill:#222}.feature{fill:#222;"
        "font-size:11px}</style>"
    )
    c.add(f'<rect width="{WIDTH}" height="{height}" fill="white"/>')
    c.add(_text(HEAT_LEFT, 24, "drift against the reference per feature and window (shade: "
                "log p / log alpha; red: drifted)", class_="panel-title"))  # fmt: skip
    index = {key: i for i, key in enumerate(rows)}
    for (kind, feature), i in index.items():
        label = feature if kind == "FEATURE" else f"{kind.lower()}:{feature}"
        short = label if len(label) <= HEAT_LABEL_CHARS else label[: HEAT_LABEL_CHARS - 1] + "…"
        c.add(f"<g><title>{html.escape(label)}</title>"
              + _text(HEAT_LEFT - 6, HEAT_TOP + i * HEAT_ROW + 13, short, text_anchor="end",
                      class_="feature") + "</g>")  # fmt: skip
    for w in windows:
        y = HEAT_TOP + index[(w.stream_kind, w.feature)] * HEAT_ROW
        x0 = max(HEAT_LEFT, c.x(w.start))
        x1 = min(WIDTH - RIGHT, max(c.x(w.end), x0 + 2))
        fill = (DRIFTED_COLOUR if w.drifted
                else NO_DATA_COLOUR if w.p_value is None else _shade(w.closeness))  # fmt: skip
        tip = (
            f"{w.label}, window {w.window_index} ({w.start:%H:%M:%S} - {w.end:%H:%M:%S}): "
            + ("drifted; " if w.drifted else "")
            + ("too few values" if w.p_value is None else f"p = {w.p_value:.3g}, "
               f"alpha = {(w.alpha or 0):.3g}")
            + ("" if w.effect is None else f", effect {w.effect:.3f}")
            + f", n = {w.n_current}; reference {w.reference}"
        )  # fmt: skip
        c.add(
            f'<rect class="window{" drifted" if w.drifted else ""}" '
            f'data-feature="{html.escape(w.feature)}" data-window="{w.window_index}" '
            f'x="{x0:.1f}" y="{y + 1}" width="{x1 - x0:.1f}" height="{HEAT_ROW - 2}" '
            f'fill="{fill}" stroke="#ccc" stroke-width="0.5"><title>{html.escape(tip)}</title></rect>'
        )
    bottom = HEAT_TOP + HEAT_ROW * len(rows)
    c.add(f'<rect class="frame" x="{HEAT_LEFT}" y="{HEAT_TOP}" width="{WIDTH - HEAT_LEFT - RIGHT}" '
          f'height="{bottom - HEAT_TOP}"/>')  # fmt: skip
    _time_axis(c, HEAT_TOP, bottom - HEAT_TOP)
    c.add("</svg>")
    return "\n".join(c.parts)


def _feature_summary(windows: Sequence[FeatureWindow]) -> list[list[Any]]:
    rows = []
    for kind, feature in _feature_order(windows):
        mine = [w for w in windows if (w.stream_kind, w.feature) == (kind, feature)]
        drifted = [w for w in mine if w.drifted]
        last = max(mine, key=lambda w: w.window_index)
        rows.append([
            mine[0].label, len(mine), len(drifted),
            f"{max(w.end for w in drifted):%Y-%m-%d %H:%M:%S}" if drifted else "-",
            "-" if last.p_value is None else f"{last.p_value:.3g}",
            "-" if last.effect is None else f"{last.effect:.3f}",
            last.reference,
        ])  # fmt: skip
    return rows


# -- HTML --------------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def render_html(data: ReportData) -> str:
    """A self-contained page: the SVG inline, a summary and the events of the window."""
    predictions = sum(r.predictions for r in data.minutes)
    labeled = sum(r.labeled for r in data.minutes)
    classified = [(r.accuracy, r.labeled) for r in data.minutes if r.accuracy is not None]
    weight = sum(n for _, n in classified)
    accuracy = sum(a * n for a, n in classified) / weight if weight else None
    summary = _table(
        ["predictions", "labelled", "label coverage", "accuracy (labelled, weighted)"],
        [[f"{predictions:,}", f"{labeled:,}",
          _pct(labeled / predictions if predictions else None), _pct(accuracy)]],
    )  # fmt: skip
    drifts = _table(
        ["detected at (UTC)", "stream kind", "stream", "detector", "model version"],
        [
            [f"{d.at:%Y-%m-%d %H:%M:%S}", d.stream_kind, d.stream_name, d.detector,
             d.model_version]
            for d in data.drifts
        ],
    )  # fmt: skip
    retraining = _table(
        ["requested at (UTC)", "policy", "reason"],
        [[f"{r.at:%Y-%m-%d %H:%M:%S}", r.policy, r.reason] for r in data.retraining],
    )
    if data.feature_windows:
        features = render_feature_svg(data) + _table(
            ["feature", "windows", "drifted", "last drifted (UTC)", "latest p-value",
             "latest effect size", "reference"],
            _feature_summary(data.feature_windows),
        )  # fmt: skip
    else:
        features = (
            "<p>No window of this model was tested against a reference in this period "
            "(the data-drift stage is off, or the model has not had enough events yet).</p>"
        )
    name = html.escape(data.model_id)
    note = f'<p class="note">{html.escape(data.note)}</p>' if data.note else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>driftline report: {name}</title>
<style>
body {{ font-family: Helvetica, Arial, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0 24px; font-size: 13px; }}
th, td {{ border: 1px solid #ddd; padding: 4px 10px; text-align: left; }}
th {{ background: #f4f4f4; }}
.note {{ color: #a00; }}
</style></head>
<body>
<h1>driftline report: {name}</h1>
<p>{data.start:%Y-%m-%d %H:%M} &ndash; {data.end:%Y-%m-%d %H:%M} UTC.
Metrics are per prediction minute (labels arriving later fill in the last minutes).</p>
{note}
{render_svg(data)}
<h2>Summary</h2>
{summary}
<h2>Per-feature drift against the reference</h2>
{features}
<h2>Drift events ({len(data.drifts)})</h2>
{drifts}
<h2>Retraining requests ({len(data.retraining)})</h2>
{retraining}
</body></html>
"""


def write_report(data: ReportData, out: Path) -> Path:
    """``.svg``: the chart alone; anything else: the HTML page."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render_svg(data) if out.suffix.lower() == ".svg" else render_html(data)
    out.write_text(text, encoding="utf-8")
    return out


# -- CLI ---------------------------------------------------------------------------------------


def add_report_command(subparsers: Any) -> None:
    """``driftline report --model M --out report.html [--hours N] [--clickhouse-url URL]``."""
    parser = subparsers.add_parser(
        "report", help="a model's drift timeline and metrics as an HTML (or SVG) file"
    )
    parser.add_argument("--model", required=True, help="model_id to report on")
    parser.add_argument(
        "--out", type=Path, required=True, help="output file: .html (page) or .svg (chart)"
    )
    parser.add_argument("--hours", type=float, default=24.0, help="window up to now (hours)")
    parser.add_argument(
        "--clickhouse-url",
        default=None,
        help="ClickHouse server to read (default: DRIFTLINE_CLICKHOUSE_URL, else the endpoint "
        "of the worker running on this data dir, else the embedded store)",
    )
    parser.set_defaults(handler=handler)


def handler(args: argparse.Namespace, settings: Any) -> int:
    import sys

    from driftline.store_endpoint import ReaderStoreError, open_reader_store

    if args.hours <= 0:
        raise SystemExit("--hours must be positive")
    try:
        # While a worker holds the embedded store, the endpoint it serves it on.
        store = open_reader_store(settings, args.clickhouse_url)
    except ReaderStoreError as exc:
        print(f"driftline report: {exc}", file=sys.stderr)
        return 2
    try:
        data = load_report_data(store, args.model, args.hours)
    finally:
        store.close()
    out = write_report(data, args.out)
    print(
        f"{out}: {sum(r.predictions for r in data.minutes):,} predictions, "
        f"{len(data.drifts)} drift events, {len(data.retraining)} retraining requests"
        + (f" ({data.note})" if data.note else "")
    )
    return 0
