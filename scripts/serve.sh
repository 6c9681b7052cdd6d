#!/usr/bin/env bash
# Set up (if needed) and run a diego node on http://127.0.0.1:8889.
# Extra arguments go to `diego serve` (e.g. --data-dir, --listen, --config).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A node whose cells use Docker needs an engine and the stack's image.
if [[ " $* " == *" docker "* || " $* " == *"--cell-backend=docker"* ]]; then
  bash scripts/docker.sh
fi
exec .venv/bin/diego serve "$@"
