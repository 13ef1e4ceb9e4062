#!/usr/bin/env bash
# Everything a fresh machine needs, idempotent: a virtualenv with driftline and its dev tools,
# and the local Kafka broker's jars from Maven Central (cached in ~/.cache/driftline/kafka).
# Quiet when all goes well (`make demo` shows the demo, not pip); a failing step prints its
# whole log and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# quietly LOG COMMAND...: run COMMAND with its output in LOG; on failure show it and stop.
quietly() {
  local log=$1
  shift
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    echo "error: '$*' failed (output above, also in $log)" >&2
    exit 1
  fi
}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.driftline-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing driftline and its dependencies into .venv (log: .venv/setup.log)"
  # uv resolves the same versions as pip and installs them ~4x faster (a fresh clone's
  # setup: 55 s with pip, 12 s with uv), a minute off every CI run
  quietly .venv/setup.log .venv/bin/pip install -q --disable-pip-version-check uv
  # --compile-bytecode: pip writes .pyc files at install and uv does not; where
  # PYTHONDONTWRITEBYTECODE is set (this machine, many CI images) nothing writes them later,
  # so every process (each worker, API and CLI a test starts) compiled pandas, numba, faust
  # and the rest from source again: 3.8 s instead of 1.4 s to import the worker, and twice
  # the CPU time of the whole test suite
  quietly .venv/setup.log .venv/bin/uv pip install -q --compile-bytecode --python .venv/bin/python -e ".[dev]"
  touch "$stamp"
fi
# Our own sources likewise (an editable install leaves them where they are); a source newer
# than its .pyc is compiled again here, and Python ignores a stale .pyc anyway.
quietly .venv/compile.log .venv/bin/python -m compileall -q -j 0 \
  driftline schemas detectors sinks streams api
# Numba's kernels compiled into their cache once, two parts side by side (~30 s on a fresh
# clone, ~2 s after): otherwise the first worker of the demo, or several test processes at
# once, each compile them (scripts/warm_kernels.py).
.venv/bin/python scripts/warm_kernels.py --part processor >.venv/warm-processor.log 2>&1 &
warm_processor=$!
quietly .venv/warm-detectors.log .venv/bin/python scripts/warm_kernels.py --part detectors
if ! wait "$warm_processor"; then
  cat .venv/warm-processor.log >&2
  echo "error: scripts/warm_kernels.py --part processor failed" >&2
  exit 1
fi
quietly .venv/kafka-fetch.log .venv/bin/driftline kafka fetch
# Alertmanager for the delivery tests (Debian's package); optional: those tests skip without it.
if ! command -v prometheus-alertmanager >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq prometheus-alertmanager >/dev/null; } \
    || echo "warning: could not install prometheus-alertmanager; its delivery tests will skip"
fi
# Chromium for the dashboard's browser tests (Debian's package, driven by Playwright: no browser
# download); optional: those tests skip without it (and fail under CI=true).
if ! command -v chromium >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; } \
    || echo "warning: could not install chromium; the dashboard's browser tests will skip"
fi
