#!/usr/bin/env bash
# THE test command: sets the machine up (scripts/bootstrap.sh), then runs the whole test suite.
# Extra arguments go to pytest, e.g.  ./scripts/test.sh -q   or   ./scripts/test.sh -m "not integration"
# Exits with pytest's status.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash ./scripts/bootstrap.sh

echo "[test] .venv/bin/python -m pytest $*"
status=0
.venv/bin/python -m pytest "$@" || status=$?
exit "$status"
