#!/usr/bin/env bash
# The whole test suite: set-up (idempotent), then pytest. Exits non-zero on any failure and when no
# test ran. Extra arguments go to pytest (e.g. `bash scripts/test.sh -k log_mel`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export PYTHONUNBUFFERED=1
status=0
.venv/bin/python -m pytest -ra "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; failing" >&2
    exit 1
fi
exit "$status"
