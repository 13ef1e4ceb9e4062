"""The dashboard in a real headless browser (Debian's chromium driven by Playwright), on every
real part in its own process: a fresh Kafka broker, the worker (serving its embedded ClickHouse
over the HTTP interface), and ``driftline api`` reading that endpoint. Keys come from
``driftline api-key create``.

The run: model ``churn`` (SyntheticStream: feature f00 shifts and the error rate rises at
step ``CHANGE``) sends its quiet first part; a person logs in and sees it; the rest of the
traffic arrives while the model page is open and the drift appears without a reload (SSE
feed); a write key acknowledges the firing alert and saves a rule after its dry-run preview;
a wrong key and a read-only key are refused what they may not do.

Screenshots of the main pages land in ``<pytest tmp>/screenshots`` (the path is printed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import lag, stop_worker, worker_env
from support.binaries import in_ci, require_binary

from driftline.admin import ensure_topics
from driftline.local_kafka import free_port, port_open
from driftline.synthetic import SyntheticStream, publish

pytestmark = pytest.mark.e2e

MODEL = "churn"
CHANGE = 1500
QUIET = 1200  # steps sent before anyone looks: no drift yet
TOTAL = 3000
WAIT = 180.0  # seconds for the slow parts of a 2-core machine; not a timing assertion


def _playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if in_ci():
            pytest.fail("playwright is not installed (pip install -e '.[dev]')", pytrace=False)
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    return sync_playwright


def wait_until(predicate: Callable[[], Any], what: str, procs: dict[str, Any]) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for name, (process, log) in procs.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited:\n{Path(log).read_text()[-3000:]}")
        time.sleep(0.3)
    tails = "\n".join(f"--- {n} ---\n{Path(log).read_text()[-2000:]}"
                      for n, (_, log) in procs.items())  # fmt: skip
    raise AssertionError(f"timed out after {WAIT}s waiting for {what}\n{tails}")


def create_key(bootstrap: str, scopes: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "driftline.cli", "api-key", "create", "--name", f"ui-{scopes}",
         "--scopes", scopes],
        env={**os.environ, "DRIFTLINE_KAFKA_BOOTSTRAP": bootstrap},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("key:")]
    return line.split()[1]


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_dashboard_live_in_a_browser(fresh_kafka, tmp_path):
    chromium = require_binary("chromium", "/usr/bin/chromium")
    sync_playwright = _playwright()
    bootstrap = fresh_kafka.bootstrap
    ensure_topics(bootstrap, 2)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\ndashboard screenshots: {shots}")
    stream = SyntheticStream(MODEL, n_features=3, seed=5, change_at=CHANGE)

    with ExitStack() as stack:
        procs: dict[str, Any] = {}

        def start(name: str, argv: list[str], env: dict[str, str]) -> None:
            log = tmp_path / f"{name}.log"
            with open(log, "ab") as out:
                process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True)  # fmt: skip
            procs[name] = (process, log)
            stack.callback(stop_worker, process)

        read_key = create_key(bootstrap, "read")
        write_key = create_key(bootstrap, "read,write")
        app_id = f"worker-{uuid.uuid4().hex[:8]}"
        ch_port = free_port()
        start(
            "worker",
            [sys.executable, "-m", "driftline.cli", "worker"],
            worker_env(bootstrap, tmp_path / "data", app_id, DRIFTLINE_TOPIC_PARTITIONS="2",
                       DRIFTLINE_CLICKHOUSE_HTTP_PORT=str(ch_port),
                       DRIFTLINE_CLICKHOUSE_HTTP_USERS='{"writer": "w-secret"}',
                       # f00 is watched by windows of 250 after a 1,000-event reference:
                       # the change at CHANGE is found in the window right after it
                       DRIFTLINE_MONITOR_WINDOW_SIZE="250",
                       DRIFTLINE_MONITOR_AUTO_REFERENCE_EVENTS="1000"),
        )  # fmt: skip
        wait_until(lambda: port_open("127.0.0.1", ch_port), "the worker's ClickHouse", procs)
        api_port = free_port()
        base = f"http://127.0.0.1:{api_port}"
        start(
            "api",
            [sys.executable, "-m", "driftline.cli", "api", "--port", str(api_port)],
            {**os.environ, "DRIFTLINE_KAFKA_BOOTSTRAP": bootstrap,
             "DRIFTLINE_CLICKHOUSE_URL": f"http://writer:w-secret@127.0.0.1:{ch_port}"},
        )  # fmt: skip
        wait_until(lambda: _ready(f"{base}/ready"), "the API", procs)
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {write_key}"},
                           timeout=30)  # fmt: skip
        stack.callback(api.close)
        response = api.post("/v1/rules", json={
            "name": "feature drift", "models": [MODEL],
            "signal": {"kind": "drift", "stream_kind": "FEATURE"},
            "condition": {"type": "drift_detected"}, "severity": "critical",
        })  # fmt: skip
        assert response.status_code == 201, response.text

        publish(bootstrap, stream, QUIET, outcome_lag=50)
        wait_until(lambda: lag(bootstrap, app_id) == 0, "the worker to catch up", procs)

        browser = stack.enter_context(sync_playwright()).chromium.launch(executable_path=chromium)
        stack.callback(browser.close)
        errors: list[str] = []
        # The pages' Content-Security-Policy stays on (no bypass_csp): the test sees what a
        # browser runs; waits are selectors, not evaluated strings, which the CSP forbids.

        def new_page() -> Any:
            page = browser.new_context(viewport={"width": 1400, "height": 1000},
                                       locale="en-US").new_page()
            page.set_default_timeout(WAIT * 1000)
            page.on("pageerror", lambda e: errors.append(str(e)))
            return page

        # -- nothing without a session; a wrong key is refused
        page = new_page()
        page.goto(f"{base}/ui/models/{MODEL}")
        assert "/ui/login" in page.url
        assert httpx.get(f"{base}/ui/data/overview").status_code == 401
        assert httpx.get(f"{base}/ui/static/app.js").status_code == 401
        page.fill("#key", "dl_000000000000_" + "x" * 43)
        page.click("button[type=submit]")
        assert "Invalid or revoked" in page.inner_text("#login-error")
        page.screenshot(path=shots / "login.png")

        # -- a read-only key: look, but not act
        page.fill("#key", read_key)
        page.click("button[type=submit]")
        page.wait_for_url(f"**/ui/models/{MODEL}")  # back where it was going
        page.goto(f"{base}/ui")
        row = page.locator(f'#models tbody tr[data-model="{MODEL}"]')
        row.first.wait_for()
        assert "1,200" in row.first.inner_text()  # predictions so far
        cookie = next(c for c in page.context.cookies() if c["name"] == "driftline_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        refused = page.evaluate(
            """async () => {
                const csrf = document.querySelector('meta[name="csrf-token"]').content;
                const post = (url, body, headers) => fetch(url, {method: "POST", body: JSON.stringify(body),
                    headers: {"Content-Type": "application/json", ...headers}}).then(r => r.status);
                return [await post("/v1/rules", {}, {"X-CSRF-Token": csrf}),
                        await post("/v1/alerts/x/ack", {comment: "no"}, {"X-CSRF-Token": csrf}),
                        await post("/v1/alerts/x/ack", {comment: "no"}, {})];
            }"""
        )
        assert refused == [403, 403, 403], refused  # read scope; read scope; no CSRF token
        page.screenshot(path=shots / "overview.png", full_page=True)

        # -- the model page, live: the drift arrives while it is open
        page.goto(f"{base}/ui/models/{MODEL}")
        page.wait_for_selector("#metrics-chart canvas")
        assert page.locator("#drifts tbody tr").count() == 0
        page.wait_for_selector("#live.on")  # the feed is positioned: nothing from here is missed
        page.evaluate("window.loadedOnce = true")  # gone if the page reloads
        publish(bootstrap, stream, TOTAL - QUIET, start=QUIET, outcome_lag=50)
        page.wait_for_selector("#drifts tbody tr td:has-text('FEATURE:f00')")
        assert page.evaluate("window.loadedOnce") is True, "the page reloaded"
        wait_until(lambda: lag(bootstrap, app_id) == 0, "the worker to catch up", procs)
        # everything has landed: a new range redraws the charts from ClickHouse (no reload)
        page.select_option("#range", "30d")
        page.wait_for_selector(".hm-cell.drift")
        assert page.evaluate("window.loadedOnce") is True
        page.screenshot(path=shots / "model.png", full_page=True)
        # the raw evidence behind a drift: its source prediction, as stored
        page.locator("#drifts tbody tr", has_text="FEATURE:f00").first.locator("a.evidence-link").click()
        page.wait_for_selector("#event-dialog[open]")
        assert '"numeric_features"' in page.inner_text("#event-json")
        page.screenshot(path=shots / "evidence.png")
        page.click("#event-dialog button")

        page.goto(f"{base}/ui/alerts")
        firing = page.locator("#alerts tbody tr", has_text="feature drift")
        firing.first.wait_for()
        assert firing.first.locator(".ack-button").is_disabled()  # read-only key

        # -- a write key: acknowledge, silence, and a rule with a dry-run preview
        page = new_page()
        page.goto(f"{base}/ui/alerts")
        page.fill("#key", write_key)
        page.click("button[type=submit]")
        firing = page.locator("#alerts tbody tr", has_text="feature drift").first
        firing.wait_for()
        firing.locator(".ack-button").click()
        page.click("#ack-ok")
        page.wait_for_selector("#alerts tbody tr td.ack:has-text('looking into it')")
        page.locator("#alerts tbody tr", has_text="feature drift").first.locator("td").nth(1).click()
        page.wait_for_selector("#history tbody tr")
        page.locator("#alerts tbody tr", has_text="feature drift").first.locator(".silence-button").click()
        page.click("#silence-ok")
        page.wait_for_selector(f"#silences tbody tr:has-text('model_id={MODEL}')")
        page.screenshot(path=shots / "alerts.png", full_page=True)
        (alert,) = [a for a in api.get("/v1/alerts").json()["data"]
                    if a["alertname"] == "feature drift"]  # fmt: skip
        assert alert["acknowledgement"]["comment"] == "looking into it"

        page.goto(f"{base}/ui/rules/new")
        wait_until(lambda: MODEL in page.input_value("#rule-json"), "the rule template", procs)
        page.click("#dry-run")
        page.wait_for_selector("#dry-run-chart canvas")
        assert "Would have fired" in page.inner_text("#dry-run-summary")
        assert page.locator("#firings tbody tr").count() >= 1
        page.screenshot(path=shots / "rule.png", full_page=True)
        page.click("#save")
        page.wait_for_url("**/ui/rules/r-*")
        page.wait_for_selector("#rule-meta:has-text('version 1')")
        assert '"accuracy low"' in page.input_value("#rule-json")
        saved = [r for r in api.get("/v1/rules").json()["data"] if r["name"] == "accuracy low"]
        assert len(saved) == 1 and saved[0]["models"] == [MODEL]
        page.goto(f"{base}/ui/rules")
        page.wait_for_selector("#rules tbody tr:has-text('accuracy low')")
        page.screenshot(path=shots / "rules.png", full_page=True)

        assert not errors, errors
    print(f"dashboard screenshots: {sorted(p.name for p in shots.iterdir())} in {shots}")
