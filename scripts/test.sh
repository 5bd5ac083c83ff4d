#!/usr/bin/env bash
# The README's test command: install the test dependencies, lint, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
ruff check .
ruff format --check .
python3 -m pytest -q -rs "$@"
