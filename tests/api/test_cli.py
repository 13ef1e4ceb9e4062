"""The CLI glue: ``api-key create/list/revoke`` on the real broker, and ``api`` serving."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from types import SimpleNamespace

import httpx
import pytest
from conftest import auth
from driftline.api.cli import add_api_command, add_api_key_command
from fastapi.testclient import TestClient

from driftline.local_kafka import LocalKafka, free_port


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser()
    sub = root.add_subparsers(dest="command", required=True)
    add_api_command(sub)
    add_api_key_command(sub)
    return root


def run(argv: list[str], bootstrap: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    args = parser().parse_args(argv)
    code = args.handler(args, SimpleNamespace(kafka_bootstrap=bootstrap))
    return code, capsys.readouterr().out


def test_api_key_create_list_revoke(
    api_kafka: LocalKafka,
    app,
    capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
) -> None:
    code, out = run(
        ["api-key", "create", "--name", "ci", "--scopes", "read,write"], api_kafka.bootstrap, capsys
    )
    assert code == 0
    fields = dict(
        line.split(":", 1) for line in out.splitlines() if ":" in line and not line.startswith("(")
    )
    token, key_id = fields["key"].strip(), fields["id"].strip()
    assert fields["scopes"].strip() == "read,write"
    # The API process (another control plane reading the same topic) accepts it once its
    # view has read the record, asynchronously.
    deadline = time.monotonic() + 30
    while TestClient(app, headers=auth(token)).get("/v1/rules").status_code != 200:
        assert time.monotonic() < deadline, "new key not accepted"
        time.sleep(0.1)

    code, out = run(["api-key", "list"], api_kafka.bootstrap, capsys)
    listed = {row["id"]: row for row in map(json.loads, out.splitlines())}
    assert listed[key_id]["scopes"] == ["read", "write"] and token not in out

    assert run(["api-key", "revoke", key_id], api_kafka.bootstrap, capsys)[0] == 0
    deadline = time.monotonic() + 30  # the app's view applies the tombstone asynchronously
    while TestClient(app, headers=auth(token)).get("/v1/rules").status_code != 401:
        assert time.monotonic() < deadline, "revoked key still accepted"
        time.sleep(0.1)
    assert run(["api-key", "revoke", key_id], api_kafka.bootstrap, capsys)[0] == 1
    assert (
        run(["api-key", "create", "--name", "x", "--scopes", "root"], api_kafka.bootstrap, capsys)[
            0
        ]
        == 2
    )


def test_api_command_serves(api_kafka: LocalKafka, tokens: dict[str, str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    script = (
        "import sys\n"
        "from driftline.settings import load_settings\n"
        "from driftline.api.cli import serve\n"
        "import argparse\n"
        f"args = argparse.Namespace(host='127.0.0.1', port={port}, loglevel='warning')\n"
        f"sys.exit(serve(args, load_settings(kafka_bootstrap={api_kafka.bootstrap!r}, data_dir={str(tmp_path)!r})))\n"
    )
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115 - the child writes to it
    process = subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=subprocess.STDOUT)
    try:
        # It serves at once and reads the control plane in the background: 503 until then.
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "api.log").read_text()
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
                if ready.status_code == 200:
                    break
                assert ready.status_code == 503, ready.text
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "api.log").read_text()
            time.sleep(0.2)
        # Keys made by another process work here; without a ClickHouse URL history is 503.
        base, headers = f"http://127.0.0.1:{port}", auth(tokens["read"])
        assert httpx.get(f"{base}/v1/rules", headers=headers).status_code == 200
        assert httpx.get(f"{base}/v1/alerts", headers=headers).status_code == 503
        # the references topic is wired too (its reader catches up on its own: 503 until then)
        while (reference := httpx.get(f"{base}/v1/models/no-such-model/reference",
                                      headers=headers)).status_code == 503:  # fmt: skip
            assert time.monotonic() < deadline + 60, reference.text
            time.sleep(0.2)
        assert reference.status_code == 404, reference.text
    finally:
        process.terminate()
        process.wait(timeout=30)
