"""Reference upload through the SDK and the CLI, on the real broker, read back the way a worker
reads it (the shared compacted-topic follower feeding a ``streams.profiles.ReferenceBook``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from driftline.schemas import Codec, topics
from driftline.schemas.control_plane import CompactedTopicFollower
from driftline.streams.profiles import ReferenceBook

from driftline.cli import main
from driftline.client import DriftlineProducer

pytestmark = pytest.mark.e2e


def unique(prefix: str) -> str:
    """A model id no other test on the shared broker uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _frame(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    g = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": g.normal(40, 10, n),
            "plan": g.choice(["gold", "free"], n),
            "score": g.random(n),
        }
    )


@pytest.fixture
def book(kafka_broker) -> Iterator[ReferenceBook]:
    """What a worker runs: the follower from the topic's start into a ReferenceBook."""
    references = ReferenceBook(Codec())
    follower = CompactedTopicFollower(
        kafka_broker.bootstrap, references.on_record, topics.REFERENCES, name="test-references"
    )
    follower.start(30.0)
    assert follower.wait_ready(30.0)
    yield references
    follower.close()


def _wait_for(book: ReferenceBook, model: str, reference_id: str) -> None:
    """Until the reader has the reference (a generous bound on a loaded machine, not a
    measurement)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = book.get(model)
        if got is not None and got.reference_id == reference_id:
            return
        time.sleep(0.1)
    raise AssertionError(f"reference {reference_id} of {model} never reached the reader")


def test_sdk_reference_reaches_a_reader(kafka_broker, book: ReferenceBook) -> None:
    model = unique("ref-sdk")
    with DriftlineProducer(kafka_broker.bootstrap) as producer:
        reference_id = producer.set_reference(
            model, _frame(), version="train-3", prediction_score="score", uploaded_by="test"
        )
    _wait_for(book, model, reference_id)
    profile = book.get(model)
    assert profile.version == "train-3" and profile.features == ["age", "plan"]
    assert set(profile.numeric) == {"age", "@prediction_score"}


def test_sdk_refuses_bad_data_and_sends_nothing(kafka_broker) -> None:
    with DriftlineProducer(kafka_broker.bootstrap) as producer:
        with pytest.raises(ValueError, match="mixes numbers and strings"):
            producer.set_reference("m", {"x": [1.0, "a", 2.0]})
        with pytest.raises(ValueError, match="no rows"):
            producer.set_reference("m", pd.DataFrame({"x": []}))
        assert producer.pending == 0


def test_cli_uploads_csv_and_parquet(kafka_broker, book: ReferenceBook, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    frame = _frame(seed=1)
    csv_path, parquet_path = tmp_path / "train.csv", tmp_path / "train.parquet"
    frame.to_csv(csv_path, index=False)
    frame.to_parquet(parquet_path)
    for path in (csv_path, parquet_path):
        model = unique("ref-cli")
        code = main(["--bootstrap", kafka_broker.bootstrap, "reference", "upload", str(path),
                     "--model", model, "--version", "v9", "--score", "score"])  # fmt: skip
        assert code == 0
        out = capsys.readouterr().out
        reference_id = out.split()[1]
        _wait_for(book, model, reference_id)
        assert book.get(model).version == "v9"


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ("x\n1\ninf\n", "bad.csv", "finite"),
        ("x,y\n", "empty.csv", "no rows"),
        ("x\n\n\n", "blank.csv", "no rows"),
        ("whatever", "data.json", "unknown format"),
    ],
)
def test_cli_refuses_bad_files_with_a_reason(tmp_path: Path, capsys, content, name, message) -> None:  # noqa: ANN001
    path = tmp_path / name
    path.write_text(content)
    # Refused before any connection: the bootstrap below has no broker behind it.
    code = main(["--bootstrap", "127.0.0.1:1", "reference", "upload", str(path),
                 "--model", "m"])  # fmt: skip
    assert code == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_a_missing_file(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert main(["reference", "upload", str(tmp_path / "nope.csv"), "--model", "m"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_refuses_a_model_outside_known_models(tmp_path: Path, capsys, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("DRIFTLINE_KNOWN_MODELS", '["churn"]')
    path = tmp_path / "train.csv"
    path.write_text("x\n1\n2\n3\n")
    # Refused before any connection, as the API refuses it (404) and the worker would (DLQ).
    code = main(["--bootstrap", "127.0.0.1:1", "reference", "upload", str(path),
                 "--model", "other"])  # fmt: skip
    assert code == 2
    assert "DRIFTLINE_KNOWN_MODELS" in capsys.readouterr().err
