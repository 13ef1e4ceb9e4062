#!/usr/bin/env bash
# Everything a fresh machine needs, idempotent: a virtualenv with driftline and its dev tools,
# and the local Kafka broker's jars from Maven Central (cached in ~/.cache/driftline/kafka).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.driftline-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[dev]"
  touch "$stamp"
fi
.venv/bin/driftline kafka fetch >/dev/null
# Alertmanager for the delivery tests (Debian's package); optional: those tests skip without it.
if ! command -v prometheus-alertmanager >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq prometheus-alertmanager >/dev/null; } \
    || echo "warning: could not install prometheus-alertmanager; its delivery tests will skip"
fi
