#!/usr/bin/env bash
# Install Kiln with its test extras in .venv and run the whole test suite (about 18 minutes of
# tests on 2 cores, plus 5-6 minutes of pip and apt on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-system.sh
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
# torch has no usable CPU build on this index: take the local wheel when there is one
# (the PyTorch tests skip, saying why, when torch is absent)
TORCH_WHEEL=${KILN_TORCH_WHEEL:-/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl}
if [ -f "$TORCH_WHEEL" ] && ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    .venv/bin/pip install -q "$TORCH_WHEEL"
fi
exec .venv/bin/python -m pytest "$@"
