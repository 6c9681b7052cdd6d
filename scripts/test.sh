#!/usr/bin/env bash
# Set up (if needed), then lint, type-check and run the whole test suite.
# Extra arguments go to pytest (e.g. tests/unit, -k name).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Every cell test runs on the Docker backend too: an engine and a local image.
bash scripts/docker.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

status=0
.venv/bin/pytest "$@" || status=$?
if ((status == 5)); then
  echo "test: pytest collected no tests; that is a failure, not a pass" >&2
fi
exit "$status"
