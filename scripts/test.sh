#!/usr/bin/env bash
# Install Kiln with its test extras in .venv and run the whole test suite (about 5 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-system.sh
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
exec .venv/bin/python -m pytest "$@"
