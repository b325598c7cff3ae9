#!/usr/bin/env bash
# The main job: set-up (idempotent), then the roomtone daemon on its embedded defaults (bundled model,
# SQLite store, default microphone or the bundled demo recording looped when no input exists).
# Extra arguments go to `roomtone run` (see `.venv/bin/roomtone run --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/roomtone run "$@"
