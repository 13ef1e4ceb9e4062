"""``driftline lineage``: a model's chain of ids, as text and as JSON, from the embedded store
a (stopped) worker left in the data dir. In subprocesses: chdb binds one data path per
process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from driftline.api import ApiConfig, InMemoryControlPlane, create_app, crud
from driftline.schemas import event_id
from driftline.sinks import ServerStore, StoreError
from fastapi.testclient import TestClient

from driftline.lineage import format_lineage

M = "scoring"
T0 = 1_760_000_000_000

FILL = """
import sys
from pathlib import Path
from driftline.schemas import event_id
from driftline.schemas.model_versions import make_published
from driftline.sinks.lineage import published_row, serving_row
from driftline.sinks.store import open_store
M, T0 = "scoring", 1_760_000_000_000
store = open_store(None, "driftline", Path(sys.argv[1]) / "clickhouse", ttl_days=None)
store.migrate()
drift = {"event_id": event_id("drift", M), "model_id": M, "model_version": "1",
         "stream_kind": "ERROR", "stream_name": "error", "detector": "ADWIN",
         "detected_at": T0, "position": 7, "statistic": None, "p_value": None,
         "threshold": 0.002, "evidence": {}, "source_event_id": "o"}
request = {"event_id": event_id("retraining", M, drift["event_id"]), "model_id": M,
           "model_version": "1", "requested_at": T0, "reason": "error drift",
           "trigger_event_ids": [drift["event_id"]], "window_start": T0 - 3_600_000,
           "window_end": T0, "priority": "NORMAL", "policy": "error-drift"}
record = make_published(M, "2", published_at=T0 + 1000, artifact_uri="file:///m/2.pkl",
                        retraining_request_id=request["event_id"], publisher="trainer")
verdict = {"event_id": event_id("verdict", M, "2", "1", "500"), "model_id": M,
           "version": "2", "previous_version": "1", "verdict": "WORSE", "metric": "accuracy",
           "test": "two_proportion_z", "value": 0.7, "previous_value": 0.9, "n_labels": 500,
           "n_previous": 500, "statistic": -8.0, "p_value": 1e-12, "alpha": 0.01,
           "decided_at": T0 + 9000, "published_event_id": record["event_id"], "evidence": {},
           "rollback_event_id": event_id("rollback", "x"), "rollback_to": "1"}
store.insert_rows("drift_events", [drift])
store.insert_rows("retraining_requests", [request])
store.insert_rows("model_versions", [serving_row(M, "1", None, T0 - 9000, T0 + 2000),
                                     published_row(record),
                                     serving_row(M, "2", "1", T0 + 2000, T0 + 9000)])
store.insert_rows("model_verdicts", [verdict])
store.close()
"""


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    return subprocess.run(
        [sys.executable, "-m", "driftline.cli", "--data-dir", str(data_dir), "lineage", *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_lineage_command_shows_the_chain(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", FILL, str(tmp_path)], check=True, timeout=120)
    as_json = _cli(tmp_path, "--model", M, "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    chains = {c["version"]["version"]: c for c in data["versions"]}
    assert list(chains) == ["1", "2"]
    assert chains["2"]["complete"] and not chains["1"]["complete"]
    assert chains["2"]["drift_events"][0]["event_id"] == event_id("drift", M)
    text = _cli(tmp_path, "--model", M)
    assert text.stdout == format_lineage(data) + "\n"
    lines = text.stdout.splitlines()
    assert lines[:3] == ["model scoring", "version 1 (after -; partial)",
                         "  serving    2025-10-09 08:53:11 UTC .. 2025-10-09 08:53:22 UTC"]
    assert lines[3].startswith("version 2 (after 1; complete)")
    assert [line.split()[0] for line in lines[4:]] == [
        "drift", "retraining", "published", "serving", "verdict",
    ]
    assert "WORSE vs 1" in lines[-1] and "rollback" in lines[-1]
    unknown = _cli(tmp_path, "--model", "nope")
    assert unknown.returncode == 1 and "no versions known" in unknown.stdout


# The filled store behind ClickHouse's HTTP interface with a read-only user only, as a worker
# serves it with DRIFTLINE_CLICKHOUSE_HTTP_READONLY_USERS; runs until its stdin closes.
SERVE = """
import sys
from pathlib import Path
from driftline.sinks.clickhouse_http import serve_store
from driftline.sinks.store import open_store
store = open_store(None, "driftline", Path(sys.argv[1]) / "clickhouse", ttl_days=None)
handle = serve_store(store, "127.0.0.1", 0, {"reader": ("r-secret", True)})
print(handle.port, flush=True)
sys.stdin.read()
handle.stop()
store.close()
"""


def test_lineage_reads_as_a_read_only_user(tmp_path: Path) -> None:
    """``driftline lineage --clickhouse-url`` and ``GET /v1/models/{model}/lineage`` open the
    store without DDL, so a user refused every write (and CREATE DATABASE) can read it."""
    subprocess.run([sys.executable, "-c", FILL, str(tmp_path)], check=True, timeout=120)
    server = subprocess.Popen([sys.executable, "-c", SERVE, str(tmp_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        url = f"http://reader:r-secret@127.0.0.1:{int(server.stdout.readline())}"
        cli = _cli(tmp_path / "elsewhere", "--model", M, "--json", "--clickhouse-url", url)
        assert cli.returncode == 0, cli.stderr
        chains = {c["version"]["version"]: c for c in json.loads(cli.stdout)["versions"]}
        assert chains["2"]["complete"]

        # the API's store, opened as `driftline api` opens it
        store = ServerStore(url, "driftline", create_database=False)
        control_plane = InMemoryControlPlane()
        token, _ = crud.create_api_key(control_plane=control_plane, name="r", scopes=["read"],
                                       actor="t")  # fmt: skip
        app = create_app(ApiConfig(), control_plane=control_plane, store=store)
        answer = TestClient(app, headers={"X-API-Key": token}).get(f"/v1/models/{M}/lineage")
        assert answer.status_code == 200, answer.text
        assert answer.json() == json.loads(cli.stdout)
        store.close()

        # what a store that creates its database on connect meets with this user
        writer_style = ServerStore(url, "driftline", retries=0)
        with pytest.raises(StoreError):
            writer_style.query("SELECT 1")
        writer_style.close()
    finally:
        server.stdin.close()
        server.wait(timeout=60)
