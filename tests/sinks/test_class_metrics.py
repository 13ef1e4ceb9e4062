"""Per-class precision and recall per minute, from joined labels, against a plain count."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from driftline.sinks import EmbeddedStore
from driftline.sinks.tables import joined_label


def test_precision_and_recall_per_class_and_segment(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    base = (int(time.time() * 1000) // 60_000 - 30) * 60_000  # recent: TTL keeps it
    rows, truth = [], []
    for i in range(3000):
        actual = str(rng.choice(["a", "b", "c"]))
        predicted = actual if rng.random() < 0.7 else str(rng.choice(["a", "b", "c"]))
        region = "eu" if i % 2 else "us"
        prediction = {
            "event_id": f"p{i}", "model_id": "m", "model_version": "1",
            "event_time": base + (i % 3) * 60_000, "segments": {"region": region},
            "prediction_label": predicted,
        }  # fmt: skip
        outcome = {"event_id": f"o{i}", "event_time": base + 200_000, "label": actual}
        rows.append(joined_label(prediction, outcome))
        truth.append((i % 3, region, predicted, actual))
    with EmbeddedStore(tmp_path, "class_metrics") as store:
        store.migrate()
        store.insert_rows("joined_labels", rows[:1500])
        store.insert_rows("joined_labels", rows[1500:])
        got = store.query(
            "SELECT toUnixTimestamp(minute), segment, class, precision, recall "
            "FROM class_metrics_minute_v WHERE model_id = 'm'"
        )
    assert len(got) == 3 * 3 * 3  # minutes x segments ('', eu, us) x classes
    for minute_ts, segment, cls, precision, recall in got:
        minute = (minute_ts * 1000 - base) // 60_000
        sel = [t for t in truth if t[0] == minute and segment in ("", f"region={t[1]}")]
        tp = sum(1 for t in sel if t[2] == cls and t[3] == cls)
        assert precision == tp / sum(1 for t in sel if t[2] == cls)
        assert recall == tp / sum(1 for t in sel if t[3] == cls)
